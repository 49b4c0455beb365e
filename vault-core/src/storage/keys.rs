//! SQL for the `api_keys` table and the `auth_epoch` counter its triggers move.

use crate::storage::sql::params;
use crate::storage::{Conn, Row};

use crate::error::Result;
use crate::model::keys::{ApiKeyInfo, Scope};

const COLUMNS: &str = "id, key_prefix, label, scope, user_id, is_active, created_at, last_used_at, revoked_at";

/// A key as written at creation.
pub struct NewKey<'a> {
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub label: &'a str,
    pub scope: Scope,
    pub user_id: Option<&'a str>,
    pub created_at: &'a str,
}

fn from_row(row: &Row) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: row.get(0)?,
        prefix: row.get(1)?,
        label: row.get(2)?,
        scope: super::parse_column(row, 3, "reading a key")?,
        user_id: row.get(4)?,
        is_active: row.get::<i64>(5)? != 0,
        created_at: row.get(6)?,
        last_used_at: row.get(7)?,
        revoked_at: row.get(8)?,
    })
}

async fn collect(conn: &Conn, sql: &str, params: impl crate::storage::sql::Params) -> Result<Vec<ApiKeyInfo>> {
    let rows = conn.query(sql, params).await?;
    super::collect_rows(rows, from_row).await
}

pub async fn insert(conn: &Conn, key: &NewKey<'_>) -> Result<i64> {
    super::query_i64(
        conn,
        "INSERT INTO api_keys (key_hash, key_prefix, label, scope, user_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         RETURNING id",
        params![key.key_hash, key.key_prefix, key.label, key.scope.as_str(), key.user_id, key.created_at],
    )
    .await
}

/// Keys that may be used: not revoked, and their user (if any) is active. The scope is
/// what the key may do now: a key of a user whose role is `user` acts with the `user`
/// scope, whatever it was created with.
const USABLE: &str = "SELECT k.id, k.key_prefix, k.label, CASE WHEN u.role = 'user' THEN 'user' ELSE k.scope END, \
                      k.user_id, k.is_active, k.created_at, k.last_used_at, k.revoked_at \
                      FROM api_keys k LEFT JOIN users u ON u.id = k.user_id \
                      WHERE k.is_active = 1 AND (k.user_id IS NULL OR u.is_active = 1)";

/// The usable key with this hash (see [`USABLE`]).
pub async fn find_usable_by_hash(conn: &Conn, key_hash: &str) -> Result<Option<ApiKeyInfo>> {
    Ok(collect(conn, &format!("{USABLE} AND k.key_hash = ?1"), [key_hash]).await?.pop())
}

/// The usable key with this id (see [`USABLE`]).
pub async fn find_usable_by_id(conn: &Conn, id: i64) -> Result<Option<ApiKeyInfo>> {
    Ok(collect(conn, &format!("{USABLE} AND k.id = ?1"), [id]).await?.pop())
}

pub async fn find_by_hash(conn: &Conn, key_hash: &str) -> Result<Option<ApiKeyInfo>> {
    Ok(collect(conn, &format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1"), [key_hash]).await?.pop())
}

pub async fn find_by_id(conn: &Conn, id: i64) -> Result<Option<ApiKeyInfo>> {
    Ok(collect(conn, &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"), [id]).await?.pop())
}

pub async fn find_by_prefix(conn: &Conn, prefix: &str) -> Result<Vec<ApiKeyInfo>> {
    collect(conn, &format!("SELECT {COLUMNS} FROM api_keys WHERE key_prefix = ?1 ORDER BY id"), [prefix]).await
}

pub async fn list(conn: &Conn, include_revoked: bool) -> Result<Vec<ApiKeyInfo>> {
    let filter = if include_revoked { "" } else { "WHERE is_active = 1" };
    collect(conn, &format!("SELECT {COLUMNS} FROM api_keys {filter} ORDER BY id"), ()).await
}

/// Marks a key revoked; false when it was not active.
pub async fn revoke(conn: &Conn, id: i64, at: &str) -> Result<bool> {
    let changed = conn
        .execute("UPDATE api_keys SET is_active = 0, revoked_at = ?2 WHERE id = ?1 AND is_active = 1", params![id, at])
        .await?;
    Ok(changed > 0)
}

/// Active keys that can act with the admin scope (their user, if any, is an active admin).
pub async fn usable_admin_keys(conn: &Conn) -> Result<i64> {
    super::query_i64(
        conn,
        "SELECT COUNT(*) FROM api_keys k LEFT JOIN users u ON u.id = k.user_id \
         WHERE k.is_active = 1 AND k.scope = 'admin' AND (k.user_id IS NULL OR (u.is_active = 1 AND u.role = 'admin'))",
        (),
    )
    .await
}

/// Whether any admin key exists, usable or not (before the first one, nothing needs
/// protecting).
pub async fn any_admin_key_ever(conn: &Conn) -> Result<bool> {
    Ok(super::query_i64(conn, "SELECT EXISTS (SELECT 1 FROM api_keys WHERE scope = 'admin')", ()).await? != 0)
}

/// Records when a key (?1) was last used (?2); never moves the time backwards.
pub const TOUCH_LAST_USED: &str =
    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)";

/// Reads the counter that moves whenever a key or a user's standing changes.
pub(super) const AUTH_EPOCH: &str = "SELECT epoch FROM auth_epoch WHERE id = 1";
