//! Usage insights for the dashboard: requests and tokens over time, active users,
//! per-model usage, and average and p95 latency — read from hourly rollups the audit
//! writer keeps, so the answer costs the same for a thousand audit rows as for a billion.
//!
//! p95 comes from a histogram of quarter-octave buckets (`model::usage`), so it is an
//! estimate: at most 19% above the true value.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::model::keys::{Principal, Scope};
use crate::model::usage::percentile;
use crate::storage::usage::Hours;
use crate::storage::{self, Db};

/// The period an insights answer covers, ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    Day,
    #[default]
    Week,
    Month,
    Quarter,
}

impl std::str::FromStr for Range {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<Range> {
        crate::validate::choice("range", raw, &Range::ALL, Range::as_str)
    }
}

impl Range {
    pub const ALL: [Range; 4] = [Range::Day, Range::Week, Range::Month, Range::Quarter];

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::Quarter => "90d",
        }
    }

    fn hours(self) -> u64 {
        match self {
            Range::Day => 24,
            Range::Week => 7 * 24,
            Range::Month => 30 * 24,
            Range::Quarter => 90 * 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Insights {
    pub range: String,
    /// `hour` for 24h, `day` otherwise.
    pub bucket: String,
    /// Start of the range (UTC, on the hour).
    pub since: String,
    pub totals: Totals,
    pub series: Vec<SeriesPoint>,
    pub models: Vec<ModelUsage>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    /// Distinct users (or keys without a user) that made inference requests.
    pub active_users: i64,
    pub avg_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesPoint {
    /// `YYYY-MM-DDTHH` (hours) or `YYYY-MM-DD` (days).
    pub bucket: String,
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelUsage {
    /// Empty when the request named no model.
    pub model: String,
    pub requests: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

/// Whose usage an insights answer covers.
#[derive(Debug, Clone, Copy)]
pub enum UsageOf<'a> {
    Everyone,
    /// One account (see `Principal`): what a `user` key sees of itself.
    Account(&'a str),
}

pub async fn insights(db: &Db, range: Range, of: UsageOf<'_>) -> Result<Insights> {
    insights_at(db, range, of, SystemTime::now()).await
}

/// What a key may see: everyone's usage with an admin key, its account's with a user key.
pub async fn visible_to(db: &Db, range: Range, who: &Principal) -> Result<Insights> {
    let account = who.account();
    let of = match who.scope {
        Scope::Admin => UsageOf::Everyone,
        Scope::User => UsageOf::Account(&account),
    };
    insights(db, range, of).await
}

/// Insights for the `range` ending at `now`.
pub async fn insights_at(db: &Db, range: Range, of: UsageOf<'_>, now: SystemTime) -> Result<Insights> {
    let account = match of {
        UsageOf::Everyone => None,
        UsageOf::Account(a) => Some(a),
    };
    let start = now.checked_sub(Duration::from_secs(range.hours().saturating_sub(1) * 3600)).unwrap_or(now);
    let hours = Hours {
        from: crate::time::format_rfc3339(start)[..13].to_string(),
        to: crate::time::format_rfc3339(now + Duration::from_secs(3600))[..13].to_string(),
    };
    let (bucket_len, bucket) = if range == Range::Day { (13, "hour") } else { (10, "day") };
    let conn = db.connect().await?;
    let rows = storage::usage::series(&conn, &hours, account, bucket_len).await?;
    let series: Vec<SeriesPoint> = rows
        .iter()
        .map(|(b, [requests, errors, tokens_input, tokens_output, _])| SeriesPoint {
            bucket: b.clone(),
            requests: *requests,
            errors: *errors,
            tokens_input: *tokens_input,
            tokens_output: *tokens_output,
        })
        .collect();
    let requests: i64 = series.iter().map(|p| p.requests).sum();
    let latency_sum: i64 = rows.iter().map(|(_, v)| v[4]).sum();
    let histogram = storage::usage::latency_histogram(&conn, &hours, account).await?;
    let totals = Totals {
        requests,
        errors: series.iter().map(|p| p.errors).sum(),
        tokens_input: series.iter().map(|p| p.tokens_input).sum(),
        tokens_output: series.iter().map(|p| p.tokens_output).sum(),
        active_users: storage::usage::active_accounts(&conn, &hours, account).await?,
        avg_latency_ms: (requests > 0).then(|| (latency_sum as f64 / requests as f64 * 10.0).round() / 10.0),
        p95_latency_ms: percentile(&histogram, 0.95),
    };
    let models = storage::usage::per_model(&conn, &hours, account)
        .await?
        .into_iter()
        .map(|(model, [requests, tokens_input, tokens_output])| ModelUsage {
            model,
            requests,
            tokens_input,
            tokens_output,
        })
        .collect();
    Ok(Insights {
        range: range.as_str().into(),
        bucket: bucket.into(),
        since: format!("{}:00:00Z", hours.from),
        totals,
        series,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::AuditRecord;

    fn record(at: SystemTime, path: &str, model: &str, user: &str, latency_ms: u64, status: u16) -> AuditRecord {
        AuditRecord {
            timestamp: crate::time::format_rfc3339(at),
            request_id: crate::secrets::new_id(),
            method: "POST".into(),
            path: path.into(),
            user_id: Some(user.into()),
            model: Some(model.into()),
            status,
            latency_ms,
            tokens_input: Some(10),
            tokens_output: Some(5),
            completed: true,
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn insights_sum_inference_requests_in_range() {
        let (_dir, db) = storage::test_db().await;
        let now = SystemTime::now();
        let hours_ago = |h: u64| now - Duration::from_secs(h * 3600);
        let mut records = Vec::new();
        for i in 0..100u64 {
            records.push(record(hours_ago(1), "/v1/chat/completions", "a", &format!("u{}", i % 3), i + 1, 200));
        }
        records.push(record(hours_ago(2), "/v1/embeddings", "b", "u9", 5, 500));
        records.push(record(hours_ago(1), "/vault/health", "", "u8", 1, 200));
        records.push(record(hours_ago(24 * 10), "/v1/completions", "a", "u7", 1, 200));
        crate::audit::store_for_test(&db, &records).await;

        let day = insights_at(&db, Range::Day, UsageOf::Everyone, now).await.unwrap();
        assert_eq!(day.totals.requests, 101, "health checks and old rows are not counted");
        assert_eq!(day.totals.errors, 1);
        assert_eq!(day.totals.tokens_input, 1010);
        assert_eq!(day.totals.active_users, 4);
        assert_eq!(day.bucket, "hour");
        assert_eq!(day.series.len(), 2);
        assert_eq!(day.models[0].model, "a");
        assert_eq!(day.models[0].requests, 100);
        let p95 = day.totals.p95_latency_ms.unwrap();
        assert!((95.0..=115.0).contains(&p95), "p95 {p95}");
        let avg = day.totals.avg_latency_ms.unwrap();
        assert!((avg - 50.05).abs() < 0.2, "avg {avg}");

        let mine = insights_at(&db, Range::Day, UsageOf::Account("u9"), now).await.unwrap();
        assert_eq!((mine.totals.requests, mine.totals.active_users, mine.totals.errors), (1, 1, 1));
        assert_eq!(mine.models[0].model, "b");

        let month = insights_at(&db, Range::Month, UsageOf::Everyone, now).await.unwrap();
        assert_eq!((month.totals.requests, month.bucket.as_str()), (102, "day"));
        assert!("1y".parse::<Range>().unwrap_err().message.starts_with("range"));
    }
}
