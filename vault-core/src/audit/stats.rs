//! Aggregate statistics of the audit trail over a period: requests, errors and tokens per
//! account and per model, failures by status and code, latency percentiles.
//!
//! They are read from the hourly rollups the audit writer keeps (see `insights`), so a
//! year costs what an hour does. The period is therefore one of whole UTC hours: `from`
//! is taken back to the start of its hour and `to` on to the end of its own, and the
//! answer says which hours it covers. Like the rollups, the stats count inference requests
//! (`/v1/*`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::insights::ModelUsage;
use crate::model::usage::percentile;
use crate::storage::Db;
use crate::storage::usage::{self, Hours};

/// The period when none is given: the last 24 hours.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditStats {
    /// Start of the first hour covered (RFC 3339).
    pub from: String,
    /// End of the last hour covered (RFC 3339, exclusive).
    pub to: String,
    pub totals: StatsTotals,
    pub latency_ms: LatencySummary,
    /// Busiest first.
    pub accounts: Vec<AccountUsage>,
    /// Busiest first.
    pub models: Vec<ModelUsage>,
    /// Failed requests by status and error code, commonest first.
    pub errors: Vec<ErrorCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsTotals {
    pub requests: i64,
    pub errors: i64,
    /// `errors / requests`; 0 when there were no requests.
    pub error_rate: f64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

/// Percentiles are estimates from quarter-octave buckets: at most 19% above the truth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountUsage {
    /// A user's id, or `key:<id>` for a key that belongs to no user.
    pub account: String,
    /// The user's name, when the account is a user.
    pub name: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorCount {
    pub status: u16,
    /// The error's code, when the answer carried one.
    pub code: Option<String>,
    pub requests: i64,
    /// Share of all requests in the period.
    pub rate: f64,
}

/// The whole hours covering `[from, to)`, each an RFC 3339 timestamp or absent (`to`:
/// now; `from`: `DEFAULT_PERIOD` before `to`).
pub fn covering_hours(from: Option<&str>, to: Option<&str>, now: SystemTime) -> Result<Hours> {
    let parse = |field: &str, raw: Option<&str>| -> Result<Option<SystemTime>> {
        raw.map(|raw| {
            crate::time::parse_rfc3339(raw)
                .ok_or_else(|| VaultError::invalid_field(format!("{field}: not an RFC 3339 timestamp")))
        })
        .transpose()
    };
    let to = parse("to", to)?.unwrap_or(now);
    let from =
        parse("from", from)?.unwrap_or_else(|| to.checked_sub(DEFAULT_PERIOD).unwrap_or(UNIX_EPOCH)).max(UNIX_EPOCH);
    if from >= to {
        return Err(VaultError::invalid_field("from: must be before to"));
    }
    let on_the_hour = to.duration_since(UNIX_EPOCH).is_ok_and(|d| d.as_nanos() % 3_600_000_000_000 == 0);
    let end = if on_the_hour { Some(to) } else { to.checked_add(Duration::from_secs(3600)) };
    let hour = |at: SystemTime| crate::time::try_format_rfc3339(at).map(|t| t[..13].to_string());
    let (Some(from), Some(to)) = (hour(from), end.and_then(hour)) else {
        return Err(VaultError::invalid_field("to: must be before the last hour of year 9999"));
    };
    Ok(Hours { from, to })
}

/// The stats of the whole hours covering `[from, to)` (see [`covering_hours`]), from the
/// rows committed so far.
pub async fn stats(db: &Db, from: Option<&str>, to: Option<&str>) -> Result<AuditStats> {
    stats_for(db, &covering_hours(from, to, SystemTime::now())?).await
}

pub async fn stats_for(db: &Db, hours: &Hours) -> Result<AuditStats> {
    let conn = db.connect().await?;
    // A bucket length of 0 puts every hour in one group: the totals.
    let [requests, errors, tokens_input, tokens_output, latency_sum] =
        usage::series(&conn, hours, None, 0).await?.first().map(|(_, sums)| *sums).unwrap_or_default();
    let share = |n: i64| if requests > 0 { (n as f64 / requests as f64 * 10_000.0).round() / 10_000.0 } else { 0.0 };
    let histogram = usage::latency_histogram(&conn, hours, None).await?;
    let accounts = usage::per_account(&conn, hours)
        .await?
        .into_iter()
        .map(|(account, name, [requests, errors, tokens_input, tokens_output])| AccountUsage {
            account,
            name,
            requests,
            errors,
            tokens_input,
            tokens_output,
        })
        .collect();
    let models = usage::per_model(&conn, hours, None)
        .await?
        .into_iter()
        .map(|(model, [requests, tokens_input, tokens_output])| ModelUsage {
            model,
            requests,
            tokens_input,
            tokens_output,
        })
        .collect();
    let error_counts = usage::errors(&conn, hours)
        .await?
        .into_iter()
        .map(|(status, code, n)| ErrorCount {
            status,
            code: (!code.is_empty()).then_some(code),
            requests: n,
            rate: share(n),
        })
        .collect();
    Ok(AuditStats {
        from: format!("{}:00:00Z", hours.from),
        to: format!("{}:00:00Z", hours.to),
        totals: StatsTotals { requests, errors, error_rate: share(errors), tokens_input, tokens_output },
        latency_ms: LatencySummary {
            avg: (requests > 0).then(|| (latency_sum as f64 / requests as f64 * 10.0).round() / 10.0),
            p50: percentile(&histogram, 0.50),
            p95: percentile(&histogram, 0.95),
            p99: percentile(&histogram, 0.99),
        },
        accounts,
        models,
        errors: error_counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::model::audit::AuditRecord;
    use crate::storage;

    fn at(raw: &str) -> SystemTime {
        crate::time::parse_rfc3339(raw).unwrap()
    }

    #[test]
    fn periods_are_widened_to_whole_hours() {
        let now = at("2026-05-04T10:30:00Z");
        let hours = |from: Option<&str>, to: Option<&str>| covering_hours(from, to, now).map(|h| (h.from, h.to));
        assert_eq!(hours(None, None).unwrap(), ("2026-05-03T10".into(), "2026-05-04T11".into()));
        let exact = hours(Some("2026-05-01T08:00:00Z"), Some("2026-05-01T09:00:00Z")).unwrap();
        assert_eq!(exact, ("2026-05-01T08".into(), "2026-05-01T09".into()), "an hour on the hour stays one hour");
        let inside = hours(Some("2026-05-01T08:10:00Z"), Some("2026-05-01T08:20:00.5Z")).unwrap();
        assert_eq!(inside, ("2026-05-01T08".into(), "2026-05-01T09".into()));
        assert!(hours(Some("yesterday"), None).unwrap_err().message.starts_with("from"));
        assert!(hours(None, Some("2026-13-01T00:00:00Z")).unwrap_err().message.starts_with("to"));
        let backwards = hours(Some("2026-05-02T00:00:00Z"), Some("2026-05-01T00:00:00Z")).unwrap_err();
        assert_eq!(backwards.message, "from: must be before to");
        // The edges of what timestamps can be: an answer or a 400, never a panic.
        assert_eq!(hours(None, Some("1970-01-01T05:00:00Z")).unwrap().0, "1970-01-01T00");
        assert!(hours(None, Some("9999-12-31T23:30:00Z")).unwrap_err().message.starts_with("to"));
    }

    fn record(timestamp: &str, user: &str, model: &str, status: u16, latency_ms: u64) -> AuditRecord {
        AuditRecord {
            timestamp: timestamp.into(),
            request_id: crate::secrets::new_id(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            user_id: Some(user.into()),
            model: Some(model.into()),
            status,
            latency_ms,
            tokens_input: Some(10),
            tokens_output: Some(if status == 200 { 4 } else { 0 }),
            completed: true,
            error_code: (status == 503).then_some(ErrorCode::InferenceUnavailable),
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn stats_sum_the_hours_of_the_period_by_account_model_and_failure() {
        let (_dir, db) = storage::test_db().await;
        let mut records = Vec::new();
        for i in 0..98u64 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            records.push(record("2026-05-01T08:15:00.000Z", user, "llama", 200, i + 1));
        }
        records.push(record("2026-05-01T09:59:59.999Z", "alice", "qwen", 503, 2));
        let mut cut = record("2026-05-01T09:00:00.000Z", "bob", "qwen", 200, 900);
        cut.completed = false;
        records.push(cut);
        // After the period.
        records.push(record("2026-05-01T10:00:00.000Z", "carol", "llama", 200, 1));
        let mut health = record("2026-05-01T08:30:00.000Z", "alice", "", 200, 1);
        health.path = "/vault/health".into();
        records.push(health);
        crate::audit::store_for_test(&db, &records).await;

        let hours = covering_hours(Some("2026-05-01T08:00:00Z"), Some("2026-05-01T10:00:00Z"), SystemTime::now());
        let stats = stats_for(&db, &hours.unwrap()).await.unwrap();
        assert_eq!((stats.from.as_str(), stats.to.as_str()), ("2026-05-01T08:00:00Z", "2026-05-01T10:00:00Z"));
        assert_eq!(stats.totals.requests, 100, "only inference requests in the period count");
        assert_eq!((stats.totals.errors, stats.totals.error_rate), (2, 0.02));
        assert_eq!((stats.totals.tokens_input, stats.totals.tokens_output), (1000, 98 * 4 + 4));
        let accounts: Vec<(&str, i64, i64)> =
            stats.accounts.iter().map(|a| (a.account.as_str(), a.requests, a.errors)).collect();
        assert_eq!(accounts, [("alice", 50, 1), ("bob", 50, 1)]);
        let models: Vec<(&str, i64)> = stats.models.iter().map(|m| (m.model.as_str(), m.requests)).collect();
        assert_eq!(models, [("llama", 98), ("qwen", 2)]);
        let errors: Vec<(u16, Option<&str>, i64, f64)> =
            stats.errors.iter().map(|e| (e.status, e.code.as_deref(), e.requests, e.rate)).collect();
        assert_eq!(errors, [(200, None, 1, 0.01), (503, Some("inference_unavailable"), 1, 0.01)]);
        let latency = &stats.latency_ms;
        let (p50, p95, p99) = (latency.p50.unwrap(), latency.p95.unwrap(), latency.p99.unwrap());
        assert!((49.0..=60.0).contains(&p50) && (93.0..=114.0).contains(&p95) && (97.0..=117.0).contains(&p99));
        assert!(p50 < p95 && p95 <= p99, "{latency:?}");

        let empty = covering_hours(Some("2020-01-01T00:00:00Z"), Some("2020-01-02T00:00:00Z"), SystemTime::now());
        let empty = stats_for(&db, &empty.unwrap()).await.unwrap();
        assert_eq!((empty.totals.requests, empty.totals.error_rate, empty.latency_ms.p50), (0, 0.0, None));
        assert!(empty.accounts.is_empty() && empty.errors.is_empty());
    }
}
