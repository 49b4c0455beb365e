//! The activity feed: notable events (keys, users, conversations, training jobs) with who
//! did them and when. Recording is best effort: a failure is logged, never fails the action.

use serde::Serialize;

use crate::error::Result;
use crate::storage::{self, Db};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActivityItem {
    pub timestamp: String,
    /// e.g. `key.created`, `user.deactivated`, `training.paused`.
    pub kind: String,
    /// The user id or key prefix that acted (`cli` for the admin CLI).
    pub actor: Option<String>,
    /// The id of what was acted on.
    pub subject: Option<String>,
    pub summary: String,
}

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

/// What a key may see: every event with an admin key, its own with a user key.
pub async fn visible_to(db: &Db, limit: Option<u32>, who: &crate::keys::Principal) -> Result<Vec<ActivityItem>> {
    let actor = match who.scope {
        crate::keys::Scope::Admin => None,
        crate::keys::Scope::User => Some(who.actor()),
    };
    recent(db, limit, actor).await
}

/// The newest events first; `limit` 1..=200, default 20. With `actor`, only that actor's.
pub async fn recent(db: &Db, limit: Option<u32>, actor: Option<&str>) -> Result<Vec<ActivityItem>> {
    let page = crate::validate::Page::new(limit, None, 20, 200)?;
    storage::activity::recent(&db.connect().await?, page.limit, actor).await
}
