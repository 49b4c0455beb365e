//! `/docs` (Swagger UI showing the gateway's own document), `/openapi.json` and the
//! favicon: each built on first use, served gzip-compressed to clients that take it, with
//! an ETag, so a browser that has them asks again for a few bytes (304), not 1.8 MB.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, Request, Response, Route};
use tokio::sync::OnceCell;

use crate::spec::{openapi_service, spec_json};

/// The paths served here (beside the API's routes, without a key).
pub const PATHS: [&str; 4] = ["/docs", "/openapi.json", "/favicon.svg", "/favicon.ico"];

/// Vault's icon: a vault door.
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="2" y="2" width="28" height="28" rx="6" fill="#1f3a5f"/><circle cx="16" cy="16" r="8.5" fill="none" stroke="#e8eef5" stroke-width="2.5"/><circle cx="16" cy="16" r="2.5" fill="#e8eef5"/><path d="M16 7.5v3M16 21.5v3M7.5 16h3M21.5 16h3" stroke="#e8eef5" stroke-width="2.5"/></svg>"##;

/// `routes` with these paths added.
pub fn add_routes(routes: Route) -> Route {
    let favicon = || lazy("image/svg+xml", || FAVICON.to_string());
    routes
        .at("/docs", poem::get(lazy("text/html; charset=utf-8", docs_html)))
        .at("/openapi.json", poem::get(lazy("application/json; charset=utf-8", spec_json)))
        .at("/favicon.svg", poem::get(favicon()))
        .at("/favicon.ico", poem::get(favicon()))
}

/// Swagger UI with the document `/openapi.json` serves: the framework's page embeds the
/// framework's document, without what `spec` adds (examples, closed bodies, servers).
fn docs_html() -> String {
    let service = openapi_service();
    let page = service.swagger_ui_html().replacen(&service.spec(), &spec_json(), 1);
    page.replacen("<title>Swagger UI</title>", "<title>Vault API</title>", 1).replacen(
        "<head>",
        "<head>\n    <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">",
        1,
    )
}

/// A document made once and served as it is.
struct Asset {
    content_type: &'static str,
    plain: Bytes,
    gzipped: Bytes,
    /// One tag per representation: the gzipped body is another sequence of bytes.
    etag: HeaderValue,
    gzipped_etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, body: String) -> Asset {
        let digest = &vault_core::secrets::sha256_hex(&body)[..32];
        let tag = |suffix: &str| {
            HeaderValue::from_str(&format!("\"{digest}{suffix}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
        };
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to memory cannot fail; were it to, the plain body is served to everyone.
        let gzipped = encoder.write_all(body.as_bytes()).and_then(|()| encoder.finish()).unwrap_or_default();
        Asset { content_type, plain: body.into(), gzipped: gzipped.into(), etag: tag(""), gzipped_etag: tag("-gzip") }
    }

    fn respond(&self, req: &Request) -> Response {
        let gzip = accepts_gzip(req) && !self.gzipped.is_empty();
        let (body, etag) = if gzip { (&self.gzipped, &self.gzipped_etag) } else { (&self.plain, &self.etag) };
        let builder = Response::builder()
            .header(header::ETAG, etag.clone())
            // Kept, but checked with the ETag on every use: a new version shows at once.
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::VARY, "accept-encoding");
        if matches_etag(req, etag) {
            return builder.status(StatusCode::NOT_MODIFIED).finish();
        }
        let builder = builder.content_type(self.content_type);
        let builder = if gzip { builder.header(header::CONTENT_ENCODING, "gzip") } else { builder };
        builder.body(body.clone())
    }
}

/// An endpoint serving what `make` builds, built on its first request, off the threads
/// that serve requests (Swagger UI takes tens of milliseconds to compress).
fn lazy(content_type: &'static str, make: fn() -> String) -> impl Endpoint<Output = Response> {
    let asset = Arc::new(OnceCell::<Asset>::new());
    poem::endpoint::make(move |req: Request| {
        let asset = asset.clone();
        async move {
            let asset = asset
                .get_or_try_init(|| async {
                    tokio::task::spawn_blocking(move || Asset::new(content_type, make())).await
                })
                .await
                .map_err(|_| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
            Ok::<_, poem::Error>(asset.respond(&req))
        }
    })
}

/// Whether the client's `If-None-Match` names this version (or any, `*`); weak tags compare
/// as strong ones here, as RFC 9110 says they do for this header.
fn matches_etag(req: &Request, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == ours)
}

/// Whether the client's `Accept-Encoding` takes gzip (by name or `*`, not with `q=0`).
fn accepts_gzip(req: &Request) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts
                .any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0)));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}
