//! Reading the audit log back.

use crate::error::{Result, VaultError};
use crate::model::audit::{AuditEntry, AuditFilter};
use crate::model::page::PageBounds;
use crate::storage::{self, Db};

/// Query pages: 100 rows unless asked, at most 1000.
pub const PAGES: PageBounds = PageBounds { default: 100, max: 1000 };

/// Audit rows matching `filter`, newest first: `limit` 1..=1000 (default 100), skipping
/// rows with an id at or above `before_id` (for paging back in time).
pub async fn query(
    db: &Db,
    filter: &AuditFilter,
    limit: Option<u32>,
    before_id: Option<i64>,
) -> Result<Vec<AuditEntry>> {
    let page = PAGES.page(limit, None)?;
    validate_filter(filter)?;
    storage::audit::query(&db.connect().await?, filter, before_id.unwrap_or(i64::MAX), page.limit, true).await
}

pub(super) fn validate_filter(filter: &AuditFilter) -> Result<()> {
    for (field, value) in [("since", &filter.since), ("until", &filter.until)] {
        if value.as_deref().is_some_and(|v| crate::time::parse_rfc3339(v).is_none()) {
            return Err(VaultError::invalid_field(format!("{field}: not an RFC 3339 timestamp")));
        }
    }
    Ok(())
}
