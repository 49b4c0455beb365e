//! API keys: minting, hashing, revoking, and checking them on every request.
//!
//! A key is `vault_sk_` + 48 random alphanumerics. Only its SHA-256 and a display prefix
//! are stored. The [`Authenticator`] keeps usable keys in memory so a request does not
//! wait on a database read, and notices a change made by any process (the CLI included)
//! before the next request is checked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{ErrorCode, Result, VaultError};
pub use crate::model::keys::{ApiKeyInfo, CreatedKey, Principal, Scope};
use crate::model::users::Role;
use crate::secrets;
use crate::storage::{self, Db};

pub const KEY_PREFIX: &str = "vault_sk_";
const KEY_RANDOM_LEN: usize = 48;
/// Characters of the random part shown in the display prefix.
const DISPLAY_CHARS: usize = 4;
const MAX_LABEL_LEN: usize = 200;

/// The hash a key is stored and looked up under.
pub fn hash_key(raw: &str) -> String {
    secrets::sha256_hex(raw)
}

/// Whether `raw` has the shape of a Vault key (it may still be unknown).
pub fn is_well_formed(raw: &str) -> bool {
    raw.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == KEY_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The display prefix of a well-formed key: `vault_sk_` + 4 characters.
pub fn display_prefix(raw: &str) -> Option<String> {
    is_well_formed(raw).then(|| raw[..KEY_PREFIX.len() + DISPLAY_CHARS].to_string())
}

/// Creates a key. `user_id`, when given, must name an active user.
pub async fn create(
    db: &Db,
    label: &str,
    scope: Scope,
    user_id: Option<&str>,
    actor: Option<&str>,
) -> Result<CreatedKey> {
    let label = crate::validate::text("label", label, MAX_LABEL_LEN)?;
    let conn = db.connect().await?;
    if let Some(user_id) = user_id {
        let user = storage::users::get(&conn, user_id)
            .await?
            .ok_or_else(|| VaultError::not_found(ErrorCode::UserNotFound, format!("No user with id {user_id}.")))?;
        if !user.is_active {
            return Err(VaultError::conflict(ErrorCode::UserInactive, format!("User {user_id} is deactivated.")));
        }
        if scope == Scope::Admin && user.role != Role::Admin {
            return Err(VaultError::invalid_field(format!(
                "scope: user {user_id} has the role user; only an admin user may hold admin keys"
            )));
        }
    }
    let label = label.as_str();
    let raw = format!("{KEY_PREFIX}{}", secrets::random_alphanumeric(KEY_RANDOM_LEN)?);
    let prefix = raw[..KEY_PREFIX.len() + DISPLAY_CHARS].to_string();
    let created_at = crate::time::now_rfc3339();
    let id = storage::keys::insert(
        &conn,
        &storage::keys::NewKey {
            key_hash: &hash_key(&raw),
            key_prefix: &prefix,
            label,
            scope,
            user_id,
            created_at: &created_at,
        },
    )
    .await?;
    let info = storage::keys::find_by_id(&conn, id)
        .await?
        .ok_or_else(|| VaultError::internal("creating a key", "the new key was not found"))?;
    crate::activity::record(
        db,
        "key.created",
        actor,
        Some(&id.to_string()),
        format!("{} key {} created for {}", scope.as_str(), info.prefix, info.label),
    )
    .await;
    Ok(CreatedKey { info, key: raw })
}

pub async fn list(db: &Db, include_revoked: bool) -> Result<Vec<ApiKeyInfo>> {
    storage::keys::list(&db.connect().await?, include_revoked).await
}

/// Revokes a key named by its raw value, its display prefix or its numeric id. A prefix
/// shared by several active keys is refused, naming their ids.
pub async fn revoke(db: &Db, which: &str, actor: Option<&str>) -> Result<ApiKeyInfo> {
    let conn = db.connect().await?;
    let which = which.trim();
    let key = if which.starts_with(KEY_PREFIX) && which.len() > KEY_PREFIX.len() + DISPLAY_CHARS {
        storage::keys::find_by_hash(&conn, &hash_key(which)).await?
    } else if which.starts_with(KEY_PREFIX) {
        let mut matches = storage::keys::find_by_prefix(&conn, which).await?;
        let active: Vec<&ApiKeyInfo> = matches.iter().filter(|k| k.is_active).collect();
        match active.len() {
            0 => matches.pop(),
            1 => active.first().map(|k| (*k).clone()),
            _ => {
                let ids: Vec<String> = active.iter().map(|k| k.id.to_string()).collect();
                return Err(VaultError::conflict(
                    ErrorCode::AmbiguousPrefix,
                    format!(
                        "prefix {which} matches several active keys (ids {}); give the id or the whole key",
                        ids.join(", ")
                    ),
                ));
            }
        }
    } else if let Ok(id) = which.parse::<i64>() {
        return revoke_by_id(db, id, actor).await;
    } else {
        return Err(VaultError::invalid(
            ErrorCode::InvalidKeyReference,
            "give a key, its vault_sk_ prefix, or its numeric id",
        ));
    };
    let key =
        key.ok_or_else(|| VaultError::not_found(ErrorCode::KeyNotFound, format!("No key matches {}.", redact(which))))?;
    revoke_by_id(db, key.id, actor).await
}

/// Revokes the key with this id.
pub async fn revoke_by_id(db: &Db, id: i64, actor: Option<&str>) -> Result<ApiKeyInfo> {
    let conn = db.connect().await?;
    let not_found = || VaultError::not_found(ErrorCode::KeyNotFound, format!("No key with id {id}."));
    let key = storage::keys::find_by_id(&conn, id).await?.ok_or_else(not_found)?;
    if !storage::keys::revoke(&conn, key.id, &crate::time::now_rfc3339()).await? {
        return Err(VaultError::conflict(
            ErrorCode::KeyAlreadyRevoked,
            format!("Key {} is already revoked.", key.prefix),
        ));
    }
    let revoked = storage::keys::find_by_id(&conn, key.id).await?.ok_or_else(not_found)?;
    crate::activity::record(
        db,
        "key.revoked",
        actor,
        Some(&revoked.id.to_string()),
        format!("key {} ({}) revoked", revoked.prefix, revoked.label),
    )
    .await;
    Ok(revoked)
}

/// Never echo a whole key back: keep its display prefix.
fn redact(which: &str) -> String {
    match display_prefix(which) {
        Some(prefix) => format!("{prefix}…"),
        None => which.chars().take(16).collect(),
    }
}

/// Checks keys on every request against an in-memory cache that is re-validated against
/// the database's change counters before each check.
pub struct Authenticator {
    db: Arc<Db>,
    watch: tokio::sync::Mutex<Watch>,
    cache: RwLock<Cache>,
}

/// A connection that only reads change counters. SQLite's `data_version` moves when any
/// other connection (in this process or another) commits; only then is `auth_epoch` read.
struct Watch {
    /// `PRAGMA data_version`, prepared once: it runs before every key check.
    data_version_query: libsql::Statement,
    conn: libsql::Connection,
    data_version: i64,
    epoch: i64,
}

#[derive(Default)]
struct Cache {
    /// Moves on every invalidation, so a lookup that raced one does not refill the cache
    /// with what it read before.
    generation: u64,
    usable: HashMap<String, Principal>,
}

impl Authenticator {
    pub async fn new(db: Arc<Db>) -> Result<Authenticator> {
        let conn = db.connect().await?;
        let data_version_query = conn.prepare(storage::keys::DATA_VERSION).await?;
        let data_version = storage::keys::data_version(&data_version_query).await?;
        let epoch = storage::keys::auth_epoch(&conn).await?;
        Ok(Authenticator {
            db,
            watch: tokio::sync::Mutex::new(Watch { data_version_query, conn, data_version, epoch }),
            cache: RwLock::new(Cache::default()),
        })
    }

    /// Resolves a raw key to the principal it acts as, or 401.
    pub async fn authenticate(&self, raw_key: &str) -> Result<Principal> {
        if !is_well_formed(raw_key) {
            return Err(VaultError::unauthorized("The API key is malformed.")
                .with_suggestion("Send `Authorization: Bearer vault_sk_…` with a key created by an admin."));
        }
        let hash = hash_key(raw_key);
        let generation = self.revalidate().await?;
        if let Some(principal) = self.read_cache(|c| c.usable.get(&hash).cloned()).flatten() {
            return Ok(principal);
        }
        let conn = self.db.connect().await?;
        let Some(key) = storage::keys::find_usable_by_hash(&conn, &hash).await? else {
            return Err(VaultError::unauthorized("The API key is unknown, revoked, or belongs to a deactivated user."));
        };
        let principal = Principal { key_id: key.id, key_prefix: key.prefix, scope: key.scope, user_id: key.user_id };
        if let Ok(mut cache) = self.cache.write()
            && cache.generation == generation
        {
            cache.usable.insert(hash, principal.clone());
        }
        Ok(principal)
    }

    /// Clears the cache when authentication data changed since the last check; returns
    /// the cache generation that is current now.
    async fn revalidate(&self) -> Result<u64> {
        let mut watch = self.watch.lock().await;
        let data_version = storage::keys::data_version(&watch.data_version_query).await?;
        if data_version != watch.data_version {
            watch.data_version = data_version;
            let epoch = storage::keys::auth_epoch(&watch.conn).await?;
            if epoch != watch.epoch {
                watch.epoch = epoch;
                if let Ok(mut cache) = self.cache.write() {
                    cache.generation += 1;
                    cache.usable.clear();
                }
            }
        }
        Ok(self.read_cache(|c| c.generation).unwrap_or(u64::MAX))
    }

    fn read_cache<T>(&self, f: impl FnOnce(&Cache) -> T) -> Option<T> {
        self.cache.read().ok().map(|cache| f(&cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let raw = format!("{KEY_PREFIX}{}", secrets::random_alphanumeric(KEY_RANDOM_LEN).unwrap());
        assert!(is_well_formed(&raw));
        assert_eq!(display_prefix(&raw).unwrap().len(), 13);
        assert!(!is_well_formed("vault_sk_short"));
        assert!(!is_well_formed(&format!("{KEY_PREFIX}{}", "-".repeat(48))));
    }

    #[tokio::test]
    async fn created_key_authenticates_until_revoked() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let auth = Authenticator::new(db.clone()).await.unwrap();
        let created = create(&db, "Dr. Smith", Scope::User, None, None).await.unwrap();
        let principal = auth.authenticate(&created.key).await.unwrap();
        assert_eq!(principal.scope, Scope::User);
        assert_eq!(principal.key_prefix, created.info.prefix);
        // Cached now; a revocation through another connection must still count at once.
        auth.authenticate(&created.key).await.unwrap();
        revoke(&db, &created.info.prefix, None).await.unwrap();
        let err = auth.authenticate(&created.key).await.unwrap_err();
        assert_eq!(err.status(), 401);
        let listed = list(&db, true).await.unwrap();
        assert!(!listed[0].is_active && listed[0].revoked_at.is_some());
        assert!(list(&db, false).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn deactivated_users_keys_stop_working() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let user = crate::users::create(&db, "A", "a@x.org", Role::User, None).await.unwrap();
        let key = create(&db, "a", Scope::User, Some(&user.id), None).await.unwrap();
        let auth = Authenticator::new(db.clone()).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().user_id, Some(user.id.clone()));
        crate::users::deactivate(&db, &user.id, None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap_err().status(), 401);
        let err = create(&db, "b", Scope::User, Some(&user.id), None).await.unwrap_err();
        assert_eq!(err.code, "user_inactive");
    }

    #[tokio::test]
    async fn only_admin_users_hold_admin_keys_and_a_demotion_counts_at_once() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let plain = crate::users::create(&db, "P", "p@x.org", Role::User, None).await.unwrap();
        let err = create(&db, "p", Scope::Admin, Some(&plain.id), None).await.unwrap_err();
        assert!(err.message.starts_with("scope"), "{}", err.message);
        let admin = crate::users::create(&db, "A", "a@x.org", Role::Admin, None).await.unwrap();
        let key = create(&db, "a", Scope::Admin, Some(&admin.id), None).await.unwrap();
        let auth = Authenticator::new(db.clone()).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().scope, Scope::Admin);
        let demote = crate::users::UserUpdate { role: Some(Role::User), ..Default::default() };
        crate::users::update(&db, &admin.id, demote, None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().scope, Scope::User);
    }

    #[tokio::test]
    async fn revoke_rejects_bad_references() {
        let (_dir, db) = storage::test_db().await;
        assert_eq!(revoke(&db, "nonsense", None).await.unwrap_err().status(), 400);
        assert_eq!(revoke(&db, "999", None).await.unwrap_err().status(), 404);
        let key = create(&db, "x", Scope::Admin, None, None).await.unwrap();
        revoke(&db, &key.key, None).await.unwrap();
        assert_eq!(revoke(&db, &key.info.id.to_string(), None).await.unwrap_err().code, "key_already_revoked");
        assert_eq!(revoke_by_id(&db, 999, None).await.unwrap_err().code, "key_not_found");
        assert_eq!(create(&db, "  ", Scope::User, None, None).await.unwrap_err().status(), 400);
    }

    #[tokio::test]
    async fn malformed_and_unknown_keys_are_unauthorized() {
        let (_dir, db) = storage::test_db().await;
        let auth = Authenticator::new(Arc::new(db)).await.unwrap();
        assert_eq!(auth.authenticate("nope").await.unwrap_err().status(), 401);
        let unknown = format!("{KEY_PREFIX}{}", "a".repeat(48));
        assert_eq!(auth.authenticate(&unknown).await.unwrap_err().status(), 401);
    }
}
