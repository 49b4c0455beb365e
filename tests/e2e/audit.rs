//! `GET /vault/admin/audit`: who may read the trail, filters, and pages that hold still.

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error};

#[tokio::test]
async fn the_audit_log_is_for_admins_only() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    assert_error(app.send("GET", "/vault/admin/audit", None, None).await, 401, "invalid_api_key").await;
    assert_error(app.send("GET", "/vault/admin/audit", Some(&user), None).await, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn pages_follow_the_cursor_newest_first_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    for _ in 0..5 {
        assert_eq!(app.send("GET", "/v1/models", Some(&user), None).await.status(), 200);
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/vault/admin/audit?path=/v1/models&limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.send("GET", &path, Some(&admin), None).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        ids.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        // Rows written meanwhile (this very query's own) do not shift the pages.
        assert_eq!(app.send("GET", "/v1/models", Some(&user), None).await.status(), 200);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!((ids.len(), pages), (5, 3), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first without repeats: {ids:?}");

    // A cursor belongs to its query: another filter, or an edited id, is refused.
    let first: Value =
        app.send("GET", "/vault/admin/audit?path=/v1/models&limit=2", Some(&admin), None).await.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (id, digest) = cursor.split_once('.').unwrap();
    let edited = format!("{}.{digest}", id.parse::<i64>().unwrap() - 1);
    for query in [format!("path=/v1/&limit=2&cursor={cursor}"), format!("path=/v1/models&limit=2&cursor={edited}")] {
        let response = app.send("GET", &format!("/vault/admin/audit?{query}"), Some(&admin), None).await;
        let error = assert_error(response, 400, "invalid_request").await;
        assert!(error["error"]["message"].as_str().unwrap().starts_with("cursor"), "{query}: {error}");
    }
    let same = format!("/vault/admin/audit?path=/v1/models&limit=2&cursor={cursor}");
    assert_eq!(app.send("GET", &same, Some(&admin), None).await.status(), 200);
}

#[tokio::test]
async fn filters_narrow_the_rows_and_bad_ones_name_their_parameter() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    for _ in 0..2 {
        assert_eq!(app.send("GET", "/v1/models", Some("vault_sk_nope"), None).await.status(), 401);
    }
    let page: Value =
        app.send("GET", "/vault/admin/audit?status=401&method=get", Some(&admin), None).await.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert!(items.iter().all(|i| i["status"] == 401 && i["path"] == "/v1/models"), "{page}");
    let future: Value =
        app.send("GET", "/vault/admin/audit?from=2999-01-01T00:00:00Z", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(future["items"], serde_json::json!([]), "{future}");
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=soon", "to"),
        ("cursor=abc", "cursor"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
    ] {
        let response = app.send("GET", &format!("/vault/admin/audit?{query}"), Some(&admin), None).await;
        let error = assert_error(response, 400, "invalid_request").await;
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{query}: {error}");
    }
}

#[tokio::test]
async fn the_audit_log_exports_as_a_csv_or_json_download() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    assert_error(
        app.send("GET", "/vault/admin/audit/export?format=csv", Some(&user), None).await,
        403,
        "insufficient_scope",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(app.send("GET", "/v1/models", Some(&user), None).await.status(), 200);
    }
    let csv = app.send("GET", "/vault/admin/audit/export?format=csv", Some(&admin), None).await;
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = csv.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.starts_with("attachment; filename=\"vault-audit-") && disposition.ends_with(".csv\""));
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("id,timestamp,request_id,method,path"));
    // The three inference requests (the refused export has a row too, under its own path).
    assert_eq!(lines.filter(|l| l.contains(",/v1/models,")).count(), 3, "{text}");

    let json = app.send("GET", "/vault/admin/audit/export?format=json", Some(&admin), None).await;
    assert_eq!(json.headers()["content-type"], "application/json");
    let rows: Vec<Value> = json.json().await.unwrap();
    assert!(rows.len() >= 5, "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()), "oldest first");

    for (query, field) in [("format=xml", "format"), ("format=csv&from=soon", "from")] {
        let response = app.send("GET", &format!("/vault/admin/audit/export?{query}"), Some(&admin), None).await;
        let error = assert_error(response, 400, "invalid_request").await;
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{query}: {error}");
    }
}

#[tokio::test]
async fn stats_count_the_inference_requests_of_whole_hours() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let body = vault_e2e::chat_body(false);
    for _ in 0..3 {
        assert_eq!(app.send("POST", "/v1/chat/completions", Some(&user), Some(&body)).await.status(), 200);
    }
    let unknown = serde_json::json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.send("POST", "/v1/chat/completions", Some(&user), Some(&unknown)).await.status(), 404);
    assert_eq!(app.send("GET", "/vault/health", None, None).await.status(), 200);

    let response = app.send("GET", "/vault/admin/audit/stats", Some(&admin), None).await;
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await.unwrap();
    assert_eq!(stats["totals"]["requests"], 4, "inference requests only: {stats}");
    assert_eq!((stats["totals"]["errors"].as_i64(), stats["totals"]["error_rate"].as_f64()), (Some(1), Some(0.25)));
    assert_eq!(stats["accounts"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["accounts"][0]["requests"], 4);
    assert_eq!(stats["models"][0]["model"], body["model"]);
    assert_eq!(stats["errors"][0]["status"], 404);
    assert_eq!(stats["errors"][0]["code"], "model_not_found");
    assert!(stats["latency_ms"]["p99"].as_f64().is_some(), "{stats}");
    assert!(stats["from"].as_str().unwrap().ends_with(":00:00Z"), "{stats}");

    let past: Value = app
        .send("GET", "/vault/admin/audit/stats?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z", Some(&admin), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((past["totals"]["requests"].as_i64(), past["from"].as_str()), (Some(0), Some("2020-01-01T00:00:00Z")));
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-02-30T00:00:00Z", "to"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let response = app.send("GET", &format!("/vault/admin/audit/stats?{query}"), Some(&admin), None).await;
        let error = assert_error(response, 400, "invalid_request").await;
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{query}: {error}");
    }
}
