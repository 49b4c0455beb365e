//! The storage layer: the only place in Vault that holds SQL. Each table has its own
//! module of functions; services call those and never write SQL themselves, so a second
//! engine can be added behind the same functions.
//!
//! Every connection gets WAL, a busy timeout and foreign keys, so the CLI can write while a
//! server runs without "database is locked".

pub mod activity;
pub mod audit;
pub mod conversations;
pub mod keys;
pub mod limits;
pub mod settings;
pub mod training;
pub mod usage;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libsql::{Connection, Database, TransactionBehavior};

use crate::config::DbLocation;
use crate::error::{Result, VaultError};

/// How long a writer waits for another process's write to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrations in order; a database records the highest version applied.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/0001_initial.sql")),
    (2, "activity", include_str!("../../migrations/0002_activity.sql")),
    (3, "usage_rollups", include_str!("../../migrations/0003_usage_rollups.sql")),
    (4, "usage_per_account", include_str!("../../migrations/0004_usage_per_account.sql")),
    (5, "audit_journal", include_str!("../../migrations/0005_audit_journal.sql")),
    (6, "audit_repeat_count", include_str!("../../migrations/0006_audit_repeat_count.sql")),
    (7, "usage_errors", include_str!("../../migrations/0007_usage_errors.sql")),
    (8, "usage_minutes", include_str!("../../migrations/0008_usage_minutes.sql")),
    (9, "rate_limits", include_str!("../../migrations/0009_rate_limits.sql")),
    (10, "audit_chain", include_str!("../../migrations/0010_audit_chain.sql")),
    (11, "fair_admission", include_str!("../../migrations/0011_fair_admission.sql")),
];

/// An open Vault database.
pub struct Db {
    database: Database,
    path: std::path::PathBuf,
    /// The identity (device, inode) of the file opened, to notice it being replaced.
    identity: Option<(u64, u64)>,
    /// Changes this process made to keys and users, so its key checks see them at once.
    auth_changes: AtomicU64,
}

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(location: &DbLocation) -> Result<Db> {
        let (database, path) = match location {
            DbLocation::Local(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        VaultError::config(format!("VAULT_DB_URL: cannot create {}: {e}", parent.display()))
                    })?;
                }
                let database = libsql::Builder::new_local(path)
                    .build()
                    .await
                    .map_err(|e| VaultError::config(format!("VAULT_DB_URL: cannot open {}: {e}", path.display())))?;
                (database, path.clone())
            }
            DbLocation::Remote { url, .. } => {
                return Err(VaultError::config(format!(
                    "VAULT_DB_URL: `{url}` is a remote database; this build supports embedded database files only"
                )));
            }
        };
        let mut db = Db { database, path, identity: None, auth_changes: AtomicU64::new(0) };
        let conn = db.connect().await?;
        // WAL is a property of the file: set once, kept by every later connection.
        conn.query("PRAGMA journal_mode = WAL", ()).await?;
        migrate(&conn).await?;
        // The file exists now (libsql creates it on the first connection).
        db.identity = file_identity(&db.path);
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the file opened is still the database file and can still be written: an
    /// error says why not (it was deleted or replaced, or made read-only).
    pub fn check_file(&self) -> std::result::Result<(), &'static str> {
        if file_identity(&self.path) != self.identity {
            return Err("the database file was deleted or replaced while Vault ran");
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map(drop)
            .map_err(|_| "the database file cannot be written")
    }

    /// Notes a change this process made to keys or users (see `keys::Authenticator`).
    pub(crate) fn auth_changed(&self) {
        self.auth_changes.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn auth_changes(&self) -> u64 {
        self.auth_changes.load(Ordering::Acquire)
    }

    /// A new connection with the per-connection settings applied.
    pub async fn connect(&self) -> Result<Connection> {
        let conn = self.database.connect()?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // synchronous=NORMAL in WAL mode: a commit survives a crash of the process; only an
        // OS crash or power loss can lose the last commits. A WAL that grew while readers
        // held a checkpoint back is cut back to 64 MiB once it restarts.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;",
        )
        .await?;
        Ok(conn)
    }
}

#[cfg(unix)]
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// Stops this connection from checkpointing the WAL after its commits.
pub async fn disable_autocheckpoint(conn: &Connection) -> Result<()> {
    conn.query("PRAGMA wal_autocheckpoint = 0", ()).await?;
    Ok(())
}

/// Copies committed pages from the WAL into the database file, without blocking writers.
pub async fn checkpoint(conn: &Connection) -> Result<()> {
    conn.query("PRAGMA wal_checkpoint(PASSIVE)", ()).await?;
    Ok(())
}

/// Starts a write transaction that takes the write lock at once, so a busy database makes
/// it wait (busy timeout) instead of failing on a lock upgrade.
pub async fn write_transaction(conn: &Connection) -> Result<libsql::Transaction> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate).await?)
}

async fn migrate(conn: &Connection) -> Result<()> {
    let tx = write_transaction(conn).await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        (),
    )
    .await?;
    let mut rows = tx.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", ()).await?;
    let current: i64 = match rows.next().await? {
        Some(row) => row.get(0)?,
        None => 0,
    };
    drop(rows);
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.execute_batch(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            libsql::params![*version, *name, crate::time::now_rfc3339()],
        )
        .await?;
        tracing::info!(version, name, "applied database migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Reads a text column into its type. A value the type refuses means the database was
/// changed by hand, which is an internal error, not the caller's.
pub(crate) fn parse_column<T: std::str::FromStr>(row: &libsql::Row, index: i32, what: &str) -> Result<T> {
    let raw: String = row.get(index)?;
    raw.parse().map_err(|_| VaultError::internal(what, format!("unexpected stored value `{raw}`")))
}

/// Maps every row of a result with `from_row`.
pub(crate) async fn collect_rows<T>(
    mut rows: libsql::Rows,
    from_row: impl Fn(&libsql::Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push(from_row(&row)?);
    }
    Ok(out)
}

/// Reads the first column of the first row as an integer.
pub(crate) async fn query_i64(conn: &Connection, sql: &str, params: impl libsql::params::IntoParams) -> Result<i64> {
    let mut rows = conn.query(sql, params).await?;
    match rows.next().await? {
        Some(row) => Ok(row.get(0)?),
        None => Err(VaultError::internal("reading a number from the database", sql)),
    }
}

#[cfg(test)]
pub(crate) async fn test_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_twice_applies_migrations_once() {
        let (dir, db) = test_db().await;
        drop(db);
        let db = Db::open(&DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
        let conn = db.connect().await.unwrap();
        let n = query_i64(&conn, "SELECT COUNT(*) FROM schema_migrations", ()).await.unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
        let mode = conn.query("PRAGMA journal_mode", ()).await.unwrap().next().await.unwrap().unwrap();
        assert_eq!(mode.get::<String>(0).unwrap(), "wal");
    }

    #[tokio::test]
    async fn remote_urls_are_refused_with_a_clear_line() {
        let err = Db::open(&DbLocation::Remote { url: "libsql://x".into(), auth_token: None }).await.err().unwrap();
        assert!(err.message.starts_with("VAULT_DB_URL"));
    }
}
