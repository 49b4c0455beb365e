//! SQL for the `system_config` key-value table.

use crate::storage::Conn;
use crate::storage::sql::params;

use crate::error::Result;

pub async fn get(conn: &Conn, key: &str) -> Result<Option<String>> {
    let mut rows = conn.query("SELECT value FROM system_config WHERE key = ?1", [key]).await?;
    Ok(match rows.next().await? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

pub async fn put(conn: &Conn, key: &str, value: &str, at: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO system_config (key, value, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, at],
    )
    .await?;
    Ok(())
}

/// Whether any key starts with `prefix`.
pub async fn any_with_prefix(conn: &Conn, prefix: &str) -> Result<bool> {
    let n = super::query_i64(
        conn,
        "SELECT EXISTS (SELECT 1 FROM system_config WHERE substr(key, 1, length(?1)) = ?1)",
        [prefix],
    )
    .await?;
    Ok(n != 0)
}

/// Inserts `key` unless it exists; says whether this call inserted it. Of any number of
/// callers at once, in any number of processes, exactly one gets `true`.
pub async fn insert_new(conn: &Conn, key: &str, value: &str, at: &str) -> Result<bool> {
    let inserted = conn
        .execute(
            "INSERT INTO system_config (key, value, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO NOTHING",
            params![key, value, at],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn delete(conn: &Conn, key: &str) -> Result<()> {
    conn.execute("DELETE FROM system_config WHERE key = ?1", [key]).await?;
    Ok(())
}

pub async fn delete_with_prefix(conn: &Conn, prefix: &str) -> Result<u64> {
    conn.execute("DELETE FROM system_config WHERE substr(key, 1, length(?1)) = ?1", [prefix]).await
}

/// Sets `key` to `value` only if it was last set before `before` (RFC 3339 text, which
/// sorts by time); says whether it did. Of callers at once, one at most gets `true`.
pub async fn replace_if_older(conn: &Conn, key: &str, value: &str, at: &str, before: &str) -> Result<bool> {
    let replaced = conn
        .execute(
            "UPDATE system_config SET value = ?2, updated_at = ?3 WHERE key = ?1 AND updated_at < ?4",
            params![key, value, at, before],
        )
        .await?;
    Ok(replaced == 1)
}
