//! SQL for the `audit_log` table.

use crate::storage::sql::params;
use crate::storage::{Conn, Row, Statement};

use crate::audit::chain::{CHECKPOINT_KIND, CHECKPOINT_ROWS, ChainedRow, Head, START, mac};
use crate::error::{Result, VaultError};
use crate::model::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::storage::Dialect;

const COLUMNS: &str = "id, timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, \
                       tokens_input, tokens_output, completed, error_code, repeat_count, queued_ms";

fn opt_u64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

const INSERT: &str = "INSERT INTO audit_log (timestamp, request_id, method, path, key_prefix, user_id, model, status, \
                      latency_ms, tokens_input, tokens_output, completed, error_code, repeat_count, id, hash, queued_ms) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// [`INSERT`] of a whole batch in one statement, on PostgreSQL: each parameter is an array
/// that holds one column of every row. One statement instead of one per row takes most of
/// the work of a batch off the database server.
const INSERT_MANY: &str = "INSERT INTO audit_log (timestamp, request_id, method, path, key_prefix, user_id, model, \
                           status, latency_ms, tokens_input, tokens_output, completed, error_code, repeat_count, id, \
                           hash, queued_ms) \
                           SELECT * FROM UNNEST(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::text[], \
                           ?6::text[], ?7::text[], ?8::bigint[], ?9::bigint[], ?10::bigint[], ?11::bigint[], \
                           ?12::bigint[], ?13::text[], ?14::bigint[], ?15::bigint[], ?16::text[], ?17::bigint[])";

const CHECKPOINT: &str = "INSERT INTO audit_checkpoints (row_id, kind, hash, mac, created_at) \
                          VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (row_id, kind) DO NOTHING";

/// Moves a journal's (?2) committed mark forward to ?1.
const JOURNAL_MARK: &str = "INSERT INTO audit_journal (id, committed_seq) VALUES (?2, ?1) \
                            ON CONFLICT (id) DO UPDATE SET committed_seq = ?1 WHERE audit_journal.committed_seq < ?1";

/// Which journal's mark this box moves. The embedded database has one journal beside it
/// (1). Gateways sharing PostgreSQL each keep their own journal, named by a random number
/// kept in the box's data directory, so one box's mark never stands for another's rows.
pub fn journal_id(db: &super::Db) -> Result<i64> {
    if db.dialect() == Dialect::Sqlite {
        return Ok(1);
    }
    let mut name = db.path().as_os_str().to_owned();
    name.push("-journal-id");
    let path = std::path::PathBuf::from(name);
    let unreadable = |e: std::io::Error| VaultError::config(format!("VAULT_DATA_DIR: {}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| VaultError::config(format!("VAULT_DATA_DIR: {} does not hold a journal id", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| VaultError::internal("naming the audit journal", e))?;
            // Positive and never 1, the embedded database's journal.
            let id = (i64::from_le_bytes(bytes) & i64::MAX).max(2);
            // Written whole or not at all: a half-written id would stop the next start.
            crate::models::gpu_config::write_whole(&path, format!("{id}\n").as_bytes()).map_err(unreadable)?;
            Ok(id)
        }
        Err(e) => Err(unreadable(e)),
    }
}

/// The journal sequence number up to which a journal's rows are committed.
pub async fn journal_committed_seq(conn: &Conn, journal: i64) -> Result<u64> {
    let seq =
        super::query_i64(conn, "SELECT COALESCE(MAX(committed_seq), 0) FROM audit_journal WHERE id = ?1", [journal])
            .await?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Writes batches of audit rows, their usage rollups and keys' `last_used_at`, through
/// statements prepared once: the audit writer runs them for every request, and preparing
/// them anew was a large share of its cost.
pub struct BatchWriter {
    /// Replaced by a new connection from the pool when PostgreSQL closed it (a restart, a
    /// failover); the statements are held by their text there, so they still apply.
    conn: tokio::sync::RwLock<Conn>,
    pool: Option<deadpool_postgres::Pool>,
    /// [`INSERT`] a row at a time on the embedded database, [`INSERT_MANY`] on PostgreSQL.
    insert: Statement,
    checkpoint: Statement,
    /// Signs the chain's checkpoints (see `audit::chain`).
    chain_key: Vec<u8>,
    /// Where the chain stands after the last commit.
    head: std::sync::Mutex<Head>,
    rollups: super::usage::Rollups,
    touch_last_used: Statement,
    journal_mark: Statement,
    journal: i64,
}

impl BatchWriter {
    /// A writer on its own connection that chains the rows it writes and signs checkpoints
    /// with `chain_key`. On the embedded database it must be the only writer of audit rows:
    /// it numbers them. On PostgreSQL the writers of several gateways take turns.
    pub async fn new(db: &super::Db, chain_key: Vec<u8>) -> Result<BatchWriter> {
        let conn = db.connect().await?;
        // The writer checkpoints when it chooses (between commits), never inside one.
        super::disable_autocheckpoint(&conn).await?;
        let head = chain_head(&conn).await?;
        Ok(BatchWriter {
            insert: conn
                .prepare(match conn.dialect() {
                    Dialect::Sqlite => INSERT,
                    Dialect::Postgres => INSERT_MANY,
                })
                .await?,
            checkpoint: conn.prepare(CHECKPOINT).await?,
            chain_key,
            head: std::sync::Mutex::new(head),
            rollups: super::usage::Rollups::prepare(&conn).await?,
            touch_last_used: conn.prepare(super::keys::TOUCH_LAST_USED).await?,
            journal_mark: conn.prepare(JOURNAL_MARK).await?,
            journal: journal_id(db)?,
            conn: tokio::sync::RwLock::new(conn),
            pool: db.postgres_pool(),
        })
    }

    /// Stores a batch of records, moves `last_used_at` of the keys in `last_used` and, with
    /// `journal_seq`, the journal's committed mark, in one transaction: either all of the
    /// batch is stored or none of it.
    pub async fn write(
        &self,
        records: &[&AuditRecord],
        last_used: &[(i64, &str)],
        journal_seq: Option<u64>,
    ) -> Result<()> {
        self.write_giving_way(records, last_used, journal_seq, &|| false).await
    }

    /// [`write`](Self::write) from a thread that shares the cores with requests: on the
    /// embedded database it gives way to them while `give_way` says so (see
    /// `Conn::run_all`).
    pub async fn write_giving_way(
        &self,
        records: &[&AuditRecord],
        last_used: &[(i64, &str)],
        journal_seq: Option<u64>,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        self.renew_if_closed().await;
        let conn = self.conn.read().await;
        let tx = super::write_transaction(&conn).await?;
        let mut written = Ok(());
        let mut head = self.head.lock().map(|h| h.clone()).unwrap_or_default();
        if conn.dialect() == Dialect::Postgres {
            // Other gateways write too, each in its turn (the write lock): follow the chain
            // as stored.
            written = chain_head(&tx).await.map(|stored| head = stored);
        }
        if written.is_ok() {
            written = self.write_rows(&conn, records, last_used, journal_seq, &mut head, give_way).await;
        }
        match written {
            Ok(()) => match tx.commit().await {
                Ok(()) => {
                    // The chain moves on only with rows that are stored.
                    if let Ok(mut stored) = self.head.lock() {
                        *stored = head;
                    }
                    Ok(())
                }
                Err(err) => {
                    self.reload_head(&conn).await;
                    Err(err)
                }
            },
            Err(err) => {
                // Roll back here rather than on drop, where a failure would panic.
                let _ = tx.rollback().await;
                self.reload_head(&conn).await;
                Err(err)
            }
        }
    }

    /// Takes the chain's head from the database, for the next attempt to follow the chain
    /// as stored (a commit reported failed that went through, a row that took the next id).
    async fn reload_head(&self, conn: &Conn) {
        if let (Ok(stored), Ok(mut head)) = (chain_head(conn).await, self.head.lock()) {
            *head = stored;
        }
    }

    /// Takes a new connection when PostgreSQL closed this one; a failure to connect is left
    /// for the write to report (and the writer to retry).
    async fn renew_if_closed(&self) {
        let Some(pool) = &self.pool else { return };
        if !self.conn.read().await.is_closed() {
            return;
        }
        if let Ok(client) = super::postgres::connect(pool).await {
            *self.conn.write().await = Conn::Pg(Box::new(client));
            tracing::warn!("the audit writer's database connection was closed; writing on a new one");
        }
    }

    /// Copies committed pages from the WAL into the database file (PASSIVE: readers are
    /// not waited for). Run by the writer between its commits, so that with no commit
    /// racing it, it finishes the WAL and the next commit starts it over.
    pub async fn checkpoint(&self) -> Result<()> {
        super::checkpoint(&*self.conn.read().await).await
    }

    /// The journal whose mark this writer moves (see [`journal_id`]).
    pub fn journal(&self) -> i64 {
        self.journal
    }

    async fn write_rows(
        &self,
        conn: &Conn,
        records: &[&AuditRecord],
        last_used: &[(i64, &str)],
        journal_seq: Option<u64>,
        head: &mut Head,
        give_way: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        let mut rows = Vec::with_capacity(records.len());
        let mut signatures = Vec::new();
        for r in records {
            let id = head.last_id + 1;
            if head.last_hash.is_empty() {
                // The chain begins here: signed, so that a start is never made up.
                signatures.push((id - 1, START, String::new()));
            }
            let hash = ChainedRow::of(id, r).hash(&head.last_hash);
            let params = params![
                r.timestamp.as_str(),
                r.request_id.as_str(),
                r.method.as_str(),
                r.path.as_str(),
                r.key_prefix.as_deref(),
                r.user_id.as_deref(),
                r.model.as_deref(),
                i64::from(r.status),
                opt_u64(Some(r.latency_ms)),
                opt_u64(r.tokens_input),
                opt_u64(r.tokens_output),
                i64::from(r.completed),
                r.error_code.map(|code| code.as_str()),
                i64::from(r.repeat_count.0),
                id,
                hash.as_str(),
                opt_u64(r.queued_ms),
            ];
            rows.push(params);
            if id % CHECKPOINT_ROWS == 0 {
                signatures.push((id, CHECKPOINT_KIND, hash.clone()));
            }
            (head.last_id, head.last_hash) = (id, hash);
        }
        let mut runs = Vec::new();
        match conn.dialect() {
            Dialect::Sqlite => runs.extend(rows.into_iter().map(|params| (&self.insert, params))),
            Dialect::Postgres if rows.is_empty() => {}
            Dialect::Postgres => runs.push((&self.insert, super::sql::columns(rows)?)),
        }
        for (row_id, kind, hash) in &signatures {
            let signature = mac(&self.chain_key, kind, *row_id, hash);
            runs.push((
                &self.checkpoint,
                params![*row_id, *kind, hash.as_str(), signature, crate::time::now_rfc3339()],
            ));
        }
        for (key_id, at) in last_used {
            runs.push((&self.touch_last_used, params![*key_id, *at]));
        }
        self.rollups.upserts(records, &mut runs);
        if let Some(seq) = journal_seq {
            runs.push((&self.journal_mark, params![i64::try_from(seq).unwrap_or(i64::MAX), self.journal]));
        }
        // One pipeline on PostgreSQL; on the embedded database, giving way to requests.
        conn.run_all(runs, give_way).await?;
        self.rollups.prune(conn).await
    }
}

/// Where the chain stands in the database: its last row (or the checkpoint of the last row
/// pruned, when every row was), which the next row follows.
async fn chain_head(conn: &Conn) -> Result<Head> {
    let mut rows = conn
        .query(
            "SELECT id, hash FROM ( \
               SELECT * FROM (SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1) AS last_row \
               UNION ALL \
               SELECT * FROM (SELECT row_id AS id, hash FROM audit_checkpoints ORDER BY row_id DESC LIMIT 1) AS last_pruned) \
             AS heads ORDER BY id DESC LIMIT 1",
            (),
        )
        .await?;
    Ok(match rows.next().await? {
        Some(row) => Head { last_id: row.get(0)?, last_hash: row.get::<Option<String>>(1)?.unwrap_or_default() },
        None => Head::default(),
    })
}

/// Signs a checkpoint at the last row that pruning removes (the chain of the rows left
/// starts from it), and removes the rows up to it, `limit` at a time; gives how many.
pub async fn prune_through(conn: &Conn, last: i64, chain_key: &[u8], limit: u32) -> Result<u64> {
    let tx = super::write_transaction(conn).await?;
    let mut rows = tx.query("SELECT hash FROM audit_log WHERE id = ?1", [last]).await?;
    if let Some(row) = rows.next().await?
        && let Some(hash) = row.get::<Option<String>>(0)?
    {
        let signature = mac(chain_key, START, last, &hash);
        tx.execute(CHECKPOINT, params![last, START, hash.as_str(), signature, crate::time::now_rfc3339()]).await?;
        // The rows the older records vouched for go; the chain now starts after this row.
        tx.execute("DELETE FROM audit_checkpoints WHERE row_id < ?1", [last]).await?;
    }
    drop(rows);
    let deleted = tx
        .execute(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE id <= ?1 ORDER BY id LIMIT ?2)",
            params![last, limit],
        )
        .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The id of the newest row that can be pruned at `before`: the rows before the first one
/// still kept, so that what is left is a whole chain. A stream that began before the
/// cut-off but was stored after newer rows stays until they go.
pub async fn last_prunable(conn: &Conn, before: &str) -> Result<Option<i64>> {
    let last = super::query_i64(
        conn,
        "SELECT COALESCE((SELECT MIN(id) FROM audit_log WHERE timestamp >= ?1), \
         (SELECT MAX(id) + 1 FROM audit_log), 0) - 1",
        [before],
    )
    .await?;
    let first = super::query_i64(conn, "SELECT COALESCE(MIN(id), 0) FROM audit_log", ()).await?;
    Ok((last >= first && last > 0).then_some(last))
}

fn from_row(row: &Row) -> Result<AuditEntry> {
    let opt = |i: i32| -> Result<Option<u64>> { Ok(row.get::<Option<i64>>(i)?.map(|v| v.max(0) as u64)) };
    Ok(AuditEntry {
        id: row.get(0)?,
        timestamp: row.get(1)?,
        request_id: row.get(2)?,
        method: row.get(3)?,
        path: row.get(4)?,
        key_prefix: row.get(5)?,
        user_id: row.get(6)?,
        model: row.get(7)?,
        status: u16::try_from(row.get::<i64>(8)?).unwrap_or(0),
        latency_ms: opt(9)?.unwrap_or(0),
        tokens_input: opt(10)?,
        tokens_output: opt(11)?,
        completed: row.get::<i64>(12)? != 0,
        error_code: row.get(13)?,
        repeat_count: u32::try_from(row.get::<i64>(14)?).unwrap_or(1),
        queued_ms: opt(15)?,
    })
}

/// The WHERE clause of a filter and its bound values. Values are always bound, never
/// formatted in.
fn clause(filter: &AuditFilter) -> (String, Vec<crate::storage::Value>) {
    let mut values: Vec<crate::storage::Value> = Vec::new();
    let mut bind = |value: crate::storage::Value| {
        values.push(value);
        format!("?{}", values.len())
    };
    let mut conditions = Vec::new();
    if let Some(v) = &filter.user_id {
        conditions.push(format!("user_id = {}", bind(v.clone().into())));
    }
    if let Some(v) = &filter.key_prefix {
        conditions.push(format!("key_prefix = {}", bind(v.clone().into())));
    }
    if let Some(v) = &filter.method {
        conditions.push(format!("method = {}", bind(v.to_ascii_uppercase().into())));
    }
    if let Some(v) = &filter.path_prefix {
        let p = bind(v.clone().into());
        conditions.push(format!("substr(path, 1, length({p})) = {p}"));
    }
    if let Some(v) = filter.status {
        conditions.push(format!("status = {}", bind(i64::from(v).into())));
    }
    if let Some(v) = &filter.model {
        conditions.push(format!("model = {}", bind(v.clone().into())));
    }
    // Bounds are compared as stored timestamps are written (`…T08:00:00.000Z`): as given,
    // `…T08:00:00Z` would sort after every row of its first second.
    let bound = |v: &String| crate::time::normalize_rfc3339(v).unwrap_or_else(|| v.clone());
    if let Some(v) = &filter.since {
        conditions.push(format!("timestamp >= {}", bind(bound(v).into())));
    }
    if let Some(v) = &filter.until {
        conditions.push(format!("timestamp < {}", bind(bound(v).into())));
    }
    (conditions.join(" AND "), values)
}

/// Rows matching `filter`, oldest first from `after_id` (exclusive), at most `limit`.
pub async fn query(
    conn: &Conn,
    filter: &AuditFilter,
    after_id: i64,
    limit: u32,
    newest_first: bool,
) -> Result<Vec<AuditEntry>> {
    let (conditions, mut values) = clause(filter);
    let n = values.len();
    let (cursor, order) = if newest_first { ("<", "DESC") } else { (">", "ASC") };
    let cursor = format!("id {cursor} ?{}", n + 1);
    let clause = if conditions.is_empty() { cursor } else { format!("{conditions} AND {cursor}") };
    values.push(after_id.into());
    values.push(i64::from(limit).into());
    let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE {clause} ORDER BY id {order} LIMIT ?{}", n + 2);
    let rows = conn.query(&sql, values).await?;
    super::collect_rows(rows, from_row).await
}

/// How many rows match `filter`.
pub async fn count_matching(conn: &Conn, filter: &AuditFilter) -> Result<i64> {
    let (conditions, values) = clause(filter);
    let clause = if conditions.is_empty() { "1 = 1".to_string() } else { conditions };
    super::query_i64(conn, &format!("SELECT COUNT(*) FROM audit_log WHERE {clause}"), values).await
}

/// The newest entries first, at most `limit` of them.
pub async fn recent(conn: &Conn, limit: u32) -> Result<Vec<AuditEntry>> {
    let rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?1"), [limit]).await?;
    super::collect_rows(rows, from_row).await
}

/// The entry a request wrote, found by its request id.
pub async fn by_request_id(conn: &Conn, request_id: &str) -> Result<Option<AuditEntry>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log WHERE request_id = ?1"), [request_id]).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

/// Deletes up to `limit` of the oldest rows older than `before` (RFC 3339); returns how
/// many it deleted. Small batches keep each write transaction short.
pub async fn delete_older_than(conn: &Conn, before: &str, limit: u32) -> Result<u64> {
    let deleted = conn
        .execute(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE timestamp < ?1 ORDER BY id LIMIT ?2)",
            params![before, limit],
        )
        .await?;
    Ok(deleted)
}

pub async fn count(conn: &Conn) -> Result<i64> {
    super::query_i64(conn, "SELECT COUNT(*) FROM audit_log", ()).await
}
