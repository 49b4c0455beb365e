//! The audit writer: rows are appended to the journal before their requests are answered
//! (see `journal`), and one thread commits them to the database in batches — whatever
//! queued up over at most [`COMMIT_DELAY`], in one transaction. On shutdown it commits
//! everything and removes the journal; after a crash, the next start commits what the
//! journal holds beyond the database.
//!
//! The writer also checkpoints the WAL itself, between its commits: with no commit racing
//! it, the checkpoint finishes the WAL and the next commit starts it over, so it does not
//! grow without bound under continuous load.
//!
//! While it keeps up, it makes way for requests: its thread runs at the lowest priority
//! (see `priority`), and it yields the CPU every few tens of microseconds of work (see
//! `storage::sql::GiveWay`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::flood::{FloodGuard, this_minute};
use super::journal::Journal;
use super::priority::Priority;
use super::staging::{Safe, Staging};
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};
use crate::metrics::Metrics;
use crate::model::audit::AuditRecord;
use crate::storage::{self, Db};

enum Message {
    /// A row, with its journal sequence number if it was journaled (else a waiter that
    /// wants to know whether it got committed).
    Record(Box<AuditRecord>, Option<u64>, Option<oneshot::Sender<bool>>),
    /// Commit everything queued before this now, then say whether that worked.
    Flush(oneshot::Sender<bool>),
    Shutdown(oneshot::Sender<()>),
}

/// The most rows committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers rows after the first before it commits them: the longer,
/// the fewer (and larger) transactions. A transaction writes every page it changes to the
/// WAL once (the table's last pages, its index by time, the rollups, and every 8,192 rows
/// the indexes by user and by key), so a row costs less in a large batch.
/// Reads of the audit trail through this process flush first.
pub const COMMIT_DELAY: Duration = Duration::from_millis(50);
/// While it stores a batch, the writer gives way to requests between the rows it prepares
/// and between statements (see `storage::sql::GiveWay`), so that a batch never holds a
/// request up for long; but only while
/// fewer rows than this wait behind the batch (with more it is falling behind, and takes
/// back its priority: see `priority`) ...
const GIVE_WAY_BELOW: i64 = MAX_BATCH as i64;
/// ... and only this long into a transaction. The transaction holds the database's write
/// lock, which a write from elsewhere (a conversation, the CLI) waits for, and under full
/// load each turn given to requests can last a scheduler slice.
const GIVE_WAY_FOR: Duration = Duration::from_millis(20);
/// The WAL is checkpointed after this many commits, or after this long with any commit.
const CHECKPOINT_COMMITS: u64 = 100;
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// A key's `last_used_at` is written at most this often: it is for humans, and writing it
/// with every batch would add a page to every commit.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);
/// Failed attempts to store a batch before the writer reports it failing (and the gateway
/// stops serving what must be audited). It keeps retrying: the rows are in the journal.
const WRITE_ATTEMPTS: u32 = 3;
/// The longest pause between attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often the free space of the database's disk is looked at.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The handle requests use to record themselves. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    queue: mpsc::UnboundedSender<Message>,
    /// The writer's thread, woken early for a message someone waits on.
    writer: std::thread::Thread,
    staging: Staging,
    shared: Arc<Shared>,
    flood: FloodGuard,
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows committed.
    pub rows: u64,
    /// Transactions that committed them.
    pub commits: u64,
    /// WAL checkpoints run by the writer.
    pub checkpoints: u64,
    /// Rows recovered from the journal at start-up.
    pub recovered: u64,
    /// Writes to the journal (failed ones too): one for all the rows of requests that
    /// finished together.
    pub journal_writes: u64,
}

#[derive(Default)]
struct Shared {
    rows: AtomicU64,
    commits: AtomicU64,
    checkpoints: AtomicU64,
    recovered: AtomicU64,
    /// The database refused the last attempts to store rows.
    failing: AtomicBool,
    /// The database's disk has less free space than the configured minimum.
    low_disk: AtomicBool,
    /// Rows sent to the writer and not yet stored.
    pending: std::sync::atomic::AtomicI64,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// [`start_with`](Self::start_with) without a free-space minimum, its chain's
    /// checkpoints signed with an empty key.
    pub async fn start(db: Arc<Db>) -> Result<AuditLog> {
        Self::start_with(db, 0, Vec::new()).await
    }

    /// Commits what a previous run left in the journal, then starts the writer on a thread
    /// of its own, so a database busy with another process's write never blocks a thread
    /// that serves requests. Below `min_free_bytes` of free space on the database's disk,
    /// the log reports itself unavailable (see [`available`](Self::available)). The hash
    /// chain's checkpoints are signed with `chain_key` (the server secret).
    pub async fn start_with(db: Arc<Db>, min_free_bytes: u64, chain_key: Vec<u8>) -> Result<AuditLog> {
        let writer = storage::audit::BatchWriter::new(&db, chain_key.clone()).await?;
        let shared = Arc::new(Shared::default());
        let lock = Journal::lock(db.path()).map_err(|e| {
            VaultError::config(format!("VAULT_DATA_DIR: cannot use the audit journal of {}: {e}", db.path().display()))
        })?;
        let last_seq = recover(&db, &writer, &shared).await?;
        let journal = Journal::start(db.path(), last_seq, lock)
            .map_err(|e| VaultError::internal("starting the audit journal", e))?;
        let journal = Arc::new(journal);
        let (queue, rx) = mpsc::unbounded_channel();
        // With IO: on PostgreSQL the writer may have to open a new connection.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VaultError::internal("starting the audit writer", e))?;
        let state = shared.clone();
        let journaled = journal.clone();
        let writer = std::thread::Builder::new()
            .name("vault-audit".into())
            .spawn(move || write_loop(&runtime, writer, rx, &journaled, &state, &Priority::of_this_thread()))
            .map_err(|e| VaultError::internal("starting the audit writer", e))?
            .thread()
            .clone();
        if min_free_bytes > 0 {
            watch_free_space(db.path(), min_free_bytes, Arc::downgrade(&shared))?;
        }
        let staging = Staging::new(journal, last_seq);
        let inner = Arc::new(Inner { queue, writer, staging, shared, flood: FloodGuard::default() });
        tokio::spawn(housekeeping(Arc::downgrade(&inner), Arc::downgrade(&db), chain_key));
        Ok(AuditLog { inner })
    }

    /// Records a row, unless it belongs to a flood of refused requests from `peer` (see
    /// `flood`): then it is only counted.
    pub(super) fn enqueue_unless_flood(&self, record: AuditRecord, peer: Option<std::net::IpAddr>) -> Option<Pending> {
        let Some(peer) = peer.filter(|_| record.status == 401) else {
            return Some(self.enqueue(record));
        };
        let (keep, finished) = self.inner.flood.admit(peer, this_minute(), &record);
        if let Some(summary) = finished {
            drop(self.enqueue(summary));
        }
        keep.then(|| self.enqueue(record))
    }

    /// Counts a request as begun, until [`closed`](Self::closed): rows finished while
    /// others are in progress wait a moment to be written with theirs.
    pub(super) fn opened(&self) {
        self.inner.staging.opened();
    }

    /// Counts a request as finished, or as a stream (see [`opened`](Self::opened)).
    pub(super) fn closed(&self) {
        self.inner.staging.closed();
    }

    /// Whether rows can be kept now; an error (503 `audit_unavailable`) says why not.
    /// Nothing that must be audited is served while it is not.
    pub fn available(&self) -> Result<()> {
        let unavailable = |why: &str| {
            VaultError::new(ErrorKind::Unavailable, ErrorCode::AuditUnavailable, why)
                .with_suggestion("Retry later; the administrator can see why in /vault/health.")
        };
        if self.inner.shared.low_disk.load(Ordering::Relaxed) {
            return Err(unavailable("The disk that holds the audit trail is nearly full."));
        }
        if self.inner.shared.failing.load(Ordering::Relaxed) || self.inner.queue.is_closed() {
            return Err(unavailable("The audit trail cannot be written now."));
        }
        Ok(())
    }

    /// The metrics of the gateway this log belongs to (see `metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.shared.metrics
    }

    /// Rows sent to the writer and not yet stored.
    pub fn queue_depth(&self) -> i64 {
        self.inner.shared.pending.load(Ordering::Relaxed).max(0)
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            rows: self.inner.shared.rows.load(Ordering::Relaxed),
            commits: self.inner.shared.commits.load(Ordering::Relaxed),
            checkpoints: self.inner.shared.checkpoints.load(Ordering::Relaxed),
            recovered: self.inner.shared.recovered.load(Ordering::Relaxed),
            journal_writes: self.inner.staging.writes(),
        }
    }

    /// Logs the request line and records the row; returns once the row is safe — in the
    /// journal, or, when the journal cannot be written, committed to the database — with
    /// whether it is.
    pub async fn record(&self, record: AuditRecord) -> bool {
        self.enqueue(record).safe().await
    }

    /// Logs the request line and records the row without waiting (for a request whose
    /// client has already left, so nobody waits for an answer).
    pub fn record_detached(&self, record: AuditRecord) {
        drop(self.enqueue(record));
    }

    /// Logs the request line and stages the row for the journal; the row is written
    /// there, and queued for the writer, by [`Pending::safe`] or when the `Pending` is
    /// dropped.
    pub(super) fn enqueue(&self, record: AuditRecord) -> Pending {
        super::line::log_request_line(&record);
        let state = match self.inner.staging.stage(Box::new(record)) {
            Ok(seq) => PendingState::Staged(seq),
            Err(record) => {
                let broken = std::io::Error::other("the audit staging broke");
                PendingState::Settled(Safe::Committing(self.wait_for_commit(record, &broken)))
            }
        };
        Pending { log: self.clone(), state }
    }

    /// Makes sure the staged row `seq` is written to the journal (with every row staged
    /// before it) and queued for the writer.
    fn write_through(&self, seq: u64) -> Safe {
        self.inner.staging.write_through(seq, &|record, journaled| self.hand_on(record, journaled))
    }

    /// Queues a staged row for the writer: with its sequence number once its line is in
    /// the journal, or else waited on until it is committed.
    fn hand_on(
        &self,
        record: Box<AuditRecord>,
        journaled: Result<u64, &std::io::Error>,
    ) -> Option<oneshot::Receiver<bool>> {
        let seq = match journaled {
            Ok(seq) => seq,
            Err(err) => return Some(self.wait_for_commit(record, err)),
        };
        match self.inner.queue.send(Message::Record(record, Some(seq), None)) {
            Ok(()) => self.counted_in(),
            Err(mpsc::error::SendError(Message::Record(record, ..))) => log_unstored(&record),
            Err(_) => {}
        }
        None
    }

    /// The fallback when the journal cannot take a row: the caller waits for its commit.
    fn wait_for_commit(&self, record: Box<AuditRecord>, err: &std::io::Error) -> oneshot::Receiver<bool> {
        tracing::error!(error = %err, "audit journal not writable; waiting for the database instead");
        let (done, committed) = oneshot::channel::<bool>();
        if self.inner.shared.failing.load(Ordering::Relaxed) {
            // The database refuses rows too: nothing can keep this one.
            log_unstored(&record);
            let _ = done.send(false);
            return committed;
        }
        match self.send_awaited(Message::Record(record, None, Some(done))) {
            Ok(()) => self.counted_in(),
            Err(mpsc::error::SendError(Message::Record(record, ..))) => log_unstored(&record),
            Err(_) => {}
        }
        committed
    }

    /// Counts a row the writer now holds (and will store or give up, counting it out).
    fn counted_in(&self) {
        self.inner.shared.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a message someone waits on, and wakes the writer if it is gathering a batch.
    fn send_awaited(&self, message: Message) -> Result<(), mpsc::error::SendError<Message>> {
        let sent = self.inner.queue.send(message);
        self.inner.writer.unpark();
        sent
    }

    /// Returns once every row recorded before the call is committed to the database (or
    /// the database refused them, for now: then false).
    pub async fn flush(&self) -> bool {
        self.write_staged();
        let (done, flushed) = oneshot::channel();
        self.send_awaited(Message::Flush(done)).is_ok() && flushed.await.unwrap_or(false)
    }

    /// Commits everything queued so far, removes the journal and stops the writer. Records
    /// after this are written to the log only.
    pub async fn shutdown(&self) {
        for summary in self.inner.flood.take_before(u64::MAX) {
            drop(self.enqueue(summary));
        }
        self.write_staged();
        let (done, finished) = oneshot::channel();
        if self.send_awaited(Message::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Writes every staged row to the journal now, and queues it for the writer.
    fn write_staged(&self) {
        // Their waiters still find out about rows that could not be written.
        let _ = self.write_through(u64::MAX);
    }
}

/// A row staged for the journal (see `staging`). It is written there, and queued for the
/// writer, when [`safe`](Self::safe) is awaited, or else when this is dropped.
pub(super) struct Pending {
    log: AuditLog,
    state: PendingState,
}

enum PendingState {
    /// Staged for the journal under this number.
    Staged(u64),
    Settled(Safe),
}

impl Pending {
    /// Returns once the row is safe — in the journal, or, when the journal cannot be
    /// written, committed to the database — with whether it is.
    pub async fn safe(self) -> bool {
        self.wait(true).await
    }

    /// [`safe`](Self::safe) without giving other requests a turn first: for the row of a
    /// stream, which the stream's closing frame waits for. A turn would have the events
    /// before it flushed, and the closing frame written on its own.
    pub async fn safe_at_once(self) -> bool {
        self.wait(false).await
    }

    async fn wait(mut self, give_way: bool) -> bool {
        if matches!(self.state, PendingState::Staged(_)) && give_way && self.log.inner.staging.others_open() {
            // One turn for the other tasks of this thread: requests finishing now stage
            // their rows, and one write takes them all.
            tokio::task::yield_now().await;
        }
        match self.settle() {
            Safe::Journaled => true,
            // An Err means the writer is gone (shut down): the row went to the log instead.
            Safe::Committing(committed) => committed.await.unwrap_or(false),
            Safe::Unknown => false,
        }
    }

    /// Writes the row through if it is still staged, and takes where it stands.
    fn settle(&mut self) -> Safe {
        match std::mem::replace(&mut self.state, PendingState::Settled(Safe::Journaled)) {
            PendingState::Staged(seq) => self.log.write_through(seq),
            PendingState::Settled(safe) => safe,
        }
    }
}

impl Drop for Pending {
    /// Nobody waits for the row (the client left, or it is a summary): it is written now.
    fn drop(&mut self) {
        drop(self.settle());
    }
}

/// How often the audit log is pruned to its retention period.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Until the log is gone: writes the summaries of refused floods once their minute is
/// over, and prunes rows past the retention period every [`PRUNE_INTERVAL`].
async fn housekeeping(log: std::sync::Weak<Inner>, db: std::sync::Weak<Db>, chain_key: Vec<u8>) {
    let mut next_prune = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (Some(inner), Some(db)) = (log.upgrade(), db.upgrade()) else { return };
        let log = AuditLog { inner };
        for summary in log.inner.flood.take_before(this_minute()) {
            drop(log.enqueue(summary));
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_INTERVAL;
            match super::prune(&db, std::time::SystemTime::now(), &chain_key).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "pruned audit rows past the retention period"),
                Err(err) => tracing::warn!(error = %err.message, "could not prune the audit log"),
            }
        }
    }
}

/// Commits the journal's rows that the database does not have yet; returns the last
/// sequence number now committed.
async fn recover(db: &Db, writer: &storage::audit::BatchWriter, shared: &Shared) -> Result<u64> {
    let committed = storage::audit::journal_committed_seq(&db.connect().await?, writer.journal()).await?;
    let found = Journal::read_existing(db.path()).map_err(|e| VaultError::internal("reading the audit journal", e))?;
    let missing: Vec<_> = found.into_iter().filter(|r| r.seq > committed).collect();
    let Some(last) = missing.last().map(|r| r.seq) else {
        return Ok(committed);
    };
    for chunk in missing.chunks(MAX_BATCH) {
        let refs: Vec<&AuditRecord> = chunk.iter().map(|r| &r.record).collect();
        writer.write(&refs, &[], chunk.last().map(|r| r.seq)).await?;
    }
    shared.recovered.store(missing.len() as u64, Ordering::Relaxed);
    tracing::warn!(rows = missing.len(), "committed audit rows the last run journaled but did not store");
    Ok(last)
}

/// A batch of messages taken off the queue.
#[derive(Default)]
struct Batch {
    records: Vec<AuditRecord>,
    /// Whether each record is in the journal (else it exists only here).
    journaled: Vec<bool>,
    /// The highest journal sequence number in the batch.
    journal_seq: Option<u64>,
    waiters: Vec<oneshot::Sender<bool>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Batch {
    fn push(&mut self, message: Message) {
        match message {
            Message::Record(record, seq, done) => {
                self.records.push(*record);
                self.journaled.push(seq.is_some());
                self.journal_seq = seq.or(self.journal_seq);
                self.waiters.extend(done);
            }
            Message::Flush(done) => self.waiters.push(done),
            Message::Shutdown(done) => self.shutdown = Some(done),
        }
    }

    /// Drops the rows that are in no journal, keeping them in the log instead: the
    /// database refused them and nothing else holds them.
    fn give_up_unjournaled(&mut self) {
        let mut journaled = self.journaled.iter();
        self.records.retain(|record| {
            let keep = journaled.next().copied().unwrap_or(true);
            if !keep {
                log_unstored(record);
            }
            keep
        });
        self.journaled.retain(|j| *j);
    }

    /// Takes whatever is queued now, up to `limit` rows.
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<Message>, limit: usize) {
        while self.records.len() < limit
            && let Ok(message) = rx.try_recv()
        {
            self.push(message);
        }
    }

    /// Whether someone waits for this batch (a flush, a shutdown, or a row the journal
    /// could not take): then it is not held back.
    fn is_awaited(&self) -> bool {
        !self.waiters.is_empty() || self.shutdown.is_some()
    }

    /// Lets rows queue up for up to `delay` after the first, unless someone waits: whoever
    /// does wakes the writer (see `AuditLog::send_awaited`), so it sleeps through the delay
    /// in one piece, rather than waking to look, which on a busy box would take the CPU
    /// from the requests more often.
    fn gather(&mut self, rx: &mut mpsc::UnboundedReceiver<Message>, delay: Duration) {
        let started = Instant::now();
        while !self.is_awaited() && self.records.len() < MAX_BATCH {
            let left = delay.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
            self.drain(rx, MAX_BATCH);
        }
    }
}

fn write_loop(
    runtime: &tokio::runtime::Runtime,
    writer: storage::audit::BatchWriter,
    mut rx: mpsc::UnboundedReceiver<Message>,
    journal: &Journal,
    shared: &Shared,
    priority: &Priority,
) {
    let mut last_used = LastUsed::default();
    let mut checkpoints = Checkpoints::new();
    // Rows not stored yet: this round's, and those the database refused before. They are
    // retried together, in order, so the journal's committed mark never skips a row.
    let mut batch = Batch::default();
    let mut failures = 0u32;
    loop {
        if batch.records.is_empty() && batch.waiters.is_empty() && batch.shutdown.is_none() {
            let Some(first) = rx.blocking_recv() else { return };
            batch.push(first);
        } else {
            // Retrying: wait before the next attempt, taking in what arrives meanwhile.
            std::thread::sleep(retry_delay(failures));
        }
        // While retrying, everything is taken in, so a flush or a shutdown is never stuck
        // behind rows the database refuses.
        let limit = if failures > 0 { usize::MAX } else { MAX_BATCH };
        batch.drain(&mut rx, limit);
        batch.gather(&mut rx, COMMIT_DELAY);
        if is_behind(shared.pending.load(Ordering::Relaxed), batch.records.len()) {
            priority.falling_behind();
        } else if batch.records.len() < MAX_BATCH {
            // Everything queued fits in this batch.
            priority.keeping_up();
        }
        let due = last_used.due(&batch.records);
        let stored =
            runtime.block_on(store_once(&writer, &batch.records, &due, batch.journal_seq, shared, Some(priority)));
        if stored {
            if failures > 0 {
                tracing::warn!("audit rows are stored again");
            }
            failures = 0;
            shared.failing.store(false, Ordering::Relaxed);
            if let Some(seq) = batch.journal_seq {
                journal.committed(seq);
            }
            shared.pending.fetch_sub(batch.records.len() as i64, Ordering::Relaxed);
            batch.records.clear();
            batch.journaled.clear();
            batch.journal_seq = None;
        } else {
            failures += 1;
            if failures >= WRITE_ATTEMPTS {
                shared.failing.store(true, Ordering::Relaxed);
            }
        }
        // Whoever waits learns the outcome now: stored, or — after the attempts — not (a
        // row that is only in memory then goes to the log, the others stay in the journal).
        if stored || failures >= WRITE_ATTEMPTS {
            for waiter in batch.waiters.drain(..) {
                let _ = waiter.send(stored);
            }
        }
        if !stored && failures >= WRITE_ATTEMPTS {
            let before = batch.records.len();
            batch.give_up_unjournaled();
            shared.pending.fetch_sub((before - batch.records.len()) as i64, Ordering::Relaxed);
        }
        if let Some(done) = batch.shutdown.take() {
            if stored || failures >= WRITE_ATTEMPTS {
                // Nothing waits for the CPU any more, but the gateway's exit waits for this.
                priority.falling_behind();
                finish_shutdown(runtime, &writer, &mut rx, journal, shared, &mut checkpoints, stored);
                let _ = done.send(());
                return;
            }
            batch.shutdown = Some(done);
            continue;
        }
        if stored {
            checkpoints.committed();
            if checkpoints.due() {
                runtime.block_on(checkpoints.run(&writer, shared));
            }
        }
    }
}

/// The last steps of a shutdown: nothing more is taken, anything that slipped in behind
/// the shutdown message is stored with one attempt, and the journal is removed only if
/// every row it holds is in the database.
fn finish_shutdown(
    runtime: &tokio::runtime::Runtime,
    writer: &storage::audit::BatchWriter,
    rx: &mut mpsc::UnboundedReceiver<Message>,
    journal: &Journal,
    shared: &Shared,
    checkpoints: &mut Checkpoints,
    mut all_stored: bool,
) {
    // Nothing can be queued behind the shutdown message that we would miss: anything sent
    // later finds the channel closed and goes to the log.
    rx.close();
    let mut rest = Batch::default();
    while let Ok(message) = rx.try_recv() {
        rest.push(message);
    }
    if all_stored && !rest.records.is_empty() {
        all_stored = runtime.block_on(store_once(writer, &rest.records, &[], rest.journal_seq, shared, None));
    }
    for waiter in rest.waiters {
        let _ = waiter.send(all_stored);
    }
    runtime.block_on(checkpoints.run(writer, shared));
    if all_stored {
        journal.remove();
    } else {
        tracing::error!("audit rows left in the journal; the next start commits them");
    }
}

fn retry_delay(failures: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.saturating_pow(failures.min(8))).min(MAX_RETRY_DELAY)
}

/// When the writer last checkpointed the WAL, and how many commits it made since.
struct Checkpoints {
    last: Instant,
    commits_since: u64,
}

impl Checkpoints {
    fn new() -> Checkpoints {
        Checkpoints { last: Instant::now(), commits_since: 0 }
    }

    fn committed(&mut self) {
        self.commits_since += 1;
    }

    fn due(&self) -> bool {
        self.commits_since >= CHECKPOINT_COMMITS
            || (self.commits_since > 0 && self.last.elapsed() >= CHECKPOINT_INTERVAL)
    }

    async fn run(&mut self, writer: &storage::audit::BatchWriter, shared: &Shared) {
        match writer.checkpoint().await {
            Ok(()) => {
                shared.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tracing::warn!(error = %err.message, "WAL checkpoint failed; retrying later"),
        }
        self.last = Instant::now();
        self.commits_since = 0;
    }
}

/// When each key's `last_used_at` was last written by this writer.
#[derive(Default)]
struct LastUsed {
    written: std::collections::HashMap<i64, Instant>,
}

impl LastUsed {
    /// The keys of `records` whose `last_used_at` is due, with their newest use.
    fn due(&mut self, records: &[AuditRecord]) -> Vec<(i64, String)> {
        let now = Instant::now();
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

/// One attempt to store a batch; whether it worked. The writer's `priority` is taken back
/// when it falls behind meanwhile.
async fn store_once(
    writer: &storage::audit::BatchWriter,
    records: &[AuditRecord],
    last_used: &[(i64, String)],
    journal_seq: Option<u64>,
    shared: &Shared,
    priority: Option<&Priority>,
) -> bool {
    if records.is_empty() {
        return true;
    }
    let refs: Vec<&AuditRecord> = records.iter().collect();
    let last_used: Vec<(i64, &str)> = last_used.iter().map(|(id, at)| (*id, at.as_str())).collect();
    let started = Instant::now();
    let give_way = || {
        let pending = shared.pending.load(Ordering::Relaxed);
        if let Some(priority) = priority.filter(|_| is_behind(pending, records.len())) {
            priority.falling_behind();
        }
        gives_way(pending, records.len(), started.elapsed())
    };
    match writer.write_giving_way(&refs, &last_used, journal_seq, &give_way).await {
        Ok(()) => {
            shared.metrics.observe_commit(started.elapsed());
            shared.rows.fetch_add(refs.len() as u64, Ordering::Relaxed);
            shared.commits.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(err) => {
            tracing::warn!(rows = refs.len(), error = %err.message, "audit batch not stored yet");
            false
        }
    }
}

/// Whether the writer, storing a batch of `batch` rows for `storing` so far, with `pending`
/// rows not yet stored (the batch's among them), gives way to requests now.
fn gives_way(pending: i64, batch: usize, storing: Duration) -> bool {
    !is_behind(pending, batch) && storing < GIVE_WAY_FOR
}

/// Whether the writer, storing a batch of `batch` rows with `pending` rows not yet stored
/// (the batch's among them), falls behind: a batch's worth of rows waits for the next.
fn is_behind(pending: i64, batch: usize) -> bool {
    pending - i64::try_from(batch).unwrap_or(i64::MAX) >= GIVE_WAY_BELOW
}

/// Looks at the free space of the disk that holds `db_path` every
/// [`DISK_CHECK_INTERVAL`], and marks the log short of space below `min_free_bytes`.
fn watch_free_space(db_path: &std::path::Path, min_free_bytes: u64, shared: std::sync::Weak<Shared>) -> Result<()> {
    let dir = db_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let dir = dir.to_path_buf();
    let mut warned = false;
    let mut check = move || -> Option<()> {
        let shared = shared.upgrade()?;
        let free = crate::system::free_space(&dir);
        if free.is_none() && !warned {
            warned = true;
            tracing::warn!(dir = %dir.display(), "cannot read the free space of the audit disk; VAULT_MIN_FREE_MB is not enforced");
        }
        let low = free.is_some_and(|free| free < min_free_bytes);
        if shared.low_disk.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(free_bytes = free, min_free_bytes, "the audit disk is nearly full; refusing inference");
            } else {
                tracing::warn!(free_bytes = free, "the audit disk has room again");
            }
        }
        Some(())
    };
    check();
    std::thread::Builder::new()
        .name("vault-disk-watch".into())
        .spawn(move || {
            while check().is_some() {
                std::thread::sleep(DISK_CHECK_INTERVAL);
            }
        })
        .map_err(|e| VaultError::internal("starting the disk watcher", e))?;
    Ok(())
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

    async fn count(db: &Db) -> i64 {
        storage::audit::count(&db.connect().await.unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_row_is_journaled_before_record_returns_and_committed_soon_after() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        let recorded = Instant::now();
        audit.record(test_record(1)).await;
        let journaled = Journal::read_existing(db.path()).unwrap();
        assert_eq!(journaled.iter().map(|r| r.record.request_id.as_str()).collect::<Vec<_>>(), ["req-1"]);
        let conn = db.connect().await.unwrap();
        let row = loop {
            if let Some(row) = storage::audit::by_request_id(&conn, "req-1").await.unwrap() {
                break row;
            }
            assert!(recorded.elapsed() < COMMIT_DELAY * 20, "not committed");
            tokio::time::sleep(COMMIT_DELAY / 10).await;
        };
        // The writer waited for more rows to commit with it.
        assert!(recorded.elapsed() >= COMMIT_DELAY, "committed after {:?}", recorded.elapsed());
        assert_eq!((row.tokens_input, row.tokens_output, row.status), (Some(5), Some(7), 200));
        assert_eq!(
            storage::audit::journal_committed_seq(&conn, storage::audit::journal_id(&db).unwrap()).await.unwrap(),
            journaled[0].seq
        );
    }

    #[test]
    fn the_writer_gives_way_to_requests_only_while_it_keeps_up_and_for_a_while() {
        let moment = Duration::from_micros(100);
        assert!(gives_way(600, 600, moment), "nothing waits behind the batch");
        assert!(gives_way(600 + GIVE_WAY_BELOW - 1, 600, moment));
        assert!(!gives_way(600 + GIVE_WAY_BELOW, 600, moment), "falling behind");
        assert!(!gives_way(600, 600, GIVE_WAY_FOR), "the transaction has held the write lock long enough");
        // Falling behind is what takes the writer's priority back (see `priority`).
        assert!(!is_behind(600 + GIVE_WAY_BELOW - 1, 600));
        assert!(is_behind(600 + GIVE_WAY_BELOW, 600));
    }

    #[tokio::test]
    async fn the_writer_takes_a_new_connection_when_postgres_closes_its_own() {
        let (_dir, db) = storage::test_db().await;
        if db.dialect() != storage::Dialect::Postgres {
            return;
        }
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        audit.record(test_record(1)).await;
        audit.flush().await;
        // What a restart of the server does to every connection but this one.
        let conn = db.connect().await.unwrap();
        conn.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            (),
        )
        .await
        .unwrap();
        audit.record(test_record(2)).await;
        for _ in 0..100 {
            if count(&db).await == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count(&db).await, 2, "the row after the connection was closed is stored");
        audit.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_commits_every_row_and_removes_the_journal() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        for i in 0..2000 {
            audit.record_detached(test_record(i));
        }
        audit.shutdown().await;
        assert_eq!(count(&db).await, 2000);
        assert!(Journal::read_existing(db.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn rows_recorded_within_the_delay_are_committed_together() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        for i in 0..300 {
            audit.record_detached(test_record(i));
        }
        audit.flush().await;
        assert_eq!(audit.queue_depth(), 0, "every row queued was counted out once stored");
        assert_eq!(count(&db).await, 300);
        let stats = audit.stats();
        assert_eq!(stats.rows, 300);
        assert!(stats.commits <= 2, "{stats:?}");
    }

    #[tokio::test]
    async fn rows_a_crashed_run_only_journaled_are_committed_at_the_next_start() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        // A run that journaled rows 1..=5, committed 1..=2, then died.
        let journal = Journal::start(db.path(), 0, Journal::lock(db.path()).unwrap()).unwrap();
        let records: Vec<AuditRecord> = (1..=5).map(test_record).collect();
        let mut lines = Vec::new();
        for (seq, record) in (1..).zip(&records) {
            Journal::add_line(&mut lines, seq, &super::super::journal::serialize(record));
        }
        journal.write(&lines, 5).unwrap();
        let writer = storage::audit::BatchWriter::new(&db, Vec::new()).await.unwrap();
        writer.write(&[&records[0], &records[1]], &[], Some(2)).await.unwrap();
        drop(journal);

        let audit = AuditLog::start(db.clone()).await.unwrap();
        assert_eq!(audit.stats().recovered, 3);
        assert_eq!(count(&db).await, 5, "each row once");
        let conn = db.connect().await.unwrap();
        assert!(storage::audit::by_request_id(&conn, "req-5").await.unwrap().is_some());
        // New rows continue the sequence after the recovered ones.
        audit.record(test_record(6)).await;
        let journaled = Journal::read_existing(db.path()).unwrap();
        assert_eq!(journaled.iter().map(|r| r.seq).collect::<Vec<_>>(), [6]);
    }

    #[tokio::test]
    async fn a_database_that_refuses_rows_fails_closed_without_blocking_and_recovers_by_itself() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        let conn = db.connect().await.unwrap();
        conn.execute("ALTER TABLE audit_log RENAME TO audit_log_away", ()).await.unwrap();
        assert!(audit.record(test_record(1)).await, "journaled, so safe");
        let started = Instant::now();
        assert!(!audit.flush().await, "a flush learns that the rows are not stored");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(audit.available().unwrap_err().code, crate::error::ErrorCode::AuditUnavailable);
        conn.execute("ALTER TABLE audit_log_away RENAME TO audit_log", ()).await.unwrap();
        assert!(audit.flush().await, "stored again without anyone's help");
        assert!(audit.available().is_ok());
        assert_eq!(count(&db).await, 1);
        // Refusing again at shutdown: the writer stops anyway and keeps the journal.
        conn.execute("ALTER TABLE audit_log RENAME TO audit_log_away", ()).await.unwrap();
        audit.record(test_record(2)).await;
        tokio::time::timeout(Duration::from_secs(10), audit.shutdown()).await.expect("shutdown is not stuck");
        let kept: Vec<String> =
            Journal::read_existing(db.path()).unwrap().into_iter().map(|r| r.record.request_id).collect();
        assert_eq!(kept, ["req-1", "req-2"]);
    }

    #[tokio::test]
    async fn the_wal_stays_bounded_under_a_long_run_of_commits() {
        let (dir, db) = storage::test_sqlite_db().await;
        let db = Arc::new(db);
        let audit = AuditLog::start(db.clone()).await.unwrap();
        for i in 0..3000 {
            audit.record(test_record(i)).await;
            audit.flush().await;
        }
        let stats = audit.stats();
        assert_eq!((stats.rows, stats.commits), (3000, 3000));
        assert!(stats.checkpoints >= 25, "{stats:?}");
        // Without checkpoints 3000 commits of several pages each grow the WAL past 40 MB.
        let wal = std::fs::metadata(dir.path().join("vault.db-wal")).unwrap().len();
        assert!(wal < 8 * 1024 * 1024, "WAL at {wal} bytes after 3000 commits");
    }
}
