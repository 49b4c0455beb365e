//! Rate limits of keys and users: set by an admin, enforced on the next request, exact under
//! a burst, with OpenAI's headers.

use serde_json::{Value, json};
use vault_core::keys::{self, Scope};
use vault_e2e::{TestApp, assert_error, chat_body};

/// A new user key: its raw value and id.
async fn key_with_id(app: &TestApp) -> (String, i64) {
    let created = keys::create(app.db(), "limited", Scope::User, None, Some("test")).await.unwrap();
    (created.key, created.info.id)
}

async fn set_limits(app: &TestApp, admin: &str, path: &str, limits: Value) -> reqwest::Response {
    app.send("PUT", path, Some(admin), Some(&limits)).await
}

#[tokio::test]
async fn a_burst_gets_exactly_the_limit_and_other_keys_are_unaffected() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let (limited, id) = key_with_id(&app).await;
    let other = app.create_key(Scope::User).await;
    let set = set_limits(&app, &admin, &format!("/vault/admin/keys/{id}/limits"), json!({"rpm": 50})).await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set["effective"]["rpm"], 50);

    let url = format!("{}/v1/chat/completions", app.url);
    let burst = (0..200).map(|_| {
        let (url, key) = (url.clone(), limited.clone());
        tokio::spawn(async move { vault_e2e::client().post(url).bearer_auth(key).json(&chat_body(false)).send().await })
    });
    let mut remaining = Vec::new();
    let mut refused = 0;
    for answer in futures_util::future::join_all(burst).await {
        let answer = answer.unwrap().unwrap();
        let headers = answer.headers().clone();
        assert_eq!(headers["x-ratelimit-limit-requests"], "50");
        match answer.status().as_u16() {
            200 => remaining.push(headers["x-ratelimit-remaining-requests"].to_str().unwrap().parse::<u64>().unwrap()),
            429 => {
                refused += 1;
                let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=61).contains(&wait), "{wait}");
                assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
                let body = assert_error(answer, 429, "rate_limited").await;
                assert_eq!(body["error"]["type"], "rate_limit_error");
            }
            status => panic!("unexpected {status}"),
        }
    }
    assert_eq!((remaining.len(), refused), (50, 150));
    // Each admitted request saw one fewer left: 49 down to 0, once each.
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<u64>>());
    app.vault().audit.flush().await;
    let refusals = vault_core::audit::AuditFilter { status: Some(429), ..Default::default() };
    let rows = vault_core::audit::query(app.db(), &refusals, Some(500), None).await.unwrap();
    assert_eq!(rows.len(), 150, "every refusal is audited");

    let free = app.send("POST", "/v1/chat/completions", Some(&other), Some(&chat_body(false))).await;
    assert_eq!(free.status(), 200);
    assert!(free.headers().get("x-ratelimit-limit-requests").is_none(), "no limit, no headers");

    // Lifted: the next request goes through.
    let lifted = set_limits(&app, &admin, &format!("/vault/admin/keys/{id}/limits"), json!({"rpm": null})).await;
    assert_eq!(lifted.status(), 200);
    let again = app.send("POST", "/v1/chat/completions", Some(&limited), Some(&chat_body(false))).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn tokens_are_counted_by_real_usage_and_a_users_limit_covers_all_their_keys() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = vault_core::users::create(app.db(), "Ann", "ann@clinic.example", vault_core::users::Role::User, None)
        .await
        .unwrap();
    let first = keys::create(app.db(), "a", Scope::User, Some(&user.id), None).await.unwrap().key;
    let second = keys::create(app.db(), "b", Scope::User, Some(&user.id), None).await.unwrap().key;
    let set = set_limits(&app, &admin, &format!("/vault/admin/users/{}/limits", user.id), json!({"tpm": 60})).await;
    assert_eq!(set.status(), 200);

    // A stream holds its estimate while it runs and counts what it really used when it ends.
    let stream = app.send("POST", "/v1/chat/completions", Some(&first), Some(&chat_body(true))).await;
    assert_eq!(stream.status(), 200);
    let held: u64 = stream.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert!(held < 60, "the stream's reservation is counted: {held}");
    let events = stream.text().await.unwrap();
    let usage: Value = events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|chunk| chunk["usage"].is_object())
        .map(|chunk| chunk["usage"].clone())
        .unwrap_or(Value::Null);
    let used = app.audit_rows("/v1/chat/completions").await[0].clone();
    let used = used.tokens_input.unwrap() + used.tokens_output.unwrap();
    assert!(used > 0 && usage.is_null(), "usage counted though the client did not ask for it");

    // The other key of the same user sees what is left after the real usage.
    let next = app.send("POST", "/v1/chat/completions", Some(&second), Some(&chat_body(false))).await;
    assert_eq!(next.status(), 200);
    let left: u64 = next.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert!(left < 60 - used, "{left} after {used} used");
    // Until the window moves on, the minute's tokens are spent: refused, and told how long.
    let mut last = next;
    for _ in 0..10 {
        if last.status() == 429 {
            break;
        }
        last = app.send("POST", "/v1/chat/completions", Some(&first), Some(&chat_body(false))).await;
    }
    let wait: u64 = last.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 1 && wait <= 61, "{wait}");
    let body = assert_error(last, 429, "rate_limited").await;
    assert_eq!(body["error"]["details"]["limit"], "tokens_per_minute");
    assert_eq!(body["error"]["details"]["scope"], "user");
}

#[tokio::test]
async fn limits_routes_need_admin_and_refuse_bad_values() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let (user_key, id) = key_with_id(&app).await;
    let path = format!("/vault/admin/keys/{id}/limits");
    assert_error(app.send("GET", &path, None, None).await, 401, "invalid_api_key").await;
    assert_error(app.send("GET", &path, Some(&user_key), None).await, 403, "insufficient_scope").await;
    assert_error(set_limits(&app, &user_key, &path, json!({"rpm": 5})).await, 403, "insufficient_scope").await;
    assert_error(
        set_limits(&app, &admin, "/vault/admin/keys/99999/limits", json!({"rpm": 5})).await,
        404,
        "key_not_found",
    )
    .await;
    assert_error(app.send("GET", "/vault/admin/users/nobody/limits", Some(&admin), None).await, 404, "user_not_found")
        .await;
    for bad in [
        json!({"rpm": -1}),
        json!({"rpm": 0}),
        json!({"tpm": 1e12}),
        json!({"rpm": "ten"}),
        json!({"rps": 5}),
        json!({"weight": 0}),
        json!({"weight": 101}),
    ] {
        let refused = set_limits(&app, &admin, &path, bad.clone()).await;
        assert_eq!(refused.status(), 400, "{bad}");
    }
    let shown: Value = app.send("GET", &path, Some(&admin), None).await.json().await.unwrap();
    assert_eq!(
        shown["limits"],
        json!({"rpm": null, "tpm": null, "concurrency": null, "weight": null}),
        "nothing half-written"
    );
    let user = vault_core::users::create(app.db(), "n", "n@clinic.example", vault_core::users::Role::User, None)
        .await
        .unwrap();
    let weighted =
        set_limits(&app, &admin, &format!("/vault/admin/users/{}/limits", user.id), json!({"weight": 4})).await;
    let weighted: Value = weighted.json().await.unwrap();
    assert_eq!(weighted["limits"]["weight"], 4);
}
