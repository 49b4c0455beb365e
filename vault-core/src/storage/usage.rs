//! SQL for the usage rollups (migrations 0003, 0004, 0007 and 0008). With an account, every query
//! reads the per-account tables; without, the everyone tables.

use crate::storage::sql::params;
use std::collections::BTreeMap;

use crate::storage::{Conn, Statement, Value};

use crate::error::Result;
use crate::model::audit::AuditRecord;
use crate::model::usage::latency_bucket;

#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    tokens_input: i64,
    tokens_output: i64,
    latency_ms_sum: i64,
}

impl Sums {
    fn add(&mut self, r: &AuditRecord) {
        let n = i64::from(r.repeat_count.0);
        self.requests += n;
        self.errors += n * i64::from(r.is_error());
        self.tokens_input += clamp(r.tokens_input.unwrap_or(0));
        self.tokens_output += clamp(r.tokens_output.unwrap_or(0));
        self.latency_ms_sum += clamp(r.latency_ms);
    }
}

/// The account a record counts to, as the record holds it: sums are gathered by it, and
/// its name (see `model::keys::account`) is written once per sum, not made for every row.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Account<'a> {
    user_id: Option<&'a str>,
    /// Only without a user: a user's keys all count to the user.
    key_id: Option<i64>,
}

impl<'a> Account<'a> {
    fn of(r: &'a AuditRecord) -> Account<'a> {
        let user_id = r.user_id.as_deref();
        Account { user_id, key_id: r.key_id.filter(|_| user_id.is_none()) }
    }

    fn name(&self) -> String {
        crate::model::keys::account(self.user_id, self.key_id)
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const UPSERT_HOURLY: &str = "INSERT INTO usage_hourly (hour, requests, errors, tokens_input, tokens_output, latency_ms_sum) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(hour) DO UPDATE SET \
     requests = usage_hourly.requests + excluded.requests, errors = usage_hourly.errors + excluded.errors, \
     tokens_input = usage_hourly.tokens_input + excluded.tokens_input, tokens_output = usage_hourly.tokens_output + excluded.tokens_output, \
     latency_ms_sum = usage_hourly.latency_ms_sum + excluded.latency_ms_sum";
const UPSERT_MODEL: &str = "INSERT INTO usage_hourly_model (hour, model, requests, tokens_input, tokens_output) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(hour, model) DO UPDATE SET requests = usage_hourly_model.requests + excluded.requests, \
     tokens_input = usage_hourly_model.tokens_input + excluded.tokens_input, tokens_output = usage_hourly_model.tokens_output + excluded.tokens_output";
const UPSERT_ACCOUNT: &str = "INSERT INTO usage_hourly_account (account, hour, model, requests, errors, \
     tokens_input, tokens_output, latency_ms_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT(account, hour, model) DO UPDATE SET \
     requests = usage_hourly_account.requests + excluded.requests, errors = usage_hourly_account.errors + excluded.errors, \
     tokens_input = usage_hourly_account.tokens_input + excluded.tokens_input, tokens_output = usage_hourly_account.tokens_output + excluded.tokens_output, \
     latency_ms_sum = usage_hourly_account.latency_ms_sum + excluded.latency_ms_sum";
const UPSERT_LATENCY: &str = "INSERT INTO latency_hourly (hour, bucket, requests) VALUES (?1, ?2, ?3) \
     ON CONFLICT(hour, bucket) DO UPDATE SET requests = latency_hourly.requests + excluded.requests";
const UPSERT_LATENCY_ACCOUNT: &str = "INSERT INTO latency_hourly_account (account, hour, bucket, requests) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(account, hour, bucket) DO UPDATE SET requests = latency_hourly_account.requests + excluded.requests";

const UPSERT_ERRORS: &str = "INSERT INTO usage_hourly_errors (hour, status, error_code, requests) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(hour, status, error_code) DO UPDATE SET requests = usage_hourly_errors.requests + excluded.requests";

const UPSERT_MINUTE: &str = "INSERT INTO usage_minute (minute, requests, errors, tokens_input, tokens_output, \
     latency_ms_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(minute) DO UPDATE SET \
     requests = usage_minute.requests + excluded.requests, errors = usage_minute.errors + excluded.errors, \
     tokens_input = usage_minute.tokens_input + excluded.tokens_input, tokens_output = usage_minute.tokens_output + excluded.tokens_output, \
     latency_ms_sum = usage_minute.latency_ms_sum + excluded.latency_ms_sum";
const UPSERT_LATENCY_MINUTE: &str = "INSERT INTO latency_minute (minute, kind, bucket, requests) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT(minute, kind, bucket) DO UPDATE SET requests = latency_minute.requests + excluded.requests";

/// How long the per-minute rollups are kept.
pub const MINUTES_KEPT: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// Latency kinds of `latency_minute`.
pub const LATENCY: i64 = 0;
pub const TIME_TO_FIRST_TOKEN: i64 = 1;

/// Hours `from` (inclusive) to `to` (exclusive), as rollup keys (`YYYY-MM-DDTHH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    pub from: String,
    pub to: String,
}

/// The rollup upserts, prepared once on the audit writer's connection.
pub struct Rollups {
    hourly: crate::storage::Statement,
    model: crate::storage::Statement,
    account: crate::storage::Statement,
    latency: crate::storage::Statement,
    latency_account: crate::storage::Statement,
    errors: crate::storage::Statement,
    minute: crate::storage::Statement,
    latency_minute: crate::storage::Statement,
    /// The cut-off of the last pruning of the per-minute rollups.
    pruned_before: std::sync::Mutex<String>,
}

impl Rollups {
    pub async fn prepare(conn: &Conn) -> Result<Rollups> {
        Ok(Rollups {
            hourly: conn.prepare(UPSERT_HOURLY).await?,
            model: conn.prepare(UPSERT_MODEL).await?,
            account: conn.prepare(UPSERT_ACCOUNT).await?,
            latency: conn.prepare(UPSERT_LATENCY).await?,
            latency_account: conn.prepare(UPSERT_LATENCY_ACCOUNT).await?,
            errors: conn.prepare(UPSERT_ERRORS).await?,
            minute: conn.prepare(UPSERT_MINUTE).await?,
            latency_minute: conn.prepare(UPSERT_LATENCY_MINUTE).await?,
            pruned_before: std::sync::Mutex::new(String::new()),
        })
    }

    /// The statements that add a batch of audit records to the rollups, appended to
    /// `runs` (to run in the batch's transaction); only inference requests count. The
    /// sums are gathered in ordered maps: a batch holds a few keys, which a comparison or
    /// two finds quicker than a hash of the key.
    pub fn upserts<'a>(&'a self, records: &[&AuditRecord], runs: &mut Vec<(&'a Statement, Vec<Value>)>) {
        self.add_hourly(records, runs);
        self.add_minutes(records, runs);
    }

    /// Drops per-minute rollups older than [`MINUTES_KEPT`] (once a minute at most).
    pub async fn prune(&self, conn: &Conn) -> Result<()> {
        let cutoff = minute_key(std::time::SystemTime::now() - MINUTES_KEPT);
        let due = match self.pruned_before.lock() {
            Ok(mut last) if *last != cutoff => {
                *last = cutoff.clone();
                true
            }
            _ => false,
        };
        if due {
            conn.execute("DELETE FROM usage_minute WHERE minute < ?1", [cutoff.as_str()]).await?;
            conn.execute("DELETE FROM latency_minute WHERE minute < ?1", [cutoff.as_str()]).await?;
        }
        Ok(())
    }

    fn add_minutes<'a>(&'a self, records: &[&AuditRecord], runs: &mut Vec<(&'a Statement, Vec<Value>)>) {
        let mut minutes: BTreeMap<&str, Sums> = BTreeMap::new();
        let mut latency: BTreeMap<(&str, i64, i64), i64> = BTreeMap::new();
        for r in records.iter().filter(|r| r.is_inference() && r.timestamp.len() >= 16) {
            let minute = &r.timestamp[..16];
            minutes.entry(minute).or_default().add(r);
            let n = i64::from(r.repeat_count.0);
            *latency.entry((minute, LATENCY, latency_bucket(r.latency_ms))).or_default() += n;
            if let Some(ttft) = r.ttft_ms {
                *latency.entry((minute, TIME_TO_FIRST_TOKEN, latency_bucket(ttft))).or_default() += n;
            }
        }
        for (minute, s) in minutes {
            let params = params![minute, s.requests, s.errors, s.tokens_input, s.tokens_output, s.latency_ms_sum];
            runs.push((&self.minute, params));
        }
        for ((minute, kind, bucket), requests) in latency {
            runs.push((&self.latency_minute, params![minute, kind, bucket, requests]));
        }
    }

    fn add_hourly<'a>(&'a self, records: &[&AuditRecord], runs: &mut Vec<(&'a Statement, Vec<Value>)>) {
        let mut hourly: BTreeMap<&str, Sums> = BTreeMap::new();
        let mut by_model: BTreeMap<(&str, &str), Sums> = BTreeMap::new();
        let mut by_account: BTreeMap<(Account<'_>, &str, &str), Sums> = BTreeMap::new();
        let mut latency: BTreeMap<(&str, i64), i64> = BTreeMap::new();
        let mut latency_by_account: BTreeMap<(Account<'_>, &str, i64), i64> = BTreeMap::new();
        let mut errors: BTreeMap<(&str, u16, &str), i64> = BTreeMap::new();
        for r in records.iter().filter(|r| r.is_inference() && r.timestamp.len() >= 13) {
            let hour = &r.timestamp[..13];
            let model = r.model.as_deref().unwrap_or("");
            let bucket = latency_bucket(r.latency_ms);
            hourly.entry(hour).or_default().add(r);
            by_model.entry((hour, model)).or_default().add(r);
            by_account.entry((Account::of(r), hour, model)).or_default().add(r);
            *latency.entry((hour, bucket)).or_default() += i64::from(r.repeat_count.0);
            *latency_by_account.entry((Account::of(r), hour, bucket)).or_default() += i64::from(r.repeat_count.0);
            if r.is_error() {
                let code = r.error_code.map(|c| c.as_str()).unwrap_or("");
                *errors.entry((hour, r.status, code)).or_default() += i64::from(r.repeat_count.0);
            }
        }
        for (hour, s) in hourly {
            let params = params![hour, s.requests, s.errors, s.tokens_input, s.tokens_output, s.latency_ms_sum];
            runs.push((&self.hourly, params));
        }
        for ((hour, model), s) in by_model {
            runs.push((&self.model, params![hour, model, s.requests, s.tokens_input, s.tokens_output]));
        }
        for ((account, hour, model), s) in by_account {
            let account = account.name();
            let params =
                params![account, hour, model, s.requests, s.errors, s.tokens_input, s.tokens_output, s.latency_ms_sum];
            runs.push((&self.account, params));
        }
        for ((hour, bucket), requests) in latency {
            runs.push((&self.latency, params![hour, bucket, requests]));
        }
        for ((account, hour, bucket), requests) in latency_by_account {
            runs.push((&self.latency_account, params![account.name(), hour, bucket, requests]));
        }
        for ((hour, status, code), requests) in errors {
            runs.push((&self.errors, params![hour, status, code, requests]));
        }
    }
}

async fn collect<const N: usize>(mut rows: crate::storage::Rows) -> Result<Vec<(String, [i64; N])>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let mut values = [0i64; N];
        for (i, value) in values.iter_mut().enumerate() {
            *value = row.get::<Option<i64>>(i as i32 + 1)?.unwrap_or(0);
        }
        out.push((row.get(0)?, values));
    }
    Ok(out)
}

/// Requests, errors, tokens in and out, and latency sum per time bucket in `hours`;
/// `bucket_len` is 13 (hours) or 10 (days).
pub async fn series(
    conn: &Conn,
    hours: &Hours,
    account: Option<&str>,
    bucket_len: u32,
) -> Result<Vec<(String, [i64; 5])>> {
    let sums = "SUM(requests), SUM(errors), SUM(tokens_input), SUM(tokens_output), SUM(latency_ms_sum)";
    let rows = match account {
        None => {
            conn.query(
                &format!(
                    "SELECT substr(hour, 1, ?2) AS b, {sums} FROM usage_hourly WHERE hour >= ?1 AND hour < ?3 \
                     GROUP BY b ORDER BY b"
                ),
                params![hours.from.as_str(), bucket_len, hours.to.as_str()],
            )
            .await?
        }
        Some(p) => {
            conn.query(
                &format!(
                    "SELECT substr(hour, 1, ?2) AS b, {sums} FROM usage_hourly_account \
                     WHERE account = ?3 AND hour >= ?1 AND hour < ?4 GROUP BY b ORDER BY b"
                ),
                params![hours.from.as_str(), bucket_len, p, hours.to.as_str()],
            )
            .await?
        }
    };
    collect(rows).await
}

/// Requests and tokens in and out per model in `hours`, busiest first.
pub async fn per_model(conn: &Conn, hours: &Hours, account: Option<&str>) -> Result<Vec<(String, [i64; 3])>> {
    let sums = "SUM(requests) AS n, SUM(tokens_input), SUM(tokens_output)";
    let rows = match account {
        None => {
            conn.query(
                &format!(
                    "SELECT model, {sums} FROM usage_hourly_model WHERE hour >= ?1 AND hour < ?2 \
                     GROUP BY model ORDER BY n DESC, model"
                ),
                [hours.from.as_str(), hours.to.as_str()],
            )
            .await?
        }
        Some(p) => {
            conn.query(
                &format!(
                    "SELECT model, {sums} FROM usage_hourly_account WHERE account = ?3 AND hour >= ?1 AND hour < ?2 \
                     GROUP BY model ORDER BY n DESC, model"
                ),
                [hours.from.as_str(), hours.to.as_str(), p],
            )
            .await?
        }
    };
    collect(rows).await
}

/// Distinct accounts with inference requests in `hours`.
pub async fn active_accounts(conn: &Conn, hours: &Hours, account: Option<&str>) -> Result<i64> {
    match account {
        None => super::query_i64(
            conn,
            "SELECT COUNT(DISTINCT account) FROM usage_hourly_account WHERE hour >= ?1 AND hour < ?2 AND account != ''",
            [hours.from.as_str(), hours.to.as_str()],
        )
        .await,
        Some(p) => {
            let active = super::query_i64(
                conn,
                "SELECT EXISTS (SELECT 1 FROM usage_hourly_account WHERE account = ?3 AND hour >= ?1 AND hour < ?2)",
                [hours.from.as_str(), hours.to.as_str(), p],
            )
            .await?;
            Ok(active)
        }
    }
}

/// Requests per latency bucket in `hours`.
pub async fn latency_histogram(conn: &Conn, hours: &Hours, account: Option<&str>) -> Result<Vec<(i64, i64)>> {
    let mut rows = match account {
        None => {
            conn.query(
                "SELECT bucket, SUM(requests) FROM latency_hourly WHERE hour >= ?1 AND hour < ?2 \
                 GROUP BY bucket ORDER BY bucket",
                [hours.from.as_str(), hours.to.as_str()],
            )
            .await?
        }
        Some(p) => {
            conn.query(
                "SELECT bucket, SUM(requests) FROM latency_hourly_account WHERE account = ?3 AND hour >= ?1 \
                 AND hour < ?2 GROUP BY bucket ORDER BY bucket",
                [hours.from.as_str(), hours.to.as_str(), p],
            )
            .await?
        }
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(out)
}

/// Requests, errors and tokens in and out per account in `hours`, busiest first, with the
/// name of the account's user where it is one.
pub async fn per_account(conn: &Conn, hours: &Hours) -> Result<Vec<(String, Option<String>, [i64; 4])>> {
    let mut rows = conn
        .query(
            "SELECT u.account, users.name, u.n, u.e, u.i, u.o FROM (SELECT account, SUM(requests) AS n, \
             SUM(errors) AS e, SUM(tokens_input) AS i, SUM(tokens_output) AS o FROM usage_hourly_account \
             WHERE hour >= ?1 AND hour < ?2 GROUP BY account) AS u LEFT JOIN users ON users.id = u.account \
             ORDER BY u.n DESC, u.account",
            [hours.from.as_str(), hours.to.as_str()],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let values = [row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?];
        out.push((row.get(0)?, row.get(1)?, values));
    }
    Ok(out)
}

/// Failed requests per status and error code (empty when there was none) in `hours`,
/// commonest first.
pub async fn errors(conn: &Conn, hours: &Hours) -> Result<Vec<(u16, String, i64)>> {
    let mut rows = conn
        .query(
            "SELECT status, error_code, SUM(requests) AS n FROM usage_hourly_errors WHERE hour >= ?1 AND hour < ?2 \
             GROUP BY status, error_code ORDER BY n DESC, status, error_code",
            [hours.from.as_str(), hours.to.as_str()],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get::<u32>(0)?.try_into().unwrap_or(u16::MAX), row.get(1)?, row.get(2)?));
    }
    Ok(out)
}

/// The rollup key of the minute `at` falls in (`YYYY-MM-DDTHH:MM`).
pub fn minute_key(at: std::time::SystemTime) -> String {
    crate::time::format_rfc3339(at)[..16].to_string()
}

/// Requests, errors, tokens in and out, and latency sum since `since_minute`.
pub async fn minutes_total(conn: &Conn, since_minute: &str) -> Result<[i64; 5]> {
    let rows = conn
        .query(
            "SELECT '', SUM(requests), SUM(errors), SUM(tokens_input), SUM(tokens_output), SUM(latency_ms_sum) \
             FROM usage_minute WHERE minute >= ?1",
            [since_minute],
        )
        .await?;
    Ok(collect(rows).await?.first().map(|(_, sums)| *sums).unwrap_or_default())
}

/// Requests per bucket of latency `kind` since `since_minute`.
pub async fn minutes_histogram(conn: &Conn, since_minute: &str, kind: i64) -> Result<Vec<(i64, i64)>> {
    let mut rows = conn
        .query(
            "SELECT bucket, SUM(requests) FROM latency_minute WHERE minute >= ?1 AND kind = ?2 \
             GROUP BY bucket ORDER BY bucket",
            params![since_minute, kind],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_db;

    fn record(user_id: Option<&str>, key_id: Option<i64>, tokens_input: u64) -> AuditRecord {
        AuditRecord {
            timestamp: "2026-05-01T08:15:00.000Z".into(),
            path: "/v1/chat/completions".into(),
            user_id: user_id.map(str::to_string),
            key_id,
            status: 200,
            latency_ms: 5,
            tokens_input: Some(tokens_input),
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn a_users_keys_count_to_the_user_a_key_without_one_to_itself() {
        let (_dir, db) = test_db().await;
        let first = [record(Some("alice"), Some(1), 1), record(None, Some(3), 10), record(Some("alice"), Some(2), 100)];
        crate::audit::store_for_test(&db, &first).await;
        let second = [record(None, Some(3), 1_000), record(None, None, 10_000), record(Some("bob"), Some(3), 100_000)];
        crate::audit::store_for_test(&db, &second).await;

        let hours = Hours { from: "2026-05-01T08".into(), to: "2026-05-01T09".into() };
        let conn = db.connect().await.unwrap();
        let accounts: Vec<(String, i64, i64)> =
            per_account(&conn, &hours).await.unwrap().into_iter().map(|(a, _, [n, _, i, _])| (a, n, i)).collect();
        let expected = [("alice", 2, 101), ("key:3", 2, 1_010), ("", 1, 10_000), ("bob", 1, 100_000)];
        assert_eq!(accounts, expected.map(|(a, n, i)| (a.to_string(), n, i)));
        let latency_rows = crate::storage::query_i64(
            &conn,
            "SELECT COUNT(*) FROM latency_hourly_account WHERE account IN ('alice', 'bob', 'key:3', '')",
            (),
        )
        .await
        .unwrap();
        assert_eq!(latency_rows, 4, "one latency bucket per account");
    }
}
