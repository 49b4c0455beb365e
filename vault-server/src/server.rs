//! Building and running the HTTP server: routes, docs, middleware, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route};
use vault_core::tls::TlsStore;
use vault_core::{Vault, VaultError};

use crate::connections::{GuardedAcceptor, Limits};
use crate::edge::Edge;
use crate::https::Certificates;
use crate::methods::AllowedMethods;
use crate::serve::{Gateway, Listeners, serve};
use crate::spec::{openapi_service, spec_json};

/// How long in-flight requests (streams included) may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Streams still running this long before the grace ends are ended with an error event,
/// so their clients learn why and their rows are stored as incomplete.
const STREAM_END_NOTICE: Duration = Duration::from_secs(2);

/// All routes with the gateway layer around them; `certificates` is the box's certificate
/// as the accept loop serves it (the edge redirects plain HTTP when it is usable).
pub fn app(vault: Arc<Vault>, certificates: Arc<Certificates>) -> Gateway {
    let service = openapi_service();
    let parsed: serde_json::Value = serde_json::from_str(&spec_json()).unwrap_or_default();
    let allowed = AllowedMethods::from_spec(&parsed);
    let templates = parsed["paths"].as_object().map(|paths| paths.keys().cloned().collect::<Vec<_>>());
    let served_beside = crate::docs::PATHS.into_iter().chain([crate::websocket::PATH]);
    vault.audit.metrics().set_routes(templates.iter().flatten().map(String::as_str).chain(served_beside));
    // CORS is answered by the edge, for every route alike (see `cors`).
    let routes = crate::docs::add_routes(Route::new())
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
        let app = Arc::new(app(vault.clone(), certificates.clone()));
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

#[cfg(test)]
mod tests {
    use poem::Endpoint;
    use vault_core::config::{Config, VAULT_DATA_DIR};

    use super::*;

    /// Each request's future is moved whole, so all it carries is paid for on every request.
    /// It once held the router's future, the key lookup's and four copies of the request
    /// (9.9 KB in a release build), though a generation request uses none of them past its
    /// first step. It is about 1.4 KB in a test build now; the key lookup inline again
    /// would make it 3.2 KB.
    #[tokio::test]
    async fn the_future_of_a_request_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().display().to_string();
        let config = Config::from_lookup(|name| (name == VAULT_DATA_DIR).then(|| data_dir.clone())).unwrap();
        let vault = Vault::open(config).await.unwrap();
        let certificates = Arc::new(Certificates::new(TlsStore::new(&vault.config.tls_cert_dir)));
        let gateway = app(vault.clone(), certificates);
        let request =
            poem::Request::builder().method(poem::http::Method::POST).uri_str("/v1/chat/completions").finish();
        let future = gateway.call(request);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 2 * 1024, "a request's future is {size} bytes");
        drop(future);
        vault.shutdown().await;
    }
}
