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

/// How many rows match `filter` (its time bounds called `from` and `to`).
pub async fn count(db: &Db, filter: &AuditFilter) -> Result<i64> {
    validate_range(filter, ["from", "to"])?;
    storage::audit::count_matching(&db.connect().await?, filter).await
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
/// never shift a page; it carries a digest of the filter too, so one from another query
/// (or edited) is refused rather than silently answering something else. Rows of requests
/// already answered are committed first, so they show.
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
            .split_once('.')
            .and_then(|(id, _)| id.parse::<i64>().ok())
            .filter(|id| *id > 0 && cursor_for(filter, *id) == raw)
            .ok_or_else(|| VaultError::invalid_field("cursor: not a cursor this API gave for these filters"))?,
    };
    log.flush().await;
    let mut items = storage::audit::query(&db.connect().await?, filter, before_id, page.limit + 1, true).await?;
    let next_cursor = (items.len() > page.limit as usize).then(|| {
        items.truncate(page.limit as usize);
        items.last().map(|last| cursor_for(filter, last.id)).unwrap_or_default()
    });
    Ok(AuditPage { items, next_cursor })
}

/// The cursor of the page after row `id` for `filter`: the id and a digest binding it to
/// the filter.
fn cursor_for(filter: &AuditFilter, id: i64) -> String {
    let AuditFilter { user_id, key_prefix, method, path_prefix, status, model, since, until } = filter;
    let status = status.map(|s| s.to_string());
    let fields = [user_id, key_prefix, method, path_prefix, &status, model, since, until];
    let mut bound = id.to_string();
    for field in fields {
        bound.push('\u{1f}');
        bound.push_str(field.as_deref().unwrap_or("\u{0}"));
    }
    format!("{id}.{}", &crate::secrets::sha256_hex(&bound)[..16])
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
