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

/// One page of audit rows, newest first, and the cursor of the next (older) page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of rows matching `filter` (its time bounds called `from` and `to`), newest first,
/// after `cursor` (from the previous page).
/// The cursor is a row id, so page 5,000 costs what page 1 does, and rows written meanwhile
/// never shift a page. Rows of requests already answered are committed first, so they show.
pub async fn page(
    log: &super::AuditLog,
    db: &Db,
    filter: &AuditFilter,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<AuditPage> {
    let page = PAGES.page(limit, None)?;
    validate_range(filter, ["from", "to"])?;
    let before_id = match cursor {
        None => i64::MAX,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| VaultError::invalid_field("cursor: not a cursor this API gave"))?,
    };
    log.flush().await;
    let mut items = storage::audit::query(&db.connect().await?, filter, before_id, page.limit + 1, true).await?;
    let next_cursor = (items.len() > page.limit as usize).then(|| {
        items.truncate(page.limit as usize);
        items.last().map(|last| last.id.to_string()).unwrap_or_default()
    });
    Ok(AuditPage { items, next_cursor })
}

pub(super) fn validate_filter(filter: &AuditFilter) -> Result<()> {
    validate_range(filter, ["since", "until"])
}

/// The time bounds of `filter` are RFC 3339; an error names them as the caller calls them.
pub(super) fn validate_range(filter: &AuditFilter, names: [&str; 2]) -> Result<()> {
    for (field, value) in [(names[0], &filter.since), (names[1], &filter.until)] {
        if value.as_deref().is_some_and(|v| crate::time::parse_rfc3339(v).is_none()) {
            return Err(VaultError::invalid_field(format!("{field}: not an RFC 3339 timestamp")));
        }
    }
    Ok(())
}
