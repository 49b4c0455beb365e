//! Small helpers shared by the end-to-end tests.

use reqwest::Response;
use serde_json::Value;

/// Asserts the API's error shape and returns the body.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

/// POSTs a JSON body with a key.
pub async fn post_json(url: impl reqwest::IntoUrl, key: &str, body: &Value) -> Response {
    vault_e2e::client().post(url).bearer_auth(key).json(body).send().await.unwrap()
}

/// GETs with a key.
pub async fn get_with_key(url: impl reqwest::IntoUrl, key: &str) -> Response {
    vault_e2e::client().get(url).bearer_auth(key).send().await.unwrap()
}

/// The request id the gateway gave a response.
pub fn request_id(response: &Response) -> String {
    response.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(String::from))
        .collect()
}

pub fn chat_body(stream: bool) -> Value {
    serde_json::json!({
        "model": "qwen2.5-32b-awq",
        "messages": [{"role": "user", "content": "Summarise the patient note please"}],
        "stream": stream,
    })
}

/// A running stack with an admin key and a user key, and small request helpers.
pub struct Stack {
    /// Kept so the upstream lives as long as the stack.
    _fake: vault_e2e::FakeVllm,
    pub gateway: vault_e2e::Gateway,
    pub admin: String,
    pub user: String,
    http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Stack {
        let fake = vault_e2e::FakeVllm::start().await;
        let gateway = vault_e2e::Gateway::start(&fake.url).await;
        let admin = gateway.create_key("admin").await;
        let user = gateway.create_key("user").await;
        Stack { _fake: fake, gateway, admin, user, http: vault_e2e::client() }
    }

    /// Sends a request; `key` None sends no Authorization header.
    pub async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.gateway.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Sends a request and expects `status`; returns the JSON body (Null when empty).
    pub async fn expect(&self, status: u16, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        let response = self.send(method, path, Some(key), body).await;
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }
}
