//! Kept-alive HTTP/1.1 connections to the upstream, each read and written by the request
//! that uses it.
//!
//! A request's own task writes it, reads the answer and decodes the body (`http1`): no
//! task per connection and no channel between tasks, so a stream of a few hundred tokens
//! costs no task switches of its own. A connection goes back to the pool once its
//! answer's body is read to the end. An idle connection is read by nobody; one the
//! upstream closed meanwhile is readable when it is taken, and is left. Dropping a body
//! before its end drops its connection, which is how the upstream learns that the client
//! went away.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::net::TcpStream;
use tokio_util::io::{poll_read_buf, poll_write_buf};

use super::http1::{self, Decoded, Decoder, WireError};

/// Idle connections kept at most; more are closed when they are put back.
const MAX_IDLE: usize = 256;
/// A read has room for at least this much; one that fills its room doubles the next
/// one's, up to `MAX_READ`, so that a large answer takes few reads.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Below this much room left in the input buffer, a new one is made for the next read.
const MIN_ROOM: usize = 2 * 1024;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer within the connect timeout from {0}")]
    ConnectTimeout(String),
    /// The exchange failed after some of the request went out.
    #[error("{0}")]
    Broken(WireError),
    /// The exchange failed before any of the request went out.
    #[error("{0}")]
    NotSent(WireError),
    /// A new connection for a second try could not be made, after a first try that may
    /// have reached the upstream.
    #[error("cannot connect again to {0}: {1}")]
    Reconnect(String, String),
}

impl SendError {
    /// Whether the upstream may have received the request: then it must not be sent to
    /// another (it may be generating).
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, SendError::Broken(_) | SendError::Reconnect(..))
    }
}

/// An answer's status, and its body to read or drop. Its other header fields are read
/// for its framing only: nothing in Vault passes them on.
pub struct Answer {
    pub status: StatusCode,
    pub body: PooledBody,
}

/// One connection, and what was read from it and not yet taken.
struct Connection {
    io: TcpStream,
    input: BytesMut,
    /// The room the next read gets.
    read_size: usize,
}

impl Connection {
    fn new(io: TcpStream) -> Connection {
        Connection { io, input: BytesMut::new(), read_size: FIRST_READ }
    }

    /// Reads what has arrived into `input`: 0 once the upstream closed the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.input.capacity() - self.input.len() < MIN_ROOM {
            self.input.reserve(self.read_size);
        }
        let room = self.input.capacity() - self.input.len();
        let read = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input))?;
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(read))
    }

    /// Whether a request can go out on it now. Nothing may arrive on an idle connection,
    /// so one with something to read was closed by the upstream (or broke the protocol).
    fn is_reusable(&mut self) -> bool {
        if !self.input.is_empty() {
            return false;
        }
        match self.io.poll_read_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => true,
            // The socket stays marked readable after a read that filled its room, even
            // when that read emptied it: ask the socket itself.
            Poll::Ready(Ok(())) => {
                matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Poll::Ready(Err(_)) => false,
        }
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

/// How one try of a request failed.
struct Failed {
    error: WireError,
    /// Whether any of the request went out.
    sent: bool,
    /// Whether any of an answer came back.
    answered: bool,
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
    /// besides `Host`, `Content-Type` and `Content-Length`) and waits for the answer's head.
    /// The body is the caller's to read, or drop.
    pub async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, SendError> {
        let head = http1::request_head(method, uri, &self.inner.host, body.len(), headers);
        let body_allowed = *method != Method::HEAD;
        // Whether a first try may have reached the upstream before a second one.
        let mut maybe_read = false;
        if let Some(mut connection) = self.inner.take_idle() {
            match exchange(&mut connection, &head, &body, body_allowed).await {
                Ok(head) => return Ok(self.answer(connection, head)),
                // The upstream closed the kept-alive connection as it was taken, or without
                // answering the request: once more, on a new connection.
                Err(failed) if !failed.answered => maybe_read = failed.sent,
                Err(failed) => return Err(SendError::Broken(failed.error)),
            }
        }
        let mut connection = match self.inner.connect().await {
            Ok(connection) => connection,
            Err(SendError::Connect(to, why)) if maybe_read => return Err(SendError::Reconnect(to, why)),
            Err(SendError::ConnectTimeout(to)) if maybe_read => {
                return Err(SendError::Reconnect(to, "no answer within the connect timeout".into()));
            }
            Err(err) => return Err(err),
        };
        match exchange(&mut connection, &head, &body, body_allowed).await {
            Ok(head) => Ok(self.answer(connection, head)),
            Err(failed) if failed.sent || maybe_read => Err(SendError::Broken(failed.error)),
            Err(failed) => Err(SendError::NotSent(failed.error)),
        }
    }

    fn answer(&self, connection: Connection, head: http1::Head) -> Answer {
        let body = PooledBody {
            connection: Some(connection),
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive,
            pool: self.inner.clone(),
        };
        Answer { status: head.status, body }
    }
}

/// Writes a request on `connection` and reads until the head of its (final) answer is in.
async fn exchange(
    connection: &mut Connection,
    head: &[u8],
    body: &[u8],
    body_allowed: bool,
) -> Result<http1::Head, Failed> {
    let mut request = head.chain(body);
    let mut sent = false;
    while request.has_remaining() {
        let failed = |error: WireError| Failed { error, sent, answered: false };
        match poll_fn(|cx| poll_write_buf(Pin::new(&mut connection.io), cx, &mut request)).await {
            Ok(0) => return Err(failed(io::Error::from(io::ErrorKind::WriteZero).into())),
            Ok(_) => sent = true,
            Err(err) => return Err(failed(err.into())),
        }
    }
    let mut answered = false;
    loop {
        match http1::parse_head(&connection.input, body_allowed) {
            Ok(Some((head, len))) => {
                connection.input.advance(len);
                // An interim answer (100 Continue, 103 Early Hints) is followed by the final one.
                if !head.status.is_informational() {
                    return Ok(head);
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => return Err(Failed { error, sent, answered: true }),
        }
        match poll_fn(|cx| connection.poll_read(cx)).await {
            Ok(0) => return Err(Failed { error: WireError::Incomplete, sent, answered }),
            Ok(_) => answered = true,
            Err(err) => return Err(Failed { error: err.into(), sent, answered }),
        }
    }
}

impl Inner {
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
        // An idle connection holds no more than a first read's room: the room a large
        // answer was given is not kept for as long as the connection is.
        connection.read_size = FIRST_READ;
        if connection.input.capacity() > FIRST_READ {
            connection.input = BytesMut::new();
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
        Ok(Connection::new(stream))
    }
}

/// The body of an answer: reading it reads its connection, which goes back to the pool
/// once the body is complete.
pub struct PooledBody {
    /// None once the body has ended or failed.
    connection: Option<Connection>,
    decoder: Decoder,
    /// Whether the connection may carry another request after this body.
    keep_alive: bool,
    pool: Arc<Inner>,
}

impl PooledBody {
    /// The next piece of the body, `None` at its end; the connection is released (to the
    /// pool, or closed) as soon as the body has ended or failed.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WireError>>> {
        let Some(connection) = self.connection.as_mut() else { return Poll::Ready(None) };
        let outcome = loop {
            match self.decoder.decode(&mut connection.input) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => break None,
                Ok(Decoded::NeedMore) => {}
                Err(err) => break Some(Err(err)),
            }
            match ready!(connection.poll_read(cx)) {
                Ok(0) => match self.decoder.finish() {
                    // A body that ends with its connection.
                    Ok(()) => break None,
                    Err(err) => break Some(Err(err)),
                },
                Ok(_) => {}
                Err(err) => break Some(Err(err.into())),
            }
        };
        if let Some(connection) = self.connection.take()
            && outcome.is_none()
            && self.keep_alive
        {
            self.pool.put(connection);
        }
        Poll::Ready(outcome)
    }
}

impl Stream for PooledBody {
    type Item = Result<Bytes, WireError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_piece(cx)
    }
}

/// How many pieces a body dropped before its end may still take, looking for the end.
const MAX_PIECES_AFTER_DROP: usize = 64;

impl Drop for PooledBody {
    /// A body dropped before its end (an event stream ends with `[DONE]` before the
    /// chunked body does) keeps its connection when the rest is already here; otherwise
    /// the connection closes, which tells the upstream that nobody reads the answer.
    fn drop(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..MAX_PIECES_AFTER_DROP {
            match self.poll_piece(&mut cx) {
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
        /// Answers every request with these bytes, written in pieces of 1000 (as sent on a
        /// connection it leaves open).
        Raw(&'static [u8]),
        /// As `Raw`, in one write.
        Whole(&'static [u8]),
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
                        let (answer, piece) = match behaviour {
                            Upstream::Raw(bytes) => (bytes, 1000),
                            Upstream::Whole(bytes) => (bytes, bytes.len()),
                            _ => (answer, answer.len()),
                        };
                        for piece in answer.chunks(piece) {
                            if socket.write_all(piece).await.is_err() {
                                return;
                            }
                        }
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
        let mut body = pool.send(&Method::GET, &Uri::from_static("/v1/models"), Bytes::new(), &[]).await?.body;
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.map_err(SendError::Broken)?).unwrap());
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
            let mut body = pool.send(&Method::GET, &Uri::from_static("/"), Bytes::new(), &[]).await.unwrap().body;
            assert_eq!(body.next().await.unwrap().unwrap(), "data: [DONE]\n\n");
            drop(body);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_in_the_middle_closes_its_connection() {
        let server = start(Upstream::Events { ends: false }).await;
        let pool = pool(&server);
        let mut body = pool.send(&Method::GET, &Uri::from_static("/"), Bytes::new(), &[]).await.unwrap().body;
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
        assert!(matches!(outcome, Ok(Err(SendError::Broken(_)))), "{outcome:?}");
    }

    #[tokio::test]
    async fn an_upstream_that_is_not_there_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(&authority, Duration::from_secs(2), Duration::from_secs(4)).unwrap();
        assert!(matches!(get(&pool).await, Err(SendError::Connect(..))));
    }

    /// How many connections two requests took, each answered with `raw` (and `{}` as body).
    async fn connections_for_two_answers(raw: &'static [u8]) -> usize {
        let server = start(Upstream::Raw(raw)).await;
        let pool = pool(&server);
        for _ in 0..2 {
            assert_eq!(get(&pool).await.unwrap(), "{}");
        }
        server.accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn an_answer_that_closes_its_connection_leaves_it_out_of_the_pool() {
        assert_eq!(
            connections_for_two_answers(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}").await,
            2
        );
    }

    #[tokio::test]
    async fn bytes_after_an_answer_leave_its_connection_out_of_the_pool() {
        assert_eq!(
            connections_for_two_answers(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n").await,
            2
        );
    }

    #[tokio::test]
    async fn an_interim_answer_is_passed_over_for_the_final_one() {
        assert_eq!(
            connections_for_two_answers(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await,
            1
        );
    }

    #[tokio::test]
    async fn a_large_answer_arriving_in_pieces_is_read_whole_and_its_connection_kept() {
        static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let answer = ANSWER.get_or_init(|| {
            let body = "x".repeat(1 << 20);
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
                .into_bytes()
        });
        let server = start(Upstream::Raw(answer)).await;
        let pool = pool(&server);
        for _ in 0..2 {
            assert_eq!(get(&pool).await.unwrap().len(), 1 << 20);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_malformed_answer_is_an_error_and_not_sent_again() {
        let server = start(Upstream::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\n{}")).await;
        let pool = pool(&server);
        let outcome = get(&pool).await;
        assert!(matches!(&outcome, Err(SendError::Broken(WireError::Invalid(_)))), "{outcome:?}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_filled_a_read_to_the_last_byte_is_kept() {
        // The first read has room for `FIRST_READ` bytes. An answer of that size fills it,
        // and leaves the socket marked readable though nothing is left to read.
        static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let answer = ANSWER.get_or_init(|| {
            let head = "HTTP/1.1 200 OK\r\ncontent-length: ";
            let body = FIRST_READ - head.len() - "8000\r\n\r\n".len();
            format!("{head}{body}\r\n\r\n{}", "x".repeat(body)).into_bytes()
        });
        assert_eq!(answer.len(), FIRST_READ);
        let server = start(Upstream::Whole(answer)).await;
        let pool = pool(&server);
        for _ in 0..3 {
            assert!(get(&pool).await.unwrap().starts_with("xxx"));
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }
}
