//! Several vLLM upstreams behind one gateway (one per GPU, or per model, or per box): each
//! request goes to an upstream that serves its model, the one with the fewest requests in
//! flight for its weight. Every upstream's `/health` and `/v1/models` are read every
//! [`CHECK_EVERY`]; after [`EJECT_AFTER`] failures in a row (connections refused, health
//! checks failed) an upstream is left out until its health check passes again. A request
//! moves on to another upstream only when nothing of it was sent — never after its first
//! byte, which could run a generation twice.
//!
//! Upstreams listed in a file (`VAULT_UPSTREAMS`) follow it: when the file changes (a model
//! load restarts the engine with a new set of servers, see `models::launch`), the next
//! check takes the new list; an upstream that stays keeps its counts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::vllm::VllmBackend;
use super::{EngineLoad, InferenceBackend, Route, Trace, UpstreamReply};
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

/// How often every upstream's health and models are read.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);
/// Failures in a row that take an upstream out of rotation.
pub const EJECT_AFTER: u32 = 3;
/// The longest one upstream's check may take, so that a slow one holds up no other.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one upstream's model list may take within `GET /v1/models`.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One upstream as configured (`VLLM_BASE_URL` lists them; `VAULT_UPSTREAMS` names a file
/// that also says which models each serves, and its weight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub url: String,
    /// The models it serves; `None`: whatever its `/v1/models` lists.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Its share of requests against the others' (1–100).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// An upstream's state, as the health routes show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamState {
    pub url: String,
    /// `up`, or `ejected` (left out after failures in a row until its health check passes).
    pub state: &'static str,
    pub in_flight: u64,
    pub weight: u32,
    /// The models it serves, as configured or as its `/v1/models` last said.
    pub models: Vec<String>,
}

struct Upstream {
    spec: UpstreamSpec,
    backend: VllmBackend,
    /// What its `/v1/models` listed at the last check.
    learned: RwLock<Vec<String>>,
    in_flight: Arc<AtomicU64>,
    failures: AtomicU32,
    ejected: AtomicBool,
}

impl Upstream {
    fn models(&self) -> Vec<String> {
        match &self.spec.models {
            Some(models) => models.clone(),
            None => self.learned.read().map(|m| m.clone()).unwrap_or_default(),
        }
    }

    fn serves(&self, model: &str) -> bool {
        match &self.spec.models {
            Some(models) => models.iter().any(|m| m == model),
            None => self.learned.read().is_ok_and(|m| m.iter().any(|m| m == model)),
        }
    }

    /// Whether it is known which models it serves (configured, or read from it).
    fn models_known(&self) -> bool {
        self.spec.models.is_some() || self.learned.read().is_ok_and(|m| !m.is_empty())
    }

    fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= EJECT_AFTER && !self.ejected.swap(true, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.spec.url, failures, "inference upstream left out of rotation");
        }
    }

    fn answered(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Reads its health and models; brings it back when healthy.
    async fn check(&self) {
        if !self.backend.is_healthy().await {
            self.failed();
            return;
        }
        self.answered();
        if self.ejected.swap(false, Ordering::Relaxed) {
            tracing::info!(upstream = %self.spec.url, "inference upstream back in rotation");
        }
        if let Ok(Ok(list)) = tokio::time::timeout(CHECK_TIMEOUT, self.backend.list_models()).await {
            let ids = model_ids(&list);
            if let Ok(mut learned) = self.learned.write() {
                *learned = ids;
            }
        }
    }
}

fn model_ids(list: &serde_json::Value) -> Vec<String> {
    let cards = list.get("data").and_then(|d| d.as_array());
    cards.into_iter().flatten().filter_map(|c| c.get("id")?.as_str().map(String::from)).collect()
}

/// Counts a request in flight on an upstream until dropped.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(count: &Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type Upstreams = Arc<Vec<Arc<Upstream>>>;

/// How every upstream is reached.
#[derive(Clone)]
struct Reach {
    api_key: Option<String>,
    first_byte_timeout: Duration,
    max_body: usize,
}

impl Reach {
    fn upstream(&self, spec: &UpstreamSpec) -> Result<Arc<Upstream>> {
        Ok(Arc::new(Upstream {
            backend: VllmBackend::new(&spec.url, self.api_key.as_deref(), self.first_byte_timeout, self.max_body)?,
            spec: spec.clone(),
            learned: RwLock::new(Vec::new()),
            in_flight: Arc::new(AtomicU64::new(0)),
            failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
        }))
    }
}

/// The file the upstreams are listed in, and what it was (time of change and length) when
/// last taken.
struct Source {
    path: PathBuf,
    taken: Mutex<Option<(SystemTime, u64)>>,
}

/// The upstreams, and which one serves what.
pub struct Router {
    upstreams: RwLock<Upstreams>,
    reach: Reach,
    source: Option<Source>,
    /// Counts picks, to take ties in turn.
    turn: std::sync::atomic::AtomicUsize,
}

impl Router {
    /// A router over `specs`, each reached as `VllmBackend` would; following the file
    /// `source` when they were read from one.
    pub fn new(
        specs: &[UpstreamSpec],
        source: Option<PathBuf>,
        api_key: Option<&str>,
        first_byte_timeout: Duration,
        max_body: usize,
    ) -> Result<Router> {
        let reach = Reach { api_key: api_key.map(String::from), first_byte_timeout, max_body };
        let upstreams = specs.iter().map(|spec| reach.upstream(spec)).collect::<Result<Vec<_>>>()?;
        // Nothing taken yet: the first check reads the file again, in case it changed since
        // the configuration was read.
        let source = source.map(|path| Source { path, taken: Mutex::new(None) });
        Ok(Router { upstreams: RwLock::new(Arc::new(upstreams)), reach, source, turn: Default::default() })
    }

    fn current(&self) -> Upstreams {
        self.upstreams.read().map(|u| u.clone()).unwrap_or_default()
    }

    /// Takes the upstreams file's new list when it changed since it was read. A file that
    /// cannot be used is reported and the list stays.
    fn follow_source(&self) {
        let Some(source) = &self.source else { return };
        let now = std::fs::metadata(&source.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let Ok(mut taken) = source.taken.lock() else { return };
        if now.is_some() && now == *taken {
            return;
        }
        let specs = match crate::config::read_upstreams(&source.path) {
            Ok(specs) => specs,
            // Tried again at the next check: it may be half written.
            Err(why) => {
                tracing::warn!(why, "the upstreams file cannot be used: the upstreams stay as they were");
                return;
            }
        };
        *taken = now;
        let before = self.current();
        let mut next = Vec::new();
        for spec in &specs {
            match before.iter().find(|u| u.spec == *spec) {
                Some(kept) => next.push(kept.clone()),
                None => match self.reach.upstream(spec) {
                    Ok(upstream) => next.push(upstream),
                    Err(err) => tracing::warn!(url = %spec.url, error = %err.message, "an upstream cannot be used"),
                },
            }
        }
        let unchanged = next.len() == before.len() && next.iter().zip(before.iter()).all(|(a, b)| Arc::ptr_eq(a, b));
        if unchanged {
            return;
        }
        let urls: Vec<&str> = next.iter().map(|u| u.spec.url.as_str()).collect();
        tracing::info!(upstreams = ?urls, "the upstreams file changed");
        if let Ok(mut upstreams) = self.upstreams.write() {
            *upstreams = Arc::new(next);
        }
    }

    /// Checks every upstream now and then every [`CHECK_EVERY`], until `stopping`.
    pub async fn watch(self: Arc<Self>, stopping: CancellationToken) {
        loop {
            self.follow_source();
            let upstreams = self.current();
            let checks = upstreams.iter().map(|u| async move {
                if tokio::time::timeout(CHECK_TIMEOUT, u.check()).await.is_err() {
                    u.failed();
                }
            });
            futures_util::future::join_all(checks).await;
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }

    pub fn states(&self) -> Vec<UpstreamState> {
        self.current()
            .iter()
            .map(|u| UpstreamState {
                url: u.spec.url.clone(),
                state: if u.is_ejected() { "ejected" } else { "up" },
                in_flight: u.in_flight.load(Ordering::Relaxed),
                weight: u.spec.weight,
                models: u.models(),
            })
            .collect()
    }

    /// The upstream for a request for `model`, not among `tried`: of those in rotation that
    /// serve it, the one with the fewest requests in flight for its weight (ties taken in
    /// turn). While some upstream's models are not known yet, a model no other serves goes
    /// only to such one; a model no upstream serves (all known) goes to any, to be refused
    /// in the upstream's own words.
    fn pick(&self, upstreams: &[Arc<Upstream>], model: Option<&str>, tried: &[usize]) -> Option<usize> {
        let open: Vec<usize> =
            (0..upstreams.len()).filter(|i| !tried.contains(i) && !upstreams[*i].is_ejected()).collect();
        let candidates: Vec<usize> = match model {
            None => open,
            Some(model) if upstreams.iter().any(|u| u.serves(model)) => {
                open.into_iter().filter(|i| upstreams[*i].serves(model)).collect()
            }
            Some(_) if upstreams.iter().any(|u| !u.models_known()) => {
                open.into_iter().filter(|i| !upstreams[*i].models_known()).collect()
            }
            Some(_) => open,
        };
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let start = turn % candidates.len().max(1);
        let load = |i: usize| {
            let u = &upstreams[i];
            (u.in_flight.load(Ordering::Relaxed) + 1) as f64 / f64::from(u.spec.weight.max(1))
        };
        // `min_by` keeps the first of equals: starting at a different one each time spreads
        // ties across them.
        candidates[start..].iter().chain(&candidates[..start]).copied().min_by(|a, b| load(*a).total_cmp(&load(*b)))
    }
}

/// An error that is the upstream's failing, not the request's: unreachable, too slow, or a
/// 5xx of its own.
fn is_upstream_fault(err: &VaultError) -> bool {
    match err.kind {
        ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamTimeout => true,
        ErrorKind::Upstream { status } => status >= 500,
        _ => false,
    }
}

fn all_down() -> VaultError {
    VaultError::new(
        ErrorKind::UpstreamUnavailable,
        ErrorCode::InferenceUnavailable,
        "No inference service that serves this model is reachable.",
    )
    .with_suggestion(
        "Check that vLLM is running; the administrator can see each upstream's state in /vault/system/health.",
    )
}

impl InferenceBackend for Router {
    fn forward<'a>(
        &'a self,
        route: Route,
        body: Bytes,
        stream: bool,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<UpstreamReply>> {
        async move {
            let upstreams = self.current();
            let mut tried = Vec::new();
            let mut last = None;
            while let Some(i) = self.pick(&upstreams, trace.model.as_deref(), &tried) {
                let upstream = &upstreams[i];
                let in_flight = InFlight::new(&upstream.in_flight);
                match upstream.backend.attempt(route, body.clone(), stream, trace).await {
                    Ok(reply) => {
                        upstream.answered();
                        return Ok(match reply {
                            UpstreamReply::Complete(body) => UpstreamReply::Complete(body),
                            // Counted in flight until the stream ends or is dropped.
                            UpstreamReply::Stream(events) => UpstreamReply::Stream(
                                events
                                    .map(move |event| {
                                        let _held = &in_flight;
                                        event
                                    })
                                    .boxed(),
                            ),
                        });
                    }
                    // Nothing went out: another upstream may take it.
                    Err(failure) if !failure.sent => {
                        upstream.failed();
                        tried.push(i);
                        last = Some(failure.error);
                    }
                    Err(failure) => {
                        // It failed the request (not the client): it counts against it, but
                        // the request is not sent again.
                        if is_upstream_fault(&failure.error) {
                            upstream.failed();
                        } else {
                            upstream.answered();
                        }
                        return Err(failure.error);
                    }
                }
            }
            Err(last.unwrap_or_else(all_down))
        }
        .boxed()
    }

    /// The models of every upstream in rotation, each once.
    fn list_models(&self) -> BoxFuture<'_, Result<serde_json::Value>> {
        async move {
            let upstreams = self.current();
            let open = upstreams.iter().filter(|u| !u.is_ejected());
            let lists = futures_util::future::join_all(open.map(|u| async move {
                tokio::time::timeout(LIST_TIMEOUT, u.backend.list_models()).await.unwrap_or_else(|_| Err(all_down()))
            }))
            .await;
            let mut cards: Vec<serde_json::Value> = Vec::new();
            let mut first_error = None;
            let mut answered = false;
            for list in lists {
                match list {
                    Ok(list) => {
                        answered = true;
                        for card in list.get("data").and_then(|d| d.as_array()).into_iter().flatten() {
                            let id = card.get("id");
                            if !cards.iter().any(|c| c.get("id") == id) {
                                cards.push(card.clone());
                            }
                        }
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
            if !answered {
                return Err(first_error.unwrap_or_else(all_down));
            }
            Ok(serde_json::json!({"object": "list", "data": cards}))
        }
        .boxed()
    }

    /// Whether any upstream answers its health check.
    fn is_healthy(&self) -> BoxFuture<'_, bool> {
        async move {
            let upstreams = self.current();
            let checks = upstreams.iter().map(|u| u.backend.is_healthy());
            futures_util::future::join_all(checks).await.into_iter().any(|healthy| healthy)
        }
        .boxed()
    }

    /// The scheduler gauges of the upstreams in rotation summed (the fullest KV cache):
    /// fair admission shares out the whole, its threshold applying to the sum. Unless every
    /// one of them answers alike, the reading is a failed one (the gate then keeps its last
    /// limit): a part counted as the whole would hold requests back for nothing.
    fn engine_load(&self) -> BoxFuture<'_, Result<Option<EngineLoad>>> {
        async move {
            let upstreams = self.current();
            let open = upstreams.iter().filter(|u| !u.is_ejected());
            let loads = futures_util::future::join_all(open.map(|u| u.backend.engine_load())).await;
            if loads.is_empty() {
                return Err(all_down());
            }
            let mut total = EngineLoad { running: 0, waiting: 0, kv_cache_usage: None };
            let mut without_gauges = 0;
            for load in &loads {
                match load {
                    Err(_) => return Err(all_down()),
                    Ok(None) => without_gauges += 1,
                    Ok(Some(load)) => {
                        total.running += load.running;
                        total.waiting += load.waiting;
                        total.kv_cache_usage = match (total.kv_cache_usage, load.kv_cache_usage) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
            match without_gauges {
                0 => Ok(Some(total)),
                n if n == loads.len() => Ok(None),
                _ => Err(all_down()),
            }
        }
        .boxed()
    }

    fn upstream_states(&self) -> Option<Vec<UpstreamState>> {
        Some(self.states())
    }

    fn start(self: Arc<Self>, stopping: CancellationToken) {
        tokio::spawn(self.watch(stopping));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16, models: Option<&[&str]>, weight: u32) -> UpstreamSpec {
        UpstreamSpec {
            url: format!("http://127.0.0.1:{port}"),
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            weight,
        }
    }

    fn router(specs: &[UpstreamSpec]) -> Router {
        Router::new(specs, None, None, Duration::from_secs(1), 1 << 20).unwrap()
    }

    #[test]
    fn a_request_goes_where_its_model_is_served_with_the_least_load_for_the_weight() {
        let r = router(&[spec(1, Some(&["x"]), 1), spec(2, Some(&["x"]), 2), spec(3, Some(&["y"]), 1)]);
        assert_eq!(r.pick(&r.current(), Some("y"), &[]), Some(2));
        // Both idle: the heavier weight first; then 1 in flight there counts as half.
        assert_eq!(r.pick(&r.current(), Some("x"), &[]), Some(1));
        r.current()[1].in_flight.store(1, Ordering::Relaxed);
        let ties = [r.pick(&r.current(), Some("x"), &[]), r.pick(&r.current(), Some("x"), &[])];
        assert!(ties.contains(&Some(0)) && ties.contains(&Some(1)), "2/2 against 1/1: ties in turn, {ties:?}");
        r.current()[1].in_flight.store(0, Ordering::Relaxed);
        r.current()[0].in_flight.store(3, Ordering::Relaxed);
        r.current()[1].in_flight.store(5, Ordering::Relaxed);
        assert_eq!(r.pick(&r.current(), Some("x"), &[]), Some(1), "6/2 against 4/1");
        assert_eq!(r.pick(&r.current(), Some("x"), &[1]), Some(0), "one tried already is passed over");
        assert_eq!(r.pick(&r.current(), Some("x"), &[0, 1]), None, "y's upstream never gets x");
        // A model nobody serves goes to any, to be refused in the upstream's words.
        assert!(r.pick(&r.current(), Some("z"), &[]).is_some());
    }

    #[test]
    fn a_model_nobody_is_known_to_serve_goes_only_where_the_models_are_not_known_yet() {
        let r = router(&[spec(1, Some(&["x"]), 1), spec(2, None, 1)]);
        for _ in 0..4 {
            assert_eq!(r.pick(&r.current(), Some("y"), &[]), Some(1), "maybe it serves y");
        }
        *r.current()[1].learned.write().unwrap() = vec!["y".into()];
        assert_eq!(r.pick(&r.current(), Some("y"), &[]), Some(1));
        // Every list known, and nobody serves z: any of them refuses it.
        assert!(r.pick(&r.current(), Some("z"), &[]).is_some());
        // y's only upstream out of rotation: nowhere to send it (a 503, not x's 404).
        for _ in 0..EJECT_AFTER {
            r.current()[1].failed();
        }
        assert_eq!(r.pick(&r.current(), Some("y"), &[]), None);
    }

    #[test]
    fn an_upstream_failing_in_a_row_is_left_out_until_it_answers() {
        let r = router(&[spec(1, None, 1), spec(2, None, 1)]);
        *r.current()[0].learned.write().unwrap() = vec!["x".into()];
        *r.current()[1].learned.write().unwrap() = vec!["x".into()];
        for _ in 0..EJECT_AFTER - 1 {
            r.current()[0].failed();
        }
        r.current()[0].answered();
        r.current()[0].failed();
        assert!(!r.current()[0].is_ejected(), "failures not in a row");
        for _ in 0..EJECT_AFTER {
            r.current()[0].failed();
        }
        assert!(r.current()[0].is_ejected());
        assert_eq!(r.pick(&r.current(), Some("x"), &[]), Some(1));
        assert_eq!(r.pick(&r.current(), Some("x"), &[1]), None);
        assert_eq!(r.states()[0].state, "ejected");
        assert_eq!(r.states()[1].models, ["x"]);
    }

    #[tokio::test]
    async fn with_every_upstream_refusing_the_answer_is_503() {
        let closed =
            [std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap()];
        let ports: Vec<u16> = closed.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(closed);
        let r = router(&[spec(ports[0], None, 1), spec(ports[1], None, 1)]);
        let trace = Trace::default();
        let err = r.forward(Route::ChatCompletions, Bytes::from_static(b"{}"), false, &trace).await.err().unwrap();
        assert_eq!((err.status(), err.code), (503, ErrorCode::InferenceUnavailable));
        assert!(r.current().iter().all(|u| u.failures.load(Ordering::Relaxed) == 1), "each was tried once");
        assert!(!r.is_healthy().await);
        assert!(r.list_models().await.is_err());
    }
}
