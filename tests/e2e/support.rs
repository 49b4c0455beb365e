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
