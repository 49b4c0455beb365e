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
//! `GET /_fake/stats` reports open streams and requests served; `GET /_fake/requests`
//! returns the last request bodies received, as sent.

mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, EndpointExt, Route, Server, get, post};

pub use wire::Mode;

/// How the fake behaves unless a request says otherwise.
#[derive(Debug, Clone)]
pub struct Options {
    /// Served model ids; the first is the default. Ids may contain `/`, as vLLM's do.
    pub models: Vec<String>,
    /// Delay between streamed tokens.
    pub token_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            models: vec!["qwen2.5-32b-awq".into(), "Qwen/Qwen2.5-7B-Instruct".into()],
            token_delay: Duration::ZERO,
        }
    }
}

const KEPT_REQUESTS: usize = 64;

pub struct State {
    options: Options,
    open_streams: AtomicUsize,
    requests: AtomicU64,
    recent_bodies: Mutex<VecDeque<serde_json::Value>>,
}

impl State {
    fn remember(&self, body: &serde_json::Value) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut recent) = self.recent_bodies.lock() {
            if recent.len() == KEPT_REQUESTS {
                recent.pop_front();
            }
            recent.push_back(body.clone());
        }
    }
}

/// The fake's routes, ready to serve.
pub fn app(options: Options) -> impl Endpoint + 'static {
    let state = Arc::new(State {
        options,
        open_streams: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        recent_bodies: Mutex::new(VecDeque::new()),
    });
    Route::new()
        .at("/health", get(wire::health))
        .at("/version", get(wire::version))
        .at("/v1/models", get(wire::models))
        .at("/v1/chat/completions", post(wire::chat))
        .at("/v1/completions", post(wire::completions))
        .at("/v1/embeddings", post(wire::embeddings))
        .at("/_fake/stats", get(wire::stats))
        .at("/_fake/requests", get(wire::recent_requests))
        .data(state)
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
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| std::io::Error::other("the listener has no address"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = stopped.await;
        };
        if let Err(e) = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app(options), signal, Some(Duration::from_secs(5)))
            .await
        {
            tracing::error!(error = %e, "fake-vllm stopped");
        }
    });
    Ok(RunningFake { addr, stop: Some(stop), task })
}
