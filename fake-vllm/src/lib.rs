//! fake-vllm: a stand-in for vLLM's OpenAI-compatible server, faithful to its wire format
//! (its requests, answers, streams and errors), for tests, benchmarks and the demo.
//!
//! Failure modes are chosen per request with a `fake_mode` field in the body (a field
//! vLLM would ignore, and which a gateway passes through untouched):
//! - `slow:<ms>`: wait before answering at all;
//! - `hang`: never answer;
//! - `error:<status>`: answer with a vLLM-shaped error of that status;
//! - `cut:<n>`: stream n content chunks, then drop the connection;
//! - `stream_error:<n>`: stream n content chunks, then a vLLM error event and `[DONE]`;
//! - `delay:<ms>`: the delay between streamed tokens for this request;
//! - `redirect:<port>`: answer 307 to the same route on `127.0.0.1:<port>`;
//! - `garbage`: answer 200 with a body that is not JSON.
//!
//! `GET /_fake/stats` reports open streams, requests waiting in `slow` or `hang`, and
//! requests served; `GET /_fake/requests` returns the last request bodies received, as
//! sent, and `GET /_fake/headers` what their heads said of them: `x-request-id`,
//! `traceparent`, and whether they carried the `--api-key` (never the key itself).
//!
//! `GET /metrics` serves vLLM's gauges of its scheduler: requests running and waiting, and
//! the KV-cache usage (running / capacity), from the fake's real counts.
//!
//! Started with an API key, it refuses `/v1/*` requests without it, as vLLM's `--api-key`
//! does (`401 {"error":"Unauthorized"}`); `/health` and `/version` stay open.

mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, Route, get, post};

pub use wire::Mode;

/// How the fake behaves unless a request says otherwise.
#[derive(Debug, Clone)]
pub struct Options {
    /// Served model ids; the first is the default. Ids may contain `/`, as vLLM's do.
    pub models: Vec<String>,
    /// Delay between streamed tokens.
    pub token_delay: Duration,
    /// Vault's model configuration file (`VAULT_GPU_CONFIG`): the models it lists are
    /// served too, as they are at the moment of each request (so a load or unload shows at
    /// once, as if vLLM had been restarted with the new configuration).
    pub gpu_config: Option<std::path::PathBuf>,
    /// The key `/v1/*` requests must carry (`Authorization: Bearer <key>`), as with
    /// `vllm serve --api-key`.
    pub api_key: Option<String>,
    /// Requests generated at once, as vLLM's batch; more wait their turn, in order (and
    /// `GET /metrics` counts them as waiting). With a capacity, a request holds its place
    /// for as long as it generates: its tokens × the token delay. `None`: no limit.
    pub capacity: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            models: vec!["qwen2.5-32b-awq".into(), "Qwen/Qwen2.5-7B-Instruct".into()],
            token_delay: Duration::ZERO,
            gpu_config: None,
            api_key: None,
            capacity: None,
        }
    }
}

const KEPT_REQUESTS: usize = 64;

pub struct State {
    options: Options,
    open_streams: AtomicUsize,
    waiting: AtomicUsize,
    requests: AtomicU64,
    recent_bodies: Mutex<VecDeque<serde_json::Value>>,
    recent_headers: Mutex<VecDeque<serde_json::Value>>,
    /// The places of the batch (see `Options::capacity`).
    batch: Option<Arc<tokio::sync::Semaphore>>,
    /// Requests generating now, and waiting for a place.
    running: Arc<AtomicUsize>,
    queued: AtomicUsize,
}

impl State {
    /// The models served now: those it was started with, then those the configuration
    /// file lists.
    fn served_models(&self) -> Vec<String> {
        let mut models = self.options.models.clone();
        let listed = self.options.gpu_config.as_ref().and_then(|path| std::fs::read(path).ok()).and_then(|raw| {
            let config: serde_json::Value = serde_json::from_slice(&raw).ok()?;
            let ids = config.get("models")?.as_array()?.iter().filter_map(|m| m.get("id")?.as_str().map(String::from));
            Some(ids.collect::<Vec<_>>())
        });
        for id in listed.into_iter().flatten() {
            if !models.contains(&id) {
                models.push(id);
            }
        }
        models
    }

    fn remember(&self, body: &serde_json::Value, headers: &poem::http::HeaderMap) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let head = serde_json::json!({
            "x-request-id": header("x-request-id"),
            "traceparent": header("traceparent"),
            "authorized": header("authorization").is_some(),
        });
        for (kept, item) in [(&self.recent_bodies, body.clone()), (&self.recent_headers, head)] {
            if let Ok(mut recent) = kept.lock() {
                if recent.len() == KEPT_REQUESTS {
                    recent.pop_front();
                }
                recent.push_back(item);
            }
        }
    }

    /// Takes a place in the batch, waiting for one while it is full; generating until the
    /// place is dropped.
    async fn generate(&self) -> Place {
        let permit = match &self.batch {
            None => None,
            Some(batch) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                let permit = batch.clone().acquire_owned().await.ok();
                self.queued.fetch_sub(1, Ordering::SeqCst);
                permit
            }
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        Place { _permit: permit, running: self.running.clone() }
    }

    /// Whether a `/v1/*` request may be served: it carries the key the fake was started
    /// with, if any.
    fn admits(&self, req: &poem::Request) -> bool {
        let Some(key) = &self.options.api_key else { return true };
        let given = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        !req.uri().path().starts_with("/v1/") || given.and_then(|v| v.strip_prefix("Bearer ")) == Some(key.as_str())
    }
}

/// A request's place in the batch.
pub struct Place {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    running: Arc<AtomicUsize>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake's routes, ready to serve.
pub fn app(options: Options) -> impl Endpoint + 'static {
    let state = Arc::new(State {
        options: options.clone(),
        open_streams: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        recent_bodies: Mutex::new(VecDeque::new()),
        recent_headers: Mutex::new(VecDeque::new()),
        batch: options.capacity.map(|c| Arc::new(tokio::sync::Semaphore::new(c))),
        running: Arc::new(AtomicUsize::new(0)),
        queued: AtomicUsize::new(0),
    });
    let gate = state.clone();
    Route::new()
        .at("/health", get(wire::health))
        .at("/version", get(wire::version))
        .at("/v1/models", get(wire::models))
        .at("/v1/chat/completions", post(wire::chat))
        .at("/v1/completions", post(wire::completions))
        .at("/v1/embeddings", post(wire::embeddings))
        .at("/_fake/stats", get(wire::stats))
        .at("/_fake/requests", get(wire::recent_requests))
        .at("/_fake/headers", get(wire::recent_headers))
        .at("/metrics", get(wire::metrics))
        .data(state)
        .around(move |next, req| {
            let gate = gate.clone();
            async move {
                if !gate.admits(&req) {
                    return Ok(wire::unauthorized());
                }
                next.call(req).await.map(poem::IntoResponse::into_response)
            }
        })
}

/// A fake running in this process.
pub struct RunningFake {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningFake {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the fake in the background.
pub async fn start(addr: SocketAddr, options: Options) -> std::io::Result<RunningFake> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = Arc::new(app(options).map_to_response().boxed());
    let task = tokio::spawn(async move {
        // Dropped on stop: every connection still open ends with it.
        let mut connections = tokio::task::JoinSet::new();
        let mut stopped = stopped;
        loop {
            let accepted = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            connections.spawn(serve_connection(stream, addr, peer, app.clone()));
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(RunningFake { addr, stop: Some(stop), task })
}

/// Serves one connection until it ends. As vLLM does, a request whose client has gone is
/// dropped (aborted) at once, even while nothing is being sent: hyper reports the client's
/// leaving as the end of the connection, and the connection is not polled again.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    app: Arc<BoxEndpoint<'static, poem::Response>>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let request =
            poem::Request::from((req, LocalAddr(local.into()), RemoteAddr(peer.into()), poem::http::uri::Scheme::HTTP));
        let app = app.clone();
        async move {
            let response = app.get_response(request).await;
            Ok::<_, std::convert::Infallible>(hyper::Response::<ResponseBody>::from(response))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
}

/// A response body as hyper writes it.
type ResponseBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;
