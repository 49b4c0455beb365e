//! The routes of the fake and the exact shapes vLLM answers with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use poem::http::{HeaderMap, StatusCode};
use poem::web::Data;
use poem::{Body, Response, handler};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::State;

/// A failure mode asked for by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Slow(Duration),
    Hang,
    Error(u16),
    Cut(usize),
    StreamError(usize),
    Delay(Duration),
    /// Answer `307` pointing at the same route on `127.0.0.1:<port>`.
    Redirect(u16),
    /// Answer `200` with a body that is not JSON.
    Garbage,
}

impl Mode {
    pub fn parse(raw: &str) -> Option<Mode> {
        let (name, arg) = raw.split_once(':').unwrap_or((raw, ""));
        let number = arg.parse::<u64>().ok();
        Some(match (name, number) {
            ("hang", _) => Mode::Hang,
            ("slow", Some(ms)) => Mode::Slow(Duration::from_millis(ms)),
            ("error", Some(status)) => Mode::Error(u16::try_from(status).ok()?),
            ("cut", Some(n)) => Mode::Cut(usize::try_from(n).ok()?),
            ("stream_error", Some(n)) => Mode::StreamError(usize::try_from(n).ok()?),
            ("delay", Some(ms)) => Mode::Delay(Duration::from_millis(ms)),
            ("redirect", Some(port)) => Mode::Redirect(u16::try_from(port).ok()?),
            ("garbage", _) => Mode::Garbage,
            _ => return None,
        })
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// As vLLM names an answer: after the request's `X-Request-Id` when it has one.
fn base_request_id(headers: &HeaderMap) -> String {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(String::from).unwrap_or_else(random_hex)
}

/// vLLM's answer to a request without its `--api-key` (on `/v1/*` only).
pub fn unauthorized() -> Response {
    json_response(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"}))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}

/// vLLM's error shape (v0.10.1 and later).
fn error_response(status: u16, kind: &str, message: &str, param: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": status}});
    json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &body)
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        404 => "NotFoundError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        _ => "InternalServerError",
    }
}

#[handler]
pub async fn health() -> Response {
    Response::builder().status(StatusCode::OK).finish()
}

#[handler]
pub async fn version() -> Response {
    json_response(StatusCode::OK, &json!({"version": "0.11.0-fake"}))
}

fn model_card(id: &str, parent: Option<&str>) -> Value {
    json!({
        "id": id, "object": "model", "created": now(), "owned_by": "vllm",
        "root": format!("/models/{id}"), "parent": parent, "max_model_len": 32768,
        "permission": [{"id": format!("modelperm-{}", random_hex()), "object": "model_permission",
            "created": now(), "allow_create_engine": false, "allow_sampling": true, "allow_logprobs": true,
            "allow_search_indices": false, "allow_view": true, "allow_fine_tuning": false,
            "organization": "*", "group": null, "is_blocking": false}]
    })
}

#[handler]
pub async fn models(state: Data<&Arc<State>>) -> Response {
    let data: Vec<Value> = state.served_models().iter().map(|id| model_card(id, None)).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

#[handler]
pub async fn stats(state: Data<&Arc<State>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "open_streams": state.open_streams.load(Ordering::SeqCst),
            "waiting": state.waiting.load(Ordering::SeqCst),
            "requests": state.requests.load(Ordering::SeqCst),
        }),
    )
}

#[handler]
pub async fn recent_requests(state: Data<&Arc<State>>) -> Response {
    let bodies: Vec<Value> = state.recent_bodies.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
    json_response(StatusCode::OK, &Value::Array(bodies))
}

/// vLLM's scheduler gauges, as its `/metrics` writes them.
#[handler]
pub async fn metrics(state: Data<&Arc<State>>) -> Response {
    let running = state.running.load(Ordering::SeqCst);
    let waiting = state.queued.load(Ordering::SeqCst);
    let usage = state.options.capacity.map_or(0.0, |c| running as f64 / c.max(1) as f64);
    let model = state.options.models.first().cloned().unwrap_or_default();
    let mut text = String::new();
    for (name, help, value) in [
        ("vllm:num_requests_running", "Number of requests in model execution batches.", running as f64),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting as f64),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{engine=\"0\",model_name=\"{model}\"}} {value:?}\n"
        ));
    }
    Response::builder().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}

#[handler]
pub async fn recent_headers(state: Data<&Arc<State>>) -> Response {
    let heads: Vec<Value> = state.recent_headers.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
    json_response(StatusCode::OK, &Value::Array(heads))
}

/// What every POST route does first, as vLLM does: check the content type and JSON, pick the
/// model, apply the failure mode that answers before any body.
struct Parsed {
    body: Value,
    model: String,
    mode: Mode,
    /// Its place in the batch, held while it generates.
    place: crate::Place,
}

impl Parsed {
    fn token_delay(&self, state: &State) -> Duration {
        match self.mode {
            Mode::Delay(d) => d,
            _ => state.options.token_delay,
        }
    }

    /// With a batch capacity, an answer sent whole takes its generation time first, as vLLM's
    /// does (without one, it is sent at once).
    async fn generate_whole(&self, state: &State, tokens: usize) {
        if state.options.capacity.is_some() {
            tokio::time::sleep(self.token_delay(state) * u32::try_from(tokens).unwrap_or(u32::MAX)).await;
        }
    }
}

async fn parse(state: &State, headers: &HeaderMap, raw: Bytes) -> Result<Parsed, Response> {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json_type {
        return Err(error_response(
            400,
            "BadRequestError",
            "Unsupported Media Type: Only 'application/json' is allowed",
            None,
        ));
    }
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(error_response(400, "BadRequestError", "Invalid JSON body", None));
        }
    };
    state.remember(&body, headers);
    let mode = match body.get("fake_mode").and_then(Value::as_str) {
        None => Mode::Normal,
        Some(raw) => Mode::parse(raw).ok_or_else(|| {
            error_response(400, "BadRequestError", &format!("unknown fake_mode {raw}"), Some("fake_mode"))
        })?,
    };
    match mode {
        Mode::Slow(delay) => {
            let _waiting = Held::new(&state.waiting);
            tokio::time::sleep(delay).await
        }
        Mode::Hang => {
            let _waiting = Held::new(&state.waiting);
            futures_util::future::pending::<()>().await
        }
        Mode::Error(status) => {
            return Err(error_response(status, error_type(status), "Injected failure", None));
        }
        Mode::Redirect(port) => {
            let location = format!("http://127.0.0.1:{port}/v1/chat/completions");
            return Err(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", location)
                .finish());
        }
        Mode::Garbage => {
            return Err(Response::builder().status(StatusCode::OK).content_type("application/json").body("<html>oops"));
        }
        _ => {}
    }
    let model = match body.get("model") {
        None | Some(Value::Null) => state.options.models.first().cloned().unwrap_or_default(),
        Some(Value::String(m)) if state.served_models().contains(m) => m.clone(),
        Some(other) => {
            let name = other.as_str().map(String::from).unwrap_or_else(|| other.to_string());
            return Err(error_response(
                404,
                "NotFoundError",
                &format!("The model `{name}` does not exist."),
                Some("model"),
            ));
        }
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream && body.get("stream_options").is_some_and(|v| !v.is_null()) {
        return Err(error_response(
            400,
            "BadRequestError",
            "Stream options can only be defined when `stream=True`.",
            Some("stream_options"),
        ));
    }
    let place = state.generate().await;
    Ok(Parsed { body, model, mode, place })
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Tokens of a chat prompt: the words of every message, plus one per message for its role.
fn chat_prompt_tokens(body: &Value) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    messages
        .iter()
        .map(|m| {
            1 + match m.get("content") {
                Some(Value::String(s)) => words(s),
                Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text")?.as_str()).map(words).sum(),
                _ => 0,
            }
        })
        .sum()
}

fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
        .and_then(|m| m.get("content")?.as_str())
        .unwrap_or("")
        .to_string()
}

/// The answer's tokens: a fixed sentence echoing the start of the prompt, capped by
/// `max_tokens` (or `max_completion_tokens`). Returns the tokens and the finish reason.
fn answer_tokens(body: &Value, prompt: &str) -> (Vec<String>, &'static str) {
    let mut words: Vec<&str> = "This is a reply from fake-vllm to:".split(' ').collect();
    words.extend(prompt.split_whitespace().take(8));
    let limit = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_u64))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let finish = match limit {
        Some(limit) if limit < words.len() => {
            words.truncate(limit);
            "length"
        }
        _ => "stop",
    };
    let tokens = words.iter().enumerate().map(|(i, w)| if i == 0 { w.to_string() } else { format!(" {w}") }).collect();
    (tokens, finish)
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
           "prompt_tokens_details": null})
}

/// What the client asked of usage in a stream: (final usage chunk, usage on every chunk).
fn stream_usage_wanted(body: &Value) -> (bool, bool) {
    match body.get("stream_options") {
        Some(Value::Object(o)) => (
            o.get("include_usage").and_then(Value::as_bool).unwrap_or(true),
            o.get("continuous_usage_stats").and_then(Value::as_bool).unwrap_or(false),
        ),
        _ => (false, false),
    }
}

#[handler]
pub async fn chat(state: Data<&Arc<State>>, headers: &HeaderMap, raw: Bytes) -> Response {
    let p = match parse(&state, headers, raw).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !p.body.get("messages").is_some_and(Value::is_array) {
        return error_response(400, "BadRequestError", "Field required: messages", Some("messages"));
    }
    let prompt_tokens = chat_prompt_tokens(&p.body);
    let (tokens, finish) = answer_tokens(&p.body, &last_user_text(&p.body));
    let id = format!("chatcmpl-{}", base_request_id(headers));
    let created = now();
    if !p.body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        p.generate_whole(&state, tokens.len()).await;
        let content: String = tokens.concat();
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "object": "chat.completion", "created": created, "model": p.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null,
                    "annotations": null, "audio": null, "function_call": null, "tool_calls": [],
                    "reasoning_content": null}, "logprobs": null, "finish_reason": finish, "stop_reason": null}],
                "service_tier": null, "system_fingerprint": null,
                "usage": usage(prompt_tokens, tokens.len() as u64),
                "prompt_logprobs": null, "kv_transfer_params": null
            }),
        );
    }
    let chunk = |choice: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": p.model, "choices": [choice]});
    let mut chunks = vec![chunk(
        json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
    )];
    for token in &tokens {
        chunks.push(chunk(json!({"index": 0, "delta": {"content": token}, "logprobs": null, "finish_reason": null})));
    }
    chunks.push(chunk(
        json!({"index": 0, "delta": {"content": ""}, "logprobs": null, "finish_reason": finish, "stop_reason": null}),
    ));
    let usage_chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": p.model,
        "choices": [], "usage": usage(prompt_tokens, tokens.len() as u64)});
    stream_response(&state, p, chunks, usage_chunk, prompt_tokens)
}

/// Tokens of a completion prompt: words of a string, or the length of a token list.
fn completion_prompt(body: &Value) -> (u64, String) {
    match body.get("prompt") {
        Some(Value::String(s)) => (words(s), s.clone()),
        Some(Value::Array(items)) => {
            let mut tokens = 0;
            let mut text = String::new();
            for item in items {
                match item {
                    Value::String(s) => {
                        tokens += words(s);
                        text = s.clone();
                    }
                    Value::Array(ids) => tokens += ids.len() as u64,
                    Value::Number(_) => tokens += 1,
                    _ => {}
                }
            }
            (tokens, text)
        }
        _ => (0, String::new()),
    }
}

#[handler]
pub async fn completions(state: Data<&Arc<State>>, headers: &HeaderMap, raw: Bytes) -> Response {
    let p = match parse(&state, headers, raw).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if p.body.get("prompt").is_none() {
        return error_response(400, "BadRequestError", "Field required: prompt", Some("prompt"));
    }
    let (prompt_tokens, prompt_text) = completion_prompt(&p.body);
    let (tokens, finish) = answer_tokens(&p.body, &prompt_text);
    let id = format!("cmpl-{}", base_request_id(headers));
    let created = now();
    if !p.body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        p.generate_whole(&state, tokens.len()).await;
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id, "object": "text_completion", "created": created, "model": p.model,
                "choices": [{"index": 0, "text": tokens.concat(), "logprobs": null, "finish_reason": finish,
                    "stop_reason": null, "prompt_logprobs": null}],
                "service_tier": null, "system_fingerprint": null,
                "usage": usage(prompt_tokens, tokens.len() as u64), "kv_transfer_params": null
            }),
        );
    }
    let chunk = |text: &str, finish: Option<&str>| {
        json!({"id": id, "object": "text_completion", "created": created, "model": p.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null}],
            "usage": null})
    };
    let mut chunks: Vec<Value> = tokens.iter().map(|t| chunk(t, None)).collect();
    chunks.push(chunk("", Some(finish)));
    let usage_chunk = json!({"id": id, "object": "text_completion", "created": created, "model": p.model,
        "choices": [], "usage": usage(prompt_tokens, tokens.len() as u64)});
    stream_response(&state, p, chunks, usage_chunk, prompt_tokens)
}

/// Counts a request as waiting (`slow`, `hang`) for as long as its handler holds it: a
/// gateway that drops the request drops the handler, and the count with it.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(count: &'a AtomicUsize) -> Held<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Held(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a stream as open for as long as its body exists.
struct OpenStream(Arc<State>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn frame(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Streams `chunks` with the token delay, then the usage chunk if asked for and `[DONE]`;
/// or breaks off as the mode says.
fn stream_response(
    state: &Arc<State>,
    p: Parsed,
    mut chunks: Vec<Value>,
    usage_chunk: Value,
    prompt_tokens: u64,
) -> Response {
    let delay = p.token_delay(state);
    // As vLLM paces them: each chunk comes one delay after the one before, but the finish
    // chunk comes with the last token, and the usage chunk and `[DONE]` right after it
    // (vLLM sends them once the engine's last output is handled).
    let paced = chunks.len().saturating_sub(1);
    let (final_usage, continuous) = stream_usage_wanted(&p.body);
    if continuous {
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk["usage"] = usage(prompt_tokens, i as u64);
        }
    }
    let break_after = match p.mode {
        Mode::Cut(n) | Mode::StreamError(n) => Some(n.min(chunks.len())),
        _ => None,
    };
    if let Some(n) = break_after {
        chunks.truncate(n);
    }
    let mut frames: Vec<Result<Bytes, std::io::Error>> = chunks.iter().map(|c| Ok(frame(c))).collect();
    match p.mode {
        Mode::Cut(_) => {}
        Mode::StreamError(_) => {
            let error = json!({"error": {"message": "Injected failure in the middle of the stream",
                "type": "InternalServerError", "param": null, "code": 500}});
            frames.push(Ok(frame(&error)));
            frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        _ => {
            if final_usage {
                frames.push(Ok(frame(&usage_chunk)));
            }
            frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        }
    }
    state.open_streams.fetch_add(1, Ordering::SeqCst);
    // The stream keeps its place in the batch until it ends.
    let guard = (OpenStream(state.clone()), p.place);
    let cut = matches!(p.mode, Mode::Cut(_));
    let body = futures_util::stream::iter(frames.into_iter().enumerate())
        .then(move |(i, item)| {
            let _guard = &guard;
            async move {
                if i > 0 && i < paced && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                item
            }
        })
        .chain(
            futures_util::stream::once(async move {
                // A connection that breaks is dropped with whatever it had not written yet:
                // a cut comes once the chunks before it are out.
                if cut {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .filter_map(|()| async { None }),
        );
    let mut response = Response::builder().status(StatusCode::OK).content_type("text/event-stream; charset=utf-8");
    if let Mode::Cut(_) = p.mode {
        // Announce more than will come: the connection then ends short of it, which every
        // client sees as a broken transfer (an error in a chunked body would still be
        // closed cleanly by the server).
        response = response.header("content-length", "1000000");
    }
    response.body(Body::from_bytes_stream(body))
}

/// A deterministic unit vector for one input, so the same text embeds the same way.
fn embed(input: &Value, dims: usize) -> Vec<f32> {
    let mut seed = Sha256::digest(input.to_string().as_bytes()).to_vec();
    let mut values = Vec::with_capacity(dims);
    while values.len() < dims {
        for pair in seed.chunks(2) {
            if values.len() < dims {
                let raw = u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                values.push(f32::from(raw) / 32768.0 - 1.0);
            }
        }
        seed = Sha256::digest(&seed).to_vec();
    }
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::EPSILON);
    values.iter().map(|v| v / norm).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[handler]
pub async fn embeddings(state: Data<&Arc<State>>, headers: &HeaderMap, raw: Bytes) -> Response {
    let p = match parse(&state, headers, raw).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let inputs: Vec<Value> = match p.body.get("input") {
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => {
            return error_response(400, "BadRequestError", "Field required: input", Some("input"));
        }
    };
    let dims = p.body.get("dimensions").and_then(Value::as_u64).map(|d| d as usize).unwrap_or(16);
    if dims == 0 || dims > 4096 {
        return error_response(400, "BadRequestError", "dimensions must be between 1 and 4096", Some("dimensions"));
    }
    let base64_wanted = p.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            prompt_tokens += match input {
                Value::String(s) => words(s),
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            };
            let vector = embed(input, dims);
            let embedding = if base64_wanted {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"index": index, "object": "embedding", "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"id": format!("embd-{}", random_hex()), "object": "list", "created": now(), "model": p.model,
            "data": data, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens,
            "completion_tokens": 0, "prompt_tokens_details": null}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("cut:3"), Some(Mode::Cut(3)));
        assert_eq!(Mode::parse("hang"), Some(Mode::Hang));
        assert_eq!(Mode::parse("error:503"), Some(Mode::Error(503)));
        assert_eq!(Mode::parse("slow"), None);
        assert_eq!(Mode::parse("bogus:1"), None);
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    /// The virtual time (ms since the response began) of each event of a streamed answer.
    async fn event_times(options: crate::Options, body: Value) -> Vec<(u128, String)> {
        use poem::{Endpoint, IntoResponse};
        let request = poem::Request::builder()
            .method(poem::http::Method::POST)
            .uri(poem::http::Uri::from_static("/v1/chat/completions"))
            .content_type("application/json")
            .body(body.to_string());
        let response = crate::app(options).call(request).await.unwrap().into_response();
        let started = tokio::time::Instant::now();
        let mut events = Vec::new();
        let mut frames = response.into_body().into_bytes_stream();
        while let Some(frame) = frames.next().await {
            let at = started.elapsed().as_millis();
            let text = String::from_utf8(frame.unwrap().to_vec()).unwrap();
            events.extend(text.split("\n\n").filter(|e| !e.is_empty()).map(|e| (at, e.to_string())));
        }
        events
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_a_delay_apart_and_the_end_of_the_stream_with_the_last_one() {
        let options = crate::Options { token_delay: Duration::from_millis(100), ..Default::default() };
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": true,
            "stream_options": {"include_usage": true}});
        let events = event_times(options, body).await;
        let times: Vec<u128> = events.iter().map(|(at, _)| *at).collect();
        // The role, three tokens, the finish, the usage, and [DONE].
        assert_eq!(times, [0, 100, 200, 300, 300, 300, 300], "{events:?}");
        assert!(events[4].1.contains("\"finish_reason\":\"length\""), "{events:?}");
        assert!(events[5].1.contains("\"usage\""), "{events:?}");
        assert_eq!(events[6].1, "data: [DONE]");
    }

    #[test]
    fn answers_respect_max_tokens() {
        let (tokens, finish) = answer_tokens(&json!({"max_tokens": 3}), "hello there");
        assert_eq!((tokens.concat().as_str(), finish), ("This is a", "length"));
        let (tokens, finish) = answer_tokens(&json!({}), "hello");
        assert_eq!((tokens.len(), finish), (8, "stop"));
    }
}
