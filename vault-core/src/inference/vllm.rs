//! The vLLM backend: vLLM's OpenAI-compatible server over HTTP/1.1, through hyper's
//! pooled client (kept-alive connections, `TCP_NODELAY`). Redirects are never followed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{InferenceBackend, Route, UpstreamReply, upstream_error, upstream_invalid};
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct VllmBackend {
    client: Client<HttpConnector, Full<Bytes>>,
    /// The URIs called, parsed once.
    routes: [Uri; 3],
    models: Uri,
    health: Uri,
    /// Time allowed until the upstream starts answering (for a non-stream request, until
    /// the whole answer is in, since vLLM sends it all at once).
    first_byte_timeout: Duration,
    /// The largest non-streamed answer taken.
    max_body: usize,
}

impl VllmBackend {
    pub fn new(base_url: &str, first_byte_timeout: Duration, max_body: usize) -> Result<VllmBackend> {
        let base_url =
            crate::config::parse_http_url(base_url).map_err(|why| VaultError::invalid_field(format!("url: {why}")))?;
        let uri = |path: &str| {
            format!("{base_url}{path}").parse::<Uri>().map_err(|e| VaultError::invalid_field(format!("url: {e}")))
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector);
        Ok(VllmBackend {
            client,
            routes: [
                uri(Route::ChatCompletions.path())?,
                uri(Route::Completions.path())?,
                uri(Route::Embeddings.path())?,
            ],
            models: uri("/v1/models")?,
            health: uri("/health")?,
            first_byte_timeout,
            max_body,
        })
    }

    fn unavailable(&self, err: &dyn std::fmt::Display) -> VaultError {
        tracing::warn!(error = %err, "inference upstream unreachable");
        VaultError::new(
            ErrorKind::UpstreamUnavailable,
            ErrorCode::InferenceUnavailable,
            "The inference service is not reachable.",
        )
        .with_suggestion("Check that vLLM is running; the administrator can see its state in /vault/health.")
    }

    fn timed_out(&self) -> VaultError {
        VaultError::new(
            ErrorKind::UpstreamTimeout,
            ErrorCode::InferenceTimeout,
            format!("The inference service did not answer within {} s.", self.first_byte_timeout.as_secs_f64()),
        )
        .with_suggestion("Retry later, or ask for fewer tokens.")
    }

    /// Sends a request and waits for the answer's head; a redirect is an unusable answer.
    async fn send(&self, method: Method, uri: &Uri, body: Bytes) -> Result<http::Response<hyper::body::Incoming>> {
        let mut request = Request::builder().method(method).uri(uri.clone());
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(Full::new(body)).map_err(|e| VaultError::internal("building an upstream request", e))?;
        let response = tokio::time::timeout(self.first_byte_timeout, self.client.request(request))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.unavailable(&e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(upstream_invalid(format!("it answered with a redirect ({status})")));
        }
        Ok(response)
    }

    /// The whole body of an answer, within the timeout and the size limit.
    async fn read_body(&self, response: http::Response<hyper::body::Incoming>) -> Result<Bytes> {
        let body = http_body_util::Limited::new(response.into_body(), self.max_body);
        let collected =
            tokio::time::timeout(self.first_byte_timeout, body.collect()).await.map_err(|_| self.timed_out())?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                Err(upstream_invalid(format!("the answer is larger than {} bytes", self.max_body)))
            }
            Err(err) => Err(self.unavailable(&err)),
        }
    }

    async fn get_json(&self, uri: &Uri) -> Result<serde_json::Value> {
        let response = self.send(Method::GET, uri, Bytes::new()).await?;
        let status = response.status().as_u16();
        let body = self.read_body(response).await?;
        if status >= 400 {
            return Err(upstream_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| upstream_invalid(format!("{}: not JSON ({e})", uri.path())))
    }
}

impl InferenceBackend for VllmBackend {
    fn forward(&self, route: Route, body: Bytes, stream: bool) -> BoxFuture<'_, Result<UpstreamReply>> {
        async move {
            let uri = match route {
                Route::ChatCompletions => &self.routes[0],
                Route::Completions => &self.routes[1],
                Route::Embeddings => &self.routes[2],
            };
            let response = self.send(Method::POST, uri, body).await?;
            let status = response.status().as_u16();
            if status >= 400 || !stream {
                let body = self.read_body(response).await?;
                if status >= 400 {
                    return Err(upstream_error(status, &body));
                }
                return Ok(UpstreamReply::Complete(body));
            }
            let events = response.into_body().into_data_stream().map_err(|e| e.to_string());
            Ok(UpstreamReply::Stream(events.boxed()))
        }
        .boxed()
    }

    fn list_models(&self) -> BoxFuture<'_, Result<serde_json::Value>> {
        self.get_json(&self.models).boxed()
    }

    fn is_healthy(&self) -> BoxFuture<'_, bool> {
        async move {
            let request = Request::get(self.health.clone()).body(Full::new(Bytes::new()));
            let Ok(request) = request else { return false };
            let answered = tokio::time::timeout(HEALTH_TIMEOUT, self.client.request(request)).await;
            matches!(answered, Ok(Ok(response)) if response.status().is_success())
        }
        .boxed()
    }
}
