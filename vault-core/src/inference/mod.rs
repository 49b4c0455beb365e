//! Inference proxying: what Vault does between an OpenAI client and the upstream.
//!
//! The body is forwarded as the client sent it (fields Vault does not know pass through);
//! for a stream Vault only adds `stream_options.include_usage` so it can account tokens,
//! and drops that extra chunk again when the client did not ask for it.

pub mod admission;
mod http1;
mod pool;
pub mod router;
mod stream;
pub mod vllm;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::Deserialize;

use crate::audit::RequestAudit;
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};
use crate::limits::{Limiter, RateStatus};
use crate::manifest::Manifest;
use crate::metrics::UpstreamTiming;
use crate::model::keys::Principal;
pub use crate::model::usage::Usage;
use admission::Admission;

pub use stream::{ProxyStream, StreamOutcome};

/// The upstream routes Vault proxies. Nothing else of the upstream is ever exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::ChatCompletions, Route::Completions, Route::Embeddings];

    /// The route served at `path` (the same path as the upstream's).
    pub fn at(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.path() == path)
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
        }
    }

    fn can_stream(self) -> bool {
        match self {
            Route::ChatCompletions | Route::Completions => true,
            Route::Embeddings => false,
        }
    }
}

/// What the upstream answered, before Vault looks inside.
pub enum UpstreamReply {
    /// A complete JSON body with a success status.
    Complete(Bytes),
    /// An event stream, read as it arrives.
    Stream(BoxStream<'static, std::result::Result<Bytes, String>>),
}

/// What the upstream is told of the request it serves, so that its logs can be matched with
/// the audit trail: the request's id (vLLM names its answer after it: `chatcmpl-<id>`) and
/// the client's W3C trace context.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Made a header value once (no copy), whichever upstream and however many tries.
    pub request_id: Option<http::HeaderValue>,
    pub traceparent: Option<String>,
    /// The model asked for, which picks the upstream among several (not sent as a header).
    pub model: Option<String>,
}

/// Whether `value` is a W3C `traceparent` that can be passed on: `<version>-<trace id>-
/// <parent id>-<flags>` in lowercase hex (2, 32, 16 and 2 digits), neither id all zeros,
/// version `ff` never; a later version may add fields after a `-`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex =
        |range: std::ops::Range<usize>| bytes[range].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zeros = |range: std::ops::Range<usize>| bytes[range].iter().all(|b| *b == b'0');
    bytes.len() >= 55
        && (bytes.len() == 55 || (bytes[..2] != *b"00" && bytes[55] == b'-'))
        && [2, 35, 52].iter().all(|&i| bytes[i] == b'-')
        && hex(0..2)
        && bytes[..2] != *b"ff"
        && hex(3..35)
        && !zeros(3..35)
        && hex(36..52)
        && !zeros(36..52)
        && hex(53..55)
}

/// An inference engine Vault can sit in front of. vLLM over HTTP is the one in production;
/// a router over several instances can implement the same trait.
pub trait InferenceBackend: Send + Sync {
    /// Sends `body` to `route`. Errors are already mapped: unreachable → 503, no answer in
    /// time → 504, the upstream's own errors keep their status and message.
    /// `trace` goes upstream with it.
    fn forward<'a>(
        &'a self,
        route: Route,
        body: Bytes,
        stream: bool,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<UpstreamReply>>;
    /// The upstream's `/v1/models` document.
    fn list_models(&self) -> BoxFuture<'_, Result<serde_json::Value>>;
    /// Whether the upstream answers its health check.
    fn is_healthy(&self) -> BoxFuture<'_, bool>;
    /// What the engine's scheduler reports: `Ok(None)` when it serves no such figures, an
    /// error when it cannot be reached.
    fn engine_load(&self) -> BoxFuture<'_, Result<Option<EngineLoad>>> {
        Box::pin(async { Ok(None) })
    }
    /// Each upstream's state, when requests are routed among several (`None`: one).
    fn upstream_states(&self) -> Option<Vec<router::UpstreamState>> {
        None
    }
    /// Starts what the backend does in the background (a router's health checks), until
    /// `stopping`.
    fn start(self: Arc<Self>, _stopping: tokio_util::sync::CancellationToken) {}
}

/// The upstream `config` names: vLLM at its URL, or a router over several.
pub fn backend_for(config: &crate::config::Config) -> Result<Arc<dyn InferenceBackend>> {
    let (key, timeout, max_body) = (config.vllm_api_key(), config.upstream_timeout, config.max_upstream_body);
    match (config.upstreams.as_slice(), &config.upstreams_file) {
        ([one], None) => Ok(Arc::new(vllm::VllmBackend::new(&one.url, key, timeout, max_body)?)),
        (several, file) => Ok(Arc::new(router::Router::new(several, file.clone(), key, timeout, max_body)?)),
    }
}

/// What vLLM's scheduler reports on its `/metrics`: requests generating now and waiting for
/// a place in the batch, and how full its KV cache is (0–1).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EngineLoad {
    pub running: u64,
    pub waiting: u64,
    pub kv_cache_usage: Option<f64>,
}

/// vLLM's gauges from a Prometheus text page, summed over its engines and models; `None`
/// when the page has neither queue gauge (not vLLM's).
pub fn parse_engine_load(text: &str) -> Option<EngineLoad> {
    let (mut running, mut waiting, mut usage) = (None::<f64>, None::<f64>, None::<f64>);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(['{', ' ']) else { continue };
        let Some(value) = value.rsplit(' ').next().and_then(|v| v.trim().parse::<f64>().ok()) else { continue };
        let slot = match name {
            "vllm:num_requests_running" => &mut running,
            "vllm:num_requests_waiting" => &mut waiting,
            // The name changed across vLLM versions.
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => {
                usage = Some(usage.map_or(value, |u| u.max(value)));
                continue;
            }
            _ => continue,
        };
        *slot = Some(slot.unwrap_or(0.0) + value);
    }
    if running.is_none() && waiting.is_none() {
        return None;
    }
    let count = |v: Option<f64>| v.map_or(0, |v| v.max(0.0).round() as u64);
    Some(EngineLoad { running: count(running), waiting: count(waiting), kv_cache_usage: usage })
}

/// The result of proxying one request. (Made once per request and moved on at once: a box
/// around the stream would only add an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Proxied {
    Complete { body: Bytes, model: Option<String>, usage: Option<Usage> },
    Stream { stream: ProxyStream, model: Option<String> },
}

/// An answer ready to send, whose audit record is taken care of: a JSON body (the record
/// is complete), or an event stream (the stream completes the record when it ends).
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Json(Bytes),
    Stream(ProxyStream),
}

/// The fields of a request body Vault needs to read; the rest is not parsed.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    /// `Some` whenever the member is there, `null` included (a plain `Option` would read a
    /// `null` as absent).
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
}

/// Tokens held for an answer that names no `max_tokens`, until its real usage is known.
const DEFAULT_COMPLETION_RESERVE: u64 = 256;
/// The most tokens one request holds: past any limit there is (see `limits::check`).
const MAX_RESERVE: u64 = 1_000_000_000;
/// Bytes of a request per prompt token, roughly (JSON around English text), to reserve
/// its prompt's tokens before the engine counts them.
const BYTES_PER_TOKEN: u64 = 4;

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// A request body checked and made ready to forward.
#[derive(Debug)]
struct Prepared {
    body: Bytes,
    model: Option<String>,
    stream: bool,
    client_wants_usage: bool,
    /// The tokens the request may use, estimated, held against a tokens-per-minute limit.
    reserve: u64,
}

fn prepare(route: Route, body: Bytes) -> Result<Prepared> {
    // One parse, of the few fields Vault reads; the first byte tells an object apart.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let peek: Peek = match serde_json::from_slice(&body) {
        Ok(peek) if first == Some(&b'{') => peek,
        Ok(_) => {
            return Err(VaultError::invalid_field("body: must be a JSON object"));
        }
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(VaultError::invalid(ErrorCode::InvalidJson, format!("body: not valid JSON ({e})")));
        }
        Err(_) if first != Some(&b'{') => {
            return Err(VaultError::invalid_field("body: must be a JSON object"));
        }
        Err(e) => return Err(VaultError::invalid_field(format!("body: {e}"))),
    };
    let model = match peek.model {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(m)) => Some(m),
        Some(_) => {
            return Err(VaultError::invalid_field("model: must be a string"));
        }
    };
    let stream = match peek.stream {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => {
            return Err(VaultError::invalid_field("stream: must be a boolean"));
        }
    };
    if stream && !route.can_stream() {
        return Err(VaultError::invalid_field("stream: this endpoint does not stream"));
    }
    // The upstream judges these fields; a value that is no count reserves the default.
    let completion = match route {
        Route::Embeddings => 0,
        _ => peek
            .max_completion_tokens
            .or(peek.max_tokens)
            .and_then(|v| v.as_u64())
            .unwrap_or(DEFAULT_COMPLETION_RESERVE),
    };
    // Capped: a `max_tokens` of 2^64 must not wrap the counts around.
    let reserve = (body.len() as u64 / BYTES_PER_TOKEN).saturating_add(completion).min(MAX_RESERVE);
    if !stream {
        // Forwarded byte for byte; the upstream judges everything else (and rejects
        // stream_options without stream, as vLLM does).
        return Ok(Prepared { body, model, stream, client_wants_usage: false, reserve });
    }
    // vLLM: include_usage defaults to true once a stream_options object is present.
    let client_wants_usage = match &peek.stream_options {
        Some(serde_json::Value::Object(o)) => o.get("include_usage").and_then(|v| v.as_bool()).unwrap_or(true),
        _ => false,
    };
    if client_wants_usage {
        return Ok(Prepared { body, model, stream, client_wants_usage, reserve });
    }
    if peek.stream_options.is_none() {
        return Ok(Prepared { body: with_usage_requested(&body), model, stream, client_wants_usage, reserve });
    }
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| VaultError::invalid(ErrorCode::InvalidJson, format!("body: not valid JSON ({e})")))?;
    if let Some(object) = value.as_object_mut() {
        let options = object.entry("stream_options").or_insert_with(|| serde_json::json!({}));
        if !options.is_object() {
            *options = serde_json::json!({});
        }
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
    }
    let body = serde_json::to_vec(&value).map_err(|e| VaultError::internal("re-encoding a request", e))?;
    Ok(Prepared { body: body.into(), model, stream, client_wants_usage, reserve })
}

/// `body` (a JSON object that has a `stream` member and no `stream_options`) with
/// `stream_options.include_usage` set, written in at its start instead of re-encoding it.
fn with_usage_requested(body: &[u8]) -> Bytes {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = body.iter().position(|&b| b == b'{').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&body[open..]);
    out.into()
}

/// The fields of a complete answer Vault records.
#[derive(Deserialize)]
struct AnswerPeek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Inference as the API offers it: proxying plus the model list enriched from the manifest.
pub struct Inference {
    backend: Arc<dyn InferenceBackend>,
    manifest: Manifest,
    /// Cancelled when the gateway stops: streams still running end with an error event.
    stopping: tokio_util::sync::CancellationToken,
    /// The longest silence of the upstream within a streamed answer.
    stream_quiet_limit: std::time::Duration,
    /// Admission by the keys' and users' rate limits.
    limiter: Arc<Limiter>,
    /// Fair admission to the engine while it is full.
    admission: Arc<Admission>,
}

/// An answer, and where the request's rate limits stand after it (OpenAI's
/// `x-ratelimit-*` headers; `None` when no limit applies).
pub struct Served {
    pub answer: Answer,
    pub rate: Option<RateStatus>,
}

impl Inference {
    pub fn new(
        backend: Arc<dyn InferenceBackend>,
        manifest: Manifest,
        stopping: tokio_util::sync::CancellationToken,
        stream_quiet_limit: std::time::Duration,
        limiter: Arc<Limiter>,
        admission: Arc<Admission>,
    ) -> Inference {
        Inference { backend, manifest, stopping, stream_quiet_limit, limiter, admission }
    }

    /// Reads the engine's load for fair admission, and checks the upstreams, until the
    /// gateway stops.
    pub fn watch_engine(&self) {
        self.backend.clone().start(self.stopping.clone());
        tokio::spawn(self.admission.clone().watch(self.backend.clone(), self.stopping.clone()));
    }

    /// Each upstream's state, when requests are routed among several (`None`: one).
    pub fn upstream_states(&self) -> Option<Vec<router::UpstreamState>> {
        self.backend.upstream_states()
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Inference as a tool beside the server sees it (`vault-cli`): the configured upstream
    /// and manifest, with no shutdown to watch.
    pub fn for_tools(config: &crate::config::Config) -> Result<Inference> {
        let backend = backend_for(config)?;
        let manifest = Manifest::new(config.models_manifest.clone());
        let never = tokio_util::sync::CancellationToken::new();
        let limiter = Limiter::new(config.default_limits);
        // A tool sends one request at a time: nothing to share out.
        let admission = Admission::new(None, never.clone());
        Ok(Inference::new(backend, manifest, never, config.stream_idle_timeout, limiter, admission))
    }

    /// Forwards one request of `principal` and completes its audit record: model and token
    /// usage, and for a stream, the outcome when it ends (its row is committed before the
    /// client gets the closing frame). An error leaves the record to whoever answers it.
    /// Nothing is sent upstream while the audit trail cannot take rows (503), nor past the
    /// rate limits of the key or its user (429); the tokens the answer used count against
    /// them once it ends. While the engine is full, the request waits its user's turn (503
    /// after the longest wait).
    pub async fn serve(
        &self,
        route: Route,
        body: Bytes,
        audit: &Arc<RequestAudit>,
        principal: &Principal,
    ) -> Result<Served> {
        audit.log().available()?;
        let prepared = prepare(route, body)?;
        let mut permit = match self.limiter.admit(principal, prepared.reserve) {
            Ok(permit) => permit,
            Err(err) => {
                audit.set_model(prepared.model);
                return Err(err);
            }
        };
        let rate = permit.status();
        let entry = match self.admission.enter(principal).await {
            Ok(entry) => entry,
            Err(busy) => {
                audit.set_queued(busy.queued);
                audit.set_model(prepared.model);
                return Err(busy.into());
            }
        };
        if let Some(queued) = entry.queued {
            audit.set_queued(queued);
        }
        let sent = Instant::now();
        let proxied = self.proxy(route, prepared, audit).await;
        if proxied.is_err() {
            audit.set_upstream(UpstreamTiming { sent, first_byte: None, done: Instant::now() });
        }
        let answer = match proxied? {
            Proxied::Complete { body, model, usage } => {
                // A whole answer has no first token of its own: only streams have a TTFT.
                audit.set_upstream(UpstreamTiming { sent, first_byte: None, done: Instant::now() });
                audit.set_model(model);
                permit.settle(usage.map(|u| u.prompt_tokens.saturating_add(u.completion_tokens)));
                drop(entry);
                audit.set_usage(usage);
                Answer::Json(body)
            }
            Proxied::Stream { stream, model } => {
                audit.set_model(model);
                audit.defer();
                let record = audit.clone();
                let active = audit.log().metrics().stream_started();
                let stream = stream.stop_on(self.stopping.clone()).quiet_limit(self.stream_quiet_limit);
                Answer::Stream(stream.on_finish(move |outcome| {
                    drop(active);
                    drop(entry);
                    let first_byte = outcome.first_chunk;
                    permit.settle(outcome.usage.map(|u| u.prompt_tokens.saturating_add(u.completion_tokens)));
                    drop(permit);
                    record.set_upstream(UpstreamTiming { sent, first_byte, done: outcome.upstream_done });
                    record.set_usage(outcome.usage);
                    record.finish(200, outcome.completed, outcome.error_code).boxed()
                }))
            }
        };
        Ok(Served { answer, rate })
    }

    /// Forwards one request. A stream is returned as soon as the upstream starts answering.
    /// When the upstream refuses or fails it, the model asked for is still recorded.
    async fn proxy(&self, route: Route, prepared: Prepared, audit: &RequestAudit) -> Result<Proxied> {
        let mut trace = audit.trace();
        trace.model = prepared.model.clone();
        let reply = match self.backend.forward(route, prepared.body, prepared.stream, &trace).await {
            Ok(reply) => reply,
            Err(err) => {
                audit.set_model(prepared.model);
                return Err(err);
            }
        };
        match reply {
            UpstreamReply::Complete(body) => {
                // Reading the fields Vault records also checks that the answer is JSON.
                let peek: AnswerPeek = serde_json::from_slice(&body)
                    .map_err(|e| upstream_invalid(format!("the answer is not JSON ({e})")))?;
                Ok(Proxied::Complete { model: prepared.model.or(peek.model), usage: peek.usage, body })
            }
            UpstreamReply::Stream(upstream) => Ok(Proxied::Stream {
                stream: ProxyStream::new(upstream, prepared.client_wants_usage),
                model: prepared.model,
            }),
        }
    }

    /// What the engine's scheduler reports now (`None`: it serves no `/metrics`, or cannot
    /// be reached).
    pub async fn engine_load(&self) -> Option<EngineLoad> {
        self.backend.engine_load().await.ok().flatten()
    }

    /// The upstream's model list, each card enriched with what the manifest says of it.
    /// The model manifest (read from disk on use).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub async fn list_models(&self) -> Result<serde_json::Value> {
        let mut list = self.backend.list_models().await?;
        let manifest = self.manifest.load()?;
        if let Some(cards) = list.get_mut("data").and_then(|d| d.as_array_mut()) {
            for card in cards.iter_mut() {
                manifest.enrich(card);
            }
        }
        Ok(list)
    }

    /// One model card by id (ids may contain `/`).
    pub async fn get_model(&self, id: &str) -> Result<serde_json::Value> {
        let list = self.list_models().await?;
        list.get("data")
            .and_then(|d| d.as_array())
            .and_then(|cards| cards.iter().find(|c| c.get("id").and_then(|v| v.as_str()) == Some(id)))
            .cloned()
            .ok_or_else(|| {
                VaultError::not_found(ErrorCode::ModelNotFound, format!("The model `{id}` is not served here."))
                    .with_suggestion("List the served models with GET /v1/models.")
            })
    }

    pub async fn upstream_healthy(&self) -> bool {
        self.backend.is_healthy().await
    }
}

/// The upstream answered with something that is not an answer (502); `why` is logged, not
/// shown.
pub(crate) fn upstream_invalid(why: String) -> VaultError {
    tracing::warn!(why, "the inference upstream gave an unusable answer");
    VaultError::new(
        ErrorKind::Upstream { status: 502 },
        ErrorCode::UpstreamInvalid,
        "The inference service gave an answer that could not be used.",
    )
}

/// Maps an upstream error answer to Vault's error, keeping its status and message — except
/// the upstream refusing Vault itself (401/403: a missing or wrong `VLLM_API_KEY`), which is
/// the gateway's fault, not the client's, and answers 502.
pub(crate) fn upstream_error(status: u16, body: &[u8]) -> VaultError {
    if matches!(status, 401 | 403) {
        tracing::error!(status, "the inference upstream refused the gateway's credentials: check VLLM_API_KEY");
        return VaultError::new(
            ErrorKind::Upstream { status: 502 },
            ErrorCode::UpstreamError,
            "The inference service refused the gateway's credentials.",
        )
        .with_suggestion("The administrator should check VLLM_API_KEY against the key vLLM was started with.");
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        param: Option<String>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        error: Detail,
    }
    let detail = serde_json::from_slice::<Wrapped>(body)
        .map(|w| w.error)
        .or_else(|_| serde_json::from_slice::<Detail>(body))
        .ok();
    let code = match status {
        404 => ErrorCode::ModelNotFound,
        400 | 422 => ErrorCode::InvalidRequest,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimited,
        _ => ErrorCode::UpstreamError,
    };
    let message = detail
        .as_ref()
        .and_then(|d| d.message.clone())
        .unwrap_or_else(|| format!("The inference service answered with status {status}."));
    let status = if (400..=599).contains(&status) { status } else { 502 };
    let mut err = VaultError::new(ErrorKind::Upstream { status }, code, message);
    if let Some(d) = detail {
        let mut details = serde_json::Map::new();
        if let Some(kind) = d.kind {
            details.insert("upstream_type".into(), kind.into());
        }
        if let Some(param) = d.param {
            details.insert("param".into(), param.into());
        }
        if !details.is_empty() {
            err = err.with_details(details.into());
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(route: Route, body: &str) -> Result<Prepared> {
        prepare(route, Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn non_stream_bodies_are_forwarded_byte_for_byte() {
        let raw = r#"{"model":"m",  "top_k": 3, "guided_json": {"a": 1.50}}"#;
        let p = prep(Route::ChatCompletions, raw).unwrap();
        assert_eq!(&p.body[..], raw.as_bytes());
        assert_eq!(p.model.as_deref(), Some("m"));
        assert!(!p.stream);
    }

    #[test]
    fn streams_ask_for_usage_and_remember_whether_the_client_did() {
        let p = prep(Route::ChatCompletions, r#"{"stream":true,"top_k":3}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["top_k"], 3);
        assert!(!p.client_wants_usage);

        let p = prep(Route::Completions, r#"{"stream":true,"stream_options":{"include_usage":false}}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(!p.client_wants_usage);

        let p =
            prep(Route::Completions, r#"{"stream":true,"stream_options":{"continuous_usage_stats":true}}"#).unwrap();
        assert!(p.client_wants_usage);
    }

    #[test]
    fn a_stream_without_options_keeps_its_bytes_and_gains_one_member() {
        let raw = " {\"model\":\"m\", \"stream\": true, \"guided_json\": {\"a\": 1.50}}";
        let p = prep(Route::ChatCompletions, raw).unwrap();
        let text = std::str::from_utf8(&p.body).unwrap();
        assert_eq!(text.replacen(r#""stream_options":{"include_usage":true},"#, "", 1), raw);
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        // A null `stream_options`, however its name is spelled, is replaced: never followed
        // by a second member of that name, which a last-wins parser would take instead.
        for raw in [r#"{"stream":true,"stream_options":null}"#, r#"{"stream":true,"stream\u005foptions":null}"#] {
            let p = prep(Route::ChatCompletions, raw).unwrap();
            let text = std::str::from_utf8(&p.body).unwrap();
            assert_eq!(
                text.matches("stream_options").count() + text.matches("stream\\u005foptions").count(),
                1,
                "{text}"
            );
            let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true, "{text}");
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(prep(Route::ChatCompletions, "{").unwrap_err().code, "invalid_json");
        assert!(prep(Route::ChatCompletions, "[1]").unwrap_err().message.starts_with("body"));
        assert!(prep(Route::ChatCompletions, r#"{"stream":"yes"}"#).unwrap_err().message.starts_with("stream"));
        assert!(prep(Route::ChatCompletions, r#"{"model":5}"#).unwrap_err().message.starts_with("model"));
        assert!(prep(Route::Embeddings, r#"{"stream":true}"#).is_err());
    }

    #[test]
    fn upstream_errors_keep_status_and_message() {
        let body = br#"{"error":{"message":"The model `gpt-4` does not exist.","type":"NotFoundError","param":"model","code":404}}"#;
        let err = upstream_error(404, body);
        assert_eq!(err.status(), 404);
        assert_eq!(err.code, "model_not_found");
        assert_eq!(err.message, "The model `gpt-4` does not exist.");
        assert_eq!(err.details.unwrap()["param"], "model");
        let flat = br#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#;
        assert_eq!(upstream_error(400, flat).message, "too long");
        assert_eq!(upstream_error(500, b"<html>").status(), 500);
    }

    #[test]
    fn an_upstream_refusing_the_gateway_is_a_bad_gateway_not_the_clients_fault() {
        for status in [401, 403] {
            let err = upstream_error(status, br#"{"error":"Unauthorized"}"#);
            assert_eq!(err.status(), 502);
            assert!(err.message.contains("credentials"), "{}", err.message);
        }
    }

    #[test]
    fn traceparents_are_passed_on_only_when_well_formed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid_traceparent(good));
        assert!(is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn vllms_scheduler_gauges_are_read_from_its_metrics_page() {
        let page = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
                    # TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n\
                    vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 1.0\n\
                    vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7.0\n\
                    vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.42\n\
                    vllm:num_requests_waiting_by_reason{reason=\"capacity\"} 99.0\n";
        let load = parse_engine_load(page).unwrap();
        assert_eq!(load, EngineLoad { running: 4, waiting: 7, kv_cache_usage: Some(0.42) });
        assert_eq!(parse_engine_load("process_cpu_seconds_total 1.0\n"), None);
        assert_eq!(
            parse_engine_load("vllm:num_requests_waiting 2"),
            Some(EngineLoad { running: 0, waiting: 2, kv_cache_usage: None })
        );
    }
}
