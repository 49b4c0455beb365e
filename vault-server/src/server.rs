//! Building and running the HTTP server: routes, docs, middleware, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use vault_core::tls::TlsStore;
use vault_core::{Vault, VaultError};

use crate::api::{Api, api};
use crate::connections::{GuardedAcceptor, Limits};
use crate::edge::Edge;
use crate::https::Certificates;
use crate::methods::AllowedMethods;
use crate::serve::{Listeners, serve};

/// How long in-flight requests (streams included) may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Streams still running this long before the grace ends are ended with an error event,
/// so their clients learn why and their rows are stored as incomplete.
const STREAM_END_NOTICE: Duration = Duration::from_secs(2);

pub fn openapi_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(api(), "Vault", env!("CARGO_PKG_VERSION")).description(
        "The gateway of an on-premises AI appliance: an OpenAI-compatible API with per-user keys \
         and an audit trail of every request. Every error answers `{\"error\": {\"code\", \"message\", \
         \"status\", \"details\"}}`.",
    )
}

/// Request bodies that refuse fields they do not know (a mistyped wizard field must not be
/// ignored). The framework refuses them but does not say so in the document; it is said here,
/// with the redirect to HTTPS every route may answer.
const CLOSED_BODIES: &[&str] = &[
    "SetupAdmin",
    "SetupModel",
    "CertificateRequest",
    "ConfigUpdate",
    "NetworkPatch",
    "SystemPatch",
    "InferencePatch",
    "ImportModel",
];

/// The OpenAPI document the code describes (committed under `openapi/`, served at
/// `/openapi.json`).
pub fn spec_json() -> String {
    let spec = openapi_service().spec();
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(&spec) else {
        return spec;
    };
    for name in CLOSED_BODIES {
        if let Some(schema) = document["components"]["schemas"].get_mut(*name).and_then(|s| s.as_object_mut()) {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    // Answered by the edge for every route, so the framework does not list it.
    let redirect = serde_json::json!({
        "description": "Plain HTTP to a box that is set up and has a certificate: the same URL in HTTPS, in `Location`.",
        "headers": {"Location": {"schema": {"type": "string"}}},
    });
    for methods in document["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        for operation in methods.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            if let Some(responses) = operation["responses"].as_object_mut() {
                responses.insert("308".into(), redirect.clone());
            }
        }
    }
    serde_json::to_string_pretty(&document).unwrap_or(spec)
}

/// All routes with the gateway layer around them; `certificates` is the box's certificate
/// as the accept loop serves it (the edge redirects plain HTTP when it is usable).
pub fn app(vault: Arc<Vault>, certificates: Arc<Certificates>) -> impl Endpoint + 'static {
    let service = openapi_service();
    let document = spec_json();
    let parsed: serde_json::Value = serde_json::from_str(&document).unwrap_or_default();
    let allowed = AllowedMethods::from_spec(&parsed);
    let templates = parsed["paths"].as_object().map(|paths| paths.keys().cloned().collect::<Vec<_>>());
    let served_beside = ["/openapi.json", "/docs", crate::websocket::PATH];
    vault.audit.metrics().set_routes(templates.iter().flatten().map(String::as_str).chain(served_beside));
    let docs = service.swagger_ui();
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder().content_type("application/json; charset=utf-8").body(document.clone())
    });
    // CORS is answered by the edge, for every route alike (see `cors`).
    let routes = Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at(crate::websocket::PATH, poem::get(crate::websocket::system_feed))
        .nest("/", service);
    routes.with(Edge::new(vault, allowed, certificates))
}

/// A bound server, not yet serving.
pub struct Server {
    acceptor: GuardedAcceptor,
    addr: SocketAddr,
    /// The plain-HTTP port that only redirects to HTTPS (`VAULT_HTTP_REDIRECT_PORT`).
    redirect: Option<(GuardedAcceptor, SocketAddr)>,
    /// The loopback port serving the metrics without a key (`VAULT_METRICS_ADDR`).
    metrics: Option<(GuardedAcceptor, SocketAddr)>,
    vault: Arc<Vault>,
}

/// Binds `wanted` with the connection guard; `var` names the setting in an error.
async fn bind_guarded(
    vault: &Vault,
    wanted: SocketAddr,
    var: &str,
) -> Result<(GuardedAcceptor, SocketAddr), VaultError> {
    let acceptor = TcpListener::bind(wanted)
        .into_acceptor()
        .await
        .map_err(|e| VaultError::config(format!("{var}: cannot listen on {wanted}: {e}")))?;
    let addr = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(wanted);
    let limits = Limits::from_config(&vault.config);
    Ok((GuardedAcceptor::new(acceptor, limits).audited(vault.audit.clone()), addr))
}

impl Server {
    /// Binds the configured address (port 0 picks a free one).
    pub async fn bind(vault: Arc<Vault>) -> Result<Server, VaultError> {
        let (acceptor, addr) = bind_guarded(&vault, vault.config.listen_addr(), "VAULT_PORT").await?;
        let redirect = match vault.config.http_redirect_port {
            Some(port) => {
                let wanted = SocketAddr::new(vault.config.host, port);
                Some(bind_guarded(&vault, wanted, "VAULT_HTTP_REDIRECT_PORT").await?)
            }
            None => None,
        };
        let metrics = match vault.config.metrics_addr {
            Some(wanted) => Some(bind_guarded(&vault, wanted, "VAULT_METRICS_ADDR").await?),
            None => None,
        };
        Ok(Server { acceptor, addr, redirect, metrics, vault })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the redirecting plain-HTTP port listens, when it is configured.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().map(|(_, addr)| *addr)
    }

    /// Where the metrics port listens, when it is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then stores every
    /// queued audit row.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) -> std::io::Result<()> {
        let Server { acceptor, vault, addr, redirect, metrics } = self;
        let stopping = vault.stopping.clone();
        let signal = async move {
            shutdown.await;
            tokio::spawn(async move {
                tokio::time::sleep(SHUTDOWN_GRACE.saturating_sub(STREAM_END_NOTICE)).await;
                stopping.cancel();
            });
        };
        let certificates = Arc::new(Certificates::new(TlsStore::new(&vault.config.tls_cert_dir)));
        let app = Arc::new(app(vault.clone(), certificates.clone()).map_to_response().boxed());
        if certificates.acceptor().is_some() {
            tracing::info!(%addr, "listening (HTTPS; plain HTTP is redirected once setup is complete)");
        } else {
            tracing::warn!(%addr, "listening in plain HTTP: no certificate is installed (see the setup wizard's tls step)");
        }
        if let Some((_, metrics_addr)) = &metrics {
            tracing::info!(addr = %metrics_addr, "serving GET /metrics without a key on this loopback address");
        }
        let listeners = Listeners {
            main: acceptor,
            redirect: redirect.map(|(acceptor, _)| (acceptor, addr.port())),
            metrics: metrics.map(|(acceptor, _)| acceptor),
        };
        let served = serve(listeners, app, certificates, signal, SHUTDOWN_GRACE).await;
        vault.shutdown().await;
        tracing::info!("stopped");
        served
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
