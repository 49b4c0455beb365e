//! CORS, answered at the edge for every route, so a browser sees each answer — errors
//! included — with its true status and shape and the headers that let it read them.
//!
//! CORS is a browser's permission to read an answer, not an access control (the key is):
//! a request from an origin outside `VAULT_CORS_ORIGINS` is served as any other, just
//! without the allow headers. A preflight from a listed origin is allowed the methods of
//! its path and whatever headers it asks for (the official JavaScript SDK sends its own
//! `x-stainless-*` ones).

use poem::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use poem::{Request, Response};
use vault_core::config::Config;

/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECONDS: &str = "600";
/// The headers of an answer a page's script may read besides the simple ones.
const EXPOSED: &str = "x-request-id, retry-after, retry-after-ms, x-ratelimit-limit-requests, \
                       x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, \
                       x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

/// The request's `Origin` when it is one of `VAULT_CORS_ORIGINS`.
pub fn allowed_origin(config: &Config, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    config.allows_origin(origin.to_str().ok()?).then(|| origin.clone())
}

/// Whether the request is a preflight (the browser asking before the real request).
pub fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: allowed (for a listed origin) the path's methods and the
/// headers asked for; otherwise nothing allowed.
pub fn preflight(req: &Request, origin: Option<HeaderValue>, methods: Option<&str>) -> Response {
    let mut response = Response::builder().status(StatusCode::NO_CONTENT).finish();
    let headers = response.headers_mut();
    headers.insert(
        header::VARY,
        HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers"),
    );
    let Some(origin) = origin else { return response };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let methods = methods.unwrap_or("GET, POST, PUT, DELETE");
    if let Ok(methods) = HeaderValue::from_str(&format!("{methods}, OPTIONS")) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    // Any header the page asks for: a header grants nothing here, the key decides.
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
    response
}

/// Lets a listed origin's page read `response`.
pub fn allow(response: &mut Response, origin: Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    }
}
