//! Rate limits of keys and users: set by admins, stored, read with the key into the cached
//! principal (a change moves the auth epoch, so it applies from the next request), and
//! enforced at admission by [`Limiter`] with no database access.

mod limiter;

pub use limiter::{Limiter, Permit, Quota, RateStatus};

use crate::storage::Conn;
use serde::Serialize;

use crate::error::{ErrorCode, Result, VaultError};
pub use crate::model::limits::{LimitSet, Limits};
use crate::storage::{self, Db};

/// The largest value each limit takes: beyond what any box serves, so a typo (`1e12`) is
/// caught rather than taken as "unlimited".
const MAX: [(&str, u64); 4] = [("rpm", 1_000_000), ("tpm", 1_000_000_000), ("concurrency", 100_000), ("weight", 100)];

/// Checks each limit set (400 naming the field): a whole number from 1 up to its maximum.
pub fn check(limits: &LimitSet) -> Result<()> {
    let values = [limits.rpm, limits.tpm, limits.concurrency, limits.weight];
    for ((field, max), value) in MAX.iter().zip(values) {
        if let Some(value) = value
            && !(1..=*max).contains(&value)
        {
            return Err(VaultError::invalid_field(format!("{field}: must be from 1 to {max}, or null for none")));
        }
    }
    Ok(())
}

fn key_subject(id: i64) -> String {
    format!("key:{id}")
}

fn user_subject(id: &str) -> String {
    format!("user:{id}")
}

/// The limits of a key and of its user, as stored.
pub(crate) async fn of(conn: &Conn, key_id: i64, user_id: Option<&str>) -> Result<Limits> {
    let key = key_subject(key_id);
    let user = user_id.map(user_subject);
    let subjects: Vec<&str> = std::iter::once(key.as_str()).chain(user.as_deref()).collect();
    let mut limits = Limits::default();
    for (subject, set) in storage::limits::get_many(conn, &subjects).await? {
        if subject == key {
            limits.key = set;
        } else {
            limits.user = set;
        }
    }
    Ok(limits)
}

/// A key's limits: its own, and those it is held to (with the configured defaults).
#[derive(Debug, Clone, Serialize)]
pub struct KeyLimits {
    pub key_id: i64,
    pub limits: LimitSet,
    pub effective: LimitSet,
}

async fn key_exists(conn: &Conn, id: i64) -> Result<()> {
    match storage::keys::find_by_id(conn, id).await? {
        Some(_) => Ok(()),
        None => Err(VaultError::not_found(ErrorCode::KeyNotFound, format!("No key with id {id}."))),
    }
}

async fn user_exists(conn: &Conn, id: &str) -> Result<()> {
    match storage::users::get(conn, id).await? {
        Some(_) => Ok(()),
        None => Err(VaultError::not_found(ErrorCode::UserNotFound, format!("No user with id {id}."))),
    }
}

pub async fn for_key(db: &Db, id: i64, defaults: LimitSet) -> Result<KeyLimits> {
    let conn = db.connect().await?;
    key_exists(&conn, id).await?;
    let limits = of(&conn, id, None).await?.key;
    Ok(KeyLimits { key_id: id, limits, effective: limits.or(defaults) })
}

/// Replaces a key's limits (`null`: none of its own). Applies from the next request, in
/// every gateway on the database.
pub async fn set_for_key(
    db: &Db,
    id: i64,
    limits: LimitSet,
    defaults: LimitSet,
    actor: Option<&str>,
) -> Result<KeyLimits> {
    check(&limits)?;
    let conn = db.connect().await?;
    key_exists(&conn, id).await?;
    storage::limits::set(&conn, &key_subject(id), &limits, &crate::time::now_rfc3339()).await?;
    crate::activity::record(db, "key.limits", actor, Some(&key_subject(id)), format!("Key {id} limits set")).await;
    crate::keys::changed(db).await;
    Ok(KeyLimits { key_id: id, limits, effective: limits.or(defaults) })
}

/// A user's limits, shared by all of their keys.
#[derive(Debug, Clone, Serialize)]
pub struct UserLimits {
    pub user_id: String,
    pub limits: LimitSet,
}

pub async fn for_user(db: &Db, id: &str) -> Result<UserLimits> {
    let conn = db.connect().await?;
    user_exists(&conn, id).await?;
    let subject = user_subject(id);
    let limits = storage::limits::get_many(&conn, &[&subject]).await?.pop().map(|(_, set)| set).unwrap_or_default();
    Ok(UserLimits { user_id: id.to_string(), limits })
}

/// Replaces a user's limits (`null`: none), from the next request of any of their keys.
pub async fn set_for_user(db: &Db, id: &str, limits: LimitSet, actor: Option<&str>) -> Result<UserLimits> {
    check(&limits)?;
    let conn = db.connect().await?;
    user_exists(&conn, id).await?;
    storage::limits::set(&conn, &user_subject(id), &limits, &crate::time::now_rfc3339()).await?;
    crate::activity::record(db, "user.limits", actor, Some(&user_subject(id)), format!("User {id} limits set")).await;
    crate::keys::changed(db).await;
    Ok(UserLimits { user_id: id.to_string(), limits })
}
