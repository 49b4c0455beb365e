//! A streamed answer on its way from the upstream to the client.
//!
//! Events are passed on as they arrive: those ready together (from one read of the upstream,
//! or a few back to back) go out together in one write, and none waits for a later one.
//! Vault reads each for token usage, drops the usage chunk it asked for on the client's
//! behalf, turns an upstream failure into a final `error` event, and runs a finisher (the
//! audit record) before the client gets the closing `[DONE]`. Dropping the stream (the
//! client left) drops the upstream request at once and still runs the finisher.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};
use futures_util::{FutureExt, StreamExt};
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Usage;
use crate::error::ErrorCode;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How a stream ended, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOutcome {
    pub usage: Option<Usage>,
    /// True only when the upstream finished the answer and the client received it.
    pub completed: bool,
    pub error_code: Option<ErrorCode>,
    /// When the upstream's first bytes came (none when it sent nothing).
    pub first_chunk: Option<std::time::Instant>,
    /// When the upstream part ended (now, when the client left first).
    pub upstream_done: std::time::Instant,
}

/// Records the outcome; its future says whether the record is safe.
type Finisher = Box<dyn FnOnce(StreamOutcome) -> BoxFuture<'static, bool> + Send>;

const DONE: &[u8] = b"data: [DONE]\n\n";
/// How many times a stream with events ready lets other tasks run, waiting for the
/// upstream's next chunk, before it writes what it has (while that waiting pays off).
const YIELDS: u8 = 3;
/// The largest single event taken from the upstream: one that grows past this without
/// ending is cut off with an error event.
const MAX_EVENT: usize = 16 * 1024 * 1024;
/// Ready events are sent on once they reach this size, even if more are ready.
const MAX_WRITE: usize = 64 * 1024;

pub struct ProxyStream {
    upstream: Option<BoxStream<'static, Result<Bytes, String>>>,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no event end, so it is not scanned again.
    scanned: usize,
    /// How often the stream let other tasks run since the upstream last gave data.
    yielded: u8,
    /// Whether waiting for the rest of a burst pays off: false for good once the upstream
    /// let all the [`YIELDS`] pass without sending more. An engine's tokens come
    /// milliseconds apart, and waiting for the next one would only cost polls: after the
    /// first, they are written as they come.
    waiting_pays: bool,
    /// The events ready for the client, in one piece: events taken one after another from
    /// `buffer` are joined without a copy.
    ready: BytesMut,
    client_wants_usage: bool,
    usage: Option<Usage>,
    upstream_error: bool,
    finisher: Option<Finisher>,
    finishing: Option<(BoxFuture<'static, bool>, Bytes)>,
    /// Resolves when the gateway must end its streams (its shutdown grace is running out).
    stopping: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Ends the stream when the upstream goes quiet for too long.
    quiet: Option<Box<QuietWatch>>,
    /// How the upstream part ended, until the queued events are out.
    ending: Option<(bool, Option<ErrorCode>, Bytes)>,
    first_chunk: Option<std::time::Instant>,
    upstream_done: Option<std::time::Instant>,
    done: bool,
}

#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl ProxyStream {
    pub(crate) fn new(upstream: BoxStream<'static, Result<Bytes, String>>, client_wants_usage: bool) -> ProxyStream {
        ProxyStream {
            upstream: Some(upstream),
            buffer: BytesMut::new(),
            scanned: 0,
            yielded: 0,
            waiting_pays: true,
            ready: BytesMut::new(),
            client_wants_usage,
            usage: None,
            upstream_error: false,
            finisher: None,
            finishing: None,
            stopping: None,
            quiet: None,
            ending: None,
            first_chunk: None,
            upstream_done: None,
            done: false,
        }
    }

    /// Ends the stream with a `server_shutting_down` error event (its row marked incomplete)
    /// when `stop` is cancelled.
    pub fn stop_on(mut self, stop: CancellationToken) -> Self {
        self.stopping = Some(Box::pin(stop.cancelled_owned()));
        self
    }

    /// Ends the stream with an `inference_timeout` error event (its row marked incomplete,
    /// the upstream request closed) when the upstream sends nothing for `limit`.
    pub fn quiet_limit(mut self, limit: Duration) -> Self {
        self.quiet = Some(Box::new(QuietWatch::new(limit)));
        self
    }

    /// Sets what runs when the stream ends, however it ends. The client receives the final
    /// frame only after the finisher's future completes — or, when it says the record could
    /// not be kept, an error event instead. A stream dropped before its end (the client
    /// left) drops the future unpolled: what it must keep, it keeps when dropped, as the
    /// audit record's future does.
    pub fn on_finish(
        mut self,
        finisher: impl FnOnce(StreamOutcome) -> BoxFuture<'static, bool> + Send + 'static,
    ) -> Self {
        self.finisher = Some(Box::new(finisher));
        self
    }

    /// Reads the complete events in `buffer`, moves those that go on to `ready`, and
    /// returns the closing frame once `[DONE]` comes.
    fn take_events(&mut self) -> Option<Bytes> {
        let ProxyStream { buffer, ready, scanned, usage, upstream_error, client_wants_usage, .. } = self;
        // Events that go on as they are stay at the front of `buffer`, before `start`, and
        // move to `ready` in one piece when the scan stops (or an event is kept back).
        let mut start = 0;
        // A separator may straddle the end of what was scanned: look back 3 bytes.
        let mut from = scanned.saturating_sub(3);
        let mut final_frame = None;
        while let Some(end) = find_event_end(&buffer[from..]).map(|end| from + end) {
            match judge(&buffer[start..end], usage, upstream_error, *client_wants_usage) {
                Verdict::Pass => start = end,
                Verdict::Drop => {
                    ready.unsplit(buffer.split_to(start));
                    buffer.advance(end - start);
                    start = 0;
                }
                Verdict::Done => {
                    final_frame = Some(Bytes::from_static(DONE));
                    break;
                }
            }
            from = start;
        }
        if start > 0 {
            ready.unsplit(buffer.split_to(start));
        }
        *scanned = buffer.len();
        final_frame
    }

    /// Every event ready to go, as one piece.
    fn take_ready(&mut self) -> Option<Bytes> {
        (!self.ready.is_empty()).then(|| self.ready.split().freeze())
    }

    /// The upstream part is over: no more is read; the outcome is recorded once the events
    /// still queued have gone out (so a client that leaves before them is recorded so).
    fn begin_finish(&mut self, completed: bool, error_code: Option<ErrorCode>, final_frame: Bytes) {
        self.upstream = None;
        self.upstream_done = Some(std::time::Instant::now());
        self.ending = Some((completed, error_code, final_frame));
    }

    /// Ends the answer early, with an error event, when the gateway is stopping or the
    /// upstream has been quiet too long; says whether it did. When not, the task is woken
    /// when either may have happened.
    fn cut_if_due(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stopping.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready()) {
            self.stopping = None;
            let frame = error_event(ErrorCode::ServerShuttingDown, "The gateway is shutting down; the answer is cut.");
            self.begin_finish(false, Some(ErrorCode::ServerShuttingDown), frame);
            return true;
        }
        if let Some(quiet) = self.quiet.as_mut()
            && quiet.expired(cx)
        {
            let seconds = quiet.limit.as_secs_f64();
            tracing::warn!(seconds, "the inference service went quiet in the middle of an answer; cutting the stream");
            let message = format!("The inference service sent nothing for {seconds} s; the answer is cut.");
            self.begin_finish(
                false,
                Some(ErrorCode::InferenceTimeout),
                error_event(ErrorCode::InferenceTimeout, &message),
            );
            return true;
        }
        false
    }

    fn start_finisher(&mut self, completed: bool, error_code: Option<ErrorCode>, final_frame: Bytes) {
        let error_code = error_code.or(self.upstream_error.then_some(ErrorCode::UpstreamError));
        let outcome = StreamOutcome {
            usage: self.usage,
            completed: completed && error_code.is_none(),
            error_code,
            first_chunk: self.first_chunk,
            upstream_done: self.upstream_done.unwrap_or_else(std::time::Instant::now),
        };
        let future = match self.finisher.take() {
            Some(finisher) => finisher(outcome),
            None => futures_util::future::ready(true).boxed(),
        };
        self.finishing = Some((future, final_frame));
    }
}

/// How long the upstream has been quiet. A chunk only sets a flag; the clock is read when
/// the stream starts waiting, and the timer is moved only when it fires.
struct QuietWatch {
    limit: Duration,
    last_heard: Instant,
    heard_since: bool,
    timer: Pin<Box<Sleep>>,
}

impl QuietWatch {
    fn new(limit: Duration) -> QuietWatch {
        let now = Instant::now();
        QuietWatch {
            limit,
            last_heard: now,
            heard_since: false,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    fn heard(&mut self) {
        self.heard_since = true;
    }

    /// Whether the limit has passed since the upstream was last heard; when not, the task
    /// is woken when it may have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if std::mem::take(&mut self.heard_since) {
            self.last_heard = Instant::now();
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_heard + self.limit;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

/// The final event Vault sends when the upstream fails in the middle of an answer.
fn error_event(code: ErrorCode, message: &str) -> Bytes {
    let status = match code {
        ErrorCode::AuditUnavailable | ErrorCode::ServerShuttingDown => 503,
        ErrorCode::InferenceTimeout => 504,
        _ => 502,
    };
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": message, "status": status}});
    Bytes::from(format!("data: {body}\n\n"))
}

/// The end of the first complete event in `buf` (after its blank line: `\n\n`, or
/// `\r\n\r\n`), found in one pass over its line ends.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1..) {
        Some([b'\n', ..]) => Some(i + 2),
        Some([b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

/// What becomes of one event from the upstream.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It goes on to the client as it is.
    Pass,
    /// It is kept from the client: the usage chunk Vault asked for on the client's behalf.
    Drop,
    /// `[DONE]`: the upstream finished the answer.
    Done,
}

static USAGE_FIELD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR_FIELD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));

/// Reads one complete event (with its blank line) for the token usage or an error it
/// carries, and says what becomes of it. Most chunks carry neither: they are only searched
/// for the two field names, never parsed.
fn judge(event: &[u8], usage: &mut Option<Usage>, upstream_error: &mut bool, client_wants_usage: bool) -> Verdict {
    let Some(data) = event_data(event) else { return Verdict::Pass };
    if is_done(&data) {
        return Verdict::Done;
    }
    if USAGE_FIELD.find(&data).is_none() && ERROR_FIELD.find(&data).is_none() {
        return Verdict::Pass;
    }
    let Ok(peek) = serde_json::from_slice::<ChunkPeek>(&data) else { return Verdict::Pass };
    if peek.error.as_ref().is_some_and(|e| !e.is_null()) {
        *upstream_error = true;
    }
    if let Some(read) = peek.usage {
        *usage = Some(read);
        let usage_only = peek.choices.as_ref().is_some_and(|c| c.is_empty());
        if usage_only && !client_wants_usage {
            return Verdict::Drop;
        }
    }
    Verdict::Pass
}

/// Whether an event's data is `[DONE]` (around it, any white space). Only data that starts
/// with `[`, or with white space that `trim_ascii_start` leaves (a vertical tab, a non-ASCII
/// character), is looked at closely.
fn is_done(data: &[u8]) -> bool {
    match data.trim_ascii_start().first() {
        Some(b'[' | 0x0B | 0x80..) => std::str::from_utf8(data).is_ok_and(|d| d.trim() == "[DONE]"),
        _ => false,
    }
}

/// The data of an event (its `data:` lines joined, borrowed when there is one), or `None`
/// when it has none (a comment such as `: keep-alive`, or another field).
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', event) {
        let line = &event[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"data:") else { continue };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        match &mut data {
            // Several `data:` lines (rare) make one text.
            Some(joined) => {
                let joined = joined.to_mut();
                joined.push(b'\n');
                joined.extend_from_slice(rest);
            }
            None => data = Some(Cow::Borrowed(rest)),
        }
    }
    data
}

impl Stream for ProxyStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        loop {
            // Take everything the upstream has ready now (it may send each event as its own
            // chunk), and send it on in one piece as soon as it has nothing more ready.
            if let Some(upstream) = this.upstream.as_mut() {
                match upstream.poll_next_unpin(cx) {
                    // Waiting is when the stream may be cut: polled only then, the watches
                    // cost nothing per chunk.
                    Poll::Pending if this.ready.is_empty() => {
                        if this.cut_if_due(cx) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    Poll::Pending if this.yielded < YIELDS && this.waiting_pays => {
                        // The upstream writes each event on its own, so a burst may arrive
                        // in several reads: let every other ready task run a few times
                        // before writing, so that the rest of it can come and the burst goes
                        // out as one write instead of several. No event waits longer than
                        // that. (Writing at once measured 8-15 % fewer streams a second at
                        // c=64.)
                        this.yielded += 1;
                        let mut pause = Box::pin(tokio::task::yield_now());
                        if pause.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        continue;
                    }
                    Poll::Pending => {
                        if this.yielded == YIELDS {
                            this.waiting_pays = false;
                        }
                        this.yielded = 0;
                        return Poll::Ready(this.take_ready());
                    }
                    Poll::Ready(Some(Ok(bytes))) => {
                        this.yielded = 0;
                        if this.first_chunk.is_none() {
                            this.first_chunk = Some(std::time::Instant::now());
                        }
                        if let Some(quiet) = this.quiet.as_mut() {
                            quiet.heard();
                        }
                        this.buffer.extend_from_slice(&bytes);
                        if let Some(final_frame) = this.take_events() {
                            this.begin_finish(true, None, final_frame);
                        } else if this.buffer.len() > MAX_EVENT {
                            tracing::warn!(
                                bytes = this.buffer.len(),
                                "an upstream event grew too large; cutting the stream"
                            );
                            this.buffer.clear();
                            let frame = error_event(
                                ErrorCode::UpstreamInvalid,
                                "The inference service sent an event too large to pass on.",
                            );
                            this.begin_finish(false, Some(ErrorCode::UpstreamInvalid), frame);
                        }
                        if this.ready.len() < MAX_WRITE {
                            continue;
                        }
                    }
                    Poll::Ready(Some(Err(cause))) => {
                        tracing::warn!(error = %cause, "inference stream broke off");
                        let frame = error_event(
                            ErrorCode::UpstreamStreamError,
                            "The inference service stopped in the middle of the answer.",
                        );
                        this.begin_finish(false, Some(ErrorCode::UpstreamStreamError), frame);
                    }
                    Poll::Ready(None) => {
                        let frame = error_event(
                            ErrorCode::UpstreamStreamError,
                            "The inference service ended the answer without finishing it.",
                        );
                        this.begin_finish(false, Some(ErrorCode::UpstreamStreamError), frame);
                    }
                }
            }
            if let Some(events) = this.take_ready() {
                return Poll::Ready(Some(events));
            }
            if let Some((completed, error_code, final_frame)) = this.ending.take() {
                this.start_finisher(completed, error_code, final_frame);
            }
            if let Some((future, _)) = &mut this.finishing {
                let Poll::Ready(kept) = future.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                let final_frame = this.finishing.take().map(|(_, frame)| frame);
                this.done = true;
                if !kept {
                    let message = "The answer is complete but its audit record could not be kept.";
                    return Poll::Ready(Some(error_event(ErrorCode::AuditUnavailable, message)));
                }
                return Poll::Ready(final_frame);
            }
            if this.done || this.upstream.is_none() {
                this.done = true;
                return Poll::Ready(None);
            }
        }
    }
}

impl Drop for ProxyStream {
    fn drop(&mut self) {
        // The client left before the end: the upstream request is dropped with `self`, and
        // the partial result is still recorded.
        if let Some(finisher) = self.finisher.take() {
            let outcome = StreamOutcome {
                usage: self.usage,
                completed: false,
                error_code: Some(ErrorCode::ClientDisconnected),
                first_chunk: self.first_chunk,
                upstream_done: self.upstream_done.unwrap_or_else(std::time::Instant::now),
            };
            // Nobody waits for the answer: the future is dropped unpolled, which keeps the
            // row at once (see `on_finish`).
            drop(finisher(outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn chunks(parts: &'static [&'static str]) -> BoxStream<'static, Result<Bytes, String>> {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes())))).boxed()
    }

    async fn run(stream: ProxyStream) -> (String, Option<StreamOutcome>) {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let stream = stream.on_finish(move |outcome| {
            *sink.lock().unwrap() = Some(outcome);
            futures_util::future::ready(true).boxed()
        });
        let out: Vec<Bytes> = stream.collect().await;
        let text = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        let outcome = seen.lock().unwrap().clone();
        (text, outcome)
    }

    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n";

    #[tokio::test]
    async fn usage_chunk_is_read_and_dropped_when_not_asked_for() {
        let upstream =
            chunks(&["data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n", "\n", USAGE, "data: [DONE]\n\n"]);
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        assert_eq!(text, "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        let outcome = outcome.unwrap();
        assert!(outcome.completed);
        assert_eq!(outcome.usage, Some(Usage { prompt_tokens: 9, completion_tokens: 12 }));
    }

    #[test]
    fn an_event_ends_at_its_first_blank_line_whatever_the_line_ends() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b\r\n\r\n"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\ndata: b\n\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\r\n\n"), Some(10));
        assert_eq!(find_event_end(b"data: a\n\r\n"), Some(10));
        assert_eq!(find_event_end(b"data: a\r\ndata: b\r\n"), None);
        assert_eq!(find_event_end(b"data: a\n"), None);
    }

    #[tokio::test]
    async fn separators_split_across_chunks_still_end_events() {
        let upstream = chunks(&["data: {\"a\":1}\r\n", "\r", "\ndata: {\"b\":2}\n", "\ndata: [DONE]\n\n"]);
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        assert_eq!(text, "data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\n\ndata: [DONE]\n\n");
        assert!(outcome.unwrap().completed);
    }

    #[tokio::test]
    async fn a_usage_chunk_amid_other_events_is_dropped_and_the_rest_keep_their_order() {
        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        let upstream = chunks(&[
            ": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            USAGE,
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n",
            "data:[DONE]\r\n\r\n",
        ]);
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        let b = "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n";
        assert_eq!(text, format!(": keep-alive\n\n{chunk}{b}data: [DONE]\n\n"));
        let outcome = outcome.unwrap();
        assert!(outcome.completed);
        assert_eq!(outcome.usage, Some(Usage { prompt_tokens: 9, completion_tokens: 12 }));
    }

    #[tokio::test]
    async fn a_usage_chunk_between_events_of_one_read_is_dropped_and_the_others_go_on() {
        const PARTS: &[&str] = &[concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: [DONE]\n\n",
        )];
        let (text, outcome) = run(ProxyStream::new(chunks(PARTS), false)).await;
        assert_eq!(
            text,
            concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
                "data: [DONE]\n\n",
            )
        );
        assert_eq!(outcome.unwrap().usage, Some(Usage { prompt_tokens: 9, completion_tokens: 12 }));
    }

    #[test]
    fn an_event_is_judged_by_its_data_whatever_its_lines() {
        let judged = |event: &str, wants_usage: bool| {
            let (mut usage, mut error) = (None, false);
            let verdict = judge(event.as_bytes(), &mut usage, &mut error, wants_usage);
            (verdict, usage.map(|u: Usage| u.completion_tokens), error)
        };
        assert_eq!(judged(USAGE, false), (Verdict::Drop, Some(12), false));
        assert_eq!(judged(USAGE, true), (Verdict::Pass, Some(12), false));
        // Data over several lines is joined before it is read.
        let split = "data: {\"choices\":[],\r\ndata: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n";
        assert_eq!(judged(split, false), (Verdict::Drop, Some(2), false));
        let error = "id: 7\ndata: {\"error\":{\"message\":\"boom\"}}\n\n";
        assert_eq!(judged(error, false), (Verdict::Pass, None, true));
        assert_eq!(judged("data: {\"error\":null,\"choices\":[{}]}\n\n", false), (Verdict::Pass, None, false));
        // A chunk whose text merely mentions the field names is not mistaken for them.
        let mention = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": 5\"}}]}\n\n";
        assert_eq!(judged(mention, false), (Verdict::Pass, None, false));
        let done = [
            "data: [DONE]\n\n",
            "data:[DONE]\r\n\r\n",
            "data:  [DONE] \n\n",
            "data: \u{3000}[DONE]\n\n",
            "data:\x0B[DONE]\n\n",
        ];
        for done in done {
            assert_eq!(judged(done, false).0, Verdict::Done, "{done:?}");
        }
        for other in [": keep-alive\n\n", "event: ping\n\n", "data: [DONE]x\n\n", "data: [\"[DONE]\"]\n\n", "\n\n"] {
            assert_eq!(judged(other, false).0, Verdict::Pass, "{other:?}");
        }
    }

    #[tokio::test]
    async fn usage_chunk_is_kept_when_the_client_asked() {
        let (text, _) = run(ProxyStream::new(chunks(&[USAGE, "data: [DONE]\n\n"]), true)).await;
        assert!(text.starts_with(USAGE));
    }

    #[tokio::test]
    async fn a_cut_stream_ends_with_an_error_event() {
        let upstream = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b": keep-alive\n\ndata: {\"choices\":[{}]}\n\n")),
            Err("connection reset".to_string()),
        ])
        .boxed();
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        assert!(text.starts_with(": keep-alive\n\ndata: {\"choices\":[{}]}\n\n"));
        assert!(text.ends_with("\n\n") && text.contains("\"code\":\"upstream_stream_error\""), "{text}");
        let outcome = outcome.unwrap();
        assert!(!outcome.completed);
        assert_eq!(outcome.error_code, Some(ErrorCode::UpstreamStreamError));
    }

    #[tokio::test]
    async fn an_upstream_error_event_is_passed_on_and_marks_the_stream_incomplete() {
        let upstream = chunks(&["data: {\"error\":{\"message\":\"boom\"}}\r\n\r\n", "data: [DONE]\n\n"]);
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        assert!(text.contains("boom") && text.ends_with("[DONE]\n\n"));
        assert_eq!(outcome.unwrap().error_code, Some(ErrorCode::UpstreamError));
    }

    #[tokio::test]
    async fn events_ready_together_go_out_together_and_none_waits_for_a_later_one() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let upstream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|part| (Ok(Bytes::from_static(part.as_bytes())), rx))
        })
        .boxed();
        let mut stream = ProxyStream::new(upstream, false);
        let text = |b: Option<Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
        // Two chunks the upstream sent back to back go out as one piece…
        tx.send("data: {\"choices\":[1]}\n\ndata: {\"cho").unwrap();
        tx.send("ices\":[2]}\n\n").unwrap();
        assert_eq!(text(stream.next().await), "data: {\"choices\":[1]}\n\ndata: {\"choices\":[2]}\n\n");
        // …without waiting for the next one, which comes when it comes.
        tx.send("data: {\"choices\":[3]}\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(text(stream.next().await), "data: {\"choices\":[3]}\n\n");
        assert_eq!(text(stream.next().await), "data: [DONE]\n\n");
        assert!(stream.next().await.is_none());
    }

    /// An upstream fed through `tx`, and how often it has been polled.
    fn fed_upstream() -> (
        tokio::sync::mpsc::UnboundedSender<&'static str>,
        BoxStream<'static, Result<Bytes, String>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let upstream = futures_util::stream::poll_fn(move |cx| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rx.poll_recv(cx).map(|part| part.map(|p| Ok(Bytes::from_static(p.as_bytes()))))
        })
        .boxed();
        (tx, upstream, polls)
    }

    #[tokio::test]
    async fn the_rest_of_a_burst_that_comes_while_the_stream_waits_goes_out_with_it() {
        let (tx, upstream, _) = fed_upstream();
        let mut stream = ProxyStream::new(upstream, false);
        tx.send("data: {\"choices\":[1]}\n\n").unwrap();
        // Sent while the stream lets other tasks run, before it writes the first event.
        let later = tx.clone();
        tokio::spawn(async move { later.send("data: {\"choices\":[2]}\n\n").unwrap() });
        let piece = stream.next().await.unwrap();
        assert_eq!(piece, "data: {\"choices\":[1]}\n\ndata: {\"choices\":[2]}\n\n");
    }

    #[tokio::test]
    async fn once_waiting_for_more_did_not_pay_off_events_go_out_as_they_come() {
        let (tx, upstream, polls) = fed_upstream();
        let mut stream = ProxyStream::new(upstream, false);
        let polls_since = || polls.swap(0, std::sync::atomic::Ordering::Relaxed);
        tx.send("data: {\"choices\":[1]}\n\n").unwrap();
        assert_eq!(stream.next().await.unwrap(), "data: {\"choices\":[1]}\n\n");
        // The chunk, a look for more, and one more after each pause that brought nothing.
        assert_eq!(polls_since(), 2 + usize::from(YIELDS));
        for event in ["data: {\"choices\":[2]}\n\n", "data: {\"choices\":[3]}\n\n"] {
            tx.send(event).unwrap();
            assert_eq!(stream.next().await.unwrap(), event);
            // Tokens that come apart go out at once: the chunk, and one look for more.
            assert_eq!(polls_since(), 2);
        }
    }

    #[tokio::test]
    async fn an_event_that_never_ends_is_cut_off_with_an_error_event() {
        let endless = Bytes::from(vec![b'x'; MAX_EVENT + 1]);
        let upstream = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"data: ")), Ok(endless)]).boxed();
        let (text, outcome) = run(ProxyStream::new(upstream, false)).await;
        assert!(
            text.len() < 1024 && text.contains("\"code\":\"upstream_invalid\""),
            "{}",
            &text[..text.len().min(200)]
        );
        assert_eq!(outcome.unwrap().error_code, Some(ErrorCode::UpstreamInvalid));
    }

    #[tokio::test]
    async fn a_stream_still_running_at_shutdown_ends_with_an_error_event() {
        let stop = CancellationToken::new();
        let upstream = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"data: {\"choices\":[1]}\n\n"))])
            .chain(futures_util::stream::pending())
            .boxed();
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let mut stream = ProxyStream::new(upstream, false).stop_on(stop.clone()).on_finish(move |outcome| {
            *sink.lock().unwrap() = Some(outcome);
            futures_util::future::ready(true).boxed()
        });
        assert_eq!(stream.next().await.unwrap(), "data: {\"choices\":[1]}\n\n");
        stop.cancel();
        let last = stream.next().await.unwrap();
        assert!(std::str::from_utf8(&last).unwrap().contains("server_shutting_down"));
        assert!(stream.next().await.is_none());
        let outcome = seen.lock().unwrap().clone().unwrap();
        assert_eq!((outcome.completed, outcome.error_code), (false, Some(ErrorCode::ServerShuttingDown)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_quiet_past_the_limit_is_cut_and_one_that_keeps_talking_is_not() {
        // A chunk every 600 ms under a 1 s limit: never quiet for long enough.
        let talking = futures_util::stream::iter(0..4)
            .then(|_| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok(Bytes::from_static(b"data: {\"choices\":[1]}\n\n"))
            })
            .chain(futures_util::stream::iter([Ok(Bytes::from_static(DONE))]))
            .boxed();
        let (_, outcome) = run(ProxyStream::new(talking, false).quiet_limit(Duration::from_secs(1))).await;
        assert_eq!(outcome.map(|o| (o.completed, o.error_code)), Some((true, None)));

        let started = Instant::now();
        let stalled = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"data: {\"choices\":[1]}\n\n"))])
            .chain(futures_util::stream::pending())
            .boxed();
        let (text, outcome) = run(ProxyStream::new(stalled, false).quiet_limit(Duration::from_secs(1))).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(text.ends_with("\n\n") && text.contains("\"code\":\"inference_timeout\""), "{text}");
        assert_eq!(outcome.map(|o| (o.completed, o.error_code)), Some((false, Some(ErrorCode::InferenceTimeout))));
    }

    #[tokio::test]
    async fn dropping_the_stream_records_a_client_disconnect() {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let pending = futures_util::stream::pending::<Result<Bytes, String>>().boxed();
        let stream = ProxyStream::new(pending, false).on_finish(move |outcome| {
            *sink.lock().unwrap() = Some(outcome);
            futures_util::future::ready(true).boxed()
        });
        drop(stream);
        let outcome = seen.lock().unwrap().clone().unwrap();
        assert_eq!(outcome.error_code, Some(ErrorCode::ClientDisconnected));
    }
}
