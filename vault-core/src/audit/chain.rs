//! The audit trail's hash chain, which makes it tamper-evident.
//!
//! The single writer gives rows consecutive ids and stores with each the SHA-256 of the
//! previous row's hash and its own content (id included), so changing, removing or adding
//! a row breaks the chain from there on. Whoever can write the database could recompute the
//! whole chain, but not the checkpoints: every [`CHECKPOINT_ROWS`] rows the writer signs the
//! chain's hash with the server secret (HMAC-SHA-256). Retention pruning removes the oldest
//! rows only, after signing a checkpoint for the last one it removes, where the rest of
//! the chain then starts. [`verify`] walks it all and names the first row that does not fit.

use std::collections::BTreeMap;

use crate::storage::Row;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, ErrorKind, Result, VaultError};
use crate::model::audit::AuditRecord;
use crate::secrets::hex;
use crate::storage::Db;

/// A signed checkpoint is kept at every row whose id is a multiple of this.
pub const CHECKPOINT_ROWS: i64 = 1000;
/// The kinds of signed records: the chain's hash at a thousandth row, and where the chain of
/// the rows kept starts (the hash the row after it follows).
pub(crate) const CHECKPOINT_KIND: &str = "checkpoint";
pub(crate) const START: &str = "start";

/// A row's content as stored.
pub(crate) struct ChainedRow<'a> {
    id: i64,
    timestamp: &'a str,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    key_prefix: Option<&'a str>,
    user_id: Option<&'a str>,
    model: Option<&'a str>,
    status: i64,
    latency_ms: i64,
    tokens_input: Option<i64>,
    tokens_output: Option<i64>,
    completed: i64,
    error_code: Option<&'a str>,
    repeat_count: i64,
    queued_ms: Option<i64>,
}

fn count(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl<'a> ChainedRow<'a> {
    pub(crate) fn of(id: i64, r: &'a AuditRecord) -> ChainedRow<'a> {
        ChainedRow {
            id,
            timestamp: &r.timestamp,
            request_id: &r.request_id,
            method: &r.method,
            path: &r.path,
            key_prefix: r.key_prefix.as_deref(),
            user_id: r.user_id.as_deref(),
            model: r.model.as_deref(),
            status: i64::from(r.status),
            latency_ms: count(Some(r.latency_ms)).unwrap_or_default(),
            tokens_input: count(r.tokens_input),
            tokens_output: count(r.tokens_output),
            completed: i64::from(r.completed),
            error_code: r.error_code.map(|c| c.as_str()),
            repeat_count: i64::from(r.repeat_count.0),
            queued_ms: count(r.queued_ms),
        }
    }

    /// The row's hash, chained to `previous` (empty for the first row of a chain). Each
    /// field goes in tagged and length-prefixed, so no two rows read the same.
    pub(crate) fn hash(&self, previous: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(previous.as_bytes());
        let texts = [
            Some(self.timestamp),
            Some(self.request_id),
            Some(self.method),
            Some(self.path),
            self.key_prefix,
            self.user_id,
            self.model,
            self.error_code,
        ];
        for text in texts {
            match text {
                None => digest.update([0u8]),
                Some(text) => {
                    digest.update([1u8]);
                    digest.update((text.len() as u64).to_le_bytes());
                    digest.update(text.as_bytes());
                }
            }
        }
        let numbers = [
            Some(self.id),
            Some(self.status),
            Some(self.latency_ms),
            self.tokens_input,
            self.tokens_output,
            Some(self.completed),
            Some(self.repeat_count),
        ];
        for number in numbers {
            match number {
                None => digest.update([0u8]),
                Some(number) => {
                    digest.update([1u8]);
                    digest.update(number.to_le_bytes());
                }
            }
        }
        // Fields added later go in only when set, so that the rows written before them keep
        // their hashes.
        if let Some(queued_ms) = self.queued_ms {
            digest.update([2u8]);
            digest.update(queued_ms.to_le_bytes());
        }
        hex(&digest.finalize())
    }
}

/// The signature of a record of `kind`: the chain's hash at row `row_id`.
pub(crate) fn mac(key: &[u8], kind: &str, row_id: i64, hash: &str) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(format!("{kind}:{row_id}:{hash}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Where the chain stands: the id and hash the next row follows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub last_id: i64,
    pub last_hash: String,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether every row and checkpoint fits.
    pub intact: bool,
    /// Rows whose hash was checked.
    pub rows_checked: u64,
    /// Signed checkpoints checked against the chain.
    pub checkpoints_checked: u64,
    /// The first row that does not fit, and how.
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The row where the chain breaks.
    pub row_id: i64,
    /// `altered`, `deleted`, `inserted` or `checkpoint`.
    pub kind: &'static str,
    pub message: String,
}

impl Verification {
    /// The error that reports a broken chain (409 `audit_tampered`), or none.
    pub fn into_result(self) -> Result<Verification> {
        match &self.problem {
            None => Ok(self),
            Some(problem) => {
                Err(VaultError::new(ErrorKind::Conflict, ErrorCode::AuditTampered, problem.message.clone())
                    .with_details(serde_json::json!({"row_id": problem.row_id, "kind": problem.kind})))
            }
        }
    }
}

const ROWS: &str = "SELECT id, timestamp, request_id, method, path, key_prefix, user_id, model, status, latency_ms, \
                    tokens_input, tokens_output, completed, error_code, repeat_count, hash, queued_ms FROM audit_log";

/// A row as [`ROWS`] reads it back, to hash it again.
struct StoredRow {
    texts: [Option<String>; 8],
    numbers: [Option<i64>; 7],
}

impl StoredRow {
    fn read(row: &Row) -> Result<StoredRow> {
        let mut texts: [Option<String>; 8] = Default::default();
        for (slot, column) in texts.iter_mut().zip([1, 2, 3, 4, 5, 6, 7, 13]) {
            *slot = row.get(column)?;
        }
        let mut numbers = [None; 7];
        for (slot, column) in numbers.iter_mut().zip([8, 9, 10, 11, 12, 14, 16]) {
            *slot = row.get(column)?;
        }
        Ok(StoredRow { texts, numbers })
    }

    fn content(&self, id: i64) -> ChainedRow<'_> {
        let text = |i: usize| self.texts[i].as_deref();
        let number = |i: usize| self.numbers[i].unwrap_or_default();
        ChainedRow {
            id,
            timestamp: text(0).unwrap_or_default(),
            request_id: text(1).unwrap_or_default(),
            method: text(2).unwrap_or_default(),
            path: text(3).unwrap_or_default(),
            key_prefix: text(4),
            user_id: text(5),
            model: text(6),
            status: number(0),
            latency_ms: number(1),
            tokens_input: self.numbers[2],
            tokens_output: self.numbers[3],
            completed: number(4),
            error_code: text(7),
            repeat_count: number(5),
            queued_ms: self.numbers[6],
        }
    }
}

/// Rows read per query.
const PAGE: i64 = 10_000;

fn text(row: &Row, i: i32) -> Result<String> {
    row.get::<String>(i)
}

/// Walks the chain from its start (or from row `from`, trusting the hash of the row
/// before), checking every row's hash and every signed checkpoint; `progress` is told the
/// rows checked and the rows to check.
pub async fn verify(
    db: &Db,
    key: &[u8],
    from: Option<i64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    let conn = db.connect().await?;
    // One snapshot: pruning or writing meanwhile cannot look like tampering.
    let tx = conn.read_transaction().await?;
    let report = walk(&tx, key, from, progress).await;
    // Only read: ended here rather than on drop, where a failure would panic.
    let _ = tx.rollback().await;
    report
}

async fn walk(
    tx: &crate::storage::Conn,
    key: &[u8],
    from: Option<i64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    let mut report = Verification { intact: true, rows_checked: 0, checkpoints_checked: 0, problem: None };
    let broken = |report: &mut Verification, row_id: i64, kind: &'static str, message: String| {
        report.intact = false;
        report.problem = Some(Problem { row_id, kind, message });
    };
    let (mut marks, mut starts) = (BTreeMap::new(), BTreeMap::new());
    let mut rows = tx.query("SELECT row_id, kind, hash, mac FROM audit_checkpoints ORDER BY row_id", ()).await?;
    while let Some(row) = rows.next().await? {
        let (row_id, kind, hash, signature) = (row.get::<i64>(0)?, text(&row, 1)?, text(&row, 2)?, text(&row, 3)?);
        if mac(key, &kind, row_id, &hash) != signature {
            let message = format!("The signed record at row {row_id} is not signed by this box.");
            broken(&mut report, row_id, "checkpoint", message);
            return Ok(report);
        }
        match kind.as_str() {
            START => starts.insert(row_id, hash),
            _ => marks.insert(row_id, hash),
        };
    }
    drop(rows);
    // The chain starts after the newest signed start; before it, rows were pruned or
    // written before the chain began.
    let chained = crate::storage::query_i64(tx, "SELECT COUNT(*) FROM audit_log WHERE hash IS NOT NULL", ()).await?;
    let (first, mut previous) = match (from, starts.last_key_value()) {
        (Some(id), _) => {
            let mut rows = tx.query("SELECT hash FROM audit_log WHERE id = ?1", [id - 1]).await?;
            let before = match rows.next().await? {
                Some(row) => row.get::<Option<String>>(0)?,
                None => None,
            };
            (id, before.or_else(|| starts.get(&(id - 1)).cloned()).unwrap_or_default())
        }
        (None, Some((row_id, hash))) => (row_id + 1, hash.clone()),
        (None, None) if chained == 0 && marks.is_empty() => return Ok(report),
        (None, None) => {
            broken(&mut report, 0, "deleted", "The signed start of the audit chain is missing.".into());
            return Ok(report);
        }
    };
    let total =
        u64::try_from(crate::storage::query_i64(tx, "SELECT COUNT(*) FROM audit_log WHERE id >= ?1", [first]).await?)
            .unwrap_or(0);
    let mut last_id = first - 1;
    loop {
        let mut rows = tx.query(&format!("{ROWS} WHERE id > ?1 ORDER BY id LIMIT {PAGE}"), [last_id]).await?;
        let mut read = 0;
        while let Some(row) = rows.next().await? {
            read += 1;
            let id: i64 = row.get(0)?;
            if id != last_id + 1 {
                let gone = last_id + 1;
                broken(&mut report, gone, "deleted", format!("Rows {gone} to {} were deleted.", id - 1));
                return Ok(report);
            }
            let stored: Option<String> = row.get(15)?;
            let Some(stored) = stored else {
                broken(&mut report, id, "inserted", format!("Row {id} is not part of the chain: it was inserted."));
                return Ok(report);
            };
            let stored_row = StoredRow::read(&row)?;
            let content = stored_row.content(id);
            let hash = content.hash(&previous);
            if hash != stored {
                broken(&mut report, id, "altered", format!("Row {id} was altered, or the rows before it were."));
                return Ok(report);
            }
            if id % CHECKPOINT_ROWS == 0 {
                match marks.get(&id) {
                    Some(signed) if *signed == hash => report.checkpoints_checked += 1,
                    Some(_) => {
                        broken(&mut report, id, "altered", format!("The chain up to row {id} was rewritten."));
                        return Ok(report);
                    }
                    None => {
                        let message = format!("The signed checkpoint at row {id} is missing.");
                        broken(&mut report, id, "checkpoint", message);
                        return Ok(report);
                    }
                }
            }
            report.rows_checked += 1;
            (previous, last_id) = (hash, id);
        }
        progress(report.rows_checked, total);
        if read < PAGE {
            break;
        }
    }
    // A signed record beyond the last row: the rows up to it were removed from the end.
    if let Some(row_id) = marks.range(last_id + 1..).chain(starts.range(last_id + 1..)).map(|(id, _)| *id).min() {
        let message = format!("Rows {} to {row_id} (at least) were deleted.", last_id + 1);
        broken(&mut report, last_id + 1, "deleted", message);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;
    use crate::storage::sql::params;

    async fn chained(rows: usize) -> (tempfile::TempDir, Db) {
        let (dir, db) = storage::test_db().await;
        let records: Vec<AuditRecord> = (0..rows).map(crate::audit::test_record).collect();
        crate::audit::store_for_test(&db, &records[..rows / 2]).await;
        // A second writer, as after a restart, carries the chain on.
        crate::audit::store_for_test(&db, &records[rows / 2..]).await;
        (dir, db)
    }

    async fn check(db: &Db) -> Verification {
        verify(db, b"", None, &mut |_, _| {}).await.unwrap()
    }

    async fn sql(db: &Db, statement: &str) {
        db.connect().await.unwrap().execute(statement, ()).await.unwrap();
    }

    #[tokio::test]
    async fn an_untouched_log_verifies_with_its_checkpoints() {
        let (_dir, db) = chained(2500).await;
        let report = check(&db).await;
        assert!(report.intact, "{report:?}");
        assert_eq!((report.rows_checked, report.checkpoints_checked), (2500, 2));
        assert!(report.into_result().is_ok());
    }

    #[tokio::test]
    async fn an_altered_row_is_named() {
        let (_dir, db) = chained(50).await;
        sql(&db, "UPDATE audit_log SET status = 200 WHERE id = 17 AND status = 200").await;
        assert!(check(&db).await.intact, "writing the same value changes nothing");
        sql(&db, "UPDATE audit_log SET status = 403 WHERE id = 17").await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (17, "altered"));
        let err = check(&db).await.into_result().unwrap_err();
        assert_eq!((err.status(), err.code.as_str()), (409, "audit_tampered"));
    }

    #[test]
    fn a_row_without_a_wait_hashes_as_before_waits_were_recorded() {
        let record = AuditRecord { timestamp: "2026-11-28T12:00:00.000Z".into(), ..crate::audit::test_record(1) };
        // The hash such a row had when rows had no `queued_ms`: those rows still verify.
        assert_eq!(
            ChainedRow::of(1, &record).hash(""),
            "d2e73b3e92dd9e339367c2bf9eea5e55f1d9f0c2c55addcea6171a8b9fe42c22"
        );
        let waited = AuditRecord { queued_ms: Some(0), ..record.clone() };
        assert_ne!(ChainedRow::of(1, &waited).hash(""), ChainedRow::of(1, &record).hash(""));
    }

    #[tokio::test]
    async fn a_changed_wait_is_caught() {
        let (_dir, db) = storage::test_db().await;
        let records: Vec<AuditRecord> = (0..20)
            .map(|i| AuditRecord { queued_ms: (i % 2 == 0).then_some(40), ..crate::audit::test_record(i) })
            .collect();
        crate::audit::store_for_test(&db, &records).await;
        assert!(check(&db).await.intact);
        sql(&db, "UPDATE audit_log SET queued_ms = NULL WHERE id = 5").await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (5, "altered"));
        sql(&db, "UPDATE audit_log SET queued_ms = 40 WHERE id = 5").await;
        assert!(check(&db).await.intact);
        sql(&db, "UPDATE audit_log SET queued_ms = 1 WHERE id = 6").await;
        assert_eq!(check(&db).await.problem.unwrap().row_id, 6);
    }

    #[tokio::test]
    async fn deleted_and_inserted_rows_are_named() {
        let (_dir, db) = chained(50).await;
        sql(&db, "DELETE FROM audit_log WHERE id IN (20, 21)").await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (20, "deleted"));

        let (_dir, db) = chained(50).await;
        sql(
            &db,
            "INSERT INTO audit_log (timestamp, request_id, method, path, status, latency_ms) \
             VALUES ('2026-01-01T00:00:00.000Z', 'forged', 'GET', '/', 200, 1)",
        )
        .await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (51, "inserted"));
    }

    #[tokio::test]
    async fn a_rewritten_chain_is_caught_by_the_signed_checkpoints() {
        let (_dir, db) = chained(1500).await;
        // Alter row 10, then recompute every hash after it, as someone with the database
        // but not the server secret could.
        sql(&db, "UPDATE audit_log SET status = 500 WHERE id = 10").await;
        let conn = db.connect().await.unwrap();
        let mut previous: String = {
            let mut rows = conn.query("SELECT hash FROM audit_log WHERE id = 9", ()).await.unwrap();
            rows.next().await.unwrap().unwrap().get(0).unwrap()
        };
        for id in 10..=1500i64 {
            let mut rows = conn.query(&format!("{ROWS} WHERE id = ?1"), [id]).await.unwrap();
            let stored = StoredRow::read(&rows.next().await.unwrap().unwrap()).unwrap();
            let content = stored.content(id);
            previous = content.hash(&previous);
            conn.execute("UPDATE audit_log SET hash = ?1 WHERE id = ?2", params![previous.as_str(), id]).await.unwrap();
        }
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (1000, "altered"), "{problem:?}");
        // Nor can a checkpoint be forged without the secret.
        sql(&db, "UPDATE audit_checkpoints SET hash = 'x' WHERE row_id = 1000 AND kind = 'checkpoint'").await;
        assert_eq!(check(&db).await.problem.unwrap().kind, "checkpoint");
        let other_key = verify(&db, b"another box", None, &mut |_, _| {}).await.unwrap();
        assert_eq!(other_key.problem.unwrap().kind, "checkpoint");
    }

    #[tokio::test]
    async fn rows_removed_from_the_end_are_caught_by_a_checkpoint_past_them() {
        let (_dir, db) = chained(1200).await;
        sql(&db, "DELETE FROM audit_log WHERE id > 900").await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!((problem.row_id, problem.kind), (901, "deleted"));
    }

    #[tokio::test]
    async fn the_start_of_the_chain_cannot_be_moved() {
        // Hashes wiped, as if the rows predated the chain.
        let (_dir, db) = chained(1200).await;
        sql(&db, "UPDATE audit_log SET hash = NULL WHERE id <= 1000").await;
        assert_eq!(check(&db).await.problem.unwrap().row_id, 1, "{:?}", check(&db).await);
        // The oldest rows and the records below them deleted, as a pruning would.
        let (_dir, db) = chained(2200).await;
        sql(&db, "DELETE FROM audit_log WHERE id <= 1000").await;
        sql(&db, "DELETE FROM audit_checkpoints WHERE row_id < 1000").await;
        let problem = check(&db).await.problem.unwrap();
        assert_eq!(problem.kind, "deleted", "{problem:?}");
        // A checkpoint dropped to hide a rewrite.
        let (_dir, db) = chained(1200).await;
        sql(&db, "DELETE FROM audit_checkpoints WHERE kind = 'checkpoint'").await;
        assert_eq!(check(&db).await.problem.unwrap().kind, "checkpoint");
    }
}
