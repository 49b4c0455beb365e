//! SQL for the `activity` table.

use crate::storage::Conn;
use crate::storage::sql::params;

use crate::error::Result;
use crate::model::activity::ActivityItem;

pub async fn insert(conn: &Conn, item: &ActivityItem) -> Result<()> {
    conn.execute(
        "INSERT INTO activity (timestamp, kind, actor, subject, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            item.timestamp.as_str(),
            item.kind.as_str(),
            item.actor.as_deref(),
            item.subject.as_deref(),
            item.summary.as_str()
        ],
    )
    .await?;
    Ok(())
}

/// The newest events, optionally only those of one actor.
pub async fn recent(conn: &Conn, limit: u32, actor: Option<&str>) -> Result<Vec<ActivityItem>> {
    let mut rows = conn
        .query(
            "SELECT timestamp, kind, actor, subject, summary FROM activity WHERE (CAST(?2 AS TEXT) IS NULL OR actor = ?2) \
             ORDER BY id DESC LIMIT ?1",
            params![limit, actor],
        )
        .await?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().await? {
        items.push(ActivityItem {
            timestamp: row.get(0)?,
            kind: row.get(1)?,
            actor: row.get(2)?,
            subject: row.get(3)?,
            summary: row.get(4)?,
        });
    }
    Ok(items)
}
