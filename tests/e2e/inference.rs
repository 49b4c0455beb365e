//! The OpenAI-compatible routes, proxied to fake-vllm, with their audit rows.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error, chat_body, request_id};

async fn setup() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    (app, key)
}

/// POSTs a JSON body with a key.
async fn post_json(url: impl reqwest::IntoUrl, key: &str, body: &Value) -> reqwest::Response {
    vault_e2e::client().post(url).bearer_auth(key).json(body).send().await.unwrap()
}

/// GETs with a key.
async fn get_with_key(url: impl reqwest::IntoUrl, key: &str) -> reqwest::Response {
    vault_e2e::client().get(url).bearer_auth(key).send().await.unwrap()
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(String::from))
        .collect()
}

#[tokio::test]
async fn non_stream_chat_is_proxied_and_audited_with_token_counts() {
    let (gateway, key) = setup().await;
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &chat_body(false)).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().starts_with("This is a reply"));
    let usage = &body["usage"];
    let row = gateway.audit_row(&id).await.expect("audit row");
    assert_eq!(row.status, 200);
    assert_eq!(row.path, "/v1/chat/completions");
    assert_eq!(row.model.as_deref(), Some("qwen2.5-32b-awq"));
    assert_eq!(row.tokens_input, usage["prompt_tokens"].as_u64());
    assert_eq!(row.tokens_output, usage["completion_tokens"].as_u64());
    assert_eq!(row.key_prefix.as_deref(), Some(&key[..13]));
    assert!(row.completed);
}

#[tokio::test]
async fn streamed_chat_arrives_chunk_by_chunk() {
    let (gateway, key) = setup().await;
    let mut body = chat_body(true);
    body["fake_mode"] = json!("delay:150");
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert_eq!(response.headers()["x-accel-buffering"], "no", "a proxy in front is told not to buffer");
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push((started.elapsed(), String::from_utf8_lossy(&chunk).into_owned()));
    }
    let first_content = arrivals.iter().find(|(_, text)| text.contains("\"content\":\"This\"")).unwrap().0;
    let done = arrivals.last().unwrap();
    assert!(done.1.ends_with("data: [DONE]\n\n"));
    // 10 chunks 150 ms apart: the first token must be out long before the end.
    assert!(done.0 - first_content >= Duration::from_millis(900), "chunks were buffered: {arrivals:?}");
}

#[tokio::test]
async fn stream_usage_is_audited_and_the_extra_chunk_hidden_unless_asked_for() {
    let (gateway, key) = setup().await;
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &chat_body(true)).await;
    let id = request_id(&response);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "usage chunk leaked: {events:?}");
    let sent = gateway.upstream_received().await;
    assert_eq!(sent.last().unwrap()["stream_options"]["include_usage"], true, "gateway must ask for usage");
    let row = gateway.audit_row(&id).await.expect("audit row");
    // 5 words + 1 for the message; the answer is the 7 words of "This is a reply from
    // fake-vllm to:" and the 5 words of the prompt.
    assert_eq!((row.tokens_input, row.tokens_output), (Some(6), Some(12)));
    assert!(row.completed);

    let mut asked = chat_body(true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &asked).await.text().await.unwrap();
    let events = sse_data(&text);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn completions_work_streamed_and_not() {
    let (gateway, key) = setup().await;
    let url = format!("{}/v1/completions", gateway.url);
    let body: Value =
        post_json(&url, &key, &json!({"prompt": "Once upon a time", "max_tokens": 4})).await.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "This is a reply");
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    let response = post_json(&url, &key, &json!({"prompt": ["a b", "c"], "stream": true})).await;
    let id = request_id(&response);
    let events = sse_data(&response.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(text.starts_with("This is a reply from fake-vllm to: c"), "{text}");
    let row = gateway.audit_row(&id).await.unwrap();
    assert_eq!(row.tokens_input, Some(3));
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64() {
    let (gateway, key) = setup().await;
    let url = format!("{}/v1/embeddings", gateway.url);
    let response = post_json(&url, &key, &json!({"input": ["one two", "three"], "dimensions": 8})).await;
    let id = request_id(&response);
    let floats: Value = response.json().await.unwrap();
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    let first: Vec<f64> =
        floats["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(first.len(), 8);
    assert_eq!(gateway.audit_row(&id).await.unwrap().tokens_input, Some(3));

    let encoded: Value =
        post_json(&url, &key, &json!({"input": ["one two", "three"], "dimensions": 8, "encoding_format": "base64"}))
            .await
            .json()
            .await
            .unwrap();
    let b64 = encoded["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 44, "8 float32 = 32 bytes = 44 base64 characters");
}

#[tokio::test]
async fn models_are_listed_and_ids_with_slashes_resolve() {
    let (gateway, key) = setup().await;
    let list: Value = get_with_key(format!("{}/v1/models", gateway.url), &key).await.json().await.unwrap();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["qwen2.5-32b-awq", "Qwen/Qwen2.5-7B-Instruct"]);
    let card: Value =
        get_with_key(format!("{}/v1/models/Qwen/Qwen2.5-7B-Instruct", gateway.url), &key).await.json().await.unwrap();
    assert_eq!(card["id"], "Qwen/Qwen2.5-7B-Instruct");
    let missing = get_with_key(format!("{}/v1/models/no/such", gateway.url), &key).await;
    assert_error(missing, 404, "model_not_found").await;
}

#[tokio::test]
async fn unknown_fields_reach_the_upstream_unchanged() {
    let (gateway, key) = setup().await;
    let mut body = chat_body(false);
    body["top_k"] = json!(7);
    body["guided_json"] = json!({"type": "object", "properties": {"a": {"type": "number"}}});
    body["chat_template_kwargs"] = json!({"enable_thinking": false});
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gateway.upstream_received().await.last().unwrap(), &body);
}

#[tokio::test]
async fn upstream_errors_keep_their_status_and_message() {
    let (gateway, key) = setup().await;
    let mut body = chat_body(false);
    body["model"] = json!("gpt-4");
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &body).await;
    let id = request_id(&response);
    let error = assert_error(response, 404, "model_not_found").await;
    assert_eq!(error["error"]["message"], "The model `gpt-4` does not exist.");
    let row = gateway.audit_row(&id).await.unwrap();
    assert_eq!((row.status, row.error_code.as_deref()), (404, Some("model_not_found")));
    assert_eq!(row.model.as_deref(), Some("gpt-4"), "the row names the model asked for");

    // The engine's rate limit passes with its status, and a hint when to try again.
    let mut body = chat_body(false);
    body["fake_mode"] = json!("error:429");
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &body).await;
    assert_eq!((response.status().as_u16(), response.headers()["retry-after"].to_str().unwrap()), (429, "1"));

    let mut body = chat_body(true);
    body["fake_mode"] = json!("error:422");
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &body).await;
    assert_error(response, 422, "invalid_request").await;
}

#[tokio::test]
async fn model_cards_are_enriched_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("models.json");
    std::fs::write(
        &manifest,
        r#"{"models": [{"id": "Qwen/Qwen2.5-7B-Instruct", "name": "Qwen 7B", "context_window": 32768, "path": "/secret"}]}"#,
    )
    .unwrap();
    let settings = [("VAULT_MODELS_MANIFEST", manifest.to_str().unwrap())];
    let gateway = TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &settings).await;
    let key = gateway.create_key(Scope::User).await;
    let card: Value =
        get_with_key(format!("{}/v1/models/Qwen/Qwen2.5-7B-Instruct", gateway.url), &key).await.json().await.unwrap();
    assert_eq!(card["name"], "Qwen 7B");
    assert_eq!(card["context_window"], 32768);
    assert!(card.get("path").is_none(), "paths on disk stay private");
}

/// What a client and the audit trail see of one answer, less what differs on every call.
async fn observed(app: &TestApp, response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let id = request_id(&response);
    let body = response.text().await.unwrap();
    let error = serde_json::from_str::<Value>(&body).ok().map(|b| b["error"].clone()).unwrap_or(Value::Null);
    let row = app.audit_row(&id).await.expect("every answer has an audit row");
    json!({
        "status": status, "content_type": content_type, "error": error,
        "row": [row.status, row.error_code, row.key_prefix.is_some(), row.model, row.tokens_output],
    })
}

/// With CORS on, the generation routes answer every request as they do with it off (the
/// edge answers CORS for every route; it changes no status, shape or audit row).
#[tokio::test]
async fn generation_routes_answer_alike_with_cors_on_and_off() {
    let direct = TestApp::spawn().await;
    let routed =
        TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_CORS_ORIGINS", "http://app.test")]).await;
    let chat = chat_body(false).to_string();
    let stream = chat_body(true).to_string();
    let completion = json!({"model": "qwen2.5-32b-awq", "prompt": "Say hi"}).to_string();
    let embedding = json!({"model": "qwen2.5-32b-awq", "input": "hi"}).to_string();
    let unknown_key = format!("Bearer vault_sk_{}", "Z".repeat(48));
    // (path, authorization, content type, body); "KEY" stands for each app's own key.
    let cases: Vec<(&str, Option<&str>, Option<&str>, &str)> = vec![
        ("/v1/chat/completions", None, Some("application/json"), &chat),
        ("/v1/chat/completions", Some("Basic dXNlcjpwYXNz"), Some("application/json"), &chat),
        ("/v1/chat/completions", Some(&unknown_key), Some("application/json"), &chat),
        ("/v1/chat/completions", Some("KEY"), Some("text/plain"), &chat),
        ("/v1/chat/completions", Some("KEY"), None, &chat),
        ("/v1/chat/completions", Some("KEY"), Some("application/json"), "{"),
        ("/v1/chat/completions", Some("KEY"), Some("application/json"), "[]"),
        ("/v1/chat/completions", Some("KEY"), Some("application/json"), r#"{"messages": []}"#),
        ("/v1/chat/completions", Some("KEY"), Some("application/json; charset=utf-8"), &chat),
        ("/v1/chat/completions", Some("KEY"), Some("application/json"), &stream),
        ("/v1/completions", None, Some("application/json"), &completion),
        ("/v1/completions", Some("KEY"), Some("application/json"), &completion),
        ("/v1/embeddings", Some("KEY"), Some("text/plain"), &embedding),
        ("/v1/embeddings", Some("KEY"), Some("application/json"), &embedding),
        ("/v1/embeddings", Some("KEY"), Some("application/json"), &stream),
    ];
    let keys = [direct.create_key(Scope::User).await, routed.create_key(Scope::User).await];
    for (path, authorization, content_type, body) in cases {
        let mut seen = Vec::new();
        for (app, key) in [&direct, &routed].into_iter().zip(&keys) {
            let mut request = vault_e2e::client().post(format!("{}{path}", app.url)).body(body.to_string());
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization.replace("KEY", &format!("Bearer {key}")));
            }
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            seen.push(observed(app, request.send().await.unwrap()).await);
        }
        assert_eq!(seen[0], seen[1], "{path} {authorization:?} {content_type:?} {body}");
    }
}

#[tokio::test]
async fn request_ids_and_trace_context_reach_the_upstream() {
    let (gateway, key) = setup().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = vault_e2e::client()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(&key)
        .header("x-request-id", "trace-abc-1")
        .header("traceparent", traceparent)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&response), "trace-abc-1");
    let answer: Value = response.json().await.unwrap();
    // vLLM names its answer after the id it is sent: the request's, made unique (two
    // requests of one id at once break vLLM), so the audit row's id starts it.
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-trace-abc-1-"), "{answer}");
    let head = gateway.upstream_heads().await.pop().unwrap();
    let sent = head["x-request-id"].as_str().unwrap().to_string();
    assert!(sent.starts_with("trace-abc-1-") && sent.len() == "trace-abc-1-".len() + 8, "{sent}");
    assert_eq!(head["traceparent"], traceparent);
    assert_eq!(head["authorized"], false, "no VLLM_API_KEY, no Authorization upstream: the client's key stays here");

    // Without a client id, the one Vault made up goes upstream; a malformed traceparent does not.
    let response = vault_e2e::client()
        .post(format!("{}/v1/completions", gateway.url))
        .bearer_auth(&key)
        .header("traceparent", "00-not-a-trace-context")
        .json(&json!({"prompt": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    let id = request_id(&response);
    let events = sse_data(&response.text().await.unwrap());
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert!(first["id"].as_str().unwrap().starts_with(&format!("cmpl-{id}-")), "{first}");
    let head = gateway.upstream_heads().await.pop().unwrap();
    assert!(head["x-request-id"].as_str().unwrap().starts_with(&format!("{id}-")));
    assert!(head["traceparent"].is_null(), "{head}");

    let response = post_json(format!("{}/v1/embeddings", gateway.url), &key, &json!({"input": "x"})).await;
    let id = request_id(&response);
    let sent = gateway.upstream_heads().await.pop().unwrap()["x-request-id"].as_str().unwrap().to_string();
    assert!(sent.starts_with(&format!("{id}-")), "{sent}");
    // The same client id twice reaches vLLM as two ids.
    for _ in 0..2 {
        let again = vault_e2e::client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .header("x-request-id", "retry-7")
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(request_id(&again), "retry-7");
    }
    let heads = gateway.upstream_heads().await;
    let last_two: Vec<&str> = heads[heads.len() - 2..].iter().map(|h| h["x-request-id"].as_str().unwrap()).collect();
    assert!(last_two[0] != last_two[1] && last_two.iter().all(|id| id.starts_with("retry-7-")), "{last_two:?}");
}

#[tokio::test]
async fn a_vllm_started_with_an_api_key_is_reached_with_vllm_api_key() {
    let upstream = || Upstream::Fake(FakeOptions { api_key: Some("upstream-secret-1".into()), ..Default::default() });
    let gateway = TestApp::spawn_with(upstream(), &[("VLLM_API_KEY", "upstream-secret-1")]).await;
    let key = gateway.create_key(Scope::User).await;
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &chat_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gateway.upstream_heads().await.pop().unwrap()["authorized"], true);
    let stream = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &chat_body(true)).await;
    assert!(stream.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!(get_with_key(format!("{}/v1/models", gateway.url), &key).await.status(), 200);
    let ready = vault_e2e::client().get(format!("{}/vault/health/ready", gateway.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // Admins see that a key is set, never the key.
    let admin = gateway.create_key(Scope::Admin).await;
    let config = gateway.send("GET", "/vault/admin/config", Some(&admin), None).await.text().await.unwrap();
    assert!(!config.contains("upstream-secret-1"), "{config}");

    // Without the key the upstream refuses the gateway: that is a bad gateway, not the
    // client's 401, and the client is told nothing of the key.
    let gateway = TestApp::spawn_with(upstream(), &[]).await;
    let key = gateway.create_key(Scope::User).await;
    let response = post_json(format!("{}/v1/chat/completions", gateway.url), &key, &chat_body(false)).await;
    let id = request_id(&response);
    let body = assert_error(response, 502, "upstream_error").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("credentials"), "{body}");
    assert_eq!(gateway.audit_row(&id).await.unwrap().status, 502);
    let models = get_with_key(format!("{}/v1/models", gateway.url), &key).await;
    assert_error(models, 502, "upstream_error").await;
}

#[tokio::test]
async fn the_engines_queue_shows_in_the_inference_stats() {
    // A batch of two: of five requests at once, two generate and three wait.
    let options = FakeOptions { capacity: Some(2), token_delay: Duration::from_millis(40), ..Default::default() };
    let app = TestApp::spawn_with(Upstream::Fake(options), &[]).await;
    let key = app.create_key(Scope::User).await;
    let stats: Value = app.send("GET", "/vault/system/inference", Some(&key), None).await.json().await.unwrap();
    assert_eq!(stats["engine"], json!({"running": 0, "waiting": 0, "kv_cache_usage": 0.0}));

    let url = format!("{}/v1/chat/completions", app.url);
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move { post_json(url, &key, &chat_body(false)).await.status() })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let full = loop {
        let stats: Value = app.send("GET", "/vault/system/inference", Some(&key), None).await.json().await.unwrap();
        if stats["engine"]["waiting"] == 3 || Instant::now() > deadline {
            break stats["engine"].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(full, json!({"running": 2, "waiting": 3, "kv_cache_usage": 1.0}));
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
}
