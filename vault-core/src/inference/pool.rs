//! Kept-alive HTTP/1.1 connections to the upstream, each driven by the request that uses
//! it instead of by a task of its own.
//!
//! A pooled client that gives every connection its own task hands each request, answer
//! and body chunk from one task to another: a stream of a few hundred tokens costs as many
//! task switches. Here the request's own task polls the connection's I/O while it waits for
//! the answer and while it reads the body, and puts the connection back when the body is
//! done. An idle connection is polled by nobody; one the upstream closed meanwhile is seen
//! as closed when it is taken, and left. Dropping a body before its end drops its
//! connection, which is how the upstream learns that the client went away.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// Idle connections kept at most; more are closed when they are put back.
const MAX_IDLE: usize = 256;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer within the connect timeout from {0}")]
    ConnectTimeout(String),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The connection failed with the request handed back unsent.
    #[error("{0}")]
    NotSent(hyper::Error),
    /// A new connection for a second try could not be made, after a first try that may
    /// have reached the upstream.
    #[error("cannot connect again to {0}: {1}")]
    Reconnect(String, String),
}

impl SendError {
    /// Whether the upstream may have received the request: then it must not be sent to
    /// another (it may be generating).
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, SendError::Http(_) | SendError::Reconnect(..))
    }
}

/// One connection: the handle requests are sent through, and its I/O.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
}

impl Connection {
    /// Moves the connection's I/O along; ready once the connection has ended. An ended
    /// connection is dropped at once, which fails a request still queued on it (as not
    /// sent, so it can be sent again elsewhere) instead of leaving it waiting.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(driver) = self.driver.as_mut() else { return Poll::Ready(()) };
        match Pin::new(driver).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.driver = None;
                Poll::Ready(())
            }
        }
    }

    /// Whether a new request can go out on it now: still open and between messages.
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx).is_pending() && self.sender.is_ready()
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// The connections to one upstream (`host:port`).
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Oldest first: connections are taken from the end, the most recently used first.
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub fn new(
        authority: &str,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Pool, http::header::InvalidHeaderValue> {
        Ok(Pool {
            inner: Arc::new(Inner {
                authority: authority.to_string(),
                host: HeaderValue::from_str(authority)?,
                connect_timeout,
                idle_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends a request (`uri` in origin form, `/path`; a JSON `body` unless empty; `headers`
    /// besides `Host` and `Content-Type`) and waits for the answer's head. The body is the
    /// caller's to read, or drop; reading it drives the connection.
    pub async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<PooledBody>, SendError> {
        let request = || self.inner.request(method, uri, body.clone(), headers);
        let (mut connection, reused) = match self.inner.take_idle() {
            Some(connection) => (connection, true),
            None => (self.inner.connect().await?, false),
        };
        let (mut reply, mut open) = exchange(&mut connection, request()).await;
        // Whether a first try may have reached the upstream before a second one.
        let mut maybe_read = false;
        if let Err(failed) = &reply
            && (failed.message().is_some() || (reused && failed.error().is_incomplete_message()))
        {
            // The connection closed as it was taken: the request never went out, or the
            // upstream closed the kept-alive connection without reading it. Once more, on
            // a new connection.
            maybe_read = failed.message().is_none();
            connection = match self.inner.connect().await {
                Ok(connection) => connection,
                Err(SendError::Connect(to, why)) if maybe_read => return Err(SendError::Reconnect(to, why)),
                Err(SendError::ConnectTimeout(to)) if maybe_read => {
                    return Err(SendError::Reconnect(to, "no answer within the connect timeout".into()));
                }
                Err(err) => return Err(err),
            };
            (reply, open) = exchange(&mut connection, request()).await;
        }
        let response = reply.map_err(|failed| match failed.message() {
            Some(_) if !maybe_read => SendError::NotSent(failed.into_error()),
            _ => SendError::Http(failed.into_error()),
        })?;
        let pool = self.inner.clone();
        Ok(response.map(|body| PooledBody { body, connection: open.then_some(connection), pool }))
    }
}

type Reply = Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>>;

/// Sends `request` on `connection`, driving the connection until the answer's head is in;
/// says also whether the connection is still open.
async fn exchange(connection: &mut Connection, request: Request<Full<Bytes>>) -> (Reply, bool) {
    let mut answer = std::pin::pin!(connection.sender.try_send_request(request));
    let mut open = true;
    let reply = poll_fn(|cx| {
        // The connection ending (an error, or closed by the upstream) ends `answer` too.
        if open && connection.drive(cx).is_ready() {
            open = false;
        }
        answer.as_mut().poll(cx)
    })
    .await;
    (reply, open)
}

impl Inner {
    /// The request as sent: its header map made at its final size, and no header value
    /// copied (a value given as text is allocated anew each time).
    fn request(
        &self,
        method: &Method,
        uri: &Uri,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Request<Full<Bytes>> {
        let json = !body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let map = request.headers_mut();
        map.reserve(2 + headers.len());
        map.insert(header::HOST, self.host.clone());
        if json {
            map.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        request
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { mut connection, since }) = idle.pop() {
            if since.elapsed() < self.idle_timeout && connection.is_reusable() {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, mut connection: Connection) {
        if !connection.is_reusable() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        // One reading of the clock, not one for each connection the search looks at.
        let now = Instant::now();
        let expired = idle.partition_point(|i| now.saturating_duration_since(i.since) >= self.idle_timeout);
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { connection, since: now });
        }
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.authority.as_str()))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.authority.clone()))?
            .map_err(|e| SendError::Connect(self.authority.clone(), e.to_string()))?;
        // Each token of a stream is a small write: none may wait for an acknowledgement.
        stream.set_nodelay(true).map_err(|e| SendError::Connect(self.authority.clone(), e.to_string()))?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Connection { sender, driver: Some(driver) })
    }
}

/// The body of an answer: reading it drives its connection, which goes back to the pool
/// once the body is complete.
pub struct PooledBody {
    body: Incoming,
    /// None once the connection has ended (the body may still hold what it read).
    connection: Option<Connection>,
    pool: Arc<Inner>,
}

impl Stream for PooledBody {
    type Item = hyper::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(connection) = this.connection.as_mut()
            && connection.drive(cx).is_ready()
        {
            this.connection = None;
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Trailers: not passed on.
                }
                Poll::Ready(Some(Err(err))) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    if let Some(connection) = this.connection.take() {
                        this.pool.put(connection);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How many frames a body dropped before its end may still read, looking for the end.
const MAX_FRAMES_AFTER_DROP: usize = 64;

impl Drop for PooledBody {
    /// A body dropped before its end (an event stream ends with `[DONE]` before the
    /// chunked body does) keeps its connection when the rest is already here; otherwise
    /// the connection closes, which tells the upstream that nobody reads the answer.
    fn drop(&mut self) {
        if self.connection.is_none() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..MAX_FRAMES_AFTER_DROP {
            match Pin::new(&mut *self).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What a test upstream does on each connection.
    #[derive(Clone, Copy)]
    enum Upstream {
        /// Answers `{}` to every request.
        KeepAlive,
        /// Answers one request, then closes.
        CloseAfterOne,
        /// Answers one request, reads the next and closes without answering it.
        DropSecond,
        /// Answers with one event of a chunked body, and ends the body only when `ends`.
        Events { ends: bool },
        /// Closes every connection as soon as it is accepted.
        CloseAtOnce,
    }

    struct Server {
        authority: String,
        accepted: Arc<AtomicUsize>,
        /// Connections the client closed in the middle of an answer.
        abandoned: Arc<AtomicUsize>,
    }

    async fn start(behaviour: Upstream) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let (count, gone) = (accepted.clone(), abandoned.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                if matches!(behaviour, Upstream::CloseAtOnce) {
                    drop(socket);
                    continue;
                }
                let gone = gone.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answered in 0.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let answer: &[u8] = match behaviour {
                            Upstream::DropSecond if answered == 1 => return,
                            Upstream::Events { ends: true } => {
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
                            }
                            Upstream::Events { ends: false } => {
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nd\r\ndata: {\"a\"}\n\n\r\n"
                            }
                            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                        };
                        socket.write_all(answer).await.unwrap();
                        match behaviour {
                            Upstream::CloseAfterOne => return,
                            Upstream::Events { ends: false } => {
                                // The answer never ends: wait for the client to leave.
                                let mut rest = [0u8; 64];
                                if matches!(socket.read(&mut rest).await, Ok(0) | Err(_)) {
                                    gone.fetch_add(1, Ordering::SeqCst);
                                }
                                return;
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        Server { authority, accepted, abandoned }
    }

    fn pool(server: &Server) -> Pool {
        Pool::new(&server.authority, Duration::from_secs(2), Duration::from_secs(4)).unwrap()
    }

    async fn get(pool: &Pool) -> Result<String, SendError> {
        let response = pool.send(&Method::GET, &Uri::from_static("/v1/models"), Bytes::new(), &[]).await?;
        let mut body = response.into_body();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
        Ok(text)
    }

    #[tokio::test]
    async fn answers_are_read_through_one_kept_alive_connection() {
        let server = start(Upstream::KeepAlive).await;
        let pool = pool(&server);
        for _ in 0..3 {
            assert_eq!(get(&pool).await.unwrap(), "{}");
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_taken() {
        let server = start(Upstream::CloseAfterOne).await;
        let pool = pool(&server);
        assert_eq!(get(&pool).await.unwrap(), "{}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&pool).await.unwrap(), "{}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_a_kept_alive_connection_closed_on_is_sent_again_on_a_new_one() {
        let server = start(Upstream::DropSecond).await;
        let pool = pool(&server);
        assert_eq!(get(&pool).await.unwrap(), "{}");
        assert_eq!(get(&pool).await.unwrap(), "{}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_last_event_keeps_its_connection() {
        let server = start(Upstream::Events { ends: true }).await;
        let pool = pool(&server);
        for _ in 0..2 {
            let response = pool.send(&Method::GET, &Uri::from_static("/"), Bytes::new(), &[]).await.unwrap();
            let mut body = response.into_body();
            assert_eq!(body.next().await.unwrap().unwrap(), "data: [DONE]\n\n");
            drop(body);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_in_the_middle_closes_its_connection() {
        let server = start(Upstream::Events { ends: false }).await;
        let pool = pool(&server);
        let response = pool.send(&Method::GET, &Uri::from_static("/"), Bytes::new(), &[]).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(body.next().await.unwrap().unwrap(), "data: {\"a\"}\n\n");
        drop(body);
        for _ in 0..100 {
            if server.abandoned.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.abandoned.load(Ordering::SeqCst), 1, "the upstream saw the client leave");
        let response = pool.send(&Method::GET, &Uri::from_static("/"), Bytes::new(), &[]).await.unwrap();
        drop(response);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_upstream_that_closes_every_connection_fails_the_request_instead_of_leaving_it_waiting() {
        let server = start(Upstream::CloseAtOnce).await;
        let pool = pool(&server);
        let outcome = tokio::time::timeout(Duration::from_secs(5), get(&pool)).await;
        assert!(matches!(outcome, Ok(Err(SendError::Http(_)))), "{outcome:?}");
    }

    #[tokio::test]
    async fn an_upstream_that_is_not_there_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(&authority, Duration::from_secs(2), Duration::from_secs(4)).unwrap();
        assert!(matches!(get(&pool).await, Err(SendError::Connect(..))));
    }
}
