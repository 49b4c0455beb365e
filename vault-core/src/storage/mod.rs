//! The storage layer: the only place in Vault that holds SQL. Each table has its own
//! module of functions; services call those and never write SQL themselves. Two engines
//! run the same SQL (`sql`): the embedded libsql file of a single box, and PostgreSQL for
//! several gateways sharing one database (`postgres`).
//!
//! Every embedded connection gets WAL, a busy timeout and foreign keys, so the CLI can
//! write while a server runs without "database is locked".

pub mod activity;
pub mod audit;
pub mod auth_watch;
pub mod conversations;
pub mod keys;
pub mod limits;
pub mod postgres;
pub mod postgres_tls;
pub mod settings;
pub mod sql;
#[doc(hidden)]
pub mod test_cluster;
pub mod training;
pub mod usage;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libsql::Database;

pub use sql::{Conn, Dialect, Row, Rows, Statement, Tx, Value};

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
    (12, "audit_account_index", include_str!("../../migrations/0012_audit_account_index.sql")),
];

/// The same schema for PostgreSQL, in its own dialect and numbering.
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "audit_account_index", include_str!("../../migrations/postgres/0002_audit_account_index.sql")),
];

/// Serialises migrations of gateways starting at once on one PostgreSQL database.
const MIGRATION_LOCK: i64 = 0x7661_756c_7400;

/// An open Vault database.
pub struct Db {
    engine: Engine,
    /// The database file, or with PostgreSQL the base name of this box's own files.
    path: std::path::PathBuf,
    /// The identity (device, inode) of the file opened, to notice it being replaced.
    identity: Option<(u64, u64)>,
    /// Changes this process made to keys and users, so its key checks see them at once.
    auth_changes: AtomicU64,
}

enum Engine {
    Lite(Database),
    Pg(Box<postgres::Opened>),
}

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(location: &DbLocation) -> Result<Db> {
        let (engine, path) = match location {
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
                (Engine::Lite(database), path.clone())
            }
            DbLocation::Postgres { url, local } => (Engine::Pg(Box::new(postgres::open(url).await?)), local.clone()),
            DbLocation::Remote { url, .. } => {
                return Err(VaultError::config(format!(
                    "VAULT_DB_URL: `{url}` is a remote libsql database; this build supports embedded database files and postgres:// URLs"
                )));
            }
        };
        let mut db = Db { engine, path, identity: None, auth_changes: AtomicU64::new(0) };
        let conn = db.connect().await?;
        match conn.dialect() {
            Dialect::Sqlite => {
                // WAL is a property of the file: set once, kept by every later connection.
                conn.query("PRAGMA journal_mode = WAL", ()).await?;
                migrate(&conn, MIGRATIONS, None).await?;
                // The file exists now (libsql creates it on the first connection).
                db.identity = file_identity(&db.path);
            }
            Dialect::Postgres => {
                let lock = format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})");
                migrate(&conn, POSTGRES_MIGRATIONS, Some(&lock)).await?;
            }
        }
        Ok(db)
    }

    /// Which engine runs.
    pub fn dialect(&self) -> Dialect {
        match self.engine {
            Engine::Lite(_) => Dialect::Sqlite,
            Engine::Pg(_) => Dialect::Postgres,
        }
    }

    /// The pool of a PostgreSQL database, for a holder of a long-lived connection that must
    /// replace it when the server closes it.
    pub(crate) fn postgres_pool(&self) -> Option<deadpool_postgres::Pool> {
        match &self.engine {
            Engine::Pg(pg) => Some(pg.pool.clone()),
            Engine::Lite(_) => None,
        }
    }

    /// The database file; with PostgreSQL, the base name of this box's own files (the
    /// audit journal lives beside it).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the file opened is still the database file and can still be written: an
    /// error says why not (it was deleted or replaced, or made read-only). A PostgreSQL
    /// database has no file here; its failures show as failed requests.
    pub fn check_file(&self) -> std::result::Result<(), &'static str> {
        if let Engine::Pg(_) = self.engine {
            return Ok(());
        }
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

    /// A connection with the per-connection settings applied.
    pub async fn connect(&self) -> Result<Conn> {
        let database = match &self.engine {
            Engine::Lite(database) => database,
            Engine::Pg(pg) => return Ok(Conn::Pg(Box::new(postgres::connect(&pg.pool).await?))),
        };
        let conn = database.connect()?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // synchronous=NORMAL in WAL mode: a commit survives a crash of the process; only an
        // OS crash or power loss can lose the last commits. A WAL that grew while readers
        // held a checkpoint back is cut back to 64 MiB once it restarts.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;",
        )
        .await?;
        Ok(Conn::Lite(conn))
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

/// Stops this connection from checkpointing the WAL after its commits (embedded only).
pub async fn disable_autocheckpoint(conn: &Conn) -> Result<()> {
    if conn.dialect() == Dialect::Sqlite {
        conn.query("PRAGMA wal_autocheckpoint = 0", ()).await?;
    }
    Ok(())
}

/// Copies committed pages from the WAL into the database file, without blocking writers
/// (embedded only: PostgreSQL checkpoints by itself).
pub async fn checkpoint(conn: &Conn) -> Result<()> {
    if conn.dialect() == Dialect::Sqlite {
        conn.query("PRAGMA wal_checkpoint(PASSIVE)", ()).await?;
    }
    Ok(())
}

/// Starts a write transaction (see [`Conn::write_transaction`]).
pub async fn write_transaction(conn: &Conn) -> Result<Tx<'_>> {
    conn.write_transaction().await
}

/// Applies the migrations the database has not seen, in one transaction (after `lock`, a
/// statement that serialises gateways starting at once). A database whose schema is newer
/// than this build is refused: this build would misread it.
async fn migrate(conn: &Conn, migrations: &[(i64, &str, &str)], lock: Option<&str>) -> Result<()> {
    let tx = write_transaction(conn).await?;
    if let Some(lock) = lock {
        tx.query(lock, ()).await?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        (),
    )
    .await?;
    let current = query_i64(&tx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", ()).await?;
    let known = migrations.last().map_or(0, |(v, _, _)| *v);
    if current > known {
        return Err(VaultError::config(format!(
            "VAULT_DB_URL: the database's schema (version {current}) is newer than this build of Vault knows \
             (version {known}); run the newer Vault, or restore a backup made for this one"
        )));
    }
    for (version, name, sql) in migrations.iter().filter(|(v, _, _)| *v > current) {
        tx.execute_batch(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            sql::params![*version, *name, crate::time::now_rfc3339()],
        )
        .await?;
        tracing::info!(version, name, "applied database migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Reads a text column into its type. A value the type refuses means the database was
/// changed by hand, which is an internal error, not the caller's.
pub(crate) fn parse_column<T: std::str::FromStr>(row: &Row, index: i32, what: &str) -> Result<T> {
    let raw: String = row.get(index)?;
    raw.parse().map_err(|_| VaultError::internal(what, format!("unexpected stored value `{raw}`")))
}

/// Maps every row of a result with `from_row`.
pub(crate) async fn collect_rows<T>(mut rows: Rows, from_row: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push(from_row(&row)?);
    }
    Ok(out)
}

/// Reads the first column of the first row as an integer.
pub(crate) async fn query_i64(conn: &Conn, sql: &str, params: impl sql::Params) -> Result<i64> {
    let mut rows = conn.query(sql, params).await?;
    match rows.next().await? {
        Some(row) => Ok(row.get(0)?),
        None => Err(VaultError::internal("reading a number from the database", sql)),
    }
}

/// A fresh database for a test: embedded, or on the test PostgreSQL server when
/// `VAULT_TEST_DB=postgres` (the test command runs the suite both ways).
#[cfg(test)]
pub(crate) async fn test_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let location = match std::env::var("VAULT_TEST_DB").as_deref() {
        Ok("postgres") => match test_cluster::database().await {
            Some(url) => DbLocation::Postgres { url, local: dir.path().join("vault-postgres") },
            None => DbLocation::Local(dir.path().join("vault.db")),
        },
        _ => DbLocation::Local(dir.path().join("vault.db")),
    };
    let db = Db::open(&location).await.unwrap();
    (dir, db)
}

/// A fresh embedded database, for tests of what only the embedded engine has.
#[cfg(test)]
pub(crate) async fn test_sqlite_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sql::params;

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
    async fn a_database_from_before_the_account_indexes_gets_its_audit_rows_into_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let database = libsql::Builder::new_local(&path).build().await.unwrap();
        let conn = Conn::Lite(database.connect().unwrap());
        let before = MIGRATIONS.iter().position(|(_, name, _)| *name == "audit_account_index").unwrap();
        migrate(&conn, &MIGRATIONS[..before], None).await.unwrap();
        conn.execute_batch(
            "INSERT INTO audit_log (id, timestamp, request_id, method, path, key_prefix, user_id, status, latency_ms) VALUES \
             (1, '2026-01-01T00:00:00.000Z', 'a', 'GET', '/v1/models', 'k1', 'u1', 200, 1), \
             (2, '2026-01-01T00:00:01.000Z', 'b', 'GET', '/v1/models', 'k2', NULL, 200, 1), \
             (3, '2026-01-01T00:00:02.000Z', 'c', 'GET', '/v1/models', NULL, 'u1', 401, 1);",
        )
        .await
        .unwrap();
        drop((conn, database));

        let db = Db::open(&DbLocation::Local(path)).await.unwrap();
        let conn = db.connect().await.unwrap();
        assert_eq!(query_i64(&conn, "SELECT through FROM audit_indexed", ()).await.unwrap(), 3);
        let ids = |user: Option<&str>, key: Option<&str>| {
            let filter = crate::model::audit::AuditFilter {
                user_id: user.map(Into::into),
                key_prefix: key.map(Into::into),
                ..Default::default()
            };
            let conn = &conn;
            async move {
                let rows = audit::query(conn, &filter, 0, 10, false).await.unwrap();
                rows.iter().map(|e| e.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(Some("u1"), None).await, [1, 3]);
        assert_eq!(ids(None, Some("k2")).await, [2]);
        assert_eq!(ids(None, Some("k1")).await, [1]);
    }

    #[tokio::test]
    async fn lists_insert_many_rows_at_once_on_postgres_and_are_refused_by_the_embedded_engine() {
        let rows = vec![params![1, "one", Option::<i64>::None], params![2, Option::<&str>::None, 20]];
        let columns = sql::columns(rows).unwrap();
        assert!(sql::columns(vec![params![1, 2], params![3]]).is_err(), "rows of different widths");
        assert_eq!(columns[0], Value::List(vec![Value::Integer(1), Value::Integer(2)]));
        assert_eq!(columns[1], Value::List(vec![Value::Text("one".into()), Value::Null]));

        let (_dir, db) = test_db().await;
        let conn = db.connect().await.unwrap();
        conn.execute_batch("CREATE TABLE listed (id BIGINT PRIMARY KEY, name TEXT, n BIGINT)").await.unwrap();
        match db.dialect() {
            Dialect::Sqlite => {
                let err =
                    conn.execute("INSERT INTO listed (id) VALUES (?1)", [Value::List(vec![])]).await.err().unwrap();
                assert!(err.message.contains("binding a parameter"), "{}", err.message);
            }
            Dialect::Postgres => {
                let insert =
                    "INSERT INTO listed (id, name, n) SELECT * FROM UNNEST(?1::bigint[], ?2::text[], ?3::bigint[])";
                assert_eq!(conn.execute(insert, columns).await.unwrap(), 2);
                // A list where one value is expected is refused, not sent.
                let err = conn.execute("SELECT ?1::bigint", [Value::List(vec![Value::Integer(1)])]).await;
                assert!(err.is_err());
                let mut stored = conn.query("SELECT id, name, n FROM listed ORDER BY id", ()).await.unwrap();
                let first = stored.next().await.unwrap().unwrap();
                assert_eq!(
                    (first.get::<i64>(0).unwrap(), first.get::<Option<String>>(1).unwrap()),
                    (1, Some("one".into()))
                );
                assert_eq!(first.get::<Option<i64>>(2).unwrap(), None);
                let second = stored.next().await.unwrap().unwrap();
                assert_eq!(
                    (second.get::<Option<String>>(1).unwrap(), second.get::<Option<i64>>(2).unwrap()),
                    (None, Some(20))
                );
            }
        }
    }

    #[tokio::test]
    async fn a_batch_asks_whether_to_give_way_between_its_statements_and_runs_them_all() {
        let (_dir, db) = test_sqlite_db().await;
        let conn = db.connect().await.unwrap();
        conn.execute_batch("CREATE TABLE counted (n INTEGER)").await.unwrap();
        let count = "INSERT INTO counted SELECT COUNT(*) FROM \
                     (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) SELECT x FROM c)";
        let insert = conn.prepare(count).await.unwrap();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        for answer in [true, false] {
            let runs = (0..3).map(|_| (&insert, params![20_000])).collect();
            let ask = || {
                asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                answer
            };
            conn.run_all(runs, &mut sql::GiveWay::at_every_point(&ask)).await.unwrap();
        }
        assert_eq!(asked.into_inner(), 4, "asked between the statements of each batch, never before the first");
        assert_eq!(query_i64(&conn, "SELECT SUM(n) FROM counted", ()).await.unwrap(), 6 * 20_000);
    }

    #[tokio::test]
    async fn remote_urls_are_refused_with_a_clear_line() {
        let err = Db::open(&DbLocation::Remote { url: "libsql://x".into(), auth_token: None }).await.err().unwrap();
        assert!(err.message.starts_with("VAULT_DB_URL"));
    }
}
