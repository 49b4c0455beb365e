//! SQL for the `rate_limits` table.

use crate::storage::Conn;
use crate::storage::sql::params;

use crate::error::Result;
use crate::model::limits::LimitSet;

fn count(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

fn column(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The limits stored for each of `subjects` (absent: none).
pub async fn get_many(conn: &Conn, subjects: &[&str]) -> Result<Vec<(String, LimitSet)>> {
    let mut found = Vec::new();
    for subject in subjects {
        let mut rows =
            conn.query("SELECT rpm, tpm, concurrency, weight FROM rate_limits WHERE subject = ?1", [*subject]).await?;
        if let Some(row) = rows.next().await? {
            let limits = LimitSet {
                rpm: count(row.get(0)?),
                tpm: count(row.get(1)?),
                concurrency: count(row.get(2)?),
                weight: count(row.get(3)?),
            };
            found.push((subject.to_string(), limits));
        }
    }
    Ok(found)
}

/// Stores `limits` for `subject`; none at all removes its row.
pub async fn set(conn: &Conn, subject: &str, limits: &LimitSet, at: &str) -> Result<()> {
    if limits.is_empty() {
        conn.execute("DELETE FROM rate_limits WHERE subject = ?1", [subject]).await?;
        return Ok(());
    }
    conn.execute(
        "INSERT INTO rate_limits (subject, rpm, tpm, concurrency, weight, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (subject) DO UPDATE SET rpm = ?2, tpm = ?3, concurrency = ?4, weight = ?5, updated_at = ?6",
        params![subject, column(limits.rpm), column(limits.tpm), column(limits.concurrency), column(limits.weight), at],
    )
    .await?;
    Ok(())
}
