//! Keeping the audit log to its retention period (`audit_retention_days` of the system
//! settings): rows older than that are deleted, a small batch per transaction so no
//! request waits long behind the pruning.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::storage::{self, Db};

const BATCH: u32 = 1000;

/// Deletes the audit rows older than the retention period as of `now`; returns how many.
/// Only the oldest rows go, up to the first one still kept, each batch after a checkpoint
/// signed with `chain_key` at its last row: what is left is a chain that still verifies.
pub async fn prune(db: &Db, now: SystemTime, chain_key: &[u8]) -> Result<u64> {
    let days = crate::settings::system(db).await?.audit_retention_days;
    let cutoff = now.checked_sub(Duration::from_secs(u64::from(days) * 86_400)).unwrap_or(SystemTime::UNIX_EPOCH);
    let before = crate::time::format_rfc3339(cutoff);
    let conn = db.connect().await?;
    let Some(last) = storage::audit::last_prunable(&conn, &before).await? else { return Ok(0) };
    let mut total = 0;
    loop {
        let first = storage::query_i64(&conn, "SELECT COALESCE(MIN(id), 0) FROM audit_log", ()).await?;
        let through = last.min(first + i64::from(BATCH) - 1);
        total += storage::audit::prune_through(&conn, through, chain_key, BATCH).await?;
        if through >= last {
            return Ok(total);
        }
        // Let other writers (the audit writer first) in between batches.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audit::AuditRecord;

    #[tokio::test]
    async fn rows_past_the_retention_period_are_deleted_and_no_others() {
        let (_dir, db) = storage::test_db().await;
        let now = SystemTime::now();
        let at = |days: u64| crate::time::format_rfc3339(now - Duration::from_secs(days * 86_400));
        // Enough rows in one batch for the indexes by user and by key to take them all.
        let (total, old) = (storage::audit::INDEX_EVERY + 400, storage::audit::INDEX_EVERY);
        let records: Vec<AuditRecord> = (0..total as usize)
            .map(|i| AuditRecord {
                timestamp: at(if (i as i64) < old { 400 } else { 10 }),
                user_id: Some("someone".into()),
                key_prefix: Some("vk-someone".into()),
                ..crate::audit::test_record(i)
            })
            .collect();
        crate::audit::store_for_test(&db, &records).await;
        // The default retention is 365 days.
        assert_eq!(prune(&db, now, b"").await.unwrap(), old as u64);
        assert_eq!(storage::audit::count(&db.connect().await.unwrap()).await.unwrap(), 400);
        assert_eq!(prune(&db, now, b"").await.unwrap(), 0);
        // The indexes by user and by key keep entries for the rows kept, and only those.
        let conn = db.connect().await.unwrap();
        for index in ["audit_rows_by_user", "audit_rows_by_key"] {
            let kept = format!("SELECT COUNT(*) FROM {index} WHERE row_id > {old}");
            assert_eq!(storage::query_i64(&conn, &format!("SELECT COUNT(*) FROM {index}"), ()).await.unwrap(), 400);
            assert_eq!(storage::query_i64(&conn, &kept, ()).await.unwrap(), 400);
        }
        // What is left still verifies, from the checkpoint pruning signed.
        let verified = crate::audit::chain::verify(&db, b"", None, &mut |_, _| {}).await.unwrap();
        assert!(verified.intact && verified.rows_checked == 400, "{verified:?}");
    }
}
