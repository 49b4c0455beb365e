//! SQL for the `users` table.

use libsql::Connection;

use crate::error::Result;

pub struct NewUser<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub created_at: &'a str,
}

pub async fn insert(conn: &Connection, user: &NewUser<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO users (id, name, email, role, is_active, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
        libsql::params![user.id, user.name, user.email, user.role, user.created_at],
    )
    .await?;
    Ok(())
}

/// Whether a user with this id exists and is active.
pub async fn is_active(conn: &Connection, id: &str) -> Result<Option<bool>> {
    let mut rows = conn
        .query("SELECT is_active FROM users WHERE id = ?1", [id])
        .await?;
    Ok(match rows.next().await? {
        Some(row) => Some(row.get::<i64>(0)? != 0),
        None => None,
    })
}

/// Sets a user's active flag; false when no such user exists.
pub async fn set_active(conn: &Connection, id: &str, active: bool, at: &str) -> Result<bool> {
    let changed = conn
        .execute(
            "UPDATE users SET is_active = ?2, updated_at = ?3 WHERE id = ?1",
            libsql::params![id, i64::from(active), at],
        )
        .await?;
    Ok(changed > 0)
}
