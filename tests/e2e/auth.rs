//! Keys: who gets in, who does not, and how fast a revocation counts.

use serde_json::Value;
use vault_e2e::{FakeVllm, Gateway, client};

use crate::support::{assert_error, request_id};

#[tokio::test]
async fn requests_without_a_usable_key_get_401_in_the_error_shape_and_are_audited() {
    let fake = FakeVllm::start().await;
    let gateway = Gateway::start(&fake.url).await;
    let url = format!("{}/v1/models", gateway.url);
    let unknown = format!("vault_sk_{}", "Z".repeat(48));
    let revoked = gateway.create_key("user").await;
    assert!(gateway.cli(&["revoke-key", &revoked]).await.status.success());

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("malformed key", Some("Bearer sk-not-a-vault-key".into())),
        ("unknown key", Some(format!("Bearer {unknown}"))),
        ("revoked key", Some(format!("Bearer {revoked}"))),
    ];
    for (case, header) in cases {
        let mut request = client().get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        let id = request_id(&response);
        assert_error(response, 401, "invalid_api_key").await;
        let row = gateway.audit_row(&id).await.unwrap_or_else(|| panic!("{case}: no audit row"));
        assert_eq!(row.status, 401, "{case}");
    }
    // A refused but well-formed key is recorded by its prefix, never whole.
    let log = gateway.log.lock().unwrap().join("\n");
    assert!(!log.contains(&unknown) && !log.contains(&revoked), "a raw key reached the log");
    assert!(log.contains(&revoked[..13]));
}

#[tokio::test]
async fn a_key_revoked_with_the_cli_is_refused_on_the_next_request() {
    let fake = FakeVllm::start().await;
    let gateway = Gateway::start(&fake.url).await;
    let key = gateway.create_key("user").await;
    let url = format!("{}/v1/models", gateway.url);
    for _ in 0..3 {
        // Warm the key cache.
        assert_eq!(client().get(&url).bearer_auth(&key).send().await.unwrap().status(), 200);
    }
    let out = gateway.cli(&["revoke-key", &key[..13], "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["is_active"], false);
    let response = client().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_error(response, 401, "invalid_api_key").await;
    // Still listed, as revoked.
    let listed: Value = serde_json::from_slice(&gateway.cli(&["list-keys", "--all", "--json"]).await.stdout).unwrap();
    assert_eq!(listed[0]["is_active"], false);
    assert!(listed[0]["revoked_at"].is_string());
    assert!(listed[0]["last_used_at"].is_string(), "use before revocation was recorded");
}

#[tokio::test]
async fn health_and_docs_need_no_key_and_the_framework_errors_keep_the_shape() {
    let fake = FakeVllm::start().await;
    let gateway = Gateway::start(&fake.url).await;
    let key = gateway.create_key("user").await;
    let health: Value =
        client().get(format!("{}/vault/health", gateway.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["inference"]["reachable"], true);
    assert_eq!(health["gpu"]["available"], false);
    let spec: Value = client().get(format!("{}/openapi.json", gateway.url)).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/v1/chat/completions"].is_object());
    let docs = client().get(format!("{}/docs", gateway.url)).send().await.unwrap();
    assert_eq!(docs.status(), 200);

    let c = client();
    assert_error(c.get(format!("{}/no/such/route", gateway.url)).send().await.unwrap(), 404, "not_found").await;
    assert_error(c.delete(format!("{}/v1/models", gateway.url)).send().await.unwrap(), 405, "method_not_allowed").await;
    let url = format!("{}/v1/chat/completions", gateway.url);
    let form = c.post(&url).bearer_auth(&key).header("content-type", "text/plain").body("hi").send().await.unwrap();
    assert_error(form, 415, "unsupported_media_type").await;
    let bad =
        c.post(&url).bearer_auth(&key).header("content-type", "application/json").body("{nope").send().await.unwrap();
    let body = assert_error(bad, 400, "invalid_json").await;
    assert!(body["error"]["message"].as_str().unwrap().starts_with("body"));
    let wrong_type = c.post(&url).bearer_auth(&key).json(&serde_json::json!({"stream": "yes"})).send().await.unwrap();
    let body = assert_error(wrong_type, 400, "invalid_request").await;
    assert!(body["error"]["message"].as_str().unwrap().starts_with("stream"));
    // Announce a body over the limit and send none: the gateway must refuse on the header
    // alone. (Sending 33 MiB races the early answer against the client's writes.)
    let (status, body) = raw_request(
        &gateway.url,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            33 * 1024 * 1024
        ),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn a_user_deactivated_with_the_cli_loses_every_key_on_the_next_request() {
    let fake = FakeVllm::start().await;
    let gateway = Gateway::start(&fake.url).await;
    let out = gateway.cli(&["create-user", "--name", "Dr. Ng", "--email", "ng@clinic.example", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    let user_id = user["id"].as_str().unwrap();
    let mut keys = Vec::new();
    for label in ["desk", "laptop"] {
        let out = gateway.cli(&["create-key", "--label", label, "--user", user_id, "--json"]).await;
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(created["user_id"], user_id);
        keys.push(created["key"].as_str().unwrap().to_string());
    }
    let url = format!("{}/v1/models", gateway.url);
    for key in &keys {
        assert_eq!(client().get(&url).bearer_auth(key).send().await.unwrap().status(), 200);
    }
    let out = gateway.cli(&["deactivate-user", user_id]).await;
    assert!(out.status.success());
    for key in &keys {
        assert_error(client().get(&url).bearer_auth(key).send().await.unwrap(), 401, "invalid_api_key").await;
    }
    let listed: Value = serde_json::from_slice(&gateway.cli(&["list-users", "--json"]).await.stdout).unwrap();
    assert_eq!(listed[0]["is_active"], false);
    // Errors: a clear line on stderr and an exit code per kind.
    let missing = gateway.cli(&["deactivate-user", "nobody"]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("vault-cli: No user with id nobody."));
    let bad = gateway.cli(&["create-user", "--name", "X", "--email", "not-an-email"]).await;
    assert_eq!(bad.status.code(), Some(2));
}

/// Sends raw request bytes and returns the status and body of the answer.
async fn raw_request(base_url: &str, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base_url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}
