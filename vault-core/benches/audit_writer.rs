//! The audit writer's storage path under a gateway's load: batches of rows as the writer
//! takes them from its queue (one account and one model, as in the gateway benchmark), in
//! one growing database, timed per row. The baseline, in the same run, is the same rows
//! inserted plainly (one prepared `INSERT` per row into a table of the same columns with an
//! index by time, one transaction per batch): the difference is what the audit trail's
//! hash chain, usage rollups, journal mark and indexes by account cost.
//!
//! Run: `cargo bench -p vault-core --bench audit_writer` (BENCH_ROWS to change how many).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime};

use vault_core::audit::AuditRecord;
use vault_core::config::DbLocation;
use vault_core::storage::sql::Value;
use vault_core::storage::{self, Db};

const PLAIN_TABLE: &str = "CREATE TABLE plain_rows (
    id INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, request_id TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, key_prefix TEXT, user_id TEXT, model TEXT, status INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL, tokens_input INTEGER, tokens_output INTEGER,
    completed INTEGER NOT NULL, error_code TEXT, repeat_count INTEGER NOT NULL, hash TEXT, queued_ms INTEGER);
CREATE INDEX plain_rows_timestamp ON plain_rows(timestamp);";
const PLAIN_INSERT: &str = "INSERT INTO plain_rows (timestamp, request_id, method, path, key_prefix, user_id, model, \
    status, latency_ms, tokens_input, tokens_output, completed, error_code, repeat_count, id, hash, queued_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// As long as a row's link in the chain (hex SHA-256), so that both store as many bytes.
const PLAIN_HASH: &str = "5f2b0c9d4e8a7b6c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c";

fn batch_of(first: usize, size: usize) -> Vec<AuditRecord> {
    (first..first + size)
        .map(|n| AuditRecord {
            timestamp: vault_core::time::format_rfc3339(SystemTime::now()),
            request_id: format!("chatcmpl-{n:032x}"),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            key_id: Some(1),
            key_prefix: Some("vault_sk_abcd".into()),
            user_id: Some("0b8e3c52-4f1a-4d7e-9a51-0c9a3e1f2b77".into()),
            model: Some("fake-model".into()),
            status: 200,
            latency_ms: 1,
            tokens_input: Some(12),
            tokens_output: Some(20),
            completed: true,
            ttft_ms: Some(1),
            ..AuditRecord::default()
        })
        .collect()
}

/// Writes `rows` rows in batches of `batch` with `write`; the time per row.
async fn per_row<F: AsyncFnMut(&[&AuditRecord], usize)>(rows: usize, batch: usize, mut write: F) -> Duration {
    let mut took = Duration::ZERO;
    let mut written = 0;
    while written < rows {
        let records = batch_of(written, batch);
        let refs: Vec<&AuditRecord> = records.iter().collect();
        let started = Instant::now();
        write(&refs, written).await;
        took += started.elapsed();
        written += batch;
    }
    took / written as u32
}

async fn fresh_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
    (dir, db)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(400_000);
    println!("{rows} rows per point, one growing database each");
    println!("{:>6} {:>14} {:>14} {:>8}", "batch", "audit µs/row", "plain µs/row", "× plain");
    for batch in [500usize, 50] {
        let (_dir, db) = fresh_db().await;
        let writer = storage::audit::BatchWriter::new(&db, Vec::new()).await.unwrap();
        let audit = per_row(rows, batch, async |refs: &[&AuditRecord], written: usize| {
            writer.write(refs, &[(1, refs[0].timestamp.as_str())], Some(written as u64)).await.unwrap();
        })
        .await;

        let (_dir, db) = fresh_db().await;
        let conn = db.connect().await.unwrap();
        conn.execute_batch(PLAIN_TABLE).await.unwrap();
        let insert = conn.prepare(PLAIN_INSERT).await.unwrap();
        let plain = per_row(rows, batch, async |refs: &[&AuditRecord], written: usize| {
            conn.execute_batch("BEGIN").await.unwrap();
            for (i, r) in refs.iter().enumerate() {
                let text = |s: &str| Value::Text(s.to_owned());
                let maybe = |s: &Option<String>| s.as_deref().map_or(Value::Null, text);
                let count = |n: Option<u64>| n.map_or(Value::Null, |n| Value::Integer(n as i64));
                let params = vec![
                    text(&r.timestamp),
                    text(&r.request_id),
                    text(&r.method),
                    text(&r.path),
                    maybe(&r.key_prefix),
                    maybe(&r.user_id),
                    maybe(&r.model),
                    Value::Integer(i64::from(r.status)),
                    Value::Integer(r.latency_ms as i64),
                    count(r.tokens_input),
                    count(r.tokens_output),
                    Value::Integer(i64::from(r.completed)),
                    Value::Null,
                    Value::Integer(1),
                    Value::Integer((written + i + 1) as i64),
                    text(PLAIN_HASH),
                    Value::Null,
                ];
                conn.run(&insert, params).await.unwrap();
            }
            conn.execute_batch("COMMIT").await.unwrap();
        })
        .await;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("{batch:>6} {:>14.2} {:>14.2} {:>8.2}", us(audit), us(plain), us(audit) / us(plain));
    }
}
