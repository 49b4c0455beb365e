//! SQL for the `conversations` and `messages` tables. Every query names the owner, so one
//! owner's rows can never be read or changed through another's id.

use crate::storage::sql::params;
use crate::storage::{Conn, Row};

use crate::error::Result;
use crate::model::conversations::{Conversation, Message};

const COLUMNS: &str = "c.id, c.title, c.model_id, c.created_at, c.updated_at, \
                       (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)";

fn from_row(row: &Row) -> Result<Conversation> {
    Ok(Conversation {
        id: row.get(0)?,
        title: row.get(1)?,
        model_id: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
        message_count: row.get::<i64>(5)?.max(0) as u64,
    })
}

pub async fn insert(conn: &Conn, id: &str, owner: &str, title: &str, model_id: Option<&str>, at: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO conversations (id, owner, title, model_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, owner, title, model_id, at],
    )
    .await?;
    Ok(())
}

/// A page of an owner's conversations, most recently updated first.
pub async fn list(conn: &Conn, owner: &str, limit: u32, offset: u32) -> Result<Vec<Conversation>> {
    let rows = conn
        .query(
            &format!(
                "SELECT {COLUMNS} FROM conversations c WHERE c.owner = ?1 \
                 ORDER BY c.updated_at DESC, c.id DESC LIMIT ?2 OFFSET ?3"
            ),
            params![owner, limit, offset],
        )
        .await?;
    super::collect_rows(rows, from_row).await
}

pub async fn count(conn: &Conn, owner: &str) -> Result<u64> {
    let n = super::query_i64(conn, "SELECT COUNT(*) FROM conversations WHERE owner = ?1", [owner]).await?;
    Ok(n.max(0) as u64)
}

pub async fn get(conn: &Conn, owner: &str, id: &str) -> Result<Option<Conversation>> {
    let mut rows = conn
        .query(&format!("SELECT {COLUMNS} FROM conversations c WHERE c.owner = ?1 AND c.id = ?2"), [owner, id])
        .await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

pub async fn messages(conn: &Conn, conversation_id: &str) -> Result<Vec<Message>> {
    let mut rows = conn
        .query(
            "SELECT id, role, content, created_at FROM messages WHERE conversation_id = ?1 ORDER BY created_at, rowid",
            [conversation_id],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push(Message { id: row.get(0)?, role: row.get(1)?, content: row.get(2)?, created_at: row.get(3)? });
    }
    Ok(out)
}

pub async fn rename(conn: &Conn, owner: &str, id: &str, title: &str, at: &str) -> Result<bool> {
    let changed = conn
        .execute(
            "UPDATE conversations SET title = ?3, updated_at = ?4 WHERE owner = ?1 AND id = ?2",
            params![owner, id, title, at],
        )
        .await?;
    Ok(changed > 0)
}

/// Deletes a conversation and (by cascade) its messages.
pub async fn delete(conn: &Conn, owner: &str, id: &str) -> Result<bool> {
    let changed = conn.execute("DELETE FROM conversations WHERE owner = ?1 AND id = ?2", [owner, id]).await?;
    Ok(changed > 0)
}

/// Appends a message and moves the conversation's `updated_at`, in one transaction;
/// false when the owner has no such conversation.
pub async fn add_message(conn: &Conn, owner: &str, conversation_id: &str, message: &Message) -> Result<bool> {
    let tx = super::write_transaction(conn).await?;
    let touched = tx
        .execute(
            "UPDATE conversations SET updated_at = ?3 WHERE owner = ?1 AND id = ?2",
            params![owner, conversation_id, message.created_at.as_str()],
        )
        .await?;
    if touched == 0 {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO messages (id, conversation_id, role, content, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            message.id.as_str(),
            conversation_id,
            message.role.as_str(),
            message.content.as_str(),
            message.created_at.as_str()
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
