//! Prometheus metrics of one gateway: requests by route and status, the time spent in Vault
//! apart from the upstream, upstream time to first token and total latency, tokens by
//! model, active streams, the audit writer's queue and commits, and the key cache.
//!
//! Every request is counted where its audit record is finished, so the counters and the
//! audit trail agree. Labels take values from small, known sets only: a route is the
//! template it matched (`/vault/conversations/{id}`), never the raw path, and a method
//! outside the usual ones is `OTHER`, so no client can grow the set of series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::audit::AuditRecord;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// When an upstream request went out, its first body bytes came back, and it ended.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTiming {
    pub sent: std::time::Instant,
    pub first_byte: Option<std::time::Instant>,
    pub done: std::time::Instant,
}

/// Values read from elsewhere when the metrics are scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub audit_queue_depth: i64,
    pub key_cache_hits: u64,
    pub key_cache_misses: u64,
    pub admission: crate::inference::admission::AdmissionSnapshot,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    overhead: Histogram,
    upstream_first_byte: Histogram,
    upstream_latency: Histogram,
    tokens: Family<TokenLabels, Counter>,
    active_streams: Gauge,
    audit_queue_depth: Gauge,
    audit_commit: Histogram,
    key_cache: Family<CacheLabels, Counter>,
    admission_queued: Gauge,
    admission_in_flight: Gauge,
    admission_limit: Gauge,
    admission_wait: Histogram,
    routes: OnceLock<Routes>,
    /// The token counters of each model seen (input, output), found without allocating.
    tokens_by_model: RwLock<HashMap<String, [Counter; 2]>>,
    /// One scrape at a time: a scrape moves counters kept elsewhere by their difference.
    scraping: Mutex<()>,
}

/// Models counted by name at most; tokens of any further one count under `other`, so a
/// backend that accepts any model name cannot grow the set of series without bound.
const MAX_MODELS: usize = 64;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        // 10 µs to about 0.3 s.
        let overhead = Histogram::new(exponential_buckets(0.000_01, 2.0, 16));
        // 5 ms to about 80 s.
        let upstream_first_byte = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        let upstream_latency = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        let tokens = Family::<TokenLabels, Counter>::default();
        let active_streams = Gauge::default();
        let audit_queue_depth = Gauge::default();
        // 100 µs to about 3 s.
        let audit_commit = Histogram::new(exponential_buckets(0.000_1, 2.0, 15));
        let key_cache = Family::<CacheLabels, Counter>::default();
        let admission_queued = Gauge::default();
        let admission_in_flight = Gauge::default();
        let admission_limit = Gauge::default();
        // 1 ms to about 65 s.
        let admission_wait = Histogram::new(exponential_buckets(0.001, 2.0, 17));

        let mut registry = Registry::with_prefix("vault");
        registry.register("requests", "Requests answered, by route template, method and status", requests.clone());
        registry.register(
            "gateway_overhead_seconds",
            "Time a request spent in Vault, not counting the time it waited on the upstream",
            overhead.clone(),
        );
        registry.register(
            "upstream_first_byte_seconds",
            "From sending an inference request upstream to the first bytes of its answer (a stream's first token)",
            upstream_first_byte.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "From sending an inference request upstream to the end of its answer",
            upstream_latency.clone(),
        );
        registry.register("tokens", "Tokens of answered inference requests, by model and direction", tokens.clone());
        registry.register("active_streams", "Streamed answers in progress", active_streams.clone());
        registry.register("audit_queue_depth", "Audit rows waiting for their commit", audit_queue_depth.clone());
        registry.register("audit_commit_seconds", "Duration of the audit writer's commits", audit_commit.clone());
        registry.register(
            "key_cache_lookups",
            "API key lookups, answered from the cache (hit) or not",
            key_cache.clone(),
        );
        registry.register(
            "admission_queued",
            "Inference requests waiting their turn while the engine is full (fair admission)",
            admission_queued.clone(),
        );
        registry.register(
            "admission_in_flight",
            "Inference requests this gateway has sent upstream and not finished (fair admission)",
            admission_in_flight.clone(),
        );
        registry.register(
            "admission_limit",
            "Inference requests this gateway lets be in flight upstream, from the engine's last reading (0: no limit)",
            admission_limit.clone(),
        );
        registry.register(
            "admission_wait_seconds",
            "How long inference requests that had to wait their turn waited, admitted or turned away",
            admission_wait.clone(),
        );
        Metrics {
            registry,
            requests,
            overhead,
            upstream_first_byte,
            upstream_latency,
            tokens,
            active_streams,
            audit_queue_depth,
            audit_commit,
            key_cache,
            admission_queued,
            admission_in_flight,
            admission_limit,
            admission_wait,
            routes: OnceLock::new(),
            tokens_by_model: RwLock::new(HashMap::new()),
            scraping: Mutex::new(()),
        }
    }

    /// The route templates requests are counted under (`{name}` stands for one path
    /// segment; `{model_id}` for the rest of the path, as model ids may contain `/`).
    /// Set once; until then every request counts under `unmatched`.
    pub fn set_routes<'a>(&self, templates: impl IntoIterator<Item = &'a str>) {
        let _ = self.routes.set(Routes::new(templates));
    }

    /// Counts a finished request. `total` is its whole time in Vault.
    pub fn observe_request(&self, record: &AuditRecord, total: Duration, upstream: Option<&UpstreamTiming>) {
        let route = self.routes.get().map_or_else(|| Arc::clone(&UNMATCHED), |r| r.classify(&record.path));
        let labels = RequestLabels { route, method: method_label(&record.method), status: record.status };
        self.requests.get_or_create(&labels).inc_by(u64::from(record.repeat_count.0));
        let waited = match upstream {
            Some(timing) => {
                if let Some(first) = timing.first_byte {
                    self.upstream_first_byte.observe(first.saturating_duration_since(timing.sent).as_secs_f64());
                }
                let waited = timing.done.saturating_duration_since(timing.sent);
                self.upstream_latency.observe(waited.as_secs_f64());
                waited
            }
            None => Duration::ZERO,
        };
        self.overhead.observe(total.saturating_sub(waited).as_secs_f64());
        if record.status == 200
            && let Some(model) = record.model.as_deref()
            && let Some([input, output]) = self.token_counters(model)
        {
            input.inc_by(record.tokens_input.unwrap_or(0));
            output.inc_by(record.tokens_output.unwrap_or(0));
        }
    }

    fn token_counters(&self, model: &str) -> Option<[Counter; 2]> {
        if let Some(counters) = self.tokens_by_model.read().ok()?.get(model) {
            return Some(counters.clone());
        }
        let mut known = self.tokens_by_model.write().ok()?;
        let label = if known.len() < MAX_MODELS { model } else { "other" };
        let counter = |direction| self.tokens.get_or_create(&TokenLabels { model: label.into(), direction }).clone();
        let counters = [counter("input"), counter("output")];
        if known.len() < MAX_MODELS {
            known.insert(model.to_string(), counters.clone());
        }
        Some(counters)
    }

    /// Counts a streamed answer as active until the returned guard is dropped.
    pub fn stream_started(&self) -> ActiveStream {
        self.active_streams.inc();
        ActiveStream(self.active_streams.clone())
    }

    pub fn active_streams(&self) -> i64 {
        self.active_streams.get()
    }

    /// Counts the wait of a request that queued for the engine.
    pub fn observe_admission_wait(&self, waited: Duration) {
        self.admission_wait.observe(waited.as_secs_f64());
    }

    pub fn observe_commit(&self, took: Duration) {
        self.audit_commit.observe(took.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format, with `snapshot`'s values in.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        let _one_at_a_time = self.scraping.lock();
        self.audit_queue_depth.set(snapshot.audit_queue_depth);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.admission_queued.set(gauge(snapshot.admission.queued));
        self.admission_in_flight.set(gauge(snapshot.admission.in_flight));
        self.admission_limit.set(snapshot.admission.limit.map_or(0, gauge));
        for (result, total) in [("hit", snapshot.key_cache_hits), ("miss", snapshot.key_cache_misses)] {
            let counter = self.key_cache.get_or_create(&CacheLabels { result });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Keeps a stream counted in `vault_active_streams` while it lives.
pub struct ActiveStream(Gauge);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

static UNMATCHED: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("unmatched"));

/// Maps a request path to the route template it matches.
struct Routes {
    exact: std::collections::HashMap<String, Arc<str>>,
    /// Templates with parameters, as segments (`None` stands for a parameter).
    patterns: Vec<(Vec<Option<String>>, bool, Arc<str>)>,
}

impl Routes {
    fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Routes {
        let mut exact = std::collections::HashMap::new();
        let mut patterns = Vec::new();
        for template in templates {
            let label: Arc<str> = Arc::from(template);
            if !template.contains('{') {
                exact.insert(template.to_string(), label);
                continue;
            }
            let segments: Vec<Option<String>> =
                template.split('/').map(|s| if s.starts_with('{') { None } else { Some(s.to_string()) }).collect();
            let rest = template.ends_with("{model_id}");
            patterns.push((segments, rest, label));
        }
        Routes { exact, patterns }
    }

    fn classify(&self, path: &str) -> Arc<str> {
        if let Some(label) = self.exact.get(path) {
            return Arc::clone(label);
        }
        let count = path.split('/').count();
        for (pattern, rest, label) in &self.patterns {
            let fits = if *rest { count >= pattern.len() } else { count == pattern.len() };
            let matches = fits
                && pattern.iter().zip(path.split('/')).all(|(want, got)| match want {
                    Some(literal) => literal == got,
                    None => !got.is_empty(),
                });
            if matches {
                return Arc::clone(label);
            }
        }
        Arc::clone(&UNMATCHED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: &str, path: &str, status: u16) -> AuditRecord {
        AuditRecord { method: method.into(), path: path.into(), status, ..AuditRecord::default() }
    }

    #[test]
    fn paths_count_under_their_templates_and_unknown_ones_under_one_label() {
        let routes = Routes::new([
            "/v1/models",
            "/v1/models/{model_id}",
            "/vault/conversations/{id}",
            "/vault/conversations/{id}/export",
        ]);
        let classify = |p: &str| routes.classify(p).to_string();
        assert_eq!(classify("/v1/models"), "/v1/models");
        assert_eq!(classify("/v1/models/Qwen/Qwen2.5-7B"), "/v1/models/{model_id}");
        assert_eq!(classify("/vault/conversations/abc"), "/vault/conversations/{id}");
        assert_eq!(classify("/vault/conversations/abc/export"), "/vault/conversations/{id}/export");
        assert_eq!(classify("/vault/conversations/abc/other"), "unmatched");
        assert_eq!(classify("/wp-admin/setup.php"), "unmatched");
        assert_eq!(method_label("BREW"), "OTHER");
    }

    #[test]
    fn counters_move_once_per_request_and_the_text_parses_as_openmetrics() {
        let metrics = Metrics::new();
        metrics.set_routes(["/v1/chat/completions"]);
        let mut chat = record("POST", "/v1/chat/completions", 200);
        chat.model = Some("m".into());
        chat.tokens_input = Some(7);
        chat.tokens_output = Some(3);
        let now = std::time::Instant::now();
        let timing = UpstreamTiming { sent: now, first_byte: Some(now), done: now + Duration::from_millis(20) };
        for _ in 0..3 {
            metrics.observe_request(&chat, Duration::from_millis(21), Some(&timing));
        }
        metrics.observe_request(&record("GET", "/nope", 404), Duration::from_micros(50), None);
        let stream = metrics.stream_started();
        let text = metrics.encode(Snapshot {
            audit_queue_depth: 4,
            key_cache_hits: 9,
            key_cache_misses: 1,
            ..Snapshot::default()
        });
        drop(stream);
        let line =
            |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}\n{text}"));
        assert!(text.contains("vault_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"200\"} 3"));
        assert!(text.contains("vault_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1"));
        assert!(text.contains("vault_tokens_total{model=\"m\",direction=\"input\"} 21"));
        assert!(text.contains("vault_upstream_latency_seconds_count 3"));
        assert!(text.contains("vault_gateway_overhead_seconds_count 4"));
        assert_eq!(line("vault_active_streams "), "vault_active_streams 1");
        assert_eq!(line("vault_audit_queue_depth "), "vault_audit_queue_depth 4");
        assert!(text.contains("vault_key_cache_lookups_total{result=\"hit\"} 9"));
        assert!(text.trim_end().ends_with("# EOF"));
        assert_eq!(metrics.active_streams(), 0);
        // A second scrape moves the cache counters by the difference only.
        let text = metrics.encode(Snapshot {
            audit_queue_depth: 0,
            key_cache_hits: 12,
            key_cache_misses: 1,
            ..Snapshot::default()
        });
        assert!(text.contains("vault_key_cache_lookups_total{result=\"hit\"} 12"));
    }

    #[test]
    fn models_past_the_limit_count_under_other() {
        let metrics = Metrics::new();
        for i in 0..MAX_MODELS + 10 {
            let mut chat = record("POST", "/v1/chat/completions", 200);
            chat.model = Some(format!("model-{i}"));
            chat.tokens_output = Some(1);
            metrics.observe_request(&chat, Duration::from_millis(1), None);
        }
        let text = metrics.encode(Snapshot::default());
        let series = text.lines().filter(|l| l.starts_with("vault_tokens_total{") && l.contains("output")).count();
        assert_eq!(series, MAX_MODELS + 1);
        assert!(text.contains("vault_tokens_total{model=\"other\",direction=\"output\"} 10"), "{text}");
    }
}
