//! The connections the server accepts, guarded against the ways a client can hold them
//! without ever finishing a request:
//!
//! - `TCP_NODELAY`, so a small write that follows another (the next event of a stream)
//!   does not wait 40 ms for the client's delayed ACK;
//! - a deadline for a request's head once its first byte arrived (slowloris);
//! - a deadline for a connection idle between requests;
//! - a cap on open connections: past it, the connection idle the longest is closed to make
//!   room, so idle sockets can never use up the process's file descriptors;
//! - a size limit on request heads, answered here (431 in the API's error shape, audited)
//!   below hyper's own, which would answer with an empty body and leave no row.
//!
//! A request whose head is complete has no deadline here: it may wait minutes on the
//! upstream. Its body is read under a timeout by the payload readers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use vault_core::audit::{AuditLog, RequestAudit};
use vault_core::{ErrorCode, ErrorKind, VaultError};

/// How connections are held in check.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// Between the end of an answer and the next request's first byte.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Limits {
    /// The defaults, with the cap below this process's open-files limit (raised to the
    /// hard limit first).
    pub fn from_config(config: &vault_core::Config) -> Limits {
        let files = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read or raise the open-files limit; assuming 1024");
                1024
            }
        };
        // Keep room for the database, the journal, the upstream connections and the log.
        let fit = usize::try_from(files.saturating_sub(128) / 2).unwrap_or(usize::MAX).max(16);
        Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections.unwrap_or(fit),
        }
    }
}

/// What a connection is doing, as far as its bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between answers (or not yet asked): the idle deadline runs.
    Idle,
    /// A request's head is arriving: the header deadline runs. Holds how much of the blank
    /// line that ends a head (`\r\n\r\n`) the last bytes matched.
    Head(usize),
    /// The head is in: the request is served, no deadline here.
    Busy,
    /// HTTP/2 (prior knowledge): its binary frames tell nothing of requests, so only the
    /// connection cap applies.
    Http2,
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";
/// The largest request head taken (its line and header fields), and the most lines in it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEAD_LINES: usize = 100;
/// How much of a refused request is read (and dropped) before its connection closes.
const MAX_DRAINED: usize = 1024 * 1024;
/// How much of a refused head's request line is kept for its audit row.
const KEPT_REQUEST_LINE: usize = 512;

/// The head arriving now: its size so far and the start of its request line.
struct HeadSoFar {
    bytes: usize,
    lines: usize,
    line: [u8; KEPT_REQUEST_LINE],
    line_len: usize,
    line_done: bool,
}

impl HeadSoFar {
    fn new() -> HeadSoFar {
        HeadSoFar { bytes: 0, lines: 0, line: [0; KEPT_REQUEST_LINE], line_len: 0, line_done: false }
    }

    fn restart(&mut self) {
        self.bytes = 0;
        self.lines = 0;
        self.line_len = 0;
        self.line_done = false;
    }

    /// Takes `part`, the next bytes of the head; whether the head is now too large.
    fn take(&mut self, part: &[u8]) -> bool {
        if !self.line_done {
            let end = part.iter().position(|b| *b == b'\n');
            self.line_done = end.is_some();
            let line = &part[..end.unwrap_or(part.len())];
            let kept = line.len().min(KEPT_REQUEST_LINE - self.line_len);
            self.line[self.line_len..self.line_len + kept].copy_from_slice(&line[..kept]);
            self.line_len += kept;
        }
        self.bytes += part.len();
        self.lines += part.iter().filter(|b| **b == b'\n').count();
        self.bytes > MAX_HEAD_BYTES || self.lines > MAX_HEAD_LINES
    }

    /// The method and the path (without its query) the head began with, as far as kept.
    fn method_and_path(&self) -> (String, String) {
        let line = String::from_utf8_lossy(&self.line[..self.line_len]);
        let mut parts = line.split(' ');
        let method =
            parts.next().filter(|m| !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase()));
        let path = parts.next().map(|p| p.split('?').next().unwrap_or_default()).unwrap_or_default();
        (method.unwrap_or("?").to_string(), path.to_string())
    }
}

/// One connection as the acceptor keeps track of it.
struct Tracked {
    /// Idle since (ms on the acceptor's clock), or `u64::MAX` when not idle.
    idle_since_ms: AtomicU64,
    evict: AtomicBool,
    waker: AtomicWaker,
}

struct Registry {
    started: Instant,
    open: AtomicUsize,
    connections: Mutex<Vec<Weak<Tracked>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Closes the connection idle the longest, if any is idle.
    fn evict_oldest_idle(&self) -> bool {
        let Ok(mut connections) = self.connections.lock() else { return false };
        connections.retain(|c| c.strong_count() > 0);
        let oldest = connections
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.evict.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed))
            .filter(|c| c.idle_since_ms.load(Ordering::Relaxed) != u64::MAX);
        match oldest {
            Some(connection) => {
                connection.evict.store(true, Ordering::Relaxed);
                connection.waker.wake();
                true
            }
            None => false,
        }
    }
}

/// Accepts TCP connections and hands them out guarded.
pub struct GuardedAcceptor {
    inner: TcpAcceptor,
    limits: Limits,
    registry: Arc<Registry>,
    audit: Option<AuditLog>,
}

impl GuardedAcceptor {
    pub fn new(inner: TcpAcceptor, limits: Limits) -> GuardedAcceptor {
        let registry =
            Registry { started: Instant::now(), open: AtomicUsize::new(0), connections: Mutex::new(Vec::new()) };
        GuardedAcceptor { inner, limits, registry: Arc::new(registry), audit: None }
    }

    /// Records refused heads in `audit`.
    pub fn audited(mut self, audit: AuditLog) -> GuardedAcceptor {
        self.audit = Some(audit);
        self
    }
}

impl Acceptor for GuardedAcceptor {
    type Io = GuardedIo;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(GuardedIo, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let (stream, local, remote, scheme) = self.inner.accept().await?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(error = %err, "could not set TCP_NODELAY on a connection");
        }
        if self.registry.open.load(Ordering::Relaxed) >= self.limits.max_connections
            && !self.registry.evict_oldest_idle()
        {
            tracing::warn!(max = self.limits.max_connections, "connection cap reached with none idle");
        }
        let tracked = Arc::new(Tracked {
            idle_since_ms: AtomicU64::new(0),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        tracked.idle_since_ms.store(self.registry.now_ms(), Ordering::Relaxed);
        if let Ok(mut connections) = self.registry.connections.lock() {
            if connections.len() > 2 * self.registry.open.load(Ordering::Relaxed) + 64 {
                connections.retain(|c| c.strong_count() > 0);
            }
            connections.push(Arc::downgrade(&tracked));
        }
        self.registry.open.fetch_add(1, Ordering::Relaxed);
        let io = GuardedIo {
            stream,
            head: Box::new(HeadSoFar::new()),
            audit: self.audit.clone(),
            peer: remote.as_socket_addr().map(|a| a.ip()),
            phase: Phase::Idle,
            read_nothing_yet: true,
            deadline: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
            limits: self.limits,
            tracked,
            slot: Slot { registry: self.registry.clone() },
        };
        Ok((io, local, remote, scheme))
    }
}

/// A connection with its deadlines (see the module docs), over TCP or over TLS on TCP: the
/// guard watches the bytes of HTTP, so it sits above the TLS layer.
pub struct GuardedIo<S = TcpStream> {
    stream: S,
    head: Box<HeadSoFar>,
    audit: Option<AuditLog>,
    peer: Option<std::net::IpAddr>,
    phase: Phase,
    read_nothing_yet: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limits: Limits,
    tracked: Arc<Tracked>,
    slot: Slot,
}

/// A connection's place in the count of open ones, given back when it closes.
struct Slot {
    registry: Arc<Registry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GuardedIo<TcpStream> {
    /// The first byte the client sent, left for whoever reads next (a TLS handshake starts
    /// with 22); `None` when the client closed first, an error when it sent nothing within
    /// the idle timeout.
    pub async fn first_byte(&self) -> io::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        let peek = tokio::time::timeout(self.limits.idle_timeout, self.stream.peek(&mut byte));
        tokio::select! {
            peeked = peek => match peeked {
                Ok(Ok(0)) => Ok(None),
                Ok(Ok(_)) => Ok(Some(byte[0])),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "nothing sent")),
            },
            err = evicted(&self.tracked) => Err(err),
        }
    }

    /// Runs the TLS handshake (within the head timeout) and guards the decrypted stream the
    /// same way.
    pub async fn into_tls(
        self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> io::Result<GuardedIo<tokio_rustls::server::TlsStream<TcpStream>>> {
        let GuardedIo { stream, head, audit, peer, phase, read_nothing_yet, deadline, limits, tracked, slot } = self;
        let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
        let stream = tokio::select! {
            done = handshake => done.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout"))??,
            err = evicted(&tracked) => return Err(err),
        };
        Ok(GuardedIo { stream, head, audit, peer, phase, read_nothing_yet, deadline, limits, tracked, slot })
    }
}

/// Resolves when the acceptor closes this connection to make room for a new one (for the
/// phases before the guard sees any HTTP: the first byte, the TLS handshake).
async fn evicted(tracked: &Tracked) -> io::Error {
    std::future::poll_fn(|cx| {
        tracked.waker.register(cx.waker());
        if tracked.evict.load(Ordering::Relaxed) { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed to make room for a new connection")
}

impl<S> GuardedIo<S> {
    fn enter(&mut self, phase: Phase) {
        let restart = match (self.phase, phase) {
            (_, Phase::Idle) => Some(self.limits.idle_timeout),
            // The head's deadline counts from its first byte.
            (Phase::Head(_), Phase::Head(_)) | (_, Phase::Busy | Phase::Http2) => None,
            (_, Phase::Head(_)) => Some(self.limits.header_timeout),
        };
        self.phase = phase;
        if let Some(timeout) = restart {
            self.deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        let idle_since = match phase {
            Phase::Idle | Phase::Http2 => self.slot.registry.now_ms(),
            Phase::Head(_) | Phase::Busy => u64::MAX,
        };
        self.tracked.idle_since_ms.store(idle_since, Ordering::Relaxed);
    }

    /// Moves through the phases with the bytes just read; whether they make a head over
    /// the limits.
    fn saw(&mut self, bytes: &[u8]) -> bool {
        if self.read_nothing_yet && bytes.starts_with(b"PRI * HTTP/2.0") {
            self.enter(Phase::Http2);
        }
        self.read_nothing_yet &= bytes.is_empty();
        let mut matched = match self.phase {
            Phase::Busy | Phase::Http2 => return false,
            _ if bytes.is_empty() => return false,
            Phase::Idle => {
                self.head.restart();
                0
            }
            Phase::Head(matched) => matched,
        };
        for (i, byte) in bytes.iter().enumerate() {
            matched = if *byte == HEAD_END[matched] {
                matched + 1
            } else if *byte == b'\r' {
                1
            } else {
                0
            };
            if matched == HEAD_END.len() {
                self.enter(Phase::Busy);
                return self.head.take(&bytes[..=i]);
            }
        }
        self.enter(Phase::Head(matched));
        self.head.take(bytes)
    }

    /// An error when the connection must close now (evicted, or past its deadline).
    fn check(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.tracked.waker.register(cx.waker());
        if self.tracked.evict.load(Ordering::Relaxed) {
            return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "closed to make room for a new connection"));
        }
        if matches!(self.phase, Phase::Idle | Phase::Head(_)) && self.deadline.as_mut().poll(cx).is_ready() {
            let what = if self.phase == Phase::Idle { "idle" } else { "request head" };
            tracing::info!(what, "closing a connection past its deadline");
            return Some(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout")));
        }
        None
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> GuardedIo<S> {
    /// Something of an answer went out: the request is being (or was) answered.
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled
            && *n > 0
            && self.phase != Phase::Http2
        {
            self.enter(Phase::Idle);
        }
    }

    /// Answers a head over the limits with a 431 in the API's shape and records it; the
    /// connection then closes.
    fn refuse_head(&mut self, cx: &mut Context<'_>) -> io::Error {
        let err = VaultError::new(
            ErrorKind::HeadTooLarge,
            ErrorCode::RequestHeadTooLarge,
            format!("The request's head is larger than {MAX_HEAD_BYTES} bytes or {MAX_HEAD_LINES} lines."),
        );
        let request_id = vault_core::secrets::request_id();
        if let Some(log) = &self.audit {
            let (method, path) = self.head.method_and_path();
            let audit = RequestAudit::begin(log.clone(), &method, &path, request_id.clone(), self.peer, None);
            // Journaled when finished; nothing waits here for the commit.
            drop(audit.finish(err.status(), true, Some(err.code)));
        }
        let body = err.to_body().to_string();
        let answer = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        // Small enough for the socket's empty send buffer; what does not fit is not retried.
        let stream = Pin::new(&mut self.stream);
        if let Poll::Ready(Ok(_)) = stream.poll_write(cx, answer.as_bytes()) {
            let _ = Pin::new(&mut self.stream).poll_flush(cx);
        }
        // Closing with unread bytes would reset the connection, and a reset can destroy the
        // answer before the client reads it: take what has arrived of the head first.
        let mut sink = [0u8; 16 * 1024];
        let mut drained = 0;
        while drained < MAX_DRAINED {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => drained += buf.filled().len(),
                _ => break,
            }
        }
        tracing::info!(bytes = self.head.bytes, lines = self.head.lines, "refused a request head over the limits");
        io::Error::new(io::ErrorKind::InvalidData, "request head too large")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(err) = this.check(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && this.saw(&buf.filled()[before..])
        {
            return Poll::Ready(Err(this.refuse_head(cx)));
        }
        polled
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        this.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use poem::listener::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn acceptor(limits: Limits) -> (GuardedAcceptor, std::net::SocketAddr) {
        let inner = poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = *inner.local_addr()[0].as_socket_addr().unwrap();
        (GuardedAcceptor::new(inner, limits), addr)
    }

    const LIMITS: Limits =
        Limits { header_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(5), max_connections: 100 };

    #[tokio::test]
    async fn accepted_connections_have_nodelay_set() {
        let (mut acceptor, addr) = acceptor(LIMITS).await;
        let client = tokio::spawn(TcpStream::connect(addr));
        let (io, ..) = acceptor.accept().await.unwrap();
        assert!(io.stream.nodelay().unwrap(), "TCP_NODELAY is off on an accepted connection");
        client.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_head_that_ends_across_reads_frees_the_request_from_the_deadline() {
        let limits = Limits { header_timeout: Duration::from_millis(200), ..LIMITS };
        let (mut acceptor, addr) = acceptor(limits).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut io, ..) = acceptor.accept().await.unwrap();
        let mut buf = [0u8; 64];
        for part in [&b"GET / HTTP/1.1\r\nHost: x\r"[..], b"\n\r", b"\n"] {
            client.write_all(part).await.unwrap();
            assert!(io.read(&mut buf).await.unwrap() > 0);
        }
        assert_eq!(io.phase, Phase::Busy);
        // Served (say, waiting on the upstream) long past the header deadline: still open.
        let waited = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await;
        assert!(waited.is_err(), "a served request was cut off: {waited:?}");
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_cut_off_and_an_idle_connection_too() {
        let limits =
            Limits { header_timeout: Duration::from_millis(300), idle_timeout: Duration::from_millis(600), ..LIMITS };
        let (mut acceptor, addr) = acceptor(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let (mut io, ..) = acceptor.accept().await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let mut read = 0;
        let err = loop {
            match io.read(&mut buf).await {
                Ok(n) => read += n,
                Err(err) => break err,
            }
        };
        assert_eq!((read, err.kind()), (25, io::ErrorKind::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));

        let _quiet = TcpStream::connect(addr).await.unwrap();
        let (mut io, ..) = acceptor.accept().await.unwrap();
        let started = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn http2_connections_are_not_held_to_http1_heads() {
        let limits = Limits { header_timeout: Duration::from_millis(200), ..LIMITS };
        let (mut acceptor, addr) = acceptor(limits).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut io, ..) = acceptor.accept().await.unwrap();
        let mut buf = [0u8; 64];
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        io.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
        client.write_all(b"\0\0\x05\x01\x04\0\0\0\x01binary").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let waited = tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await;
        assert!(waited.is_err(), "an HTTP/2 connection was cut off as a slow head: {waited:?}");
    }

    #[tokio::test]
    async fn past_the_cap_the_longest_idle_connection_makes_room() {
        let (mut acceptor, addr) = acceptor(Limits { max_connections: 2, ..LIMITS }).await;
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            served.push(acceptor.accept().await.unwrap().0);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The second is busy with a request; the first is idle.
        clients[1].write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(served[1].read(&mut buf).await.unwrap() > 0);
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (_third, ..) = acceptor.accept().await.unwrap();
        assert_eq!(served[0].read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert!(matches!(served[1].stream.try_read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_first_byte_can_be_closed_to_make_room() {
        let (mut acceptor, addr) = acceptor(Limits { max_connections: 1, ..LIMITS }).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (waiting, ..) = acceptor.accept().await.unwrap();
        let peek = tokio::spawn(async move { waiting.first_byte().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _next = TcpStream::connect(addr).await.unwrap();
        let (_room, ..) = acceptor.accept().await.unwrap();
        let peeked = tokio::time::timeout(Duration::from_secs(2), peek).await.unwrap().unwrap();
        assert_eq!(peeked.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }
}
