//! The activity feed: notable events (keys, users, conversations, training jobs) with who
//! did them and when. Recording is best effort: a failure is logged, never fails the action.

use crate::error::Result;
pub use crate::model::activity::ActivityItem;
use crate::model::keys::{Principal, Scope};
use crate::model::page::PageBounds;
use crate::storage::{self, Db};

/// Feed pages: 20 events unless asked, at most 200.
pub const PAGES: PageBounds = PageBounds { default: 20, max: 200 };

pub async fn record(db: &Db, kind: &str, actor: Option<&str>, subject: Option<&str>, summary: String) {
    let item = ActivityItem {
        timestamp: crate::time::now_rfc3339(),
        kind: kind.to_string(),
        actor: actor.map(String::from),
        subject: subject.map(String::from),
        summary,
    };
    let stored = match db.connect().await {
        Ok(conn) => storage::activity::insert(&conn, &item).await,
        Err(e) => Err(e),
    };
    if let Err(err) = stored {
        tracing::warn!(kind, error = %err.message, "activity not recorded");
    }
}

/// What a key may see: every event with an admin key, its account's with a user key.
pub async fn visible_to(db: &Db, limit: Option<u32>, who: &Principal) -> Result<Vec<ActivityItem>> {
    let account = who.account();
    let actor = match who.scope {
        Scope::Admin => None,
        Scope::User => Some(account.as_str()),
    };
    recent(db, limit, actor).await
}

/// The newest events first; `limit` 1..=200, default 20. With `actor`, only that actor's.
pub async fn recent(db: &Db, limit: Option<u32>, actor: Option<&str>) -> Result<Vec<ActivityItem>> {
    let page = PAGES.page(limit, None)?;
    storage::activity::recent(&db.connect().await?, page.limit, actor).await
}
