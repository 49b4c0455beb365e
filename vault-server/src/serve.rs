//! The accept loop: each accepted connection is served by hyper (HTTP/1, or HTTP/2 with
//! prior knowledge), its requests by the application, until a shutdown drains them.
//!
//! A connection ends when hyper says it is done, and is never polled again: hyper reports
//! a client that left while an answer was still pending (a stream waiting for its next
//! token, a request waiting for the upstream) as the end of the connection, and dropping it
//! there drops that answer and the upstream request behind it. (The framework's own loop
//! went on polling such a connection, which kept the upstream busy for as long as its
//! answer took, for nobody.)

use std::convert::Infallible;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::Endpoint;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{GuardedAcceptor, GuardedIo, MAX_HEAD_BYTES};
use crate::edge::EdgeEndpoint;
use crate::https::{Certificates, TLS_HANDSHAKE};
use crate::self_wake::RepollOnSelfWake;

/// The application every request goes to: the edge around the router. Named, not boxed as
/// a `dyn` endpoint: each boxed layer would allocate and copy the request's future again.
pub type Gateway = EdgeEndpoint<poem::Route>;

type App = Arc<Gateway>;

/// A response body as hyper writes it.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// Serves connections until `shutdown` resolves; then stops listening, lets connections
/// finish their requests for up to `grace`, and drops those still open.
/// Where connections come from.
pub struct Listeners {
    pub main: GuardedAcceptor,
    /// A plain-HTTP port whose every request is redirected to HTTPS on this port.
    pub redirect: Option<(GuardedAcceptor, u16)>,
    /// A loopback port that serves only the metrics, without a key.
    pub metrics: Option<GuardedAcceptor>,
}

/// Marks a request that came to the redirecting port: it is answered with a 308 to HTTPS
/// on `port`.
#[derive(Clone, Copy)]
pub struct RedirectToHttps {
    pub port: u16,
}

/// Marks a request that came to the metrics port.
#[derive(Clone, Copy)]
pub struct MetricsPort;

/// What a port is for, as its requests are marked (the main port's are not).
#[derive(Clone, Copy)]
enum PortRole {
    Main,
    Redirect(RedirectToHttps),
    Metrics,
}

pub async fn serve(
    listeners: Listeners,
    app: App,
    https: Arc<Certificates>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let draining = CancellationToken::new();
    let out_of_time = CancellationToken::new();
    let connections = TaskTracker::new();
    let Listeners { main: mut acceptor, mut redirect, mut metrics } = listeners;
    let mut shutdown = pin!(shutdown);
    let several_workers = tokio::runtime::Handle::current().metrics().num_workers() > 1;
    loop {
        let redirected = async {
            match redirect.as_mut() {
                Some((acceptor, port)) => (acceptor.accept().await, *port),
                None => std::future::pending().await,
            }
        };
        let scraped = async {
            match metrics.as_mut() {
                Some(acceptor) => acceptor.accept().await,
                None => std::future::pending().await,
            }
        };
        let (accepted, role) = tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.accept() => (accepted, PortRole::Main),
            (accepted, port) = redirected => (accepted, PortRole::Redirect(RedirectToHttps { port })),
            accepted = scraped => (accepted, PortRole::Metrics),
        };
        match accepted {
            Ok((io, local, remote, _)) => {
                let app = app.clone();
                let connection: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match role {
                    PortRole::Main => {
                        Box::pin(route_connection(io, local, remote, app, https.clone(), draining.clone()))
                    }
                    role => Box::pin(serve_connection(io, local, remote, app, Scheme::HTTP, role, draining.clone())),
                };
                let out_of_time = out_of_time.clone();
                // Each request with a body wakes its own connection task (see `self_wake`).
                let connection = RepollOnSelfWake::new(connection, several_workers);
                connections.spawn(async move {
                    tokio::select! {
                        () = connection => {}
                        () = out_of_time.cancelled() => {}
                    }
                });
            }
            Err(err) => {
                // A connection reset before it was accepted, or no file descriptor left for
                // it: neither ends the server. The pause keeps the latter from spinning.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(acceptor);
    drop(redirect);
    drop(metrics);
    tracing::info!(open = connections.len(), "no longer accepting connections; finishing in-flight requests");
    draining.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(open = connections.len(), "shutdown grace over; closing the connections still open");
        out_of_time.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// Serves a connection in HTTPS when a certificate is installed and the client starts a TLS
/// handshake, else in plain HTTP (which the edge redirects once setup is complete and a
/// certificate is installed).
async fn route_connection(
    io: GuardedIo,
    local: LocalAddr,
    remote: RemoteAddr,
    app: App,
    https: Arc<Certificates>,
    draining: CancellationToken,
) {
    let Some(tls) = https.acceptor() else {
        return serve_connection(io, local, remote, app, Scheme::HTTP, PortRole::Main, draining).await;
    };
    match io.first_byte().await {
        Ok(Some(TLS_HANDSHAKE)) => match io.into_tls(&tls).await {
            Ok(io) => serve_connection(io, local, remote, app, Scheme::HTTPS, PortRole::Main, draining).await,
            Err(err) => tracing::debug!(error = %err, "TLS handshake failed"),
        },
        Ok(Some(_)) => serve_connection(io, local, remote, app, Scheme::HTTP, PortRole::Main, draining).await,
        // Closed, or silent past the idle timeout, before its first byte.
        Ok(None) | Err(_) => {}
    }
}

async fn serve_connection<S>(
    io: GuardedIo<S>,
    local: LocalAddr,
    remote: RemoteAddr,
    app: App,
    scheme: Scheme,
    role: PortRole,
    draining: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut request = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
        match role {
            PortRole::Main => {}
            PortRole::Redirect(to) => {
                request.extensions_mut().insert(to);
            }
            PortRole::Metrics => {
                request.extensions_mut().insert(MetricsPort);
            }
        }
        let app = app.clone();
        async move {
            let response = Gateway::call(&app, request).await.unwrap_or_else(|err| err.into_response());
            Ok::<_, Infallible>(hyper::Response::<ResponseBody>::from(response))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/2 heads are binary, past the connection guard: hyper holds them to the same size.
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32);
    let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    tokio::select! {
        // Done, or the client is gone: either way never polled again.
        _ = connection.as_mut() => {}
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
