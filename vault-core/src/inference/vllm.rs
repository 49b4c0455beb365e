//! The vLLM backend: vLLM's OpenAI-compatible server over HTTP/1.1, on kept-alive
//! connections (see `pool`). Redirects are never followed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use http::{HeaderName, HeaderValue, Method, Uri, header};

use super::pool::{Answer, Pool, PooledBody};
use super::{EngineLoad, InferenceBackend, Route, Trace, UpstreamReply, upstream_error, upstream_invalid};
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Below vLLM's own keep-alive (5 s), so a connection is not taken just as vLLM closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

pub struct VllmBackend {
    pool: Pool,
    /// The URIs called (origin form: the base URL's path and the route's), parsed once.
    routes: [Uri; 3],
    models: Uri,
    health: Uri,
    metrics: Uri,
    /// Time allowed until the upstream starts answering (for a non-stream request, until
    /// the whole answer is in, since vLLM sends it all at once).
    first_byte_timeout: Duration,
    /// The largest non-streamed answer taken.
    max_body: usize,
    /// `Bearer <VLLM_API_KEY>`, sent with every request when vLLM was started with a key.
    authorization: Option<HeaderValue>,
}

/// A request the upstream did not answer, and whether any of it went out.
pub(crate) struct Failure {
    pub error: VaultError,
    pub sent: bool,
}

impl Failure {
    fn sent(error: VaultError) -> Failure {
        Failure { error, sent: true }
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl VllmBackend {
    /// The backend for vLLM at `base_url`; `api_key` when vLLM was started with `--api-key`.
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        first_byte_timeout: Duration,
        max_body: usize,
    ) -> Result<VllmBackend> {
        let base_url =
            crate::config::parse_http_url(base_url).map_err(|why| VaultError::invalid_field(format!("url: {why}")))?;
        let invalid = |e: &dyn std::fmt::Display| VaultError::invalid_field(format!("url: {e}"));
        let base: Uri = base_url.parse().map_err(|e| invalid(&e))?;
        let host = base.host().unwrap_or_default();
        let authority = format!("{host}:{}", base.port_u16().unwrap_or(80));
        let prefix = base.path().trim_end_matches('/').to_string();
        let uri = |path: &str| format!("{prefix}{path}").parse::<Uri>().map_err(|e| invalid(&e));
        let pool = Pool::new(&authority, CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT).map_err(|e| invalid(&e))?;
        let authorization = match api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| VaultError::config("VLLM_API_KEY: not a value an HTTP header can carry"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(VllmBackend {
            pool,
            routes: [
                uri(Route::ChatCompletions.path())?,
                uri(Route::Completions.path())?,
                uri(Route::Embeddings.path())?,
            ],
            models: uri("/v1/models")?,
            health: uri("/health")?,
            metrics: uri("/metrics")?,
            first_byte_timeout,
            max_body,
            authorization,
        })
    }

    fn unavailable(&self, err: &dyn std::fmt::Display) -> VaultError {
        tracing::warn!(error = %err, "inference upstream unreachable");
        VaultError::new(
            ErrorKind::UpstreamUnavailable,
            ErrorCode::InferenceUnavailable,
            "The inference service is not reachable.",
        )
        .with_suggestion("Check that vLLM is running; the administrator can see its state in /vault/system/health.")
    }

    fn timed_out(&self) -> VaultError {
        VaultError::new(
            ErrorKind::UpstreamTimeout,
            ErrorCode::InferenceTimeout,
            format!("The inference service did not answer within {} s.", self.first_byte_timeout.as_secs_f64()),
        )
        .with_suggestion("Retry later, or ask for fewer tokens.")
    }

    /// The headers every request carries, and those that name `trace`.
    fn headers(&self, trace: Option<&Trace>) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(3);
        if let Some(authorization) = &self.authorization {
            headers.push((header::AUTHORIZATION, authorization.clone()));
        }
        if let Some(trace) = trace {
            // Both were checked on the way in (a plain token, a well-formed traceparent).
            if let Some(id) = &trace.request_id {
                headers.push((X_REQUEST_ID, id.clone()));
            }
            if let Some(Ok(parent)) = trace.traceparent.as_deref().map(HeaderValue::from_str) {
                headers.push((TRACEPARENT, parent));
            }
        }
        headers
    }

    /// Sends a request and waits for the answer's head; a redirect is an unusable answer.
    async fn send(
        &self,
        method: Method,
        uri: &Uri,
        body: Bytes,
        trace: Option<&Trace>,
    ) -> std::result::Result<Answer, Failure> {
        let headers = self.headers(trace);
        let answer = tokio::time::timeout(self.first_byte_timeout, self.pool.send(&method, uri, body, &headers))
            .await
            .map_err(|_| Failure::sent(self.timed_out()))?
            .map_err(|e| Failure { error: self.unavailable(&e), sent: e.may_have_been_sent() })?;
        let status = answer.status.as_u16();
        if (300..400).contains(&status) {
            return Err(Failure::sent(upstream_invalid(format!("it answered with a redirect ({status})"))));
        }
        Ok(answer)
    }

    /// Forwards a request as [`InferenceBackend::forward`] does, saying on failure whether
    /// any of it was sent (a router may try another upstream only when not).
    pub(crate) async fn attempt(
        &self,
        route: Route,
        body: Bytes,
        stream: bool,
        trace: &Trace,
    ) -> std::result::Result<UpstreamReply, Failure> {
        let uri = match route {
            Route::ChatCompletions => &self.routes[0],
            Route::Completions => &self.routes[1],
            Route::Embeddings => &self.routes[2],
        };
        let answer = self.send(Method::POST, uri, body, Some(trace)).await?;
        let status = answer.status.as_u16();
        if status >= 400 || !stream {
            let body = self.read_body(answer.body).await.map_err(Failure::sent)?;
            if status >= 400 {
                return Err(Failure::sent(upstream_error(status, &body)));
            }
            return Ok(UpstreamReply::Complete(body));
        }
        let events = answer.body.map_err(|e| e.to_string());
        Ok(UpstreamReply::Stream(events.boxed()))
    }

    /// The whole body of an answer, within the timeout and the size limit.
    async fn read_body(&self, mut body: PooledBody) -> Result<Bytes> {
        let collect = async {
            let (mut chunks, mut size) = (Vec::new(), 0);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|err| self.unavailable(&err))?;
                size += chunk.len();
                if size > self.max_body {
                    return Err(upstream_invalid(format!("the answer is larger than {} bytes", self.max_body)));
                }
                chunks.push(chunk);
            }
            // Most answers arrive in one piece, taken as it is.
            Ok(match chunks.len() {
                1 => chunks.swap_remove(0),
                _ => chunks.concat().into(),
            })
        };
        tokio::time::timeout(self.first_byte_timeout, collect).await.map_err(|_| self.timed_out())?
    }

    async fn get_json(&self, uri: &Uri) -> Result<serde_json::Value> {
        let answer = self.send(Method::GET, uri, Bytes::new(), None).await.map_err(|f| f.error)?;
        let status = answer.status.as_u16();
        let body = self.read_body(answer.body).await?;
        if status >= 400 {
            return Err(upstream_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| upstream_invalid(format!("{}: not JSON ({e})", uri.path())))
    }
}

impl InferenceBackend for VllmBackend {
    fn forward<'a>(
        &'a self,
        route: Route,
        body: Bytes,
        stream: bool,
        trace: &'a Trace,
    ) -> BoxFuture<'a, Result<UpstreamReply>> {
        async move { self.attempt(route, body, stream, trace).await.map_err(|f| f.error) }.boxed()
    }

    fn list_models(&self) -> BoxFuture<'_, Result<serde_json::Value>> {
        self.get_json(&self.models).boxed()
    }

    fn engine_load(&self) -> BoxFuture<'_, Result<Option<EngineLoad>>> {
        async move {
            let headers = self.headers(None);
            let asked = self.pool.send(&Method::GET, &self.metrics, Bytes::new(), &headers);
            // Not logged: it is read several times a second, and requests report the outage.
            let unreachable = || VaultError::new(ErrorKind::UpstreamUnavailable, ErrorCode::InferenceUnavailable, "");
            let answer = tokio::time::timeout(HEALTH_TIMEOUT, asked)
                .await
                .map_err(|_| unreachable())?
                .map_err(|_| unreachable())?;
            // No such page: not vLLM's, or an older one. Any other failure is passing.
            if answer.status == http::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !answer.status.is_success() {
                return Err(unreachable());
            }
            let body = tokio::time::timeout(HEALTH_TIMEOUT, self.read_body(answer.body))
                .await
                .map_err(|_| unreachable())??;
            Ok(super::parse_engine_load(&String::from_utf8_lossy(&body)))
        }
        .boxed()
    }

    fn is_healthy(&self) -> BoxFuture<'_, bool> {
        async move {
            let headers = self.headers(None);
            let answered = tokio::time::timeout(
                HEALTH_TIMEOUT,
                self.pool.send(&Method::GET, &self.health, Bytes::new(), &headers),
            )
            .await;
            matches!(answered, Ok(Ok(answer)) if answer.status.is_success())
        }
        .boxed()
    }
}
