//! SQL for the `audit_log` table.

use libsql::{Connection, Row};

use crate::audit::{AuditEntry, AuditRecord};
use crate::error::Result;

const COLUMNS: &str = "id, timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, \
                       tokens_input, tokens_output, completed, error_code";

fn opt_u64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Inserts a batch of records, and moves `last_used_at` of the keys in `last_used`, in
/// one transaction: either all of the batch is stored or none of it.
pub async fn insert_batch(conn: &Connection, records: &[&AuditRecord], last_used: &[(i64, &str)]) -> Result<()> {
    let tx = super::write_transaction(conn).await?;
    let insert = tx
        .prepare(
            "INSERT INTO audit_log (timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, \
             tokens_input, tokens_output, completed, error_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .await?;
    for r in records {
        insert
            .execute(libsql::params![
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
                r.error_code.as_deref(),
            ])
            .await?;
        insert.reset();
    }
    drop(insert);
    super::usage::add(&tx, records).await?;
    for (key_id, at) in last_used {
        super::keys::touch_last_used(&tx, *key_id, at).await?;
    }
    tx.commit().await?;
    Ok(())
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
    })
}

/// The newest entries first, at most `limit` of them.
pub async fn recent(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?1"), [limit]).await?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().await? {
        entries.push(from_row(&row)?);
    }
    Ok(entries)
}

/// The entry a request wrote, found by its request id.
pub async fn by_request_id(conn: &Connection, request_id: &str) -> Result<Option<AuditEntry>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM audit_log WHERE request_id = ?1"), [request_id]).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

pub async fn count(conn: &Connection) -> Result<i64> {
    super::query_i64(conn, "SELECT COUNT(*) FROM audit_log", ()).await
}
