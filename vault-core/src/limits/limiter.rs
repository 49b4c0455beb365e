//! Admission by rate limits: requests per minute, tokens per minute and requests at once,
//! of a key and of its user (the stricter applies). One lock over the windows of both, held
//! for a few lookups, keeps the count exact across threads: 200 requests at once against a
//! limit of 50 per minute admit exactly 50.
//!
//! Windows slide by the second: a request counts from its admission to the end of the 61st
//! second after it (never less than a minute), kept as counts per second, so a window costs
//! the same at 10 or a million requests per minute. Tokens count when an answer ends, by
//! its real usage; until then the request holds a reservation (its prompt, estimated from
//! its size, and its `max_tokens`). A request is admitted while the minute's tokens and the
//! reservations leave any room, so it overruns by at most itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::LimitSet;
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};
use crate::model::keys::Principal;

/// Seconds a window keeps, one slot each: the minute, and the second under way.
const SLOTS: usize = 61;
/// The wait suggested when only a request under way can make room.
const WHEN_ONE_ENDS: Duration = Duration::from_secs(1);
/// Admissions between two sweeps of the windows nobody used for a minute.
const SWEEP_EVERY: u64 = 4096;

/// The admission state of every limited key and user of this gateway.
pub struct Limiter {
    /// What a key without limits of its own is held to (`VAULT_DEFAULT_*`).
    defaults: LimitSet,
    state: Mutex<State>,
    /// Seconds are counted from here.
    origin: Instant,
}

#[derive(Default)]
struct State {
    /// Keyed by ids from the database, never by what a client sends: a fast hash is safe.
    windows: HashMap<Subject, Window, foldhash::fast::RandomState>,
    admissions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Key(i64),
    User(String),
}

impl Subject {
    fn scope(&self) -> &'static str {
        match self {
            Subject::Key(_) => "key",
            Subject::User(_) => "user",
        }
    }
}

/// What one key or user did in the last minute, per second.
#[derive(Debug)]
struct Window {
    /// Requests admitted and tokens used in each of the seconds `newest - SLOTS + 1 ..=
    /// newest` (second `s` in slot `s % SLOTS`).
    requests: [u64; SLOTS],
    tokens: [u64; SLOTS],
    newest: u64,
    /// The sums of the slots.
    requests_in: u64,
    tokens_in: u64,
    /// Tokens held by the requests under way.
    reserved: u64,
    running: u64,
}

/// Where a request stands against one kind of limit, as OpenAI's `x-ratelimit-*` headers
/// say it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window is empty again.
    pub reset_seconds: f64,
}

/// The requests and tokens left to a request's key or user (the tighter of the two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RateStatus {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl RateStatus {
    /// Adds OpenAI's headers, `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    /// Every request of a limited key carries them, so the six values are written into one
    /// buffer and share it: one allocation instead of one or two per value.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        let mut text = BytesMut::with_capacity(96);
        // Each header's name and where its value ends in `text`.
        let mut values: [(&HeaderName, usize); 6] = [(&REQUEST_HEADERS[0], 0); 6];
        let mut count = 0;
        for (quota, names) in [(self.requests, &REQUEST_HEADERS), (self.tokens, &TOKEN_HEADERS)] {
            let Some(q) = quota else { continue };
            push_number(&mut text, q.limit);
            values[count] = (&names[0], text.len());
            push_number(&mut text, q.remaining);
            values[count + 1] = (&names[1], text.len());
            push_duration(&mut text, q.reset_seconds);
            values[count + 2] = (&names[2], text.len());
            count += 3;
        }
        let text = text.freeze();
        headers.reserve(count);
        let mut start = 0;
        for &(name, end) in &values[..count] {
            if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
                headers.insert(name.clone(), value);
            }
            start = end;
        }
    }

    /// Keeps, for each kind, the quota with less left.
    fn tighten(&mut self, other: RateStatus) {
        let tighter = |a: Option<Quota>, b: Option<Quota>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
            (a, b) => a.or(b),
        };
        self.requests = tighter(self.requests, other.requests);
        self.tokens = tighter(self.tokens, other.tokens);
    }
}

static REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
static TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Writes a number in decimal (without the formatting machinery: this runs on every
/// limited request).
fn push_number(out: &mut BytesMut, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration as OpenAI writes it in these headers: `20ms`, `1.5s`, `6m0s`; rounded to
/// the millisecond (to the second from a minute on) before the unit is chosen, so that
/// 59.9996 s reads `1m0s`.
fn push_duration(out: &mut BytesMut, seconds: f64) {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    if millis < 1000 {
        push_number(out, millis);
        out.extend_from_slice(b"ms");
    } else if millis >= 60_000 {
        let whole = millis.saturating_add(500) / 1000;
        push_number(out, whole / 60);
        out.extend_from_slice(b"m");
        push_number(out, whole % 60);
        out.extend_from_slice(b"s");
    } else {
        push_number(out, millis / 1000);
        let fraction = millis % 1000;
        if fraction != 0 {
            // Three digits, without the zeros at the end: `.5`, `.05`, `.125`.
            let digits =
                [b'0' + (fraction / 100) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8];
            let len = 3 - digits.iter().rev().take_while(|d| **d == b'0').count();
            out.extend_from_slice(b".");
            out.extend_from_slice(&digits[..len]);
        }
        out.extend_from_slice(b"s");
    }
}

impl Window {
    fn new() -> Window {
        Window {
            requests: [0; SLOTS],
            tokens: [0; SLOTS],
            newest: 0,
            requests_in: 0,
            tokens_in: 0,
            reserved: 0,
            running: 0,
        }
    }

    /// Moves the window on to second `now`, emptying the slots of the seconds it leaves.
    fn advance(&mut self, now: u64) {
        if now <= self.newest {
            return;
        }
        if now - self.newest >= SLOTS as u64 {
            self.requests = [0; SLOTS];
            self.tokens = [0; SLOTS];
            (self.requests_in, self.tokens_in) = (0, 0);
        } else {
            for second in self.newest + 1..=now {
                let slot = (second % SLOTS as u64) as usize;
                self.requests_in = self.requests_in.saturating_sub(std::mem::take(&mut self.requests[slot]));
                self.tokens_in = self.tokens_in.saturating_sub(std::mem::take(&mut self.tokens[slot]));
            }
        }
        self.newest = now;
    }

    /// The seconds the window holds, oldest first, with their slots.
    fn seconds(&self) -> impl DoubleEndedIterator<Item = (u64, usize)> {
        let oldest = (self.newest + 1).saturating_sub(SLOTS as u64);
        (oldest..=self.newest).map(|second| (second, (second % SLOTS as u64) as usize))
    }

    fn is_idle(&self) -> bool {
        self.requests_in == 0 && self.tokens_in == 0 && self.running == 0 && self.reserved == 0
    }

    /// The second by whose end counts in `slots` from `total` fall below `max`.
    fn freed_after(&self, slots: &[u64; SLOTS], total: u64, max: u64) -> Option<u64> {
        let mut left = total;
        self.seconds()
            .find(|(_, slot)| {
                left -= slots[*slot];
                left < max
            })
            .map(|(second, _)| second)
    }

    /// The newest second with something in `slots`.
    fn last_used(&self, slots: &[u64; SLOTS]) -> Option<u64> {
        self.seconds().rev().find(|(_, slot)| slots[*slot] > 0).map(|(second, _)| second)
    }
}

impl Limiter {
    fn second(&self, now: Instant) -> u64 {
        now.duration_since(self.origin).as_secs()
    }

    /// How long from `now` until second `second` leaves the window.
    fn until_gone(&self, second: u64, now: Instant) -> Duration {
        (self.origin + Duration::from_secs(second + SLOTS as u64)).saturating_duration_since(now)
    }

    /// The limit a new request would break, its value, and how long until it would not.
    fn refusal(&self, window: &Window, limits: &LimitSet, now: Instant) -> Option<(&'static str, u64, Duration)> {
        if let Some(max) = limits.concurrency
            && window.running >= max
        {
            return Some(("concurrent_requests", max, WHEN_ONE_ENDS));
        }
        if let Some(max) = limits.rpm
            && window.requests_in >= max
        {
            let freed = window.freed_after(&window.requests, window.requests_in, max);
            return Some(("requests_per_minute", max, freed.map_or(WHEN_ONE_ENDS, |s| self.until_gone(s, now))));
        }
        if let Some(max) = limits.tpm
            && window.tokens_in.saturating_add(window.reserved) >= max
        {
            let freed = window.freed_after(&window.tokens, window.tokens_in.saturating_add(window.reserved), max);
            return Some(("tokens_per_minute", max, freed.map_or(WHEN_ONE_ENDS, |s| self.until_gone(s, now))));
        }
        None
    }

    fn status(&self, window: &Window, limits: &LimitSet, now: Instant) -> RateStatus {
        let reset = |slots| window.last_used(slots).map_or(0.0, |s| self.until_gone(s, now).as_secs_f64());
        RateStatus {
            requests: limits.rpm.map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(window.requests_in),
                reset_seconds: reset(&window.requests),
            }),
            tokens: limits.tpm.map(|limit| Quota {
                limit,
                remaining: limit.saturating_sub(window.tokens_in.saturating_add(window.reserved)),
                reset_seconds: reset(&window.tokens),
            }),
        }
    }
}

/// An admitted request's hold on its limits: released when dropped, with the tokens it
/// used counted from then on (see [`settle`](Permit::settle)).
pub struct Permit {
    held: Option<Held>,
}

struct Held {
    limiter: Arc<Limiter>,
    /// The key's, then the user's; at most two, kept without an allocation.
    subjects: [Option<Subject>; 2],
    reserved: u64,
    used: u64,
    status: RateStatus,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("status", &self.status()).finish()
    }
}

impl Permit {
    /// The limits' state after this admission; `None` when none applies.
    pub fn status(&self) -> Option<RateStatus> {
        self.held.as_ref().map(|h| h.status)
    }

    /// Records the tokens the answer used (prompt and completion), to count in place of
    /// the reservation once the permit is released; an answer whose usage is unknown (a
    /// stream cut short) counts its reservation.
    pub fn settle(&mut self, used: Option<u64>) {
        if let Some(held) = self.held.as_mut() {
            held.used = used.unwrap_or(held.reserved);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let now = held.limiter.second(Instant::now());
        let mut state = held.limiter.lock();
        for subject in held.subjects.iter().flatten() {
            if let Some(window) = state.windows.get_mut(subject) {
                window.advance(now);
                window.running = window.running.saturating_sub(1);
                window.reserved = window.reserved.saturating_sub(held.reserved);
                let slot = &mut window.tokens[(now % SLOTS as u64) as usize];
                *slot = slot.saturating_add(held.used);
                window.tokens_in = window.tokens_in.saturating_add(held.used);
            }
        }
    }
}

impl Limiter {
    pub fn new(defaults: LimitSet) -> Arc<Limiter> {
        Arc::new(Limiter { defaults, state: Mutex::new(State::default()), origin: Instant::now() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a request of `principal` that may use `reserve` tokens, or refuses it with a
    /// 429 that says which limit, until when, and where the limits stand.
    pub fn admit(self: &Arc<Self>, principal: &Principal, reserve: u64) -> Result<Permit> {
        let key = principal.limits.key.or(self.defaults);
        let user = principal.limits.user;
        let user = match &principal.user_id {
            Some(id) if !user.is_unlimited() => Some((Subject::User(id.clone()), user)),
            _ => None,
        };
        let applied = [(!key.is_unlimited()).then_some((Subject::Key(principal.key_id), key)), user];
        if applied.iter().all(Option::is_none) {
            return Ok(Permit { held: None });
        }
        let now = Instant::now();
        let second = self.second(now);
        let mut state = self.lock();
        for (subject, limits) in applied.iter().flatten() {
            let window = state.windows.entry(subject.clone()).or_insert_with(Window::new);
            window.advance(second);
            if let Some((limit, value, wait)) = self.refusal(window, limits, now) {
                return Err(refused(subject.scope(), limit, value, wait, self.status(window, limits, now)));
            }
        }
        let mut status = RateStatus::default();
        for (subject, limits) in applied.iter().flatten() {
            if let Some(window) = state.windows.get_mut(subject) {
                window.requests[(second % SLOTS as u64) as usize] += 1;
                window.requests_in += 1;
                window.reserved = window.reserved.saturating_add(reserve);
                window.running += 1;
                status.tighten(self.status(window, limits, now));
            }
        }
        state.admissions += 1;
        if state.admissions.is_multiple_of(SWEEP_EVERY) {
            state.windows.retain(|_, window| {
                window.advance(second);
                !window.is_idle()
            });
        }
        let subjects = applied.map(|applied| applied.map(|(subject, _)| subject));
        Ok(Permit { held: Some(Held { limiter: self.clone(), subjects, reserved: reserve, used: 0, status }) })
    }
}

fn refused(scope: &str, limit: &str, value: u64, wait: Duration, status: RateStatus) -> VaultError {
    let what = match limit {
        "requests_per_minute" => format!("{value} requests per minute"),
        "tokens_per_minute" => format!("{value} tokens per minute"),
        _ => format!("{value} requests at once"),
    };
    VaultError::new(
        ErrorKind::RateLimited,
        ErrorCode::RateLimited,
        format!("Rate limit of this {scope} reached: {what}."),
    )
    .with_details(serde_json::json!({
        "scope": scope,
        "limit": limit,
        "value": value,
        "retry_after_seconds": wait.as_secs_f64(),
        "rate_limit": status,
        "suggestion": "Retry after the time in Retry-After; an admin can raise the limit.",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::keys::Scope;
    use crate::model::limits::Limits;

    fn principal(key_id: i64, user: Option<&str>, key: LimitSet, user_limits: LimitSet) -> Principal {
        Principal {
            key_id,
            key_prefix: format!("vault_sk_{key_id:04}"),
            scope: Scope::User,
            user_id: user.map(String::from),
            limits: Limits { key, user: user_limits },
        }
    }

    fn rpm(n: u64) -> LimitSet {
        LimitSet { rpm: Some(n), ..LimitSet::default() }
    }

    #[test]
    fn no_more_requests_are_admitted_than_the_limit_even_at_once() {
        let limiter = Limiter::new(LimitSet::default());
        let who = principal(1, None, rpm(50), LimitSet::default());
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        if let Ok(permit) = limiter.admit(&who, 10) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            drop(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 50);
        let refused = limiter.admit(&who, 10).unwrap_err();
        assert_eq!((refused.status(), refused.code.as_str()), (429, "rate_limited"));
        let details = refused.details.unwrap();
        assert_eq!((details["scope"].as_str(), details["limit"].as_str()), (Some("key"), Some("requests_per_minute")));
        let wait = details["retry_after_seconds"].as_f64().unwrap();
        assert!(wait > 59.0 && wait <= 61.0, "{wait}");
        assert_eq!(details["rate_limit"]["requests"]["remaining"], 0);
        // Another key is not held to this one's count.
        assert!(limiter.admit(&principal(2, None, rpm(50), LimitSet::default()), 10).is_ok());
    }

    #[test]
    fn the_remaining_requests_count_down() {
        let limiter = Limiter::new(LimitSet::default());
        let who = principal(1, None, rpm(3), LimitSet::default());
        let left: Vec<u64> =
            (0..3).map(|_| limiter.admit(&who, 0).unwrap().status().unwrap().requests.unwrap().remaining).collect();
        assert_eq!(left, [2, 1, 0]);
    }

    #[test]
    fn a_user_limit_is_shared_by_the_users_keys_and_the_stricter_applies() {
        let limiter = Limiter::new(LimitSet::default());
        let first = principal(1, Some("u1"), rpm(10), rpm(3));
        let second = principal(2, Some("u1"), LimitSet::default(), rpm(3));
        let permits = [limiter.admit(&first, 0), limiter.admit(&second, 0), limiter.admit(&first, 0)];
        assert!(permits.iter().all(Result::is_ok));
        let status = permits[2].as_ref().unwrap().status().unwrap();
        assert_eq!(status.requests.unwrap().limit, 3, "the tighter quota is reported");
        let refused = limiter.admit(&second, 0).unwrap_err();
        assert_eq!(refused.details.unwrap()["scope"], "user");
    }

    #[test]
    fn defaults_hold_keys_without_limits_of_their_own() {
        let limiter = Limiter::new(rpm(1));
        let who = principal(1, None, LimitSet::default(), LimitSet::default());
        let _first = limiter.admit(&who, 0).unwrap();
        assert!(limiter.admit(&who, 0).is_err());
        let own = principal(2, None, rpm(5), LimitSet::default());
        assert!(limiter.admit(&own, 0).is_ok() && limiter.admit(&own, 0).is_ok(), "its own limit wins");
        let free = Limiter::new(LimitSet::default());
        let permit = free.admit(&who, 0).unwrap();
        assert!(permit.status().is_none(), "nothing to count, nothing locked");
    }

    #[test]
    fn requests_at_once_are_capped_until_one_ends() {
        let limiter = Limiter::new(LimitSet::default());
        let who = principal(1, None, LimitSet { concurrency: Some(2), ..LimitSet::default() }, LimitSet::default());
        let (a, _b) = (limiter.admit(&who, 0).unwrap(), limiter.admit(&who, 0).unwrap());
        let refused = limiter.admit(&who, 0).unwrap_err();
        assert_eq!(refused.details.unwrap()["limit"], "concurrent_requests");
        drop(a);
        assert!(limiter.admit(&who, 0).is_ok());
    }

    #[test]
    fn tokens_are_reserved_then_settled_by_real_usage() {
        let limiter = Limiter::new(LimitSet::default());
        let who = principal(1, None, LimitSet { tpm: Some(1000), ..LimitSet::default() }, LimitSet::default());
        let mut first = limiter.admit(&who, 600).unwrap();
        assert_eq!(first.status().unwrap().tokens.unwrap().remaining, 400);
        // Room is left, so the second is admitted; it may overrun by itself at most.
        let second = limiter.admit(&who, 600).unwrap();
        assert_eq!(second.status().unwrap().tokens.unwrap().remaining, 0);
        let refused = limiter.admit(&who, 1).unwrap_err();
        assert_eq!(refused.details.unwrap()["limit"], "tokens_per_minute");
        // The first used far less than it held: 100 count, the rest is free again.
        first.settle(Some(100));
        drop(first);
        let third = limiter.admit(&who, 200).unwrap();
        assert_eq!(third.status().unwrap().tokens.unwrap().remaining, 1000 - 100 - 600 - 200);
        drop((second, third));
        // An answer that used more than the minute allows holds the next until it leaves.
        let mut greedy = limiter.admit(&who, 0).unwrap();
        greedy.settle(Some(5000));
        drop(greedy);
        let refused = limiter.admit(&who, 0).unwrap_err();
        let wait = refused.details.unwrap()["retry_after_seconds"].as_f64().unwrap();
        assert!(wait > 59.0, "until the big answer leaves the window: {wait}");
    }

    #[test]
    fn an_answer_of_unknown_usage_counts_its_reservation_and_nothing_wraps() {
        let limiter = Limiter::new(LimitSet::default());
        let who = principal(1, None, LimitSet { tpm: Some(1000), ..LimitSet::default() }, LimitSet::default());
        let mut cut = limiter.admit(&who, 300).unwrap();
        cut.settle(None);
        drop(cut);
        let next = limiter.admit(&who, 0).unwrap();
        assert_eq!(next.status().unwrap().tokens.unwrap().remaining, 700);
        drop(next);
        let huge = limiter.admit(&who, u64::MAX).unwrap();
        let also = limiter.admit(&principal(1, None, who.limits.key, LimitSet::default()), u64::MAX);
        assert!(also.is_err(), "the minute is spent, and the counts did not wrap around");
        drop(huge);
    }

    #[test]
    fn the_headers_carry_each_quota_with_its_own_value() {
        let quota = |limit, remaining, reset_seconds| Some(Quota { limit, remaining, reset_seconds });
        let read = |status: RateStatus| {
            let mut headers = HeaderMap::new();
            headers.insert("x-request-id", HeaderValue::from_static("r-1"));
            status.add_headers(&mut headers);
            let mut pairs: Vec<(String, String)> =
                headers.iter().map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned())).collect();
            pairs.sort();
            pairs
        };
        let both = read(RateStatus { requests: quota(60, 59, 1.5), tokens: quota(10_000, 9_700, 0.02) });
        let expected = [
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "10000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "9700"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-reset-tokens", "20ms"),
            ("x-request-id", "r-1"),
        ];
        assert_eq!(both, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
        let tokens_only = read(RateStatus { requests: None, tokens: quota(500, 0, 61.0) });
        let expected = [
            ("x-ratelimit-limit-tokens", "500"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1m1s"),
            ("x-request-id", "r-1"),
        ];
        assert_eq!(tokens_only, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
        assert_eq!(read(RateStatus::default()), [("x-request-id".to_owned(), "r-1".to_owned())]);
    }

    #[test]
    fn durations_are_written_as_openai_does() {
        let text = |seconds| {
            let mut out = BytesMut::new();
            push_duration(&mut out, seconds);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(text(0.02), "20ms");
        assert_eq!(text(1.5), "1.5s");
        assert_eq!(text(1.05), "1.05s");
        assert_eq!(text(12.345), "12.345s");
        assert_eq!(text(59.0), "59s");
        assert_eq!(text(0.9996), "1s");
        assert_eq!(text(59.9996), "1m0s");
        assert_eq!(text(119.6), "2m0s");
        assert_eq!(text(360.0), "6m0s");
        assert_eq!(text(-3.0), "0ms");
    }
}
