//! CORS for browsers: a preflight is allowed what it asks for from a listed origin, and
//! every answer — errors included — keeps its status and shape and carries the allow
//! headers; an unlisted origin is served as any client, without them.

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, chat_body, client};

const ORIGIN: &str = "http://app.example";

fn with_cors(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    [&[("VAULT_CORS_ORIGINS", ORIGIN)][..], extra].concat()
}

/// Sends a request from a page of `origin`; the status, the allowed origin, and the error code.
async fn from_page(
    app: &TestApp,
    origin: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Option<String>) {
    let mut request = match &body {
        Some(body) => client().post(format!("{}/v1/chat/completions", app.url)).json(body),
        None => client().get(format!("{}/v1/models", app.url)),
    };
    request = request.header("origin", origin).bearer_auth(key);
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let allowed = response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["code"].as_str().map(String::from));
    (status, allowed, code)
}

#[tokio::test]
async fn a_browser_may_ask_for_the_sdk_headers_and_reads_every_answer_with_its_true_status() {
    let app =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &with_cors(&[("VAULT_UPSTREAM_TIMEOUT", "1")]))
            .await;
    let key = app.create_key(Scope::User).await;
    let asked = "x-stainless-os, x-stainless-lang, authorization, content-type";
    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", app.url))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", asked)
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(headers["access-control-allow-headers"], asked);
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));

    let allowed = Some(ORIGIN.to_string());
    assert_eq!(from_page(&app, ORIGIN, &key, None).await, (200, allowed.clone(), None));
    assert_eq!(
        from_page(&app, ORIGIN, "vault_sk_nope", None).await,
        (401, allowed.clone(), Some("invalid_api_key".into()))
    );
    let unknown = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        from_page(&app, ORIGIN, &key, Some(unknown)).await,
        (404, allowed.clone(), Some("model_not_found".into()))
    );
    let mut limited = chat_body(false);
    limited["fake_mode"] = json!("error:429");
    assert_eq!(from_page(&app, ORIGIN, &key, Some(limited)).await.0, 429);
    let mut hang = chat_body(false);
    hang["fake_mode"] = json!("hang");
    assert_eq!(
        from_page(&app, ORIGIN, &key, Some(hang)).await,
        (504, allowed.clone(), Some("inference_timeout".into()))
    );
    assert_eq!(from_page(&app, ORIGIN, &key, Some(chat_body(true))).await.1, allowed);
    // The audit row keeps the true status of what the page was answered.
    let rows = app.audit_rows("/v1/models").await;
    assert!(rows.iter().any(|r| r.status == 401 && r.error_code.as_deref() == Some("invalid_api_key")), "{rows:?}");

    // An unlisted origin is served as any client, just without the allow headers.
    assert_eq!(from_page(&app, "http://elsewhere.example", &key, None).await, (200, None, None));
    let foreign = client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/models", app.url))
        .header("origin", "http://elsewhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_engine_outage_reaches_the_page_as_a_503_it_can_read() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestApp::spawn_with(Upstream::Url(format!("http://127.0.0.1:{port}")), &with_cors(&[])).await;
    let key = app.create_key(Scope::User).await;
    let answer = from_page(&app, ORIGIN, &key, Some(chat_body(false))).await;
    assert_eq!(answer, (503, Some(ORIGIN.to_string()), Some("inference_unavailable".into())));
}
