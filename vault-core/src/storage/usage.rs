//! SQL for the usage rollups (`usage_hourly`, `latency_hourly`).

use std::collections::HashMap;

use libsql::Connection;

use crate::audit::AuditRecord;
use crate::error::Result;
use crate::insights::latency_bucket;

#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    tokens_input: i64,
    tokens_output: i64,
    latency_ms_sum: i64,
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Adds a batch of audit records to the rollups; only inference requests count.
pub async fn add(conn: &Connection, records: &[&AuditRecord]) -> Result<()> {
    let mut usage: HashMap<(&str, &str, &str), Sums> = HashMap::new();
    let mut latency: HashMap<(&str, &str, i64), i64> = HashMap::new();
    for r in records.iter().filter(|r| r.path.starts_with("/v1/") && r.timestamp.len() >= 13) {
        let hour = &r.timestamp[..13];
        let principal = r.user_id.as_deref().or(r.key_prefix.as_deref()).unwrap_or("");
        let sums = usage.entry((hour, r.model.as_deref().unwrap_or(""), principal)).or_default();
        sums.requests += 1;
        sums.errors += i64::from(r.status >= 400 || !r.completed);
        sums.tokens_input += clamp(r.tokens_input.unwrap_or(0));
        sums.tokens_output += clamp(r.tokens_output.unwrap_or(0));
        sums.latency_ms_sum += clamp(r.latency_ms);
        *latency.entry((hour, principal, latency_bucket(r.latency_ms))).or_default() += 1;
    }
    for ((hour, model, principal), s) in usage {
        conn.execute(
            "INSERT INTO usage_hourly (hour, model, principal, requests, errors, tokens_input, tokens_output, latency_ms_sum) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(hour, model, principal) DO UPDATE SET \
             requests = requests + excluded.requests, errors = errors + excluded.errors, \
             tokens_input = tokens_input + excluded.tokens_input, tokens_output = tokens_output + excluded.tokens_output, \
             latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
            libsql::params![hour, model, principal, s.requests, s.errors, s.tokens_input, s.tokens_output, s.latency_ms_sum],
        )
        .await?;
    }
    for ((hour, principal, bucket), requests) in latency {
        conn.execute(
            "INSERT INTO latency_hourly (hour, principal, bucket, requests) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(hour, principal, bucket) DO UPDATE SET requests = requests + excluded.requests",
            libsql::params![hour, principal, bucket, requests],
        )
        .await?;
    }
    Ok(())
}

/// Sums per time bucket since `since_hour`; `bucket_len` is 13 (hours) or 10 (days).
/// `principal` narrows every query to one user's (or key's) requests; `None` is everyone.
const FOR_PRINCIPAL: &str = "(?2 IS NULL OR principal = ?2)";

pub async fn series(
    conn: &Connection,
    since_hour: &str,
    principal: Option<&str>,
    bucket_len: u32,
) -> Result<Vec<(String, [i64; 5])>> {
    let mut rows = conn
        .query(
            &format!(
                "SELECT substr(hour, 1, ?3) AS b, SUM(requests), SUM(errors), SUM(tokens_input), SUM(tokens_output), \
                 SUM(latency_ms_sum) FROM usage_hourly WHERE hour >= ?1 AND {FOR_PRINCIPAL} GROUP BY b ORDER BY b"
            ),
            libsql::params![since_hour, principal, bucket_len],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get(0)?, [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?]));
    }
    Ok(out)
}

/// Requests and tokens per model since `since_hour`, busiest first.
pub async fn per_model(
    conn: &Connection,
    since_hour: &str,
    principal: Option<&str>,
) -> Result<Vec<(String, [i64; 3])>> {
    let mut rows = conn
        .query(
            &format!(
                "SELECT model, SUM(requests) AS n, SUM(tokens_input), SUM(tokens_output) FROM usage_hourly \
                 WHERE hour >= ?1 AND {FOR_PRINCIPAL} GROUP BY model ORDER BY n DESC, model"
            ),
            libsql::params![since_hour, principal],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get(0)?, [row.get(1)?, row.get(2)?, row.get(3)?]));
    }
    Ok(out)
}

pub async fn active_principals(conn: &Connection, since_hour: &str, principal: Option<&str>) -> Result<i64> {
    super::query_i64(
        conn,
        &format!("SELECT COUNT(DISTINCT principal) FROM usage_hourly WHERE hour >= ?1 AND principal != '' AND {FOR_PRINCIPAL}"),
        libsql::params![since_hour, principal],
    )
    .await
}

/// Requests per latency bucket since `since_hour`.
pub async fn latency_histogram(
    conn: &Connection,
    since_hour: &str,
    principal: Option<&str>,
) -> Result<Vec<(i64, i64)>> {
    let mut rows = conn
        .query(
            &format!(
                "SELECT bucket, SUM(requests) FROM latency_hourly WHERE hour >= ?1 AND {FOR_PRINCIPAL} \
                 GROUP BY bucket ORDER BY bucket"
            ),
            libsql::params![since_hour, principal],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(out)
}
