//! SQL for the `audit_log` table.

use libsql::{Connection, Row, Statement};

use crate::error::Result;
use crate::model::audit::{AuditEntry, AuditFilter, AuditRecord};

const COLUMNS: &str = "id, timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, \
                       tokens_input, tokens_output, completed, error_code, repeat_count";

fn opt_u64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

const INSERT: &str = "INSERT INTO audit_log (timestamp, request_id, method, path, key_prefix, user_id, model, status, \
                      latency_ms, tokens_input, tokens_output, completed, error_code, repeat_count) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

const JOURNAL_MARK: &str = "UPDATE audit_journal SET committed_seq = ?1 WHERE id = 1 AND committed_seq < ?1";

/// The journal sequence number up to which rows are committed.
pub async fn journal_committed_seq(conn: &Connection) -> Result<u64> {
    let seq = super::query_i64(conn, "SELECT committed_seq FROM audit_journal WHERE id = 1", ()).await?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Runs a prepared statement once and leaves it ready for the next run.
pub(crate) async fn run(statement: &Statement, params: impl libsql::params::IntoParams) -> Result<()> {
    statement.reset();
    let outcome = statement.execute(params).await;
    statement.reset();
    outcome?;
    Ok(())
}

/// Writes batches of audit rows, their usage rollups and keys' `last_used_at`, through
/// statements prepared once: the audit writer runs them for every request, and preparing
/// them anew was a large share of its cost.
pub struct BatchWriter {
    conn: Connection,
    insert: Statement,
    rollups: super::usage::Rollups,
    touch_last_used: Statement,
    journal_mark: Statement,
}

impl BatchWriter {
    pub async fn new(conn: Connection) -> Result<BatchWriter> {
        Ok(BatchWriter {
            insert: conn.prepare(INSERT).await?,
            rollups: super::usage::Rollups::prepare(&conn).await?,
            touch_last_used: conn.prepare(super::keys::TOUCH_LAST_USED).await?,
            journal_mark: conn.prepare(JOURNAL_MARK).await?,
            conn,
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
        let tx = super::write_transaction(&self.conn).await?;
        let mut written = self.write_rows(records, last_used).await;
        if let (Ok(()), Some(seq)) = (&written, journal_seq) {
            written = run(&self.journal_mark, [i64::try_from(seq).unwrap_or(i64::MAX)]).await;
        }
        match written {
            Ok(()) => Ok(tx.commit().await?),
            Err(err) => {
                // Roll back here rather than on drop, where a failure would panic.
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }

    /// Copies committed pages from the WAL into the database file (PASSIVE: readers are
    /// not waited for). Run by the writer between its commits, so that with no commit
    /// racing it, it finishes the WAL and the next commit starts it over.
    pub async fn checkpoint(&self) -> Result<()> {
        super::checkpoint(&self.conn).await
    }

    async fn write_rows(&self, records: &[&AuditRecord], last_used: &[(i64, &str)]) -> Result<()> {
        for r in records {
            run(
                &self.insert,
                libsql::params![
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
                ],
            )
            .await?;
        }
        self.rollups.add(&self.conn, records).await?;
        for (key_id, at) in last_used {
            run(&self.touch_last_used, libsql::params![*key_id, *at]).await?;
        }
        Ok(())
    }
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
    })
}

/// The WHERE clause of a filter and its bound values. Values are always bound, never
/// formatted in.
fn clause(filter: &AuditFilter) -> (String, Vec<libsql::Value>) {
    let mut values: Vec<libsql::Value> = Vec::new();
    let mut bind = |value: libsql::Value| {
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
    conn: &Connection,
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
pub async fn count_matching(conn: &Connection, filter: &AuditFilter) -> Result<i64> {
    let (conditions, values) = clause(filter);
    let clause = if conditions.is_empty() { "1".to_string() } else { conditions };
    super::query_i64(conn, &format!("SELECT COUNT(*) FROM audit_log WHERE {clause}"), values).await
}

/// The newest entries first, at most `limit` of them.
pub async fn recent(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?1"), [limit]).await?;
    super::collect_rows(rows, from_row).await
}

/// The entry a request wrote, found by its request id.
pub async fn by_request_id(conn: &Connection, request_id: &str) -> Result<Option<AuditEntry>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log WHERE request_id = ?1"), [request_id]).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

/// Deletes up to `limit` of the oldest rows older than `before` (RFC 3339); returns how
/// many it deleted. Small batches keep each write transaction short.
pub async fn delete_older_than(conn: &Connection, before: &str, limit: u32) -> Result<u64> {
    let deleted = conn
        .execute(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE timestamp < ?1 ORDER BY id LIMIT ?2)",
            libsql::params![before, limit],
        )
        .await?;
    Ok(deleted)
}

pub async fn count(conn: &Connection) -> Result<i64> {
    super::query_i64(conn, "SELECT COUNT(*) FROM audit_log", ()).await
}
