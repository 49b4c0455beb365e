//! The audit trail: one row and one JSON log line per request, failed and
//! unauthenticated ones included. Never a raw key, never a request body.
//!
//! Rows go through one writer that commits whatever has queued up in a single
//! transaction (group commit), so audit writes never serialize requests. A caller may wait
//! for its row to be committed before it answers, which is how a request that was
//! answered cannot lose its row in a crash; on shutdown the writer drains its queue.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, VaultError};
use crate::storage::{self, Db};

/// What is recorded about one request.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    pub timestamp: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The key that was used, to move its `last_used_at`; not stored in the row.
    pub key_id: Option<i64>,
    pub key_prefix: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    /// False when the answer was cut short (upstream failure, client gone).
    pub completed: bool,
    pub error_code: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub timestamp: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub key_prefix: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    pub completed: bool,
    pub error_code: Option<String>,
}

enum Message {
    Record(Box<AuditRecord>, Option<oneshot::Sender<()>>),
    Shutdown(oneshot::Sender<()>),
}

/// The most rows committed in one transaction.
const MAX_BATCH: usize = 512;
/// A key's `last_used_at` is written at most this often: it is for humans, and writing it
/// with every batch would add a page to every commit.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);
/// Attempts to store a batch before its rows are written to the log instead.
const WRITE_ATTEMPTS: u32 = 6;

/// The handle requests use to record themselves. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::UnboundedSender<Message>,
}

impl AuditLog {
    /// Starts the writer on a thread of its own, so a database busy with another
    /// process's write never blocks a thread that serves requests.
    ///
    /// The writer never checkpoints the WAL itself (a checkpoint's fsync would stall the
    /// requests waiting on its commit); a second thread does, in the background, until the
    /// writer stops.
    pub async fn start(db: Arc<Db>) -> Result<AuditLog> {
        let writer_conn = db.connect().await?;
        storage::disable_autocheckpoint(&writer_conn).await?;
        let writer = storage::audit::BatchWriter::new(writer_conn).await?;
        let checkpoint_conn = db.connect().await?;
        let (queue, rx) = mpsc::unbounded_channel();
        let (stopped, stop) = tokio::sync::watch::channel(false);
        let threads = |name: &str| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map(|runtime| (runtime, std::thread::Builder::new().name(name.into())))
                .map_err(|e| VaultError::internal("starting the audit writer", e))
        };
        let (runtime, thread) = threads("vault-audit")?;
        thread
            .spawn(move || {
                runtime.block_on(write_loop(writer, rx));
                let _ = stopped.send(true);
            })
            .map_err(|e| VaultError::internal("starting the audit writer", e))?;
        let (runtime, thread) = threads("vault-checkpoint")?;
        thread
            .spawn(move || runtime.block_on(checkpoint_loop(checkpoint_conn, stop)))
            .map_err(|e| VaultError::internal("starting the audit writer", e))?;
        Ok(AuditLog { queue })
    }

    /// Logs the request line and stores the row; returns once the row is committed.
    pub async fn record(&self, record: AuditRecord) {
        let (done, committed) = oneshot::channel();
        self.enqueue(record, Some(done));
        // An Err means the writer is gone (shut down): the row went to the log instead.
        let _ = committed.await;
    }

    /// Logs the request line and queues the row without waiting (for a request whose
    /// client has already left, so nobody waits for an answer).
    pub fn record_detached(&self, record: AuditRecord) {
        self.enqueue(record, None);
    }

    fn enqueue(&self, record: AuditRecord, done: Option<oneshot::Sender<()>>) {
        log_request_line(&record);
        if let Err(mpsc::error::SendError(Message::Record(record, _))) =
            self.queue.send(Message::Record(Box::new(record), done))
        {
            log_unstored(&record);
        }
    }

    /// Stores everything queued so far and stops the writer. Records after this are
    /// written to the log only.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Message::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

async fn checkpoint_loop(conn: libsql::Connection, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let stopping = tokio::time::timeout(CHECKPOINT_INTERVAL, stop.changed()).await.is_ok();
        // PASSIVE: copies what it can without waiting on, or blocking, the writer.
        if let Err(err) = storage::checkpoint(&conn).await {
            tracing::warn!(error = %err.message, "WAL checkpoint failed; retrying");
        }
        if stopping {
            return;
        }
    }
}

async fn write_loop(writer: storage::audit::BatchWriter, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut last_used = LastUsed::default();
    loop {
        if rx.recv_many(&mut messages, MAX_BATCH).await == 0 {
            return;
        }
        let mut shutdown = None;
        let mut records = Vec::with_capacity(messages.len());
        let mut waiters = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            match message {
                Message::Record(record, done) => {
                    records.push(record);
                    waiters.extend(done);
                }
                Message::Shutdown(done) => shutdown = Some(done),
            }
        }
        store_with_retries(&writer, &records, &last_used.due(&records)).await;
        for waiter in waiters {
            let _ = waiter.send(());
        }
        if let Some(done) = shutdown {
            // Nothing can be queued behind the shutdown message that we would miss:
            // anything sent later finds the channel closed and goes to the log.
            rx.close();
            while let Ok(Message::Record(record, done)) = rx.try_recv() {
                store_with_retries(&writer, &[record], &[]).await;
                drop(done);
            }
            let _ = done.send(());
            return;
        }
    }
}

/// When each key's `last_used_at` was last written by this writer.
#[derive(Default)]
struct LastUsed {
    written: std::collections::HashMap<i64, std::time::Instant>,
}

impl LastUsed {
    /// The keys of `records` whose `last_used_at` is due, with their newest use.
    fn due(&mut self, records: &[Box<AuditRecord>]) -> Vec<(i64, String)> {
        let now = std::time::Instant::now();
        let mut due: Vec<(i64, String)> = Vec::new();
        for r in records {
            let Some(key_id) = r.key_id else { continue };
            if let Some(entry) = due.iter_mut().find(|(id, _)| *id == key_id) {
                if entry.1 < r.timestamp {
                    entry.1 = r.timestamp.clone();
                }
                continue;
            }
            if self.written.get(&key_id).is_none_or(|at| now.duration_since(*at) >= LAST_USED_RESOLUTION) {
                self.written.insert(key_id, now);
                due.push((key_id, r.timestamp.clone()));
            }
        }
        due
    }
}

async fn store_with_retries(
    writer: &storage::audit::BatchWriter,
    records: &[Box<AuditRecord>],
    last_used: &[(i64, String)],
) {
    let refs: Vec<&AuditRecord> = records.iter().map(|r| r.as_ref()).collect();
    let last_used: Vec<(i64, &str)> = last_used.iter().map(|(id, at)| (*id, at.as_str())).collect();
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=WRITE_ATTEMPTS {
        match writer.write(&refs, &last_used).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(attempt, rows = refs.len(), error = %err.message, "audit batch not stored yet");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    for record in refs {
        log_unstored(record);
    }
}

fn log_request_line(r: &AuditRecord) {
    tracing::info!(
        target: "vault::request",
        request_id = %r.request_id,
        method = %r.method,
        path = %r.path,
        user_key_prefix = r.key_prefix.as_deref(),
        user_id = r.user_id.as_deref(),
        model = r.model.as_deref(),
        status = r.status,
        latency_ms = r.latency_ms,
        tokens_input = r.tokens_input,
        tokens_output = r.tokens_output,
        completed = r.completed,
        error_code = r.error_code.as_deref(),
        "request"
    );
}

/// Last resort when the database refuses a row: keep it in the log so the record survives.
fn log_unstored(r: &AuditRecord) {
    tracing::error!(
        target: "vault::audit_unstored",
        timestamp = %r.timestamp,
        request_id = %r.request_id,
        method = %r.method,
        path = %r.path,
        user_key_prefix = r.key_prefix.as_deref(),
        status = r.status,
        "audit row could not be stored"
    );
}

/// The audit record of one request as it is being served: opened when the request
/// arrives, filled in by whoever learns something (auth, the handler), and finished
/// exactly once — by the response, or by the end of its stream.
pub struct RequestAudit {
    log: AuditLog,
    started: std::time::Instant,
    record: std::sync::Mutex<AuditRecord>,
    deferred: std::sync::atomic::AtomicBool,
    finished: std::sync::atomic::AtomicBool,
}

impl RequestAudit {
    pub fn begin(log: AuditLog, method: &str, path: &str, request_id: String) -> Arc<RequestAudit> {
        Arc::new(RequestAudit {
            log,
            started: std::time::Instant::now(),
            record: std::sync::Mutex::new(AuditRecord {
                timestamp: crate::time::now_rfc3339(),
                request_id,
                method: method.to_string(),
                path: path.to_string(),
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

    pub fn request_id(&self) -> String {
        self.record.lock().map(|r| r.request_id.clone()).unwrap_or_default()
    }

    pub fn set_principal(&self, principal: &crate::keys::Principal) {
        self.update(|r| {
            r.key_id = Some(principal.key_id);
            r.key_prefix = Some(principal.key_prefix.clone());
            r.user_id = principal.user_id.clone();
        });
    }

    /// For a refused key: its display prefix, when it has the shape of a key.
    pub fn set_presented_key(&self, raw_key: &str) {
        if let Some(prefix) = crate::keys::display_prefix(raw_key) {
            self.update(|r| r.key_prefix = Some(prefix));
        }
    }

    pub fn set_model(&self, model: Option<String>) {
        self.update(|r| r.model = model);
    }

    pub fn set_usage(&self, usage: Option<crate::inference::Usage>) {
        self.update(|r| {
            r.tokens_input = usage.map(|u| u.prompt_tokens);
            r.tokens_output = usage.map(|u| u.completion_tokens);
        });
    }

    /// The response body will finish this record (a stream); the response itself must not.
    pub fn defer(&self) {
        self.deferred.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_deferred(&self) -> bool {
        self.deferred.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes the record and queues it at once; the returned future resolves when the
    /// row is committed. A second call does nothing.
    pub fn finish(
        &self,
        status: u16,
        completed: bool,
        error_code: Option<String>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (done, committed) = oneshot::channel();
        if !self.finished.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let record = self.record.lock().map(|mut r| {
                r.status = status;
                r.latency_ms = latency_ms;
                r.completed = completed;
                r.error_code = error_code;
                std::mem::take(&mut *r)
            });
            if let Ok(record) = record {
                self.log.enqueue(record, Some(done));
            }
        }
        async move {
            let _ = committed.await;
        }
    }
}

pub use crate::storage::audit::Filter;

/// Audit rows matching `filter`, newest first: `limit` 1..=1000 (default 100), skipping
/// rows with an id at or above `before_id` (for paging back in time).
pub async fn query(db: &Db, filter: &Filter, limit: Option<u32>, before_id: Option<i64>) -> Result<Vec<AuditEntry>> {
    let page = crate::validate::Page::new(limit, None, 100, 1000)?;
    validate_filter(filter)?;
    storage::audit::query(&db.connect().await?, filter, before_id.unwrap_or(i64::MAX), page.limit, true).await
}

fn validate_filter(filter: &Filter) -> Result<()> {
    for (field, value) in [("since", &filter.since), ("until", &filter.until)] {
        if value.as_deref().is_some_and(|v| crate::time::parse_rfc3339(v).is_none()) {
            return Err(VaultError::invalid("invalid_request", format!("{field}: not an RFC 3339 timestamp")));
        }
    }
    Ok(())
}

/// Export formats of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// One JSON array.
    Json,
}

impl ExportFormat {
    pub fn parse(raw: &str) -> Result<ExportFormat> {
        match raw {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            _ => Err(VaultError::invalid("invalid_request", "format: must be one of csv, json")),
        }
    }
}

const CSV_HEADER: &str = "id,timestamp,request_id,method,path,key_prefix,user_id,model,status,latency_ms,tokens_input,tokens_output,completed,error_code\n";

fn csv_field(value: &str) -> String {
    // Quote when needed; a leading formula character is defused for spreadsheet users.
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

fn csv_row(e: &AuditEntry) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        e.id,
        csv_field(&e.timestamp),
        csv_field(&e.request_id),
        csv_field(&e.method),
        csv_field(&e.path),
        opt(&e.key_prefix),
        opt(&e.user_id),
        opt(&e.model),
        e.status,
        e.latency_ms,
        num(e.tokens_input),
        num(e.tokens_output),
        e.completed,
        opt(&e.error_code)
    )
}

/// Writes every row matching `filter`, oldest first, to `out` — page by page, so memory
/// stays constant however long the log. Returns the number of rows written.
pub async fn export(
    db: &Db,
    filter: &Filter,
    format: ExportFormat,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    validate_filter(filter)?;
    let conn = db.connect().await?;
    let io = |e: std::io::Error| VaultError::internal("writing an audit export", e);
    let mut written = 0u64;
    let mut after = 0i64;
    match format {
        ExportFormat::Csv => out.write_all(CSV_HEADER.as_bytes()).map_err(io)?,
        ExportFormat::Json => out.write_all(b"[").map_err(io)?,
    }
    loop {
        let page = storage::audit::query(&conn, filter, after, 1000, false).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for entry in &page {
            match format {
                ExportFormat::Csv => out.write_all(csv_row(entry).as_bytes()).map_err(io)?,
                ExportFormat::Json => {
                    if written > 0 {
                        out.write_all(b",").map_err(io)?;
                    }
                    out.write_all(b"\n").map_err(io)?;
                    serde_json::to_writer(&mut *out, entry)
                        .map_err(|e| VaultError::internal("writing an audit export", e))?;
                }
            }
            written += 1;
        }
    }
    if format == ExportFormat::Json {
        out.write_all(b"\n]\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(written)
}

/// The status recorded for a request whose client left before it was answered (the
/// convention nginx uses; it is never sent).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Drop for RequestAudit {
    /// A request dropped before it was answered (the client went away while the gateway
    /// waited on the upstream) still leaves its row.
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::SeqCst) {
            drop(self.finish(CLIENT_CLOSED_REQUEST, false, Some("client_disconnected".into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            timestamp: crate::time::now_rfc3339(),
            request_id: format!("req-{i}"),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            latency_ms: 3,
            tokens_input: Some(5),
            tokens_output: Some(7),
            completed: true,
            ..AuditRecord::default()
        }
    }

    #[tokio::test]
    async fn recorded_rows_are_committed_before_record_returns() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        audit.record(record(1)).await;
        let conn = db.connect().await.unwrap();
        let row = storage::audit::by_request_id(&conn, "req-1").await.unwrap().unwrap();
        assert_eq!((row.tokens_input, row.tokens_output, row.status), (Some(5), Some(7), 200));
    }

    #[tokio::test]
    async fn shutdown_stores_every_detached_row() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        for i in 0..2000 {
            audit.record_detached(record(i));
        }
        audit.shutdown().await;
        let conn = db.connect().await.unwrap();
        assert_eq!(storage::audit::count(&conn).await.unwrap(), 2000);
    }

    #[tokio::test]
    async fn rows_are_filtered_paged_and_exported() {
        let (_dir, db) = storage::test_db().await;
        let records: Vec<AuditRecord> = (0..2500)
            .map(|i| AuditRecord {
                user_id: Some(if i % 2 == 0 { "even".into() } else { "odd".into() }),
                path: if i % 5 == 0 { "/vault/health".into() } else { "/v1/models".into() },
                model: Some("=SUM(A1)".into()),
                ..record(i)
            })
            .collect();
        let refs: Vec<&AuditRecord> = records.iter().collect();
        storage::audit::BatchWriter::new(db.connect().await.unwrap()).await.unwrap().write(&refs, &[]).await.unwrap();

        let filter = Filter { user_id: Some("even".into()), path_prefix: Some("/v1/".into()), ..Filter::default() };
        let newest = query(&db, &filter, Some(10), None).await.unwrap();
        assert_eq!(newest.len(), 10);
        assert!(newest.windows(2).all(|w| w[0].id > w[1].id));
        assert!(newest.iter().all(|e| e.user_id.as_deref() == Some("even") && e.path == "/v1/models"));
        let older = query(&db, &filter, Some(10), Some(newest[9].id)).await.unwrap();
        assert!(older[0].id < newest[9].id);
        let bad = Filter { since: Some("yesterday".into()), ..Filter::default() };
        assert!(query(&db, &bad, None, None).await.unwrap_err().message.starts_with("since"));

        let mut csv = Vec::new();
        assert_eq!(export(&db, &filter, ExportFormat::Csv, &mut csv).await.unwrap(), 1000);
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 1001);
        assert!(csv.lines().nth(1).unwrap().contains(",'=SUM(A1),"), "formulas are defused");
        let mut json = Vec::new();
        export(&db, &Filter::default(), ExportFormat::Json, &mut json).await.unwrap();
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed.len(), 2500);
        assert!(parsed[0]["id"].as_i64() < parsed[1]["id"].as_i64());
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_is_still_recorded() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        let request = RequestAudit::begin(audit.clone(), "POST", "/v1/completions", "gone-1".into());
        drop(request);
        audit.shutdown().await;
        let conn = db.connect().await.unwrap();
        let row = storage::audit::by_request_id(&conn, "gone-1").await.unwrap().unwrap();
        assert_eq!((row.status, row.completed), (CLIENT_CLOSED_REQUEST, false));
        assert_eq!(row.error_code.as_deref(), Some("client_disconnected"));
    }

    #[tokio::test]
    async fn concurrent_records_are_grouped_and_all_stored() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(record(i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let conn = db.connect().await.unwrap();
        assert_eq!(storage::audit::count(&conn).await.unwrap(), 300);
    }
}
