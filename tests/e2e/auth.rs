//! Keys: who gets in, who does not, and the framework's own errors in the API's shape.

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error, client, request_id};

#[tokio::test]
async fn requests_without_a_usable_key_get_401_in_the_error_shape_and_are_audited() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/models", app.url);
    let unknown = format!("vault_sk_{}", "Z".repeat(48));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("malformed key", Some("Bearer sk-not-a-vault-key".into())),
        ("unknown key", Some(format!("Bearer {unknown}"))),
    ];
    for (case, header) in cases {
        let mut request = client().get(&url);
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        let id = request_id(&response);
        assert_error(response, 401, "invalid_api_key").await;
        let row = app.audit_row(&id).await.unwrap_or_else(|| panic!("{case}: no audit row"));
        assert_eq!(row.status, 401, "{case}");
        // A refused but well-formed key is recorded by its display prefix, never whole.
        let expected_prefix = (case == "unknown key").then(|| unknown[..13].to_string());
        assert_eq!(row.key_prefix, expected_prefix, "{case}");
    }
}

#[tokio::test]
async fn a_flood_of_refused_requests_keeps_a_few_rows_and_counts_the_rest() {
    let mut app = TestApp::spawn().await;
    let http = client();
    for _ in 0..150 {
        let response = http.get(format!("{}/v1/models", app.url)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    app.stop().await;
    let db = vault_e2e::open_db(&app.data_dir).await;
    let filter = vault_core::audit::AuditFilter { status: Some(401), ..Default::default() };
    let rows = vault_core::audit::query(&db, &filter, Some(1000), None).await.unwrap();
    let summaries: Vec<_> = rows.iter().filter(|r| r.repeat_count > 1).collect();
    // The 150 requests may straddle a minute: then each minute has its own rows and summary.
    assert!(rows.len() <= 2 * 61, "{} rows for a flood", rows.len());
    assert_eq!(rows.iter().map(|r| u64::from(r.repeat_count)).sum::<u64>(), 150, "every request is counted");
    assert!(!summaries.is_empty() && summaries.iter().all(|s| s.request_id.starts_with("flood-")));
}

#[tokio::test]
async fn a_key_revoked_through_the_api_is_refused_on_the_next_request() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let created = app
        .send("POST", "/vault/admin/keys", Some(&admin), Some(&serde_json::json!({"label": "laptop"})))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.send("GET", "/v1/models", Some(key), None).await.status(), 200);
    let revoked = app.send("DELETE", &format!("/vault/admin/keys/{}", created["id"]), Some(&admin), None).await;
    assert_eq!(revoked.json::<Value>().await.unwrap()["is_active"], false);
    assert_error(app.send("GET", "/v1/models", Some(key), None).await, 401, "invalid_api_key").await;
    let again = app.send("DELETE", &format!("/vault/admin/keys/{}", created["id"]), Some(&admin), None).await;
    assert_error(again, 409, "key_already_revoked").await;
    assert_error(app.send("DELETE", "/vault/admin/keys/999999", Some(&admin), None).await, 404, "key_not_found").await;
}

#[tokio::test]
async fn a_key_in_a_path_or_request_id_is_never_recorded_whole() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let response = client()
        .get(format!("{}/v1/models/{key}", app.url))
        .bearer_auth(&key)
        .header("x-request-id", format!("trace-{key}"))
        .send()
        .await
        .unwrap();
    let id = request_id(&response);
    assert_eq!(id, format!("trace-{}...", &key[..13]));
    let row = app.audit_row(&id).await.unwrap();
    assert_eq!(row.path, format!("/v1/models/{}...", &key[..13]));
}

#[tokio::test]
async fn docs_are_compressed_revalidated_and_show_the_served_document() {
    let app = TestApp::spawn().await;
    let c = client();
    let plain = c.get(format!("{}/docs", app.url)).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none(), "not asked for gzip");
    let etag = plain.headers()["etag"].clone();
    let page = plain.text().await.unwrap();
    // The page shows the document /openapi.json serves, examples included, and the icon.
    assert!(page.contains("What is a reverse proxy?") && page.contains("createChatCompletion"));
    assert!(page.contains("/favicon.svg"));

    let gzipped = c.get(format!("{}/docs", app.url)).header("accept-encoding", "br, gzip;q=0.8").send().await.unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_ne!(gzipped.headers()["etag"], etag, "another representation, another tag");
    assert_eq!(gzipped.headers()["vary"], "accept-encoding");
    let compressed = gzipped.bytes().await.unwrap();
    assert!(compressed.len() * 3 < page.len(), "{} of {} bytes", compressed.len(), page.len());
    let mut unpacked = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut unpacked).unwrap();
    assert_eq!(unpacked, page);
    let refused = c.get(format!("{}/docs", app.url)).header("accept-encoding", "gzip;q=0").send().await.unwrap();
    assert!(refused.headers().get("content-encoding").is_none());

    // A browser that has the page asks again with its tag and gets no body.
    let again = c.get(format!("{}/docs", app.url)).header("if-none-match", etag.clone()).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = c.get(format!("{}/docs", app.url)).header("if-none-match", "\"old\"").send().await.unwrap();
    assert_eq!(stale.status(), 200);

    let spec = c.get(format!("{}/openapi.json", app.url)).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(spec.headers()["content-encoding"], "gzip");
    let icon = c.get(format!("{}/favicon.ico", app.url)).send().await.unwrap();
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert!(icon.text().await.unwrap().starts_with("<svg"));
}

#[tokio::test]
async fn health_and_docs_need_no_key_and_the_framework_errors_keep_the_shape() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let health: Value = client().get(format!("{}/vault/health", app.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["inference"]["reachable"], true);
    let spec: Value = client().get(format!("{}/openapi.json", app.url)).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/v1/chat/completions"].is_object());
    assert_eq!(client().get(format!("{}/docs", app.url)).send().await.unwrap().status(), 200);

    let c = client();
    assert_error(c.get(format!("{}/no/such/route", app.url)).send().await.unwrap(), 404, "not_found").await;
    // A 405 names the methods the path answers (a parameter segment matches any id).
    for (method, path, allow) in [
        ("DELETE", "/v1/models", "GET"),
        ("GET", "/v1/chat/completions", "POST"),
        ("POST", "/vault/conversations/c-1", "GET, PUT, DELETE"),
    ] {
        let response = c.request(method.parse().unwrap(), format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(response.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{method} {path}");
        assert_error(response, 405, "method_not_allowed").await;
    }
    let url = format!("{}/v1/chat/completions", app.url);
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
        &app.url,
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
async fn a_request_head_over_the_limits_gets_431_in_the_error_shape_and_an_audit_row() {
    let app = TestApp::spawn().await;
    let big = format!("X-Filler: {}\r\n", "a".repeat(70 * 1024));
    let many: String = (0..150).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    for (case, fields) in [("large", big), ("many fields", many)] {
        let request = format!("GET /vault/health?token=secret HTTP/1.1\r\nHost: vault\r\n{fields}\r\n");
        let (status, body) = raw_request(&app.url, &request).await;
        assert_eq!(status, 431, "{case}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "request_head_too_large", "{case}");
        assert_eq!(body["error"]["status"], 431, "{case}");
    }
    let db = vault_e2e::open_db(&app.data_dir).await;
    let filter = vault_core::audit::AuditFilter { status: Some(431), ..Default::default() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let rows = loop {
        // Journaled before the answer, committed a moment later.
        let rows = vault_core::audit::query(&db, &filter, None, None).await.unwrap();
        if rows.len() >= 2 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.method == "GET" && r.path == "/vault/health"), "{rows:?}");
    // A large head within the limits is served.
    let fields = format!("X-Filler: {}\r\n", "a".repeat(32 * 1024));
    let (status, _) = raw_request(
        &app.url,
        &format!("GET /vault/health HTTP/1.1\r\nHost: vault\r\nConnection: close\r\n{fields}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
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
