//! Keeping the audit log to its retention period (`audit_retention_days` of the system
//! settings): rows older than that are deleted, a small batch per transaction so no
//! request waits long behind the pruning.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::storage::{self, Db};

const BATCH: u32 = 1000;

/// Deletes the audit rows older than the retention period as of `now`; returns how many.
pub async fn prune(db: &Db, now: SystemTime) -> Result<u64> {
    let days = crate::settings::system(db).await?.audit_retention_days;
    let cutoff = now.checked_sub(Duration::from_secs(u64::from(days) * 86_400)).unwrap_or(SystemTime::UNIX_EPOCH);
    let before = crate::time::format_rfc3339(cutoff);
    let conn = db.connect().await?;
    let mut total = 0;
    loop {
        let deleted = storage::audit::delete_older_than(&conn, &before, BATCH).await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
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
        let records: Vec<AuditRecord> = (0..2500)
            .map(|i| AuditRecord { timestamp: at(if i < 2100 { 400 } else { 10 }), ..crate::audit::test_record(i) })
            .collect();
        crate::audit::store_for_test(&db, &records).await;
        // The default retention is 365 days.
        assert_eq!(prune(&db, now).await.unwrap(), 2100);
        assert_eq!(storage::audit::count(&db.connect().await.unwrap()).await.unwrap(), 400);
        assert_eq!(prune(&db, now).await.unwrap(), 0);
    }
}
