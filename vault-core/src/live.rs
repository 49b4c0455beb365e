//! Live inference statistics: requests per minute, tokens per second, latency and time to
//! first token over the last 5 and 60 minutes, read from the per-minute rollups the audit
//! writer keeps (so they cover every gateway on the database, and survive a restart).
//!
//! A window of N minutes runs from the start of the minute N minutes ago to now (the
//! rollups are per minute), so no request of the last N minutes is left out; its rates
//! divide by the time it really covers, between N and N + 1 minutes.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::audit::stats::LatencySummary;
use crate::error::Result;
use crate::model::usage::percentile;
use crate::storage::Db;
use crate::storage::usage::{self, LATENCY, TIME_TO_FIRST_TOKEN};

/// The windows every answer has, in minutes.
pub const WINDOWS: [u32; 2] = [5, 60];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InferenceStats {
    pub windows: Vec<Window>,
    /// Streamed answers this gateway is sending now.
    pub active_streams: i64,
    /// What the engine's scheduler reports now (`None`: it serves no `/metrics`).
    pub engine: Option<crate::inference::EngineLoad>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Window {
    pub minutes: u32,
    pub requests: i64,
    pub requests_per_minute: f64,
    pub errors: i64,
    pub error_rate: f64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    /// Output tokens per second.
    pub tokens_per_second: f64,
    pub latency_ms: LatencySummary,
    /// Streams only: from a request's arrival to the first bytes of its answer.
    pub ttft_ms: LatencySummary,
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn summary(histogram: &[(i64, i64)], avg: Option<f64>) -> LatencySummary {
    LatencySummary {
        avg,
        p50: percentile(histogram, 0.50),
        p95: percentile(histogram, 0.95),
        p99: percentile(histogram, 0.99),
    }
}

/// The start of the minute `at` falls in.
fn minute_start(at: SystemTime) -> SystemTime {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs - secs % 60)
}

pub async fn inference_stats(db: &Db, active_streams: i64) -> Result<InferenceStats> {
    inference_stats_at(db, active_streams, SystemTime::now()).await
}

pub async fn inference_stats_at(db: &Db, active_streams: i64, now: SystemTime) -> Result<InferenceStats> {
    let conn = db.connect().await?;
    let mut windows = Vec::new();
    for minutes in WINDOWS {
        let start = now - Duration::from_secs(u64::from(minutes) * 60);
        let since = usage::minute_key(start);
        let covered = now.duration_since(minute_start(start)).unwrap_or_default().as_secs_f64().max(1.0);
        let [requests, errors, tokens_input, tokens_output, latency_sum] = usage::minutes_total(&conn, &since).await?;
        let latency = usage::minutes_histogram(&conn, &since, LATENCY).await?;
        let ttft = usage::minutes_histogram(&conn, &since, TIME_TO_FIRST_TOKEN).await?;
        let avg = (requests > 0).then(|| round(latency_sum as f64 / requests as f64, 1));
        windows.push(Window {
            minutes,
            requests,
            requests_per_minute: round(requests as f64 / (covered / 60.0), 2),
            errors,
            error_rate: if requests > 0 { round(errors as f64 / requests as f64, 4) } else { 0.0 },
            tokens_input,
            tokens_output,
            tokens_per_second: round(tokens_output as f64 / covered, 2),
            latency_ms: summary(&latency, avg),
            ttft_ms: summary(&ttft, None),
        });
    }
    Ok(InferenceStats { windows, active_streams, engine: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::AuditRecord;
    use crate::storage;

    fn record(at: SystemTime, latency_ms: u64, ttft_ms: Option<u64>, status: u16) -> AuditRecord {
        AuditRecord {
            timestamp: crate::time::format_rfc3339(at),
            request_id: crate::secrets::new_id(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: Some("m".into()),
            status,
            latency_ms,
            tokens_input: Some(10),
            tokens_output: Some(30),
            completed: true,
            ttft_ms,
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn windows_count_the_last_minutes_of_requests() {
        let (_dir, db) = storage::test_db().await;
        // Half a minute into a minute: the 5-minute window covers 5.5 minutes.
        let minute = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() / 60;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60 + 30);
        let ago = |minutes: u64| now - Duration::from_secs(minutes * 60);
        let mut records = Vec::new();
        for i in 0..20u64 {
            records.push(record(ago(1), 100 + i, Some(20), 200));
        }
        records.push(record(ago(2), 5_000, None, 500));
        for _ in 0..9 {
            records.push(record(ago(30), 300, None, 200));
        }
        records.push(record(ago(90), 300, None, 200));
        let mut health = record(ago(1), 1, None, 200);
        health.path = "/vault/health".into();
        records.push(health);
        crate::audit::store_for_test(&db, &records).await;

        let stats = inference_stats_at(&db, 2, now).await.unwrap();
        assert_eq!(stats.active_streams, 2);
        let [five, hour] = [&stats.windows[0], &stats.windows[1]];
        assert_eq!((five.minutes, five.requests, five.errors), (5, 21, 1));
        assert_eq!(five.requests_per_minute, round(21.0 / 5.5, 2));
        assert_eq!(five.tokens_per_second, round(21.0 * 30.0 / 330.0, 2));
        let ttft = five.ttft_ms.p50.unwrap();
        assert!((20.0..=24.0).contains(&ttft), "{ttft}");
        assert!(five.latency_ms.p99.unwrap() >= 5_000.0);
        assert_eq!((hour.minutes, hour.requests), (60, 30), "the 90-minute-old request is out");
        assert_eq!(hour.requests_per_minute, round(30.0 / 60.5, 2));
    }

    #[tokio::test]
    async fn minutes_older_than_two_hours_are_dropped() {
        let (_dir, db) = storage::test_db().await;
        let old = SystemTime::now() - Duration::from_secs(3 * 3600);
        crate::audit::store_for_test(&db, &[record(old, 1, None, 200)]).await;
        // The next batch prunes.
        crate::audit::store_for_test(&db, &[record(SystemTime::now(), 1, None, 200)]).await;
        let conn = db.connect().await.unwrap();
        let kept = storage::query_i64(&conn, "SELECT COUNT(*) FROM usage_minute", ()).await.unwrap();
        assert_eq!(kept, 1);
    }
}
