//! The audit writer: one thread that commits whatever rows have queued up in one
//! transaction (group commit), so audit writes never serialize requests. A caller may wait
//! for its row to be committed before it answers, which is how a request that was answered
//! cannot lose its row in a crash; on shutdown the writer drains its queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, VaultError};
use crate::model::audit::AuditRecord;
use crate::storage::{self, Db};

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
    stats: Arc<Counters>,
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows committed.
    pub rows: u64,
    /// Transactions that committed them.
    pub commits: u64,
}

#[derive(Default)]
struct Counters {
    rows: AtomicU64,
    commits: AtomicU64,
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
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let (runtime, thread) = threads("vault-audit")?;
        thread
            .spawn(move || {
                runtime.block_on(write_loop(writer, rx, &counters));
                let _ = stopped.send(true);
            })
            .map_err(|e| VaultError::internal("starting the audit writer", e))?;
        let (runtime, thread) = threads("vault-checkpoint")?;
        thread
            .spawn(move || runtime.block_on(checkpoint_loop(checkpoint_conn, stop)))
            .map_err(|e| VaultError::internal("starting the audit writer", e))?;
        Ok(AuditLog { queue, stats })
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            rows: self.stats.rows.load(Ordering::Relaxed),
            commits: self.stats.commits.load(Ordering::Relaxed),
        }
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

    pub(super) fn enqueue(&self, record: AuditRecord, done: Option<oneshot::Sender<()>>) {
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

async fn write_loop(writer: storage::audit::BatchWriter, mut rx: mpsc::UnboundedReceiver<Message>, stats: &Counters) {
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
        store_with_retries(&writer, &records, &last_used.due(&records), stats).await;
        for waiter in waiters {
            let _ = waiter.send(());
        }
        if let Some(done) = shutdown {
            // Nothing can be queued behind the shutdown message that we would miss:
            // anything sent later finds the channel closed and goes to the log.
            rx.close();
            while let Ok(Message::Record(record, done)) = rx.try_recv() {
                store_with_retries(&writer, &[record], &[], stats).await;
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
    stats: &Counters,
) {
    let refs: Vec<&AuditRecord> = records.iter().map(|r| r.as_ref()).collect();
    let last_used: Vec<(i64, &str)> = last_used.iter().map(|(id, at)| (*id, at.as_str())).collect();
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=WRITE_ATTEMPTS {
        match writer.write(&refs, &last_used).await {
            Ok(()) => {
                stats.rows.fetch_add(refs.len() as u64, Ordering::Relaxed);
                stats.commits.fetch_add(1, Ordering::Relaxed);
                return;
            }
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
        error_code = r.error_code.map(|c| c.as_str()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_record;

    #[tokio::test]
    async fn recorded_rows_are_committed_before_record_returns() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        audit.record(test_record(1)).await;
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
            audit.record_detached(test_record(i));
        }
        audit.shutdown().await;
        let conn = db.connect().await.unwrap();
        assert_eq!(storage::audit::count(&conn).await.unwrap(), 2000);
    }

    #[tokio::test]
    async fn rows_that_queue_up_behind_a_busy_database_are_committed_together() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        // Another connection holds the write lock while 300 rows queue up.
        let blocker = db.connect().await.unwrap();
        let lock = storage::write_transaction(&blocker).await.unwrap();
        for i in 0..300 {
            audit.record_detached(test_record(i));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        lock.rollback().await.unwrap();
        audit.shutdown().await;
        let stats = audit.stats();
        assert_eq!(stats.rows, 300);
        // The writer may have taken the first row before the rest queued; the others wait
        // for the lock together and go in one transaction.
        assert!(stats.commits <= 2, "{stats:?}");
        let conn = db.connect().await.unwrap();
        assert_eq!(storage::audit::count(&conn).await.unwrap(), 300);
    }
}
