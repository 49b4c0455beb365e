//! SQL for the `users` table.

use crate::storage::sql::params;
use crate::storage::{Conn, Row};

use crate::error::Result;
use crate::model::users::{Role, User};

const COLUMNS: &str = "id, name, email, role, is_active, created_at, updated_at";

pub struct NewUser<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub created_at: &'a str,
}

fn from_row(row: &Row) -> Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        role: super::parse_column(row, 3, "reading a user")?,
        is_active: row.get::<i64>(4)? != 0,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

pub async fn insert(conn: &Conn, user: &NewUser<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO users (id, name, email, role, is_active, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
        params![user.id, user.name, user.email, user.role.as_str(), user.created_at],
    )
    .await?;
    Ok(())
}

pub async fn get(conn: &Conn, id: &str) -> Result<Option<User>> {
    let mut rows = conn.query(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"), [id]).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

pub async fn email_taken(conn: &Conn, email: &str, except_id: &str) -> Result<bool> {
    let n = super::query_i64(
        conn,
        "SELECT COUNT(*) FROM users WHERE lower(email) = ?1 AND id != ?2",
        params![email.to_ascii_lowercase(), except_id],
    )
    .await?;
    Ok(n > 0)
}

pub async fn list(conn: &Conn) -> Result<Vec<User>> {
    let rows = conn.query(&format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id"), ()).await?;
    super::collect_rows(rows, from_row).await
}

pub async fn update(conn: &Conn, user: &User) -> Result<()> {
    conn.execute(
        "UPDATE users SET name = ?2, email = ?3, role = ?4, is_active = ?5, updated_at = ?6 WHERE id = ?1",
        params![
            user.id.as_str(),
            user.name.as_str(),
            user.email.as_str(),
            user.role.as_str(),
            i64::from(user.is_active),
            user.updated_at.as_str()
        ],
    )
    .await?;
    Ok(())
}

/// Sets a user's active flag; false when no such user exists.
pub async fn set_active(conn: &Conn, id: &str, active: bool, at: &str) -> Result<bool> {
    let changed = conn
        .execute("UPDATE users SET is_active = ?2, updated_at = ?3 WHERE id = ?1", params![id, i64::from(active), at])
        .await?;
    Ok(changed > 0)
}
