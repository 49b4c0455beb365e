//! What the gateway does when the upstream or the client misbehaves.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error, chat_body, client, request_id};

use crate::inference::sse_data;

async fn post_json(app: &TestApp, key: &str, body: &serde_json::Value) -> reqwest::Response {
    app.send("POST", "/v1/chat/completions", Some(key), Some(body)).await
}

#[tokio::test]
async fn an_unreachable_upstream_answers_503_quickly() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gateway = TestApp::spawn_with(Upstream::Url(format!("http://127.0.0.1:{port}")), &[]).await;
    let key = gateway.create_key(Scope::User).await;
    let started = Instant::now();
    let response = post_json(&gateway, &key, &chat_body(false)).await;
    assert_eq!(response.headers()["retry-after"], "5", "a client learns when to try again");
    let id = request_id(&response);
    assert_error(response, 503, "inference_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let row = gateway.audit_row(&id).await.unwrap();
    assert_eq!(row.model.as_deref(), chat_body(false)["model"].as_str(), "the row names the model asked for");
    let health: serde_json::Value =
        client().get(format!("{}/vault/health", gateway.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    // Alive, but not ready for inference: a load balancer sends it none.
    let ready = client().get(format!("{}/vault/health/ready", gateway.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let fine = TestApp::spawn().await;
    assert_eq!(client().get(format!("{}/vault/health/ready", fine.url)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_upstream_that_hangs_answers_504_within_the_timeout() {
    let gateway = TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_UPSTREAM_TIMEOUT", "1")]).await;
    let key = gateway.create_key(Scope::User).await;
    for stream in [false, true] {
        let mut body = chat_body(stream);
        body["fake_mode"] = json!("hang");
        let started = Instant::now();
        let response = post_json(&gateway, &key, &body).await;
        let id = request_id(&response);
        assert_eq!(response.headers()["retry-after"], "5");
        assert_error(response, 504, "inference_timeout").await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "took {took:?}");
        assert_eq!(gateway.audit_row(&id).await.unwrap().status, 504);
    }
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event_and_an_incomplete_audit_row() {
    let gateway = TestApp::spawn().await;
    let key = gateway.create_key(Scope::User).await;
    let mut body = chat_body(true);
    body["fake_mode"] = json!("cut:3");
    let response = post_json(&gateway, &key, &body).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.len(), 4, "3 chunks and the error event: {events:?}");
    let error: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    let row = gateway.audit_row(&id).await.unwrap();
    assert!(!row.completed);
    assert_eq!(row.error_code.as_deref(), Some("upstream_stream_error"));
}

/// Polls the fake's stats until `field` is 0, failing after `within`.
async fn until_upstream_released(app: &TestApp, field: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while app.upstream_stats().await[field] != 0 {
        assert!(Instant::now() < deadline, "the upstream request ({field}) stayed open after the client left");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_closes_the_upstream_request_while_no_bytes_flow() {
    let gateway = TestApp::spawn().await;
    let key = gateway.create_key(Scope::User).await;
    let mut body = chat_body(true);
    // The next token is 30 s away: nothing is written to the client that could fail.
    body["fake_mode"] = json!("delay:30000");
    let response = post_json(&gateway, &key, &body).await;
    let id = request_id(&response);
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    assert_eq!(gateway.upstream_stats().await["open_streams"], 1);
    drop(stream);
    until_upstream_released(&gateway, "open_streams", Duration::from_millis(1500)).await;
    let row = gateway.audit_row(&id).await.expect("a partial stream is still audited");
    assert!(!row.completed);
    assert_eq!(row.error_code.as_deref(), Some("client_disconnected"));
}

#[tokio::test]
async fn a_client_that_leaves_before_the_first_token_closes_the_upstream_request() {
    let gateway = TestApp::spawn().await;
    let key = gateway.create_key(Scope::User).await;
    for stream in [true, false] {
        let mut body = chat_body(stream);
        // The upstream takes 30 s to start answering (time to first token).
        body["fake_mode"] = json!("slow:30000");
        let id = format!("leaves-early-{stream}");
        let request = client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .header("x-request-id", &id)
            .timeout(Duration::from_millis(300))
            .json(&body);
        assert!(request.send().await.unwrap_err().is_timeout());
        until_upstream_released(&gateway, "waiting", Duration::from_millis(1500)).await;
        let row = gateway.audit_row(&id).await.expect("an abandoned request is still audited");
        assert_eq!((row.status, row.completed), (499, false), "stream: {stream}");
        assert_eq!(row.error_code.as_deref(), Some("client_disconnected"));
    }
}

#[tokio::test]
async fn an_upstream_that_goes_quiet_mid_stream_is_cut_with_an_error_event() {
    let gateway =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_STREAM_IDLE_TIMEOUT", "1")]).await;
    let key = gateway.create_key(Scope::User).await;
    let mut body = chat_body(true);
    body["fake_mode"] = json!("delay:30000");
    let started = Instant::now();
    let response = post_json(&gateway, &key, &body).await;
    let id = request_id(&response);
    let events = sse_data(&response.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(5), "the stream was not cut: {:?}", started.elapsed());
    assert!(events.len() >= 2, "{events:?}");
    let error: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "inference_timeout", "{events:?}");
    until_upstream_released(&gateway, "open_streams", Duration::from_secs(1)).await;
    let row = gateway.audit_row(&id).await.unwrap();
    assert!(!row.completed);
    assert_eq!(row.error_code.as_deref(), Some("inference_timeout"));
}

#[tokio::test]
async fn an_upstream_redirect_is_never_followed_and_an_unreadable_answer_is_not_passed_on() {
    let gateway = TestApp::spawn().await;
    let key = gateway.create_key(Scope::User).await;
    let elsewhere = vault_e2e::start_fake_upstream().await;
    for stream in [false, true] {
        let mut body = chat_body(stream);
        body["fake_mode"] = json!(format!("redirect:{}", elsewhere.addr.port()));
        let response = post_json(&gateway, &key, &body).await;
        let id = request_id(&response);
        assert_error(response, 502, "upstream_invalid").await;
        assert_eq!(gateway.audit_row(&id).await.unwrap().error_code.as_deref(), Some("upstream_invalid"));
    }
    let stats: serde_json::Value =
        client().get(format!("{}/_fake/stats", elsewhere.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests"], 0, "the redirect target was contacted");
    let mut body = chat_body(false);
    body["fake_mode"] = json!("garbage");
    assert_error(post_json(&gateway, &key, &body).await, 502, "upstream_invalid").await;
}

#[tokio::test]
async fn an_upstream_answer_over_the_size_limit_is_a_502() {
    let gateway =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_MAX_UPSTREAM_BODY_MB", "1")]).await;
    let key = gateway.create_key(Scope::User).await;
    let small = json!({"input": ["a"], "dimensions": 8});
    assert_eq!(gateway.send("POST", "/v1/embeddings", Some(&key), Some(&small)).await.status(), 200);
    // 200 vectors of 4096 floats: several MB of JSON.
    let big = json!({"input": vec!["word"; 200], "dimensions": 4096});
    let response = gateway.send("POST", "/v1/embeddings", Some(&key), Some(&big)).await;
    assert_error(response, 502, "upstream_invalid").await;
}

#[tokio::test]
async fn with_too_little_free_disk_inference_is_refused_and_health_says_why() {
    // A minimum above any disk's free space.
    let gateway =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_MIN_FREE_MB", "1048576")]).await;
    let key = gateway.create_key(Scope::User).await;
    let response = post_json(&gateway, &key, &chat_body(false)).await;
    assert_eq!(response.headers()["retry-after"], "10");
    let id = request_id(&response);
    assert_error(response, 503, "audit_unavailable").await;
    assert_eq!(gateway.upstream_stats().await["requests"], 0, "nothing reached the upstream");
    assert_eq!(gateway.audit_row(&id).await.unwrap().status, 503, "the refusal itself is audited");
    let health = client().get(format!("{}/vault/health", gateway.url)).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["audit"]["ok"].as_bool()), (Some("unavailable"), Some(false)));
    assert!(health["audit"]["reason"].as_str().unwrap().contains("disk"));
}

#[tokio::test]
async fn a_database_file_removed_under_the_gateway_makes_it_unready() {
    let gateway = TestApp::spawn().await;
    let health = client().get(format!("{}/vault/health", gateway.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    std::fs::remove_file(gateway.data_dir.join("vault.db")).unwrap();
    let health = client().get(format!("{}/vault/health", gateway.url)).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["database"]["ok"], false);
    assert!(health["database"]["reason"].as_str().unwrap().contains("deleted or replaced"));
}

#[tokio::test]
async fn a_client_that_trickles_its_request_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_HEADER_TIMEOUT", "0.5")]).await;
    let key = gateway.create_key(Scope::User).await;
    let addr = gateway.url.trim_start_matches("http://").to_string();
    // A head that never ends (slowloris), and a body that stops halfway.
    let mut head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    head.write_all(b"GET /v1/models HTTP/1.1\r\nHost: vault\r\nX-Slow: 1").await.unwrap();
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    body.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Meanwhile everyone else is served.
    assert_eq!(gateway.send("GET", "/v1/models", Some(&key), None).await.status(), 200);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), head.read_to_end(&mut answer)).await.unwrap().unwrap_or(0);
    assert!(answer.is_empty(), "the unfinished head got an answer");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), body.read_to_string(&mut answer)).await.unwrap().unwrap_or(0);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
    assert!(started.elapsed() < Duration::from_secs(4));
}
