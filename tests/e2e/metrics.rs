//! `GET /metrics`: an admin key on the main port, no key on the loopback metrics port, and
//! counters that move by exactly the requests sent.

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error, chat_body, client};

/// The value of the sample `name{labels}` (labels as they are written), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp, admin: &str) -> String {
    let response = app.send("GET", "/metrics", Some(admin), None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn counters_move_by_exactly_the_requests_sent() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    assert_error(app.send("GET", "/metrics", Some(&user), None).await, 403, "insufficient_scope").await;
    assert_error(app.send("GET", "/metrics", None, None).await, 401, "invalid_api_key").await;

    let models = "vault_requests_total{route=\"/v1/models\",method=\"GET\",status=\"200\"}";
    let chats = "vault_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"200\"}";
    let before = scrape(&app, &admin).await;
    for _ in 0..7 {
        assert_eq!(app.send("GET", "/v1/models", Some(&user), None).await.status(), 200);
    }
    for stream in [false, true] {
        let response = app.send("POST", "/v1/chat/completions", Some(&user), Some(&chat_body(stream))).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let conversation = format!("/vault/conversations/{}", "no-such-id");
    assert_eq!(app.send("GET", &conversation, Some(&user), None).await.status(), 404);
    let after = scrape(&app, &admin).await;
    assert_eq!(sample(&after, models) - sample(&before, models), 7.0, "{after}");
    assert_eq!(sample(&after, chats) - sample(&before, chats), 2.0, "{after}");
    let templated = "vault_requests_total{route=\"/vault/conversations/{id}\",method=\"GET\",status=\"404\"}";
    assert_eq!(sample(&after, templated), 1.0, "a route counts under its template: {after}");
    let model = chat_body(false)["model"].as_str().unwrap().to_string();
    assert!(sample(&after, &format!("vault_tokens_total{{model=\"{model}\",direction=\"output\"}}")) > 0.0);
    assert_eq!(sample(&after, "vault_upstream_first_byte_seconds_count"), 1.0, "only the stream has a first token");
    assert_eq!(sample(&after, "vault_upstream_latency_seconds_count"), 2.0);
    assert!(after.lines().any(|l| l == "vault_active_streams 0"), "{after}");
    assert!(sample(&after, "vault_key_cache_lookups_total{result=\"hit\"}") > 0.0, "{after}");
    assert!(sample(&after, "vault_gateway_overhead_seconds_count") >= 10.0);
    assert!(after.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn the_loopback_metrics_port_needs_no_key_and_serves_nothing_else() {
    let app =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_METRICS_ADDR", "127.0.0.1:0")]).await;
    let metrics_url = app.metrics_url.clone().expect("the metrics port is bound");
    let user = app.create_key(Scope::User).await;
    assert_eq!(app.send("GET", "/v1/models", Some(&user), None).await.status(), 200);
    let scraped = client().get(format!("{metrics_url}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert_eq!(sample(&text, "vault_requests_total{route=\"/v1/models\",method=\"GET\",status=\"200\"}"), 1.0);
    // Addressed by a name a page could have re-pointed at the box (DNS rebinding): refused.
    let rebound = client().get(format!("{metrics_url}/metrics")).header("host", "evil.example").send().await.unwrap();
    assert_error(rebound, 403, "origin_not_allowed").await;
    let by_name = metrics_url.replace("127.0.0.1", "localhost");
    assert_eq!(client().get(format!("{by_name}/metrics")).send().await.unwrap().status(), 200);
    // Nothing but the metrics: not the API, not with a key.
    let api = client().get(format!("{metrics_url}/v1/models")).bearer_auth(&user).send().await.unwrap();
    assert_error(api, 404, "not_found").await;
    let post = client().post(format!("{metrics_url}/metrics")).send().await.unwrap();
    assert_eq!(post.headers()["allow"], "GET");
    assert_error(post, 405, "method_not_allowed").await;
    // Scrapes are requests like any other: on the audit trail.
    let admin = app.create_key(Scope::Admin).await;
    let rows: Value =
        app.send("GET", "/vault/admin/audit?path=/metrics", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(rows["items"].as_array().unwrap().len(), 4, "{rows}");
}
