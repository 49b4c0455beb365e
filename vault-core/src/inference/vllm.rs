//! The vLLM backend: vLLM's OpenAI-compatible server over HTTP.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};

use super::{InferenceBackend, Route, UpstreamReply, upstream_error};
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub struct VllmBackend {
    client: reqwest::Client,
    base_url: String,
    /// The proxied routes' URLs, parsed once: parsing one costs more than the rest of
    /// building a request.
    route_urls: [reqwest::Url; 3],
    /// Time allowed until the upstream starts answering (for a non-stream request, until
    /// the whole answer is in, since vLLM sends it all at once).
    first_byte_timeout: Duration,
}

impl VllmBackend {
    pub fn new(base_url: &str, first_byte_timeout: Duration) -> Result<VllmBackend> {
        let base_url =
            crate::config::parse_http_url(base_url).map_err(|why| VaultError::invalid_field(format!("url: {why}")))?;
        let client = reqwest::Client::builder()
            // A redirect would send the prompt somewhere else: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| VaultError::internal("building the upstream client", e))?;
        let url = |route: Route| {
            reqwest::Url::parse(&format!("{base_url}{}", route.path()))
                .map_err(|e| VaultError::invalid_field(format!("url: {e}")))
        };
        let route_urls = [url(Route::ChatCompletions)?, url(Route::Completions)?, url(Route::Embeddings)?];
        Ok(VllmBackend { client, base_url, route_urls, first_byte_timeout })
    }

    fn unavailable(&self, err: &reqwest::Error) -> VaultError {
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

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let request = self.client.get(format!("{}{path}", self.base_url)).send();
        let response = tokio::time::timeout(self.first_byte_timeout, request)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.unavailable(&e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(super::upstream_invalid(format!("it answered with a redirect ({status})")));
        }
        let body = response.bytes().await.map_err(|e| self.unavailable(&e))?;
        if status >= 400 {
            return Err(upstream_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| super::upstream_invalid(format!("{path}: not JSON ({e})")))
    }
}

impl InferenceBackend for VllmBackend {
    fn forward(&self, route: Route, body: Bytes, stream: bool) -> BoxFuture<'_, Result<UpstreamReply>> {
        async move {
            let url = match route {
                Route::ChatCompletions => &self.route_urls[0],
                Route::Completions => &self.route_urls[1],
                Route::Embeddings => &self.route_urls[2],
            };
            let request = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send();
            let response = tokio::time::timeout(self.first_byte_timeout, request)
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|e| self.unavailable(&e))?;
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                return Err(super::upstream_invalid(format!("it answered with a redirect ({status})")));
            }
            if status >= 400 || !stream {
                let body = tokio::time::timeout(self.first_byte_timeout, response.bytes())
                    .await
                    .map_err(|_| self.timed_out())?
                    .map_err(|e| self.unavailable(&e))?;
                if status >= 400 {
                    return Err(upstream_error(status, &body));
                }
                return Ok(UpstreamReply::Complete(body));
            }
            Ok(UpstreamReply::Stream(response.bytes_stream().map_err(|e| e.to_string()).boxed()))
        }
        .boxed()
    }

    fn list_models(&self) -> BoxFuture<'_, Result<serde_json::Value>> {
        self.get_json("/v1/models").boxed()
    }

    fn is_healthy(&self) -> BoxFuture<'_, bool> {
        async move {
            let request = self.client.get(format!("{}/health", self.base_url)).timeout(HEALTH_TIMEOUT).send();
            matches!(request.await, Ok(r) if r.status().is_success())
        }
        .boxed()
    }
}
