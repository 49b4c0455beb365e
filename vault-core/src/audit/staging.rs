//! Rows on their way into the journal. A request is answered only once its row is in the
//! journal; under load many requests finish at about the same moment, and one `write`
//! puts all of their rows there, where each used to make its own.
//!
//! A finishing request stages its row (it gets its sequence number and its journal line).
//! When other requests are in progress, it then gives the other tasks of its thread a turn
//! to stage theirs (see `Pending::safe`; a stream does not, since its closing frame waits
//! for the row). Then the first of them to look writes every staged line at once, and the
//! others find theirs written (or, when the write failed, are told when the database has
//! their rows). The rows are handed on to the writer in sequence order while the staging
//! is locked, so the writer's committed mark never passes a row it has not been given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::journal::{self, Journal};
use crate::model::audit::AuditRecord;

/// Where a staged row stands once its line was due to be written.
pub(super) enum Safe {
    /// Its line is in the journal.
    Journaled,
    /// Its line could not be written; the receiver says whether the database took it.
    Committing(oneshot::Receiver<bool>),
    /// The staging broke (something panicked while rows were handed on): whether the row
    /// is kept is not known, so it counts as not kept.
    Unknown,
}

/// How a staged row is handed on: with its sequence number when its line was written,
/// else with the error; what comes back says when the database has a row that only
/// exists in memory.
pub(super) type HandOn<'a> =
    &'a dyn Fn(Box<AuditRecord>, Result<u64, &std::io::Error>) -> Option<oneshot::Receiver<bool>>;

pub(super) struct Staging {
    journal: Arc<Journal>,
    state: Mutex<Staged>,
    /// Requests begun and not finished, streams aside: while there are any, a finishing
    /// request lets them stage their rows before it writes.
    open: AtomicUsize,
    /// Writes to the journal so far (failed ones too).
    writes: AtomicU64,
}

struct Staged {
    /// The last sequence number given out.
    seq: u64,
    /// Every row numbered up to this has been handed on.
    handed_on: u64,
    /// The lines of the staged rows, in sequence order.
    lines: Vec<u8>,
    records: Vec<(u64, Box<AuditRecord>)>,
    /// Rows whose lines could not be written, until their waiters take the receivers.
    committing: HashMap<u64, oneshot::Receiver<bool>>,
}

impl Staging {
    /// Stages rows for `journal`, numbered after `last_seq`.
    pub fn new(journal: Arc<Journal>, last_seq: u64) -> Staging {
        let state = Staged {
            seq: last_seq,
            handed_on: last_seq,
            lines: Vec::new(),
            records: Vec::new(),
            committing: HashMap::new(),
        };
        Staging { journal, state: Mutex::new(state), open: AtomicUsize::new(0), writes: AtomicU64::new(0) }
    }

    /// Counts a request as begun.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request as finished (or as a stream, which is not waited for).
    pub fn closed(&self) {
        let _ = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| open.checked_sub(1));
    }

    /// Writes to the journal so far (failed ones too).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Whether requests are in progress that may stage rows soon.
    pub fn others_open(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    /// Gives `record` the next sequence number and stages its line; returns the number,
    /// or the record when the staging broke. Numbering more rows then could let the
    /// writer's committed mark pass rows that were journaled and never handed on (and the
    /// journal file that holds them go); without a number the row waits for its commit
    /// instead, and the next start recovers the others from the journal.
    pub fn stage(&self, record: Box<AuditRecord>) -> Result<u64, Box<AuditRecord>> {
        let json = journal::serialize(&record);
        let Ok(mut state) = self.state.lock() else { return Err(record) };
        state.seq += 1;
        let seq = state.seq;
        Journal::add_line(&mut state.lines, seq, &json);
        state.records.push((seq, record));
        Ok(seq)
    }

    /// Makes sure the row numbered `seq` is handed on: when it is not yet, writes every
    /// staged line in one write and hands on every staged row, in order.
    pub fn write_through(&self, seq: u64, hand_on: HandOn<'_>) -> Safe {
        let Ok(mut state) = self.state.lock() else { return Safe::Unknown };
        if seq > state.handed_on && !state.records.is_empty() {
            let last = state.seq;
            let written = self.journal.write(&state.lines, last);
            self.writes.fetch_add(1, Ordering::Relaxed);
            state.lines.clear();
            let mut records = std::mem::take(&mut state.records);
            for (number, record) in records.drain(..) {
                if let Some(committed) = hand_on(record, written.as_ref().map(|()| number)) {
                    state.committing.insert(number, committed);
                }
            }
            state.records = records;
            state.handed_on = last;
        }
        if state.committing.is_empty() {
            return Safe::Journaled;
        }
        match state.committing.remove(&seq) {
            Some(committed) => Safe::Committing(committed),
            None => Safe::Journaled,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::audit::test_record;

    fn staging(dir: &Path, last_seq: u64) -> (PathBuf, Staging) {
        let db = dir.join("vault.db");
        let journal = Journal::start(&db, last_seq, Journal::lock(&db).unwrap()).unwrap();
        (db, Staging::new(Arc::new(journal), last_seq))
    }

    type Handed = Mutex<Vec<(String, Option<u64>)>>;

    /// Notes what is handed on; a row whose line was not written gets a receiver whose
    /// sender goes to `senders`.
    fn noting<'a>(
        handed: &'a Handed,
        senders: &'a Mutex<Vec<oneshot::Sender<bool>>>,
    ) -> impl Fn(Box<AuditRecord>, Result<u64, &std::io::Error>) -> Option<oneshot::Receiver<bool>> + 'a {
        move |record, journaled| {
            handed.lock().unwrap().push((record.request_id.clone(), journaled.as_ref().ok().copied()));
            journaled.is_err().then(|| {
                let (done, committed) = oneshot::channel();
                senders.lock().unwrap().push(done);
                committed
            })
        }
    }

    #[test]
    fn rows_staged_together_are_written_in_one_write_and_handed_on_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (db, staging) = staging(dir.path(), 10);
        let seqs: Vec<u64> = (0..3).map(|i| staging.stage(Box::new(test_record(i))).unwrap()).collect();
        assert_eq!(seqs, [11, 12, 13]);
        assert!(Journal::read_existing(&db).unwrap().is_empty(), "written before any was due");

        let (handed, senders) = (Handed::default(), Mutex::default());
        let hand_on = noting(&handed, &senders);
        assert!(matches!(staging.write_through(12, &hand_on), Safe::Journaled));
        let expected = [("req-0", Some(11)), ("req-1", Some(12)), ("req-2", Some(13))];
        let expected: Vec<(String, Option<u64>)> = expected.iter().map(|(id, seq)| (id.to_string(), *seq)).collect();
        assert_eq!(*handed.lock().unwrap(), expected);
        let journaled: Vec<u64> = Journal::read_existing(&db).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(journaled, [11, 12, 13]);

        // The others find theirs written: nothing more is written or handed on.
        assert!(matches!(staging.write_through(11, &hand_on), Safe::Journaled));
        assert!(matches!(staging.write_through(13, &hand_on), Safe::Journaled));
        assert_eq!((staging.writes(), handed.lock().unwrap().len()), (1, 3));

        // A row staged later is written by a write of its own.
        let seq = staging.stage(Box::new(test_record(3))).unwrap();
        assert!(matches!(staging.write_through(seq, &hand_on), Safe::Journaled));
        assert_eq!((seq, staging.writes()), (14, 2));
    }

    #[test]
    fn rows_whose_lines_cannot_be_written_each_wait_for_their_own_commit() {
        if !Path::new("/dev/full").exists() {
            eprintln!("skipped: no /dev/full to make the journal's writes fail");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (_db, staging) = staging(dir.path(), 0);
        // A full first file, and a second one that refuses every write.
        staging.journal.write(&vec![b'\n'; journal::FILE_BYTES as usize], 0).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("vault.db-audit.2")).unwrap();
        let first = staging.stage(Box::new(test_record(1))).unwrap();
        let second = staging.stage(Box::new(test_record(2))).unwrap();

        let (handed, senders) = (Handed::default(), Mutex::default());
        let hand_on = noting(&handed, &senders);
        let Safe::Committing(first_committed) = staging.write_through(first, &hand_on) else {
            panic!("a row whose line was not written passed as journaled");
        };
        let expected: Vec<(String, Option<u64>)> = vec![("req-1".into(), None), ("req-2".into(), None)];
        assert_eq!(*handed.lock().unwrap(), expected);
        let [done_first, done_second]: [oneshot::Sender<bool>; 2] =
            std::mem::take(&mut *senders.lock().unwrap()).try_into().unwrap();
        done_first.send(true).unwrap();
        done_second.send(false).unwrap();
        assert!(first_committed.blocking_recv().unwrap());
        let Safe::Committing(second_committed) = staging.write_through(second, &hand_on) else {
            panic!("the second row lost its answer");
        };
        assert!(!second_committed.blocking_recv().unwrap(), "each row gets its own answer");
        assert_eq!(handed.lock().unwrap().len(), 2, "handed on once");
    }

    #[test]
    fn after_a_panic_while_rows_were_handed_on_no_row_is_numbered_or_counted_as_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, staging) = staging(dir.path(), 0);
        let seq = staging.stage(Box::new(test_record(1))).unwrap();
        let panicking = |_: Box<AuditRecord>, _: Result<u64, &std::io::Error>| -> Option<oneshot::Receiver<bool>> {
            panic!("handing on failed")
        };
        let handing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| staging.write_through(seq, &panicking)));
        assert!(handing.is_err());
        assert!(matches!(staging.write_through(seq, &panicking), Safe::Unknown));
        assert!(staging.stage(Box::new(test_record(2))).is_err(), "a row was numbered after the break");
    }

    #[test]
    fn rows_staged_and_written_from_several_threads_are_handed_on_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let (db, staging) = staging(dir.path(), 0);
        let (handed, senders) = (Handed::default(), Mutex::default());
        let hand_on = noting(&handed, &senders);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (staging, hand_on) = (&staging, &hand_on);
                scope.spawn(move || {
                    for i in 0..250 {
                        let seq = staging.stage(Box::new(test_record(thread * 1000 + i))).unwrap();
                        assert!(matches!(staging.write_through(seq, hand_on), Safe::Journaled));
                    }
                });
            }
        });
        let seqs: Vec<u64> = handed.lock().unwrap().iter().map(|(_, seq)| seq.unwrap()).collect();
        assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());
        let journaled: Vec<u64> = Journal::read_existing(&db).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(journaled, seqs);
    }
}
