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
    for (query, field) in
        [("from=yesterday", "from"), ("to=soon", "to"), ("cursor=abc", "cursor"), ("limit=0", "limit")]
    {
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
