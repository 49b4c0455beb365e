//! SQL for the `audit_log` table.

use std::sync::atomic::Ordering;

use crate::storage::sql::params;
use crate::storage::{Conn, Row, Statement, Value};

use crate::audit::chain::{CHECKPOINT_KIND, CHECKPOINT_ROWS, ChainedRow, Head, START, mac};
use crate::error::{Result, VaultError};
use crate::model::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::storage::Dialect;

/// The columns of an entry after its id.
macro_rules! fields {
    () => {
        "timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, tokens_input, \
         tokens_output, completed, error_code, repeat_count, queued_ms"
    };
}
const COLUMNS: &str = concat!("id, ", fields!());

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

/// How many rows the indexes by user and by key may lag behind the table. They are tables
/// of their own (`audit_rows_by_user`, `audit_rows_by_key`), brought up to date by the
/// writer when this many rows have come since the last time, with statements that add the
/// rows sorted by account. As indexes of `audit_log`, every commit changed a page of each
/// for every user and key in the batch; now thousands of rows change a few pages per
/// account. With 50 users, the writer's work per row fell by a fifth to two fifths and the
/// bytes written per request by half to two thirds (every 2,048 rows saved less). Readers
/// find the rows up to `audit_indexed.through` through these tables, and scan the table for
/// the rows after it: at most this many and a batch.
pub(crate) const INDEX_EVERY: i64 = 8192;
/// The rows a statement of bringing the indexes up to date takes: between statements the
/// writer can give way to requests, and a page the pieces share is still written once, at
/// the commit. (8,192 rows in one statement took 15–20 ms, 1,024 rows 1–2 ms; 128 take
/// 0.1–0.25 ms, and cost no more per row.)
const INDEX_PIECE: i64 = 128;

/// Adds the rows after ?1 up to ?2 to the index `by`, sorted by account.
fn index_rows(by: Account) -> String {
    let ((index, entry), row) = (by.index(), by.row_column());
    format!(
        "INSERT INTO {index} ({entry}, row_id) SELECT {row}, id FROM audit_log \
         WHERE id > ?1 AND id <= ?2 AND {row} IS NOT NULL ORDER BY {row}, id ON CONFLICT DO NOTHING"
    )
}
/// Moves the mark to ?1.
const MARK_INDEXED: &str = "INSERT INTO audit_indexed (only_row, through) VALUES (1, ?1) \
                            ON CONFLICT (only_row) DO UPDATE SET through = ?1 WHERE audit_indexed.through < ?1";

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
    index_users: Statement,
    index_keys: Statement,
    mark_indexed: Statement,
    /// The indexes' mark as stored after the last commit (on PostgreSQL, read again in each
    /// transaction: other gateways move it too).
    indexed_through: std::sync::atomic::AtomicI64,
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
        let indexed_through = index_mark_at_most_head(&conn).await?;
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
            index_users: conn.prepare(&index_rows(Account::User)).await?,
            index_keys: conn.prepare(&index_rows(Account::Key)).await?,
            mark_indexed: conn.prepare(MARK_INDEXED).await?,
            indexed_through: indexed_through.into(),
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
    /// [`GiveWay`](super::sql::GiveWay)), between the rows it prepares and between its
    /// statements.
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
            // and the indexes' mark as stored.
            written = chain_head(&tx).await.map(|stored| head = stored);
            if written.is_ok() {
                written = indexed_through(&tx).await.map(|mark| self.indexed_through.store(mark, Ordering::Relaxed));
            }
        }
        let written = match written {
            Ok(()) => {
                let mut give_way = super::sql::GiveWay::new(give_way);
                self.write_rows(&conn, records, last_used, journal_seq, &mut head, &mut give_way).await
            }
            Err(err) => Err(err),
        };
        match written {
            Ok(indexed) => match tx.commit().await {
                Ok(()) => {
                    if indexed {
                        self.indexed_through.store(head.last_id, Ordering::Relaxed);
                    }
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

    /// Adds `records` after `head` (and the rest of the batch) to the transaction, and
    /// moves `head` on; says whether it brought the indexes by user and by key up to date.
    async fn write_rows(
        &self,
        conn: &Conn,
        records: &[&AuditRecord],
        last_used: &[(i64, &str)],
        journal_seq: Option<u64>,
        head: &mut Head,
        give_way: &mut super::sql::GiveWay<'_>,
    ) -> Result<bool> {
        let mut rows = Vec::with_capacity(records.len());
        let mut signatures = Vec::new();
        for r in records {
            // Hashing and copying a large batch's rows takes a millisecond or more.
            give_way.pause_point();
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
        let mark = self.indexed_through.load(Ordering::Relaxed);
        let indexing = head.last_id - mark >= INDEX_EVERY;
        if indexing {
            let mut from = mark;
            while from < head.last_id {
                let to = head.last_id.min(from + INDEX_PIECE);
                runs.push((&self.index_users, params![from, to]));
                runs.push((&self.index_keys, params![from, to]));
                from = to;
            }
            runs.push((&self.mark_indexed, params![head.last_id]));
        }
        // One pipeline on PostgreSQL; on the embedded database, giving way to requests.
        conn.run_all(runs, give_way).await?;
        self.rollups.prune(conn).await?;
        Ok(indexing)
    }
}

/// The mark up to which the indexes by user and by key hold the rows (0 when it is lost,
/// which makes readers look at every row).
async fn indexed_through(conn: &Conn) -> Result<i64> {
    super::query_i64(conn, "SELECT COALESCE((SELECT through FROM audit_indexed), 0)", ()).await
}

/// The indexes' mark, first lowered to the chain's head if it is past it: rows after the
/// head were deleted by hand, and their ids will be given to new rows, which are not in the
/// indexes yet. Their entries go too.
async fn index_mark_at_most_head(conn: &Conn) -> Result<i64> {
    let tx = super::write_transaction(conn).await?;
    let head = chain_head(&tx).await?.last_id;
    let mark = indexed_through(&tx).await?;
    if mark > head {
        tracing::warn!(mark, head, "audit rows the indexes by user and key hold are gone; indexing them again");
        for by in [Account::User, Account::Key] {
            let (index, _) = by.index();
            tx.execute(&format!("DELETE FROM {index} WHERE row_id > ?1"), [head]).await?;
        }
        tx.execute("UPDATE audit_indexed SET through = ?1", [head]).await?;
    }
    tx.commit().await?;
    Ok(mark.min(head))
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
    let pruned = "SELECT id FROM audit_log WHERE id <= ?1 ORDER BY id LIMIT ?2";
    for by in [Account::User, Account::Key] {
        let ((index, entry), row) = (by.index(), by.row_column());
        let sql = format!(
            "DELETE FROM {index} WHERE ({entry}, row_id) IN (SELECT {row}, id FROM audit_log WHERE id IN ({pruned}))"
        );
        tx.execute(&sql, params![last, limit]).await?;
    }
    let deleted = tx.execute(&format!("DELETE FROM audit_log WHERE id IN ({pruned})"), params![last, limit]).await?;
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

/// The conditions of a filter and their bound values. Values are always bound, never
/// formatted in.
fn clause(filter: &AuditFilter) -> (Vec<String>, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |value: Value| {
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
    (conditions, values)
}

/// Where a read of the audit trail looks: the whole table; or, for a filter on a user or a
/// key, that account's index for the rows up to the mark, and the table for the rows after
/// it (see [`INDEX_EVERY`]). The two parts are read with one mark, taken before either, so
/// that a fold in between neither hides a row nor shows one twice. (A writer that starts
/// after rows past the mark were deleted by hand lowers it: a read under way then can miss
/// the rows written since, once.)
enum Source<'a> {
    Table,
    Indexed { by: Account, account: &'a str, through: i64 },
    After(i64),
}

/// What an index of the audit trail is by.
#[derive(Clone, Copy)]
enum Account {
    User,
    Key,
}

impl Account {
    /// The index's table and the column of its account.
    fn index(self) -> (&'static str, &'static str) {
        match self {
            Account::User => ("audit_rows_by_user", "owner"),
            Account::Key => ("audit_rows_by_key", "prefix"),
        }
    }

    /// The column of `audit_log` the index is made from.
    fn row_column(self) -> &'static str {
        match self {
            Account::User => "user_id",
            Account::Key => "key_prefix",
        }
    }
}

impl Source<'_> {
    /// The parts to read for `filter`.
    async fn for_filter<'a>(conn: &Conn, filter: &'a AuditFilter) -> Result<Vec<Source<'a>>> {
        let (by, account) = match (&filter.user_id, &filter.key_prefix) {
            (Some(user), _) => (Account::User, user),
            (None, Some(key)) => (Account::Key, key),
            (None, None) => return Ok(vec![Source::Table]),
        };
        let through = indexed_through(conn).await?;
        Ok(vec![Source::Indexed { by, account, through }, Source::After(through)])
    }

    /// The column that holds a row's id.
    fn id(&self) -> &'static str {
        match self {
            Source::Indexed { .. } => "i.row_id",
            Source::Table | Source::After(_) => "id",
        }
    }

    /// A SELECT of the id and `columns` (each after a comma) of the rows here that match
    /// `filter` and, with a cursor, whose id is before or after it (`<` or `>` the value);
    /// and its bound values.
    fn select(&self, filter: &AuditFilter, columns: &str, cursor: Option<(&str, i64)>) -> (String, Vec<Value>) {
        // The index answers for its account here (an entry is made from the row's own
        // column, and `query` checks the rows it reads against the filter's account).
        let filter = match self {
            Source::Indexed { by: Account::User, .. } => &AuditFilter { user_id: None, ..filter.clone() },
            Source::Indexed { by: Account::Key, .. } => &AuditFilter { key_prefix: None, ..filter.clone() },
            Source::Table | Source::After(_) => filter,
        };
        let (conditions, mut values) = clause(filter);
        let mut bind = |value: Value| {
            values.push(value);
            format!("?{}", values.len())
        };
        let mut own = Vec::new();
        let from = match self {
            Source::Table => "audit_log".to_string(),
            Source::After(through) => {
                own.push(format!("id > {}", bind((*through).into())));
                "audit_log".to_string()
            }
            Source::Indexed { by, account, through } => {
                let (index, column) = by.index();
                own.push(format!("i.{column} = {}", bind((*account).into())));
                own.push(format!("i.row_id <= {}", bind((*through).into())));
                // Counting an account's rows reads its index alone (retention removes the
                // entries of the rows it removes).
                if columns.is_empty() && conditions.is_empty() {
                    format!("{index} AS i")
                } else {
                    format!("{index} AS i JOIN audit_log ON audit_log.id = i.row_id")
                }
            }
        };
        let id = self.id();
        if let Some((op, at)) = cursor {
            own.push(format!("{id} {op} {}", bind(at.into())));
        }
        let all: Vec<String> = own.into_iter().chain(conditions).collect();
        let clause = if all.is_empty() { "1 = 1".to_string() } else { all.join(" AND ") };
        (format!("SELECT {id} AS id{columns} FROM {from} WHERE {clause}"), values)
    }
}

/// Rows matching `filter` after `after_id` (exclusive), oldest first, or before it, newest
/// first; at most `limit`.
pub async fn query(
    conn: &Conn,
    filter: &AuditFilter,
    after_id: i64,
    limit: u32,
    newest_first: bool,
) -> Result<Vec<AuditEntry>> {
    let (cursor, order) = if newest_first { ("<", "DESC") } else { (">", "ASC") };
    let mut sources = Source::for_filter(conn, filter).await?;
    // The parts do not overlap: in the order asked, one follows the other.
    if newest_first {
        sources.reverse();
    }
    let mut entries = Vec::new();
    for source in &sources {
        let left = i64::from(limit) - entries.len() as i64;
        if left <= 0 {
            break;
        }
        let (rows, mut values) = source.select(filter, concat!(", ", fields!()), Some((cursor, after_id)));
        values.push(left.into());
        let sql = format!("{rows} ORDER BY {} {order} LIMIT ?{}", source.id(), values.len());
        let mut found = super::collect_rows(conn.query(&sql, values).await?, from_row).await?;
        if matches!(source, Source::Indexed { .. }) {
            // The index is trusted for which rows to read, not for whose they are: a row
            // whose account is not the filter's (changed by hand) is not shown.
            found.retain(|e| {
                filter.user_id.as_ref().is_none_or(|user| e.user_id.as_ref() == Some(user))
                    && filter.key_prefix.as_ref().is_none_or(|key| e.key_prefix.as_ref() == Some(key))
            });
        }
        entries.append(&mut found);
    }
    Ok(entries)
}

/// How many rows match `filter`.
pub async fn count_matching(conn: &Conn, filter: &AuditFilter) -> Result<i64> {
    let mut total = 0;
    for source in Source::for_filter(conn, filter).await? {
        let (rows, values) = source.select(filter, "", None);
        total += super::query_i64(conn, &format!("SELECT COUNT(*) FROM ({rows}) AS matching"), values).await?;
    }
    Ok(total)
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

pub async fn count(conn: &Conn) -> Result<i64> {
    super::query_i64(conn, "SELECT COUNT(*) FROM audit_log", ()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_record;

    /// The rows the indexes hold after [`rows_on_both_sides_of_the_mark`].
    const INDEXED: i64 = (INDEX_EVERY / 1000 + 1) * 1000;

    /// Rows written in batches of 1,000 until the indexes by user and by key were brought up
    /// to date, and one batch more, which is only in the table. Three
    /// users and four keys that do not line up with them; the fourth key has no user.
    async fn rows_on_both_sides_of_the_mark(db: &super::super::Db) -> Vec<AuditRecord> {
        let records: Vec<AuditRecord> = (0..INDEXED as usize + 1000)
            .map(|i| AuditRecord {
                user_id: (i % 4 != 3).then(|| format!("user-{}", i % 3)),
                key_prefix: Some(format!("key-{}", i % 4)),
                status: if i % 5 == 0 { 500 } else { 200 },
                ..test_record(i)
            })
            .collect();
        let writer = BatchWriter::new(db, Vec::new()).await.unwrap();
        for batch in records.chunks(1000) {
            writer.write(&batch.iter().collect::<Vec<_>>(), &[], None).await.unwrap();
        }
        let conn = db.connect().await.unwrap();
        let through = super::super::query_i64(&conn, "SELECT through FROM audit_indexed", ()).await.unwrap();
        assert_eq!(through, INDEXED, "brought up to date with the first batch at least {INDEX_EVERY} rows on");
        records
    }

    #[tokio::test]
    async fn a_filter_by_user_or_key_finds_its_rows_whether_indexed_yet_or_not_and_no_others() {
        let (_dir, db) = super::super::test_db().await;
        let records = rows_on_both_sides_of_the_mark(&db).await;
        let conn = db.connect().await.unwrap();
        let filters = [
            AuditFilter { user_id: Some("user-1".into()), ..AuditFilter::default() },
            AuditFilter { key_prefix: Some("key-2".into()), ..AuditFilter::default() },
            AuditFilter { key_prefix: Some("key-3".into()), ..AuditFilter::default() },
            AuditFilter { user_id: Some("user-0".into()), key_prefix: Some("key-0".into()), ..AuditFilter::default() },
            AuditFilter { user_id: Some("user-2".into()), status: Some(500), ..AuditFilter::default() },
            AuditFilter { user_id: Some("nobody".into()), ..AuditFilter::default() },
        ];
        for filter in &filters {
            // Ids are given in order from 1.
            let expected: Vec<i64> = (1..)
                .zip(&records)
                .filter(|(_, r)| {
                    filter.user_id.as_ref().is_none_or(|u| r.user_id.as_ref() == Some(u))
                        && filter.key_prefix.as_ref().is_none_or(|k| r.key_prefix.as_ref() == Some(k))
                        && filter.status.is_none_or(|s| r.status == s)
                })
                .map(|(id, _)| id)
                .collect();
            let oldest_first: Vec<i64> =
                query(&conn, filter, 0, 20_000, false).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(oldest_first, expected, "{filter:?}");
            // Newest first, a page at a time from a cursor.
            let (mut newest_first, mut before) = (Vec::new(), i64::MAX);
            loop {
                let page = query(&conn, filter, before, 397, true).await.unwrap();
                assert!(page.len() <= 397, "{filter:?}");
                let Some(last) = page.last() else { break };
                before = last.id;
                newest_first.extend(page.iter().map(|e| e.id));
            }
            assert!(newest_first.iter().rev().eq(expected.iter()), "{filter:?}");
            assert_eq!(count_matching(&conn, filter).await.unwrap(), expected.len() as i64, "{filter:?}");
        }
        // The index's entries point at the rows they claim: every row of key-2 is found.
        let all_of_key_2 = query(&conn, &filters[1], 0, 20_000, false).await.unwrap();
        assert!(all_of_key_2.iter().all(|e| e.key_prefix.as_deref() == Some("key-2")));
        assert_eq!(all_of_key_2.len(), records.len() / 4);

        // A row given to another user by hand is not shown to the user its entry names.
        conn.execute("UPDATE audit_log SET user_id = 'user-2' WHERE id = 5", ()).await.unwrap();
        let user_1 = query(&conn, &filters[0], 0, 20_000, false).await.unwrap();
        assert!(user_1.iter().all(|e| e.user_id.as_deref() == Some("user-1")));
        assert!(!user_1.iter().any(|e| e.id == 5));
    }

    #[tokio::test]
    async fn rows_given_the_ids_of_rows_deleted_past_the_mark_are_found_by_their_account() {
        let (_dir, db) = super::super::test_db().await;
        rows_on_both_sides_of_the_mark(&db).await;
        // By hand, the newest indexed rows go, and the checkpoints that vouched for them: the
        // next rows take their ids.
        let conn = db.connect().await.unwrap();
        let cut = INDEXED - 500;
        conn.execute("DELETE FROM audit_log WHERE id > ?1", [cut]).await.unwrap();
        conn.execute("DELETE FROM audit_checkpoints WHERE row_id > ?1", [cut]).await.unwrap();

        let writer = BatchWriter::new(&db, Vec::new()).await.unwrap();
        let records: Vec<AuditRecord> = (0..600)
            .map(|i| AuditRecord {
                user_id: Some("newcomer".into()),
                key_prefix: Some("key-new".into()),
                ..test_record(i)
            })
            .collect();
        writer.write(&records.iter().collect::<Vec<_>>(), &[], None).await.unwrap();
        let expected: Vec<i64> = (cut + 1..=cut + 600).collect();
        for filter in [
            AuditFilter { user_id: Some("newcomer".into()), ..AuditFilter::default() },
            AuditFilter { key_prefix: Some("key-new".into()), ..AuditFilter::default() },
        ] {
            let ids: Vec<i64> = query(&conn, &filter, 0, 1000, false).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(ids, expected, "{filter:?}");
        }
        // The entries of the rows deleted went with them.
        let after_cut = "SELECT COUNT(*) FROM audit_rows_by_user WHERE row_id > ?1 AND owner <> 'newcomer'";
        assert_eq!(super::super::query_i64(&conn, after_cut, [cut]).await.unwrap(), 0);
    }
}
