//! The audit journal: every row is appended to a file beside the database before its
//! request is answered, and committed to the database moments later in large batches.
//!
//! The append is a `write` into the page cache, with no fsync, for all the rows of
//! requests that finish together (see `staging`): it survives a crash of the process, as
//! a SQLite commit with `synchronous=NORMAL` does, at a fraction of the cost of a commit on
//! every request's path. When the gateway starts, rows of the journal that the database
//! does not have yet (their sequence number is above the database's
//! `audit_journal.committed_seq`, which moves in the same transaction as the rows) are
//! committed before anything else. Files are rotated at [`FILE_BYTES`] and deleted once
//! every row in them is committed.
//!
//! A line is `<seq> <json of the record>\n`; a line cut short by a crash is skipped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::json::JsonObject;
use crate::model::audit::AuditRecord;

/// A journal file is closed and a new one started past this size.
pub(super) const FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The journal of one database, for one process.
pub struct Journal {
    dir: PathBuf,
    stem: String,
    state: Mutex<State>,
    /// Held while the journal is in use: two processes must never share one.
    _lock: File,
}

struct State {
    file: File,
    index: u64,
    bytes: u64,
    /// The highest sequence number written.
    seq: u64,
    /// Closed files not yet deleted: (index, highest seq in it).
    closed: Vec<(u64, u64)>,
}

/// A record found in the journal by recovery.
pub struct Recovered {
    pub seq: u64,
    pub record: AuditRecord,
}

impl Journal {
    /// Takes the journal of the database at `db_path` for this process, or fails when
    /// another process (a second gateway on the same data dir) has it.
    pub fn lock(db_path: &Path) -> std::io::Result<File> {
        let (dir, stem) = split(db_path);
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{stem}lock")))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(std::io::Error::other("another Vault gateway is using this database (its audit journal is locked)"))
            }
            Err(std::fs::TryLockError::Error(err)) => Err(err),
        }
    }

    /// Reads what the journal files next to `db_path` hold, for recovery, without changing
    /// them: the records, in the order they were written. Lines that cannot be read (cut
    /// short by a crash or a full disk) are skipped.
    pub fn read_existing(db_path: &Path) -> std::io::Result<Vec<Recovered>> {
        let (dir, stem) = split(db_path);
        let mut out = Vec::new();
        for (_, path) in files(&dir, &stem)? {
            for line in std::io::BufReader::new(File::open(&path)?).split(b'\n') {
                let line = line?;
                let parsed = line.iter().position(|b| *b == b' ').and_then(|space| {
                    let seq = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
                    Some((seq, serde_json::from_slice(&line[space + 1..]).ok()?))
                });
                match parsed {
                    Some((seq, record)) => out.push(Recovered { seq, record }),
                    None => tracing::warn!(file = %path.display(), "skipped an unreadable audit journal line"),
                }
            }
        }
        Ok(out)
    }

    /// Deletes the old journal files (after recovery committed them) and starts a new one
    /// for the records numbered after `last_seq`; `lock` is what [`Journal::lock`] took.
    pub fn start(db_path: &Path, last_seq: u64, lock: File) -> std::io::Result<Journal> {
        let (dir, stem) = split(db_path);
        for (_, path) in files(&dir, &stem)? {
            std::fs::remove_file(path)?;
        }
        let file = open(&dir, &stem, 1)?;
        let state = State { file, index: 1, bytes: 0, seq: last_seq, closed: Vec::new() };
        Ok(Journal { dir, stem, state: Mutex::new(state), _lock: lock })
    }

    /// Adds the line of record number `seq`, whose JSON [`serialize`] made, to `lines`.
    pub fn add_line(lines: &mut Vec<u8>, seq: u64, json: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = write!(lines, "{seq} ");
        lines.extend_from_slice(json);
        lines.push(b'\n');
    }

    /// Appends `lines` (made by [`add_line`](Self::add_line), numbered up to `last_seq`)
    /// in one write. When the write fails, what part of them got written is cut off again
    /// (as far as the file lets it be).
    pub fn write(&self, lines: &[u8], last_seq: u64) -> std::io::Result<()> {
        let mut state = self.state.lock().map_err(|_| std::io::Error::other("the audit journal is poisoned"))?;
        if state.bytes > 0 && state.bytes + lines.len() as u64 > FILE_BYTES {
            let next = state.index + 1;
            let file = open(&self.dir, &self.stem, next)?;
            let (closed_index, closed_seq) = (state.index, state.seq);
            state.closed.push((closed_index, closed_seq));
            state.file = file;
            state.index = next;
            state.bytes = 0;
        }
        if let Err(err) = state.file.write_all(lines) {
            // Cut off what part got written, so the next lines start clean.
            let _ = state.file.set_len(state.bytes);
            return Err(err);
        }
        state.bytes += lines.len() as u64;
        state.seq = last_seq;
        Ok(())
    }

    /// Every row up to `seq` is in the database: deletes the closed files that hold only
    /// such rows.
    pub fn committed(&self, seq: u64) {
        let done: Vec<u64> = {
            let Ok(mut state) = self.state.lock() else { return };
            let (done, open): (Vec<_>, Vec<_>) =
                std::mem::take(&mut state.closed).into_iter().partition(|(_, max_seq)| *max_seq <= seq);
            state.closed = open;
            done.into_iter().map(|(index, _)| index).collect()
        };
        // Outside the lock: deleting a full file takes milliseconds, and every request that
        // finishes meanwhile waits for the lock to write its line.
        for index in done {
            if let Err(err) = std::fs::remove_file(path(&self.dir, &self.stem, index)) {
                tracing::warn!(error = %err, "could not delete a committed audit journal file");
            }
        }
    }

    /// Deletes every journal file: on a clean shutdown, once everything is committed.
    pub fn remove(&self) {
        if let Ok(files) = files(&self.dir, &self.stem) {
            for (_, path) in files {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A record as a journal line holds it: the JSON its `Deserialize` reads back, as its
/// derived `Serialize` would write it.
pub fn serialize(record: &AuditRecord) -> Vec<u8> {
    // Taken apart field by field, so that a new field cannot be left out unnoticed.
    let AuditRecord {
        timestamp,
        request_id,
        method,
        path,
        key_id,
        key_prefix,
        user_id,
        model,
        status,
        latency_ms,
        tokens_input,
        tokens_output,
        completed,
        error_code,
        repeat_count,
        queued_ms,
        ttft_ms,
        upstream: _, // never stored
    } = record;
    let mut line = JsonObject::with_capacity(384);
    line.field("timestamp", timestamp);
    line.field("request_id", request_id);
    line.field("method", method);
    line.field("path", path);
    line.field("key_id", key_id);
    line.field("key_prefix", key_prefix);
    line.field("user_id", user_id);
    line.field("model", model);
    line.field("status", status);
    line.field("latency_ms", latency_ms);
    line.field("tokens_input", tokens_input);
    line.field("tokens_output", tokens_output);
    line.field("completed", completed);
    line.field("error_code", error_code);
    line.field("repeat_count", repeat_count);
    line.field_if_some("queued_ms", queued_ms.as_ref());
    line.field_if_some("ttft_ms", ttft_ms.as_ref());
    line.finish()
}

fn split(db_path: &Path) -> (PathBuf, String) {
    let dir = db_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = db_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "vault.db".into());
    (dir, format!("{name}-audit."))
}

fn path(dir: &Path, stem: &str, index: u64) -> PathBuf {
    dir.join(format!("{stem}{index}"))
}

fn open(dir: &Path, stem: &str, index: u64) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path(dir, stem, index))
}

/// The journal files of a database, oldest first.
fn files(dir: &Path, stem: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(index) = name.strip_prefix(stem).and_then(|i| i.parse::<u64>().ok()) {
            found.push((index, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_record;

    #[test]
    fn appended_records_are_read_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("vault.db");
        let journal = Journal::start(&db, 41, Journal::lock(&db).unwrap()).unwrap();
        let mut lines = Vec::new();
        Journal::add_line(&mut lines, 42, &serialize(&test_record(0)));
        journal.write(&lines, 42).unwrap();
        lines.clear();
        for i in 1..3 {
            Journal::add_line(&mut lines, 42 + i as u64, &serialize(&test_record(i)));
        }
        journal.write(&lines, 44).unwrap();
        drop(journal);
        let file = dir.path().join("vault.db-audit.1");
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"45 {\"timestamp\":\"20\xe2\x82").unwrap();
        let read = Journal::read_existing(&db).unwrap();
        let ids: Vec<(u64, &str)> = read.iter().map(|r| (r.seq, r.record.request_id.as_str())).collect();
        assert_eq!(ids, [(42, "req-0"), (43, "req-1"), (44, "req-2")]);
        // Only one process at a time has the journal; starting again clears the old files.
        let held = Journal::lock(&db).unwrap();
        assert!(Journal::lock(&db).is_err(), "a second holder was let in");
        let journal = Journal::start(&db, 44, held).unwrap();
        journal.remove();
        assert!(Journal::read_existing(&db).unwrap().is_empty());
    }

    #[test]
    fn a_full_file_is_closed_and_deleted_once_every_row_in_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("vault.db");
        let journal = Journal::start(&db, 0, Journal::lock(&db).unwrap()).unwrap();
        let line = |seq: u64| {
            let mut lines = Vec::new();
            Journal::add_line(&mut lines, seq, &serialize(&test_record(seq as usize)));
            lines
        };
        journal.write(&line(1), 1).unwrap();
        journal.write(&vec![b'\n'; FILE_BYTES as usize - line(1).len()], 1).unwrap();
        journal.write(&line(2), 2).unwrap();
        let (first, second) = (dir.path().join("vault.db-audit.1"), dir.path().join("vault.db-audit.2"));
        assert!(first.exists() && second.exists(), "a write past the size starts a new file");

        journal.committed(0);
        assert!(first.exists(), "deleted before its row was committed");
        journal.committed(1);
        assert!(!first.exists(), "a file of committed rows was kept");
        assert!(second.exists(), "the open file was deleted");
        journal.committed(2);
        assert!(second.exists(), "the open file was deleted");
        let left: Vec<u64> = Journal::read_existing(&db).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(left, [2]);
    }

    #[test]
    fn a_journal_line_is_what_the_derived_serializer_writes_and_reads_back_whole() {
        let full = AuditRecord {
            key_id: Some(-3),
            key_prefix: Some("vault_sk_AbCd".into()),
            user_id: Some("user \"q\"\n\u{1}é".into()),
            model: Some("m/7".into()),
            status: 502,
            latency_ms: u64::MAX,
            completed: false,
            error_code: Some(crate::error::ErrorCode::UpstreamStreamError),
            repeat_count: crate::model::audit::RequestCount(9),
            queued_ms: Some(11),
            ttft_ms: Some(12),
            ..test_record(1)
        };
        let bare = AuditRecord { tokens_input: None, tokens_output: None, ..AuditRecord::default() };
        for record in [full, bare, test_record(2)] {
            let line = serialize(&record);
            assert_eq!(String::from_utf8(line.clone()).unwrap(), serde_json::to_string(&record).unwrap());
            let back: AuditRecord = serde_json::from_slice(&line).unwrap();
            assert_eq!(serialize(&back), line);
        }
    }
}
