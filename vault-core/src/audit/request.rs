//! The audit record of one request while it is served.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::AuditLog;
use crate::error::ErrorCode;
use crate::model::audit::AuditRecord;
use crate::model::keys::Principal;
use crate::model::usage::Usage;

/// The audit record of one request as it is being served: opened when the request
/// arrives, filled in by whoever learns something (auth, the handler), and finished
/// exactly once — by the response, or by the end of its stream.
pub struct RequestAudit {
    log: AuditLog,
    /// The client's address, to keep a flood of refused requests in check.
    peer: Option<std::net::IpAddr>,
    /// The client's W3C trace context, passed on to the upstream (not recorded).
    traceparent: Option<String>,
    started: Instant,
    record: std::sync::Mutex<AuditRecord>,
    deferred: AtomicBool,
    finished: AtomicBool,
}

impl RequestAudit {
    /// Opens the record of a request. Anything in its path or id that looks like a key is
    /// cut to its display prefix: the record must never hold a key. A `traceparent` that is
    /// not well formed is dropped.
    pub fn begin(
        log: AuditLog,
        method: &str,
        path: &str,
        request_id: String,
        peer: Option<std::net::IpAddr>,
        traceparent: Option<&str>,
    ) -> Arc<RequestAudit> {
        let request_id = match crate::keys::redact_keys(&request_id) {
            Cow::Borrowed(_) => request_id,
            Cow::Owned(redacted) => redacted,
        };
        let path = crate::keys::redact_keys(path).into_owned();
        log.opened();
        Arc::new(RequestAudit {
            log,
            peer,
            traceparent: traceparent.filter(|t| crate::inference::is_valid_traceparent(t)).map(String::from),
            started: Instant::now(),
            record: std::sync::Mutex::new(AuditRecord {
                timestamp: crate::time::now_rfc3339(),
                request_id,
                method: method.to_string(),
                path,
                completed: true,
                ..AuditRecord::default()
            }),
            deferred: false.into(),
            finished: false.into(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut AuditRecord)) {
        if let Ok(mut record) = self.record.lock() {
            f(&mut record);
        }
    }

    /// The log the record goes to.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// `f` of the request's id, which stays borrowed (no copy).
    pub fn with_request_id<T: Default>(&self, f: impl FnOnce(&str) -> T) -> T {
        self.record.lock().map(|r| f(&r.request_id)).unwrap_or_default()
    }

    /// What the upstream is told of this request. Its id is the request's with a suffix of
    /// its own: vLLM refuses (or worse) two requests of one id at once, and a client may
    /// send the same `X-Request-Id` twice; the audit row's id starts vLLM's.
    pub fn trace(&self) -> crate::inference::Trace {
        let suffix = crate::secrets::unique_suffix();
        let request_id = self.with_request_id(|id| format!("{id}-{suffix:08x}"));
        // The edge makes ids that are plain tokens; one that is no header value is not sent.
        let request_id = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(request_id)).ok();
        crate::inference::Trace { request_id, traceparent: self.traceparent.clone(), model: None }
    }

    /// Records who the request acts as.
    pub fn set_principal(&self, principal: &Principal) {
        self.update(|r| {
            r.key_id = Some(principal.key_id);
            r.key_prefix = Some(principal.key_prefix.clone());
            r.user_id = principal.user_id.clone();
        });
    }

    /// Records the display prefix of a key that was refused.
    pub fn set_refused_key_prefix(&self, prefix: Option<String>) {
        self.update(|r| r.key_prefix = prefix);
    }

    /// Records the model asked for, as the client spelled it, but for NUL characters, which
    /// PostgreSQL cannot store (a row it refused would hold up every later row).
    pub(crate) fn set_model(&self, model: Option<String>) {
        let model = model.map(|m| if m.contains('\0') { m.replace('\0', "\u{FFFD}") } else { m });
        self.update(|r| r.model = model);
    }

    /// Records how long the request waited its turn for the engine.
    pub(crate) fn set_queued(&self, queued: std::time::Duration) {
        self.log.metrics().observe_admission_wait(queued);
        let queued_ms = u64::try_from(queued.as_millis()).unwrap_or(u64::MAX);
        self.update(|r| r.queued_ms = Some(queued_ms));
    }

    pub(crate) fn set_usage(&self, usage: Option<Usage>) {
        self.update(|r| {
            r.tokens_input = usage.map(|u| u.prompt_tokens);
            r.tokens_output = usage.map(|u| u.completion_tokens);
        });
    }

    /// Records when the upstream was asked and answered.
    pub(crate) fn set_upstream(&self, timing: crate::metrics::UpstreamTiming) {
        let ttft_ms = timing
            .first_byte
            .map(|first| u64::try_from(first.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX));
        self.update(|r| {
            r.upstream = Some(timing);
            r.ttft_ms = ttft_ms;
        });
    }

    /// The response body will finish this record (a stream); the response itself must not.
    pub(crate) fn defer(&self) {
        if !self.deferred.swap(true, Ordering::SeqCst) {
            // A stream is not waited for by rows finishing meanwhile (see `staging`).
            self.log.closed();
        }
    }

    pub fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::SeqCst)
    }

    /// Completes the record; the returned future resolves when the row is safe (see
    /// [`AuditLog::record`]), with whether it is. A second call does nothing.
    pub fn finish(
        &self,
        status: u16,
        completed: bool,
        error_code: Option<ErrorCode>,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut record = None;
        let stream = self.is_deferred();
        if !self.finished.swap(true, Ordering::SeqCst) {
            let took = self.started.elapsed();
            let latency_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            record = self
                .record
                .lock()
                .map(|mut r| {
                    r.status = status;
                    r.latency_ms = latency_ms;
                    r.completed = completed;
                    r.error_code = error_code;
                    std::mem::take(&mut *r)
                })
                .ok();
            if let Some(record) = &record {
                self.log.metrics().observe_request(record, took, record.upstream.as_ref());
            }
            if !stream {
                self.log.closed();
            }
        }
        // Staged now; written when the future is awaited, or dropped unawaited.
        let pending = record.and_then(|record| self.log.enqueue_unless_flood(record, self.peer));
        async move {
            match pending {
                None => true,
                Some(pending) if stream => pending.safe_at_once().await,
                Some(pending) => pending.safe().await,
            }
        }
    }
}

/// The status recorded for a request whose client left before it was answered (the
/// convention nginx uses; it is never sent).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Drop for RequestAudit {
    /// A request dropped before it was answered (the client went away while the gateway
    /// waited on the upstream) still leaves its row.
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            drop(self.finish(CLIENT_CLOSED_REQUEST, false, Some(ErrorCode::ClientDisconnected)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_is_still_recorded() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        let request = RequestAudit::begin(audit.clone(), "POST", "/v1/completions", "gone-1".into(), None, None);
        drop(request);
        audit.shutdown().await;
        let conn = db.connect().await.unwrap();
        let row = storage::audit::by_request_id(&conn, "gone-1").await.unwrap().unwrap();
        assert_eq!((row.status, row.completed), (CLIENT_CLOSED_REQUEST, false));
        assert_eq!(row.error_code.as_deref(), Some("client_disconnected"));
    }

    /// A started audit log on a test database.
    async fn started() -> (tempfile::TempDir, Arc<storage::Db>, AuditLog) {
        let (dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        (dir, db, audit)
    }

    fn begin(audit: &AuditLog, id: &str) -> Arc<RequestAudit> {
        RequestAudit::begin(audit.clone(), "POST", "/v1/chat/completions", id.into(), None, None)
    }

    /// The request ids in the journal, in order.
    fn journaled(db: &storage::Db) -> Vec<String> {
        let journal = super::super::journal::Journal::read_existing(db.path()).unwrap();
        journal.into_iter().map(|r| r.record.request_id).collect()
    }

    #[tokio::test]
    async fn requests_that_finish_together_are_journaled_in_one_write_before_any_is_answered() {
        let (_dir, db, audit) = started().await;
        let requests: Vec<Arc<RequestAudit>> = (0..3).map(|i| begin(&audit, &format!("r-{i}"))).collect();
        // Each finishes in a task of its own, on this one thread, as a server's requests do.
        let answered: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let (db, id) = (db.clone(), request.with_request_id(str::to_string));
                tokio::spawn(async move {
                    assert!(request.finish(200, true, None).await);
                    journaled(&db).contains(&id)
                })
            })
            .collect();
        for journaled in futures_util::future::join_all(answered).await {
            assert!(journaled.unwrap(), "answered before its row was in the journal");
        }
        assert_eq!(audit.stats().journal_writes, 1);

        // A request alone is written at once, by itself.
        assert!(begin(&audit, "r-3").finish(200, true, None).await);
        assert_eq!(audit.stats().journal_writes, 2);
        audit.shutdown().await;
        assert_eq!(audit.stats().rows, 4);
    }

    #[tokio::test]
    async fn while_others_are_in_progress_an_answer_waits_a_turn_and_a_stream_does_not() {
        use futures_util::FutureExt;
        let (_dir, _db, audit) = started().await;
        let begin = |id: &str| begin(&audit, id);
        let _in_progress = begin("other");
        let stream = begin("stream");
        stream.defer();
        // Its closing frame waits for the row: a turn would split it from the events before.
        assert_eq!(stream.finish(200, true, None).now_or_never(), Some(true));
        assert_eq!(audit.stats().journal_writes, 1);

        let answer = begin("answer");
        let mut finished = std::pin::pin!(answer.finish(200, true, None));
        assert!(futures_util::poll!(&mut finished).is_pending(), "no turn given to the request in progress");
        assert!(finished.await);
        assert_eq!(audit.stats().journal_writes, 2);
    }

    #[tokio::test]
    async fn a_row_waiting_its_turn_is_kept_when_its_answer_is_dropped_or_the_log_is_flushed() {
        use futures_util::FutureExt;
        let (_dir, db, audit) = started().await;
        let begin = |id: &str| begin(&audit, id);
        // A stream in progress is not waited for: its row comes only at its end.
        let stream = begin("stream");
        stream.defer();
        assert_eq!(begin("alone").finish(200, true, None).now_or_never(), Some(true));

        let _in_progress = begin("other");
        let mut dropped = Box::pin(begin("dropped").finish(499, false, None));
        assert!(futures_util::poll!(&mut dropped).is_pending());
        drop(dropped);
        assert_eq!(journaled(&db), ["alone", "dropped"], "kept as the answer was dropped mid-turn");

        let mut flushed = Box::pin(begin("flushed").finish(200, true, None));
        assert!(futures_util::poll!(&mut flushed).is_pending());
        assert!(audit.flush().await);
        let conn = db.connect().await.unwrap();
        assert!(storage::audit::by_request_id(&conn, "flushed").await.unwrap().is_some(), "a flush takes staged rows");
        assert!(flushed.await);
    }
}
