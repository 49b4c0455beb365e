//! Fair admission: with the engine full, one user's flood waits behind another user's few
//! requests instead of in front of them; too long a wait is a 503 `inference_busy`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_core::keys::{self, Scope};
use vault_core::users::{self, Role};
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error, request_id};

/// A key of a new user named `name`.
async fn user_key(app: &TestApp, name: &str) -> String {
    let user =
        users::create(app.db(), name, &format!("{name}@clinic.example"), Role::User, Some("test")).await.unwrap();
    keys::create(app.db(), name, Scope::User, Some(&user.id), Some("test")).await.unwrap().key
}

/// Waits until the gateway has read the engine's gauges once, as it does at start.
async fn until_the_engine_is_read(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.vault().inference.admission().snapshot().limit.is_none() {
        assert!(Instant::now() < deadline, "the engine's gauges were never read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Five tokens: with the fake's 10 ms a token, each answer holds its place in the batch for
/// 50 ms.
fn short_chat() -> Value {
    json!({"model": "qwen2.5-32b-awq", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
}

/// Sends `n` requests at once with `key`; each reports its status and how long it took.
fn send_at_once(app: &TestApp, key: &str, n: usize) -> Vec<tokio::task::JoinHandle<(u16, Duration)>> {
    let url = format!("{}/v1/chat/completions", app.url);
    (0..n)
        .map(|_| {
            let (url, key) = (url.clone(), key.to_string());
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = vault_e2e::client().post(url).bearer_auth(key).json(&short_chat()).send().await.unwrap();
                (answer.status().as_u16(), sent.elapsed())
            })
        })
        .collect()
}

async fn times(requests: Vec<tokio::task::JoinHandle<(u16, Duration)>>) -> Vec<Duration> {
    let mut times = Vec::new();
    for request in requests {
        let (status, took) = request.await.unwrap();
        assert_eq!(status, 200);
        times.push(took);
    }
    times.sort_unstable();
    times
}

/// A's 100 requests at once into an engine with 4 places, then B's 5: how long each of
/// A's and B's took, in order.
async fn flood_then_few(admission: &str) -> (TestApp, Vec<Duration>, Vec<Duration>) {
    let options = FakeOptions { capacity: Some(4), token_delay: Duration::from_millis(10), ..Default::default() };
    let settings = [("VAULT_ADMISSION", admission), ("VAULT_ADMISSION_THRESHOLD", "2")];
    let app = TestApp::spawn_with(Upstream::Fake(options), &settings).await;
    let (a, b) = (user_key(&app, "flood").await, user_key(&app, "doctor").await);
    if admission == "fair" {
        until_the_engine_is_read(&app).await;
    }
    let flood = send_at_once(&app, &a, 100);
    // The flood has arrived (and, without fair admission, filled the engine's queue).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let few = send_at_once(&app, &b, 5);
    let (few, flood) = (times(few).await, times(flood).await);
    (app, flood, few)
}

fn median(times: &[Duration]) -> Duration {
    times[times.len() / 2]
}

#[tokio::test]
async fn a_flood_waits_behind_another_users_few_requests() {
    // Without fair admission B's requests queue in the engine behind most of A's.
    let (_, flood, few) = flood_then_few("off").await;
    let (a, b) = (median(&flood), median(&few));
    assert!(b > a, "without fair admission B waits behind A: B's median {b:?}, A's {a:?}");

    // With it, B's five take their turns with A's: all done long before A's flood.
    let (app, flood, few) = flood_then_few("fair").await;
    let (a, b) = (median(&flood), median(&few));
    assert!(b * 3 < a, "B's median {b:?} is not well below A's {a:?}");
    let (b_last, a_last) = (few[few.len() - 1], flood[flood.len() - 1]);
    assert!(b_last + Duration::from_millis(200) < a_last, "B's last {b_last:?}, A's last {a_last:?}");

    // The waits are on record: in the audit rows and the metrics.
    app.vault().audit.flush().await;
    let all = vault_core::audit::AuditFilter { path_prefix: Some("/v1/".into()), ..Default::default() };
    let rows = vault_core::audit::query(app.db(), &all, Some(500), None).await.unwrap();
    assert_eq!(rows.len(), 105);
    assert!(rows.iter().all(|r| r.status == 200));
    let queued = rows.iter().filter(|r| r.queued_ms.is_some()).count();
    assert!(queued >= 50, "{queued} of {} rows say they waited", rows.len());
    let admin = app.create_key(Scope::Admin).await;
    let metrics = app.send("GET", "/metrics", Some(&admin), None).await.text().await.unwrap();
    let waits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vault_admission_wait_seconds_count "))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .unwrap_or_else(|| panic!("no wait histogram in {metrics}"));
    assert_eq!(waits, queued as u64);
    assert!(metrics.contains("vault_admission_queued 0"), "{metrics}");
    let limit = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vault_admission_limit "))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .unwrap_or_else(|| panic!("no limit gauge in {metrics}"));
    assert!(limit >= 1, "the engine was read, so a limit applies: {limit}");
}

#[tokio::test]
async fn a_request_that_waits_too_long_is_told_the_engine_is_busy() {
    // One place, and each answer holds it for 0.5 s: of six at once, the last ones cannot
    // get in within 0.3 s.
    let options = FakeOptions { capacity: Some(1), token_delay: Duration::from_millis(100), ..Default::default() };
    let settings = [("VAULT_ADMISSION_THRESHOLD", "0"), ("VAULT_ADMISSION_MAX_WAIT", "0.3")];
    let app = TestApp::spawn_with(Upstream::Fake(options), &settings).await;
    let key = user_key(&app, "patient").await;
    until_the_engine_is_read(&app).await;
    let url = format!("{}/v1/chat/completions", app.url);
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move { vault_e2e::client().post(url).bearer_auth(key).json(&short_chat()).send().await })
        })
        .collect();
    let mut busy = Vec::new();
    for request in requests {
        let answer = request.await.unwrap().unwrap();
        if answer.status() == 503 {
            assert_eq!(answer.headers()["retry-after"], "2");
            let id = request_id(&answer);
            let body = assert_error(answer, 503, "inference_busy").await;
            assert!(body["error"]["details"]["queued_seconds"].as_f64().unwrap() >= 0.3, "{body}");
            busy.push(id);
        } else {
            assert_eq!(answer.status(), 200);
        }
    }
    assert!(!busy.is_empty(), "nothing waited too long");
    app.vault().audit.flush().await;
    for id in busy {
        let row = app.audit_row(&id).await.unwrap();
        assert_eq!((row.status, row.error_code.as_deref()), (503, Some("inference_busy")));
        assert!(row.queued_ms.is_some_and(|ms| ms >= 300), "{row:?}");
    }
}
