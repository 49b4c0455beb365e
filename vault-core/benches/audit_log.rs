//! A large audit log: seeds N audit rows (default 1,000,000) over 90 days through the audit
//! writer's storage path, then
//! - times each insights range and the audit stats of the whole period, against — as the
//!   baseline in the same run — the same totals computed by scanning the audit log itself;
//! - exports every row as CSV and as JSON, printing rows/s and the growth of peak RSS,
//!   against reading the same rows without framing them;
//! - verifies the hash chain of every row and its signed checkpoints (rows/s).
//!
//! Run: `cargo bench -p vault-core --bench audit_log` (BENCH_ROWS to change N).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use vault_core::audit::{self, AuditFilter, AuditRecord, ExportFormat};
use vault_core::config::DbLocation;
use vault_core::insights::{self, Range, UsageOf};
use vault_core::storage::{self, Db};

/// A small deterministic generator, so every run seeds the same log.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
    let conn = db.connect().await.unwrap();
    let writer = storage::audit::BatchWriter::new(&db, Vec::new()).await.unwrap();
    let now = SystemTime::now();
    let models = ["qwen2.5-32b-awq", "Qwen/Qwen2.5-7B-Instruct", "embed-small"];
    let paths = ["/v1/chat/completions", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/vault/health"];
    let mut rng = Lcg(42);

    let seeding = Instant::now();
    let batch = 10_000;
    let mut seeded = 0;
    let span = 90 * 24 * 3600;
    while seeded < rows {
        let records: Vec<AuditRecord> = (0..batch.min(rows - seeded))
            .map(|i| {
                // Oldest first, as a real log is written, a few seconds of jitter apart.
                let position = (seeded + i) as u64 * span / rows as u64;
                let age = Duration::from_secs((span - position).saturating_sub(rng.next() % 60));
                AuditRecord {
                    timestamp: vault_core::time::format_rfc3339(now - age),
                    request_id: format!("seed-{}", seeded + i),
                    method: "POST".into(),
                    path: paths[(rng.next() % paths.len() as u64) as usize].into(),
                    key_prefix: Some(format!("vault_sk_{:04}", rng.next() % 50)),
                    user_id: Some(format!("user-{}", rng.next() % 50)),
                    model: Some(models[(rng.next() % 3) as usize].into()),
                    status: if rng.next().is_multiple_of(50) { 500 } else { 200 },
                    latency_ms: 20 + rng.next() % 3000,
                    tokens_input: Some(rng.next() % 2000),
                    tokens_output: Some(rng.next() % 800),
                    completed: true,
                    ..AuditRecord::default()
                }
            })
            .collect();
        let refs: Vec<&AuditRecord> = records.iter().collect();
        writer.write(&refs, &[], None).await.unwrap();
        seeded += records.len();
    }
    let seeding = seeding.elapsed();
    println!(
        "seeded {rows} audit rows over 90 days in {:.1} s ({:.0} rows/s, rollups included)",
        seeding.as_secs_f64(),
        rows as f64 / seeding.as_secs_f64()
    );

    println!("{:<8} {:>14} {:>14} {:>10}", "range", "insights ms", "scan ms", "speed-up");
    for (name, range, hours) in [
        ("24h", Range::Day, 24u64),
        ("7d", Range::Week, 168),
        ("30d", Range::Month, 720),
        ("90d", Range::Quarter, 2160),
    ] {
        let mut fast = Vec::new();
        let mut requests = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let answer = insights::insights(&db, range, UsageOf::Everyone).await.unwrap();
            fast.push(started.elapsed());
            requests = answer.totals.requests;
        }
        // Baseline: the same totals straight from the audit log, through its timestamp index.
        let since = vault_core::time::format_rfc3339(now - Duration::from_secs(hours * 3600));
        let mut slow = Vec::new();
        let mut scanned = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let mut result = conn
                .query(
                    "SELECT COUNT(*), SUM(tokens_input), SUM(tokens_output), AVG(latency_ms), COUNT(DISTINCT user_id) \
                     FROM audit_log WHERE timestamp >= ?1 AND path LIKE '/v1/%'",
                    [since.as_str()],
                )
                .await
                .unwrap();
            scanned = result.next().await.unwrap().unwrap().get::<i64>(0).unwrap();
            slow.push(started.elapsed());
        }
        let (fast, slow) = (median(fast), median(slow));
        println!(
            "{name:<8} {:>14.2} {:>14.2} {:>9.0}x   ({requests} requests; scan counted {scanned})",
            ms(fast),
            ms(slow),
            ms(slow) / ms(fast)
        );
    }

    let mut fast = Vec::new();
    let mut requests = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let stats = audit::stats(&db, Some("2000-01-01T00:00:00Z"), None).await.unwrap();
        fast.push(started.elapsed());
        requests = stats.totals.requests;
    }
    println!(
        "{:<8} {:>14.2} {:>14} {:>10}   ({requests} requests, by account, model and failure)",
        "stats",
        ms(median(fast)),
        "",
        ""
    );

    // Export: the same rows read without framing them are the baseline.
    let db = Arc::new(db);
    let started = Instant::now();
    let mut read = 0usize;
    let mut after = 0i64;
    loop {
        let page = storage::audit::query(&conn, &AuditFilter::default(), after, 1000, false).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        read += page.len();
    }
    let baseline = started.elapsed();
    println!("\n{:<8} {:>14} {:>14} {:>10} {:>16}", "export", "rows/s", "seconds", "vs read", "peak RSS growth");
    println!(
        "{:<8} {:>14.0} {:>14.2} {:>10} {:>16}",
        "read",
        read as f64 / baseline.as_secs_f64(),
        baseline.as_secs_f64(),
        "1.00",
        ""
    );
    for format in [ExportFormat::Csv, ExportFormat::Json] {
        let before = reset_peak_rss();
        let started = Instant::now();
        let mut out = std::io::BufWriter::new(std::io::sink());
        let written = audit::export(db.clone(), &AuditFilter::default(), format, &mut out, &mut |_| {}).await.unwrap();
        let took = started.elapsed();
        let growth = peak_rss_kib()
            .zip(before)
            .map(|(peak, before)| format!("{:.1} MB", peak.saturating_sub(before) as f64 / 1024.0));
        assert_eq!(written as usize, read);
        println!(
            "{:<8} {:>14.0} {:>14.2} {:>10.2} {:>16}",
            format.as_str(),
            written as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
            baseline.as_secs_f64() / took.as_secs_f64(),
            growth.unwrap_or_else(|| "n/a".into())
        );
    }

    // The hash chain, against the same rows read (above) as the baseline.
    let started = Instant::now();
    let report = audit::chain::verify(&db, b"", None, &mut |_, _| {}).await.unwrap();
    let took = started.elapsed();
    assert!(report.intact && report.rows_checked as usize == read, "{report:?}");
    println!(
        "{:<8} {:>14.0} {:>14.2} {:>10.2} {:>16}   ({} signed checkpoints)",
        "verify",
        report.rows_checked as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        baseline.as_secs_f64() / took.as_secs_f64(),
        "",
        report.checkpoints_checked
    );
}

/// Resets the kernel's peak-RSS mark to the current RSS; returns that RSS (KiB).
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    proc_status_kib("VmRSS:")
}

fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}
