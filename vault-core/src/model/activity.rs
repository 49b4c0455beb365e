//! One event of the activity feed.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActivityItem {
    pub timestamp: String,
    /// e.g. `key.created`, `user.deactivated`, `training.paused`.
    pub kind: String,
    /// The account that acted (see `Principal`), or the offline tool (`cli`, `python`).
    pub actor: Option<String>,
    /// The id of what was acted on.
    pub subject: Option<String>,
    pub summary: String,
}
