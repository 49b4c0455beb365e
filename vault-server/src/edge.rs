//! The outermost layer of every request: request id, audit record, body-size check, the
//! generation routes served straight from here (past the router), the error shape for
//! every failure (`Allow` on a 405), and `/v1/models/{id}` ids that contain `/`.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use poem::http::uri::Scheme;
use poem::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use vault_core::audit::RequestAudit;
use vault_core::inference::Route;
use vault_core::{ErrorCode, ErrorKind, Vault, VaultError};

use crate::api::inference::{DirectRequest, serve_direct};
use crate::cors;
use crate::error::{ApiError, error_response, from_poem_error};
use crate::https::Certificates;
use crate::methods::AllowedMethods;
use crate::payload::{MAX_BODY_BYTES, is_json};
use crate::serve::{MetricsPort, RedirectToHttps};

/// Made once: a header name given as text is built anew (and allocated) on every insert.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The middleware every request passes first and its answer last.
pub struct Edge {
    vault: Arc<Vault>,
    allowed: Arc<AllowedMethods>,
    certificates: Arc<Certificates>,
}

impl Edge {
    pub fn new(vault: Arc<Vault>, allowed: AllowedMethods, certificates: Arc<Certificates>) -> Edge {
        Edge { vault, allowed: Arc::new(allowed), certificates }
    }
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint {
            inner,
            vault: self.vault.clone(),
            allowed: self.allowed.clone(),
            certificates: self.certificates.clone(),
        }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
    vault: Arc<Vault>,
    allowed: Arc<AllowedMethods>,
    certificates: Arc<Certificates>,
}

impl<E> EdgeEndpoint<E> {
    /// A 405 says which methods the path answers.
    fn with_allow(&self, response: &mut Response, uri: &Uri) {
        if response.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(methods) = self.allowed.for_path(uri.path())
            && let Ok(value) = HeaderValue::from_str(methods)
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }

    fn direct_route(&self, req: &Request) -> Option<Route> {
        (req.method() == Method::POST).then(|| Route::at(req.uri().path())).flatten()
    }
}

/// What the edge does with a request, decided before anything is awaited.
enum Work<'a> {
    /// Answered by the edge itself (a redirect, a preflight, a refusal).
    Answered(poem::Result<Response>),
    /// A generation route, served from here.
    Direct(Route, DirectRequest),
    /// Everything else, through the router, with the URI for the `Allow` of a 405. Boxed:
    /// the router's future is large, and inline it would be carried by every request.
    Routed(BoxFuture<'a, poem::Result<Response>>, Uri),
}

impl<E: Endpoint> EdgeEndpoint<E> {
    /// Decides what to do with `req`, taking from it what the answer needs. `cors` is `None`
    /// while CORS is off, else the origin allowed to read the answer, if any.
    fn work(&self, mut req: Request, audit: &Arc<RequestAudit>, cors: Option<&Option<HeaderValue>>) -> Work<'_> {
        let direct = self.direct_route(&req);
        if req.extensions().get::<MetricsPort>().is_some() {
            Work::Answered(Ok(metrics_port(&self.vault, &req)))
        } else if cors.is_some() && cors::is_preflight(&req) {
            let allowed = self.allowed.for_path(req.uri().path());
            Work::Answered(Ok(cors::preflight(&req, cors.cloned().flatten(), allowed)))
        } else if let Some(to) = req.extensions().get::<RedirectToHttps>().copied() {
            // Without a usable certificate the main port speaks plain HTTP: sent there, so
            // the wizard stays reachable.
            let scheme = if self.certificates.is_usable() { "https" } else { "http" };
            Work::Answered(Ok(redirect(&req, scheme, Some(to.port))))
        } else if self.vault.setup.is_complete() && req.scheme() == &Scheme::HTTP && self.certificates.is_usable() {
            // The box is set up and serves HTTPS: nothing is served in plain HTTP.
            Work::Answered(Ok(redirect(&req, "https", None)))
        } else if self.vault.setup.is_complete() && is_setup_path(req.uri().path()) {
            // The wizard is over: its routes no longer exist, in any spelling or method.
            Work::Answered(Err(ApiError(vault_core::setup::gone()).into()))
        } else if declared_length(&req).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            Work::Answered(Err(ApiError(VaultError::new(
                ErrorKind::PayloadTooLarge,
                ErrorCode::PayloadTooLarge,
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            ))
            .into()))
        } else if let Some(route) = direct {
            Work::Direct(route, DirectRequest::take(req))
        } else {
            // What the routed handlers and extractors take from the request.
            req.extensions_mut().insert(audit.clone());
            req.extensions_mut().insert(self.vault.clone());
            let uri = req.uri().clone();
            Work::Routed(self.inner.call(req).map(|answer| answer.map(IntoResponse::into_response)).boxed(), uri)
        }
    }
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    // Not an `async fn`: everything a request needs is taken from it before the first await,
    // so the future of every request holds no `Request` (an `async fn` keeps its arguments
    // for its whole life, and each copy is 472 bytes to move) and no router future.
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let request_id = request_id(&req);
        // The path only: a query string may carry a token and is never recorded.
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
        let audit = RequestAudit::begin(
            self.vault.audit.clone(),
            req.method().as_str(),
            req.uri().path(),
            request_id,
            peer,
            traceparent,
        );
        encode_slashes_in_model_id(&mut req);
        let cors = (!self.vault.config.cors_origins.is_empty())
            .then(|| cors::allowed_origin(&self.vault.config, req.headers()));
        let work = self.work(req, &audit, cors.as_ref());
        async move {
            let (answer, routed_uri) = match work {
                Work::Answered(answer) => (answer, None),
                Work::Direct(route, request) => (serve_direct(&self.vault, &audit, route, request).await, None),
                Work::Routed(answer, uri) => (answer.await, Some(uri)),
            };
            let mut response = answer.unwrap_or_else(|err| error_response(&from_poem_error(err)));
            let is_json = response.content_type().is_some_and(is_json);
            if response.status().as_u16() >= 400 && response.extensions().get::<ErrorCode>().is_none() && !is_json {
                // An error the framework answered itself: give it the API's shape.
                let err = from_poem_error(poem::Error::from_status(response.status()));
                response = error_response(&err);
            }
            if let Some(uri) = routed_uri {
                self.with_allow(&mut response, &uri);
            }
            if let Some(value) = audit.with_request_id(|id| HeaderValue::from_str(id).ok()) {
                response.headers_mut().insert(X_REQUEST_ID, value);
            }
            if let Some(origin) = cors {
                cors::allow(&mut response, origin);
            }
            if !audit.is_deferred() {
                let status = response.status().as_u16();
                let code = response.extensions().get::<ErrorCode>().copied();
                // The row is safe (journaled) before the answer leaves, so an answered request
                // cannot lose its record in a crash. When it cannot be kept, the answer is not
                // given either: fail closed.
                if !audit.finish(status, true, code).await {
                    response = error_response(&VaultError::new(
                        ErrorKind::Unavailable,
                        ErrorCode::AuditUnavailable,
                        "The request was served, but its audit record could not be kept, so its answer is withheld.",
                    ));
                }
            }
            Ok(response)
        }
    }
}

/// Whether a request names this box as it is reached from itself: `localhost` or a
/// loopback address (with any port). A page whose own name was re-pointed at the box (DNS
/// rebinding) still names itself, and is refused.
fn addressed_to_loopback(req: &Request) -> bool {
    let Some(host) = req.uri().authority().map(|a| a.host().to_string()).or_else(|| {
        let host = req.headers().get(header::HOST)?.to_str().ok()?;
        host.parse::<poem::http::uri::Authority>().ok().map(|a| a.host().to_string())
    }) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The metrics port answers `GET /metrics` without a key, and nothing else.
fn metrics_port(vault: &Vault, req: &Request) -> Response {
    if !addressed_to_loopback(req) {
        return error_response(&VaultError::new(
            ErrorKind::Forbidden,
            ErrorCode::OriginNotAllowed,
            "The metrics port answers requests addressed to localhost or a loopback address only.",
        ));
    }
    if req.uri().path() != "/metrics" {
        return error_response(&VaultError::not_found(ErrorCode::NotFound, "This port serves GET /metrics only."));
    }
    if req.method() != Method::GET {
        let mut response = error_response(&VaultError::new(
            ErrorKind::MethodNotAllowed,
            ErrorCode::MethodNotAllowed,
            "The metrics are read with GET.",
        ));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    Response::builder().content_type(vault_core::metrics::CONTENT_TYPE).body(vault.metrics_text())
}

/// The client's `X-Request-Id` when it is a plain token, else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(vault_core::secrets::request_id)
}

/// A 308 to the same URL in `scheme`: on the same host and port (which serves both), or on
/// `port` of the same host.
fn redirect(req: &Request, scheme: &str, port: Option<u16>) -> Response {
    // HTTP/2 names the host in the URI's authority, HTTP/1.1 in `Host`.
    let mut host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(String::from))
        .or_else(|| req.local_addr().as_socket_addr().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(port) = port {
        // The name without the port it was reached on (`[::1]:80`, `box:80`, `box`).
        let name = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host.as_str(),
        };
        host = format!("{name}:{port}");
    }
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{scheme}://{host}{target}");
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            Response::builder().status(StatusCode::PERMANENT_REDIRECT).header(header::LOCATION, location).finish()
        }
        Err(_) => error_response(&VaultError::invalid_field("host: not a valid host name")),
    }
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers().get("content-length")?.to_str().ok()?.parse().ok()
}

/// vLLM model ids contain `/` and clients put them in the path as is
/// (`/v1/models/Qwen/Qwen2.5-7B`, `/vault/models/Qwen/Qwen2.5-7B`); the router sees one
/// segment once they are encoded. (Under `/vault/models/`, the fixed routes and a model's
/// own sub-routes keep their segments.)
fn encode_slashes_in_model_id(req: &mut Request) {
    let path = req.uri().path();
    let (prefix, id) = if let Some(id) = path.strip_prefix("/v1/models/") {
        ("/v1/models/", id)
    } else if let Some(rest) = path.strip_prefix("/vault/models/") {
        if rest.starts_with("operations/") {
            return;
        }
        let id = rest.strip_suffix("/load").or_else(|| rest.strip_suffix("/unload")).unwrap_or(rest);
        ("/vault/models/", id)
    } else {
        return;
    };
    if !id.contains('/') {
        return;
    }
    let tail = &path[prefix.len() + id.len()..];
    let encoded = format!("{prefix}{}{tail}", id.replace('/', "%2F"));
    let rebuilt = match req.uri().query() {
        Some(query) => format!("{encoded}?{query}"),
        None => encoded,
    };
    if let Ok(uri) = rebuilt.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// Whether `path` names the setup wizard or anything under it, however it is spelled:
/// percent-encoded, with repeated slashes, `.` or `..` segments, or a trailing slash.
fn is_setup_path(path: &str) -> bool {
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.len() >= 2 && segments[0] == "vault" && segments[1] == "setup"
}

/// `%XX` escapes decoded, at most twice over (`%2573` is `s` too); anything else kept as is.
/// Bounded, so a long path of nested escapes costs linear time, not quadratic.
fn percent_decode(path: &str) -> String {
    let once = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    percent_encoding::percent_decode_str(&once).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_setup_path_is_one() {
        for path in [
            "/vault/setup",
            "/vault/setup/",
            "/vault/setup/status",
            "//vault//setup//status/",
            "/vault/%73etup/admin",
            "/vault/%2573etup/admin",
            "/%76ault/setup/tls",
            "/vault/./setup/complete",
            "/vault/x/../setup/verify",
        ] {
            assert!(is_setup_path(path), "{path}");
        }
        for path in ["/vault/setupx", "/vault/admin/setup", "/v1/setup", "/vault", "/"] {
            assert!(!is_setup_path(path), "{path}");
        }
    }

    #[test]
    fn a_long_path_of_nested_escapes_is_decoded_in_linear_time() {
        let path = format!("/vault/{}73etup", "%25".repeat(20_000));
        let started = std::time::Instant::now();
        assert!(!is_setup_path(&path));
        // Quadratic decoding took seconds here; two passes take well under one.
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
    }
}
