//! API keys: minting, hashing, revoking, and checking them on every request.
//!
//! A key is `vault_sk_` + 48 random alphanumerics. Only its SHA-256 and a display prefix
//! are stored. The [`Authenticator`] keeps usable keys, and keys it refused, in memory so a
//! request does not wait on a database read, and notices a change made by any process (the
//! CLI included) before the next request is checked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

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

/// `text` with anything that looks like a key cut to its display prefix (`vault_sk_AbCd...`):
/// for what is recorded about a request (its path, its id) but must never hold a key.
pub fn redact_keys(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(KEY_PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY_PREFIX) {
        let after = &rest[at + KEY_PREFIX.len()..];
        let secret = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
        out.push_str(&rest[..at + KEY_PREFIX.len()]);
        out.push_str(&after[..secret.min(DISPLAY_CHARS)]);
        if secret > DISPLAY_CHARS {
            out.push_str("...");
        }
        rest = &after[secret..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
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

/// Revokes the key with this id. The last key that can act as admin is refused (409): a
/// box nobody can administer needs a technician.
pub async fn revoke_by_id(db: &Db, id: i64, actor: Option<&str>) -> Result<ApiKeyInfo> {
    let conn = db.connect().await?;
    let not_found = || VaultError::not_found(ErrorCode::KeyNotFound, format!("No key with id {id}."));
    // One write transaction, so two revocations cannot each leave the other as the last.
    let tx = storage::write_transaction(&conn).await?;
    let key = storage::keys::find_by_id(&tx, id).await?.ok_or_else(not_found)?;
    if !key.is_active {
        return Err(VaultError::conflict(
            ErrorCode::KeyAlreadyRevoked,
            format!("Key {} is already revoked.", key.prefix),
        ));
    }
    let usable = storage::keys::find_usable_by_id(&tx, id).await?;
    if usable.is_some_and(|k| k.scope == Scope::Admin) && storage::keys::usable_admin_keys(&tx).await? <= 1 {
        return Err(VaultError::conflict(
            ErrorCode::LastAdminKey,
            format!("Key {} is the last admin key; create another admin key first.", key.prefix),
        ));
    }
    storage::keys::revoke(&tx, key.id, &crate::time::now_rfc3339()).await?;
    tx.commit().await?;
    changed(db).await;
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

/// The principal a raw key acts as, read from the database without any cache (for an
/// offline tool checking one key), or 401.
pub async fn resolve(db: &Db, raw_key: &str) -> Result<Principal> {
    if !is_well_formed(raw_key) {
        return Err(malformed());
    }
    lookup(&db.connect().await?, &hash_key(raw_key)).await?.ok_or_else(refused)
}

fn malformed() -> VaultError {
    VaultError::unauthorized("The API key is malformed.")
        .with_suggestion("Send `Authorization: Bearer vault_sk_…` with a key created by an admin.")
}

fn refused() -> VaultError {
    VaultError::unauthorized("The API key is unknown, revoked, or belongs to a deactivated user.")
}

/// The usable key with this hash, as the principal it acts as; `None` when there is none.
async fn lookup(conn: &storage::Conn, hash: &str) -> Result<Option<Principal>> {
    let Some(key) = storage::keys::find_usable_by_hash(conn, hash).await? else { return Ok(None) };
    let limits = crate::limits::of(conn, key.id, key.user_id.as_deref()).await?;
    Ok(Some(Principal { key_id: key.id, key_prefix: key.prefix, scope: key.scope, user_id: key.user_id, limits }))
}

/// How often every gateway looks for changes to keys and users made by another process.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(5);
/// How long a change to keys or users takes to reach every gateway on the same database.
/// The functions that make such changes return only after it, so "revoked, then refused on
/// the very next request" holds across processes.
pub const CHANGE_PROPAGATION: Duration = Duration::from_millis(25);
/// The same for gateways sharing a PostgreSQL database.
pub const CHANGE_PROPAGATION_SHARED: Duration = Duration::from_millis(100);

/// Records that this process changed what decides authentication, and waits until every
/// gateway on the database has noticed.
pub(crate) async fn changed(db: &Db) {
    db.auth_changed();
    let wait = match db.dialect() {
        storage::Dialect::Sqlite => CHANGE_PROPAGATION,
        // Other boxes hear of it by a notification over the network.
        storage::Dialect::Postgres => CHANGE_PROPAGATION_SHARED,
    };
    tokio::time::sleep(wait).await;
}

/// Checks keys on every request against an in-memory cache of usable keys (and one of keys
/// found unusable), without touching the database while nothing changed.
///
/// The caches are emptied when either counter moves: this process's own changes (counted by
/// [`Db`], at once) or the database's `auth_epoch`, which triggers move on any change by any
/// process and which a watcher thread reads every [`WATCH_INTERVAL`] while keys are being
/// checked.
pub struct Authenticator {
    db: Arc<Db>,
    watched: Arc<Watched>,
    cache: RwLock<Cache>,
    /// Apart from `cache`, so that made-up keys sent by the thousand do not hold up the
    /// requests with usable keys.
    refused: Mutex<Refused>,
    /// A connection kept from one lookup to the next on the embedded database, where opening
    /// one costs many times the lookup: keys not cached, and keys that are refused, must not
    /// make each request that expensive (PostgreSQL connections come from a pool).
    spare: Mutex<Option<storage::Conn>>,
    /// Lookups answered from the cache, and those that went to the database.
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the watcher thread reports, and what wakes it.
struct Watched {
    /// Moves whenever the database's `auth_epoch` moved (or could not be read).
    changes: AtomicU64,
    /// When its last look began, in ms since `since`: a cache the watcher stopped vouching for
    /// (a starved, stuck or resting thread) is not trusted.
    polled_ms: AtomicU64,
    /// When a key was last checked, in ms since `since`.
    asked_ms: AtomicU64,
    /// The watcher rests until a key is checked (see [`IDLE_AFTER`]).
    resting: AtomicBool,
    /// The watcher's thread, to wake it from its rest.
    thread: OnceLock<std::thread::Thread>,
    since: std::time::Instant,
}

impl Watched {
    /// Counting as just polled.
    fn new() -> Watched {
        Watched {
            changes: AtomicU64::new(0),
            polled_ms: AtomicU64::new(0),
            asked_ms: AtomicU64::new(0),
            resting: AtomicBool::new(false),
            thread: OnceLock::new(),
            since: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a look that began at `looked` (ms since `since`).
    fn polled(&self, looked: u64) {
        self.polled_ms.store(looked, Ordering::Release);
    }

    /// Whether the watcher vouches for the cache now; notes that a key is being checked,
    /// which ends the watcher's rest.
    fn is_fresh(&self) -> bool {
        let now = self.now_ms();
        // Written at most once a millisecond: requests on many threads share this.
        if self.asked_ms.load(Ordering::Relaxed) != now {
            // Sequentially consistent with the watcher's going to rest: either it sees
            // this key checked, or this sees it resting and wakes it.
            self.asked_ms.store(now, Ordering::SeqCst);
            if self.resting.load(Ordering::SeqCst) {
                self.wake();
            }
        }
        now.saturating_sub(self.polled_ms.load(Ordering::Acquire)) <= STALE_AFTER.as_millis() as u64
    }

    fn wake(&self) {
        self.resting.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Rests the calling (watcher) thread when no key was checked for [`IDLE_AFTER`]:
    /// until one is, or [`RESTING_LOOK`] passes, or the authenticator is gone. Whether it
    /// rested.
    fn rest_while_idle(self: Arc<Self>) -> bool {
        // Resting first, then looking: a key checked meanwhile either counts here or sees
        // the rest and ends it (see `is_fresh`).
        self.resting.store(true, Ordering::SeqCst);
        if self.now_ms().saturating_sub(self.asked_ms.load(Ordering::SeqCst)) <= IDLE_AFTER.as_millis() as u64 {
            self.resting.store(false, Ordering::SeqCst);
            return false;
        }
        let weak = Arc::downgrade(&self);
        drop(self);
        // Waits without holding the authenticator's state alive, so that dropping it ends
        // this thread's rest (and the thread).
        std::thread::park_timeout(RESTING_LOOK);
        if let Some(watched) = weak.upgrade() {
            watched.resting.store(false, Ordering::SeqCst);
        }
        true
    }
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        // The watcher may be resting: let it see that it is no longer needed.
        self.watched.wake();
    }
}

/// A watcher that has not looked for this long no longer vouches for the cache: keys are
/// checked against the database until it is back.
const STALE_AFTER: Duration = Duration::from_millis(20);
/// After this long without a key to check, the watcher rests instead of looking every few
/// milliseconds, so an idle gateway does not wake hundreds of times a second. The next key
/// checked wakes it; until it has looked, that key is checked against the database.
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// How often a resting watcher looks all the same.
const RESTING_LOOK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Cache {
    /// The counters the entries were read under.
    version: (u64, u64),
    /// By the SHA-256 of the key (its hash as stored, before it is written in hex).
    usable: HashMap<[u8; 32], Principal>,
}

/// Keys found unusable (unknown, revoked, of a deactivated user): a client that keeps
/// sending a revoked key is refused without a lookup each time.
#[derive(Default)]
struct Refused {
    /// The counters the keys were read under.
    version: (u64, u64),
    keys: HashSet<[u8; 32]>,
}

/// The most refused keys remembered; past it they are forgotten all at once, so keys made up
/// by the thousand cannot grow the cache.
const MAX_REFUSED: usize = 1024;

impl Refused {
    fn remember(&mut self, version: (u64, u64), hash: [u8; 32]) {
        if self.version != version || self.keys.len() >= MAX_REFUSED {
            self.keys.clear();
            self.version = version;
        }
        self.keys.insert(hash);
    }
}

impl Authenticator {
    pub async fn new(db: Arc<Db>) -> Result<Authenticator> {
        let watched = Arc::new(Watched::new());
        watch_auth_epoch(db.clone(), Arc::downgrade(&watched)).await?;
        let (hits, misses) = (AtomicU64::new(0), AtomicU64::new(0));
        Ok(Authenticator {
            db,
            watched,
            cache: RwLock::new(Cache::default()),
            refused: Mutex::new(Refused::default()),
            spare: Mutex::new(None),
            hits,
            misses,
        })
    }

    /// Lookups answered from the cache, and those that were not, so far.
    pub fn cache_lookups(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    fn version(&self) -> (u64, u64) {
        (self.db.auth_changes(), self.watched.changes.load(Ordering::Acquire))
    }

    /// Resolves a raw key to the principal it acts as, or 401.
    pub async fn authenticate(&self, raw_key: &str) -> Result<Principal> {
        if !is_well_formed(raw_key) {
            return Err(malformed());
        }
        let hash = secrets::sha256(raw_key);
        // Freshness first: a look that counts as fresh here moved the counters before it
        // said so, so the version read next includes whatever that look found (and the
        // look this very check may wake lands before it, not between the two reads).
        let fresh = self.watched.is_fresh();
        let version = self.version();
        if fresh
            && let Ok(cache) = self.cache.read()
            && cache.version == version
            && let Some(principal) = cache.usable.get(&hash)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(principal.clone());
        }
        if fresh
            && let Ok(refused_keys) = self.refused.lock()
            && refused_keys.version == version
            && refused_keys.keys.contains(&hash)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Err(refused());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Boxed: the database lookup's future is large, and inline it would be carried
        // (and moved) by every request, though almost every key is answered from the cache.
        Box::pin(self.look_up_and_remember(hash, version)).await
    }

    /// A key the cache could not answer: read from the database, and remembered (usable or
    /// refused) only if nothing changed while it was read.
    async fn look_up_and_remember(&self, hash: [u8; 32], version: (u64, u64)) -> Result<Principal> {
        let found = self.lookup(&secrets::hex(&hash)).await?;
        // Cache what was read only if nothing changed while it was read.
        match &found {
            Some(principal) => {
                if let Ok(mut cache) = self.cache.write()
                    && self.version() == version
                {
                    if cache.version != version {
                        cache.usable.clear();
                        cache.version = version;
                    }
                    cache.usable.insert(hash, principal.clone());
                }
            }
            None => {
                if let Ok(mut refused_keys) = self.refused.lock()
                    && self.version() == version
                {
                    refused_keys.remember(version, hash);
                }
            }
        }
        found.ok_or_else(refused)
    }

    /// [`lookup`] on the spare connection (or a new one, kept as the spare after it served).
    async fn lookup(&self, hash: &str) -> Result<Option<Principal>> {
        let kept = self.spare.lock().ok().and_then(|mut spare| spare.take());
        let conn = match kept {
            Some(conn) => conn,
            None => self.db.connect().await?,
        };
        // A connection whose lookup failed is not kept: the failure may be its own.
        let found = lookup(&conn, hash).await?;
        if conn.dialect() == storage::Dialect::Sqlite
            && let Ok(mut spare) = self.spare.lock()
        {
            spare.get_or_insert(conn);
        }
        Ok(found)
    }
}

/// Starts a thread that asks [`storage::auth_watch::AuthWatch`] every [`WATCH_INTERVAL`]
/// (while keys are being checked; see [`IDLE_AFTER`]) whether keys or users changed in any
/// process, and moves `watched` when they did. It stops when `watched` is dropped with its
/// authenticator. While the database cannot be watched it moves `watched` every time, so
/// nothing stays cached that might be revoked.
async fn watch_auth_epoch(db: Arc<Db>, watched: std::sync::Weak<Watched>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VaultError::internal("starting the key watcher", e))?;
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let watch = move || {
        // Started on the watcher's own runtime, which its connection (if any) lives on.
        let mut auth_watch = match runtime.block_on(storage::auth_watch::AuthWatch::start(&db)) {
            Ok(auth_watch) => {
                let _ = started_tx.send(Ok(()));
                auth_watch
            }
            Err(err) => {
                let _ = started_tx.send(Err(err));
                return;
            }
        };
        drop(db);
        let mut failing = false;
        if let Some(watched) = watched.upgrade() {
            let _ = watched.thread.set(std::thread::current());
        }
        loop {
            let Some(watched) = watched.upgrade() else { return };
            // A look vouches for the state as of when it began, not when it ended.
            let looked = watched.now_ms();
            match runtime.block_on(auth_watch.moved()) {
                Ok(moved) => {
                    failing = false;
                    if moved {
                        watched.changes.fetch_add(1, Ordering::Release);
                    }
                    watched.polled(looked);
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err.message, "cannot watch keys for changes; checking each key");
                    }
                    failing = true;
                    watched.changes.fetch_add(1, Ordering::Release);
                }
            }
            // Woken from a rest by a key to check: look at once.
            if !watched.rest_while_idle() {
                std::thread::sleep(WATCH_INTERVAL);
            }
        }
    };
    std::thread::Builder::new()
        .name("vault-key-watch".into())
        .spawn(watch)
        .map_err(|e| VaultError::internal("starting the key watcher", e))?;
    started.await.map_err(|_| VaultError::internal("starting the key watcher", "the watcher stopped"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_user_and_their_key(db: &Db) -> (crate::model::users::User, CreatedKey) {
        let user = crate::users::create(db, "A", "a@x.org", Role::User, None).await.unwrap();
        let key = create(db, "a", Scope::User, Some(&user.id), None).await.unwrap();
        (user, key)
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let raw = format!("{KEY_PREFIX}{}", secrets::random_alphanumeric(KEY_RANDOM_LEN).unwrap());
        assert!(is_well_formed(&raw));
        assert_eq!(display_prefix(&raw).unwrap().len(), 13);
        assert!(!is_well_formed("vault_sk_short"));
        assert!(!is_well_formed(&format!("{KEY_PREFIX}{}", "-".repeat(48))));
    }

    #[test]
    fn keys_in_recorded_text_are_cut_to_their_prefix() {
        let key = format!("{KEY_PREFIX}{}", "A1b2C3".repeat(8));
        assert_eq!(redact_keys(&format!("/v1/models/{key}/x")), "/v1/models/vault_sk_A1b2.../x");
        assert_eq!(redact_keys(&format!("{key}-{key}")), "vault_sk_A1b2...-vault_sk_A1b2...");
        assert_eq!(redact_keys("/v1/models/vault_sk_"), "/v1/models/vault_sk_");
        assert_eq!(redact_keys("/v1/chat/completions"), "/v1/chat/completions");
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
    async fn the_watcher_rests_while_no_key_is_checked_and_the_next_key_wakes_it() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let auth = Authenticator::new(db.clone()).await.unwrap();
        let created = create(&db, "x", Scope::User, None, None).await.unwrap();
        auth.authenticate(&created.key).await.unwrap();
        let watched = auth.watched.clone();
        tokio::time::sleep(IDLE_AFTER).await;
        // Resting: no look for 100 ms (it looks every 5 ms while keys are checked).
        let started = std::time::Instant::now();
        let mut polled = watched.polled_ms.load(Ordering::SeqCst);
        loop {
            assert!(started.elapsed() < IDLE_AFTER * 4, "the watcher never rested");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = watched.polled_ms.load(Ordering::SeqCst);
            if now == polled {
                break;
            }
            polled = now;
        }
        // The rest is long past STALE_AFTER: the cache is not trusted, the key is read again.
        let (_, misses) = auth.cache_lookups();
        auth.authenticate(&created.key).await.unwrap();
        assert_eq!(auth.cache_lookups().1, misses + 1);
        let woken = std::time::Instant::now();
        while watched.polled_ms.load(Ordering::SeqCst) == polled {
            assert!(woken.elapsed() < Duration::from_millis(500), "the next key did not wake the watcher");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn deactivated_users_keys_stop_working() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let (user, key) = a_user_and_their_key(&db).await;
        let auth = Authenticator::new(db.clone()).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().user_id, Some(user.id.clone()));
        crate::users::deactivate(&db, &user.id, None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap_err().status(), 401);
        let err = create(&db, "b", Scope::User, Some(&user.id), None).await.unwrap_err();
        assert_eq!(err.code, "user_inactive");
    }

    #[tokio::test]
    async fn a_refused_key_is_refused_from_the_cache_until_keys_or_users_change() {
        let (_dir, db) = storage::test_db().await;
        let db = Arc::new(db);
        let (user, key) = a_user_and_their_key(&db).await;
        let auth = Authenticator::new(db.clone()).await.unwrap();
        let misses = || auth.cache_lookups().1;
        let unknown = format!("{KEY_PREFIX}{}", "Z".repeat(KEY_RANDOM_LEN));
        assert_eq!(auth.authenticate(&unknown).await.unwrap_err().status(), 401);
        // Refused again without a lookup (once the watcher vouches for the cache: on a busy
        // machine its thread may lag a moment).
        let started = std::time::Instant::now();
        loop {
            let before = misses();
            assert_eq!(auth.authenticate(&unknown).await.unwrap_err().status(), 401);
            if misses() == before {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "a refused key is looked up every time");
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
        // Lookups share one connection rather than opening one each (PostgreSQL's come from
        // a pool).
        assert_eq!(auth.spare.lock().unwrap().is_some(), db.dialect() == storage::Dialect::Sqlite);

        crate::users::deactivate(&db, &user.id, None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap_err().status(), 401);
        assert_eq!(auth.authenticate(&key.key).await.unwrap_err().status(), 401);
        // Taking the user back counts at once, refused key or not.
        let back = || crate::users::UserUpdate { is_active: Some(true), ..Default::default() };
        crate::users::update(&db, &user.id, back(), None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().user_id, Some(user.id.clone()));
    }

    #[tokio::test]
    async fn a_refused_key_made_usable_by_another_process_is_let_in_on_the_next_request() {
        let (dir, db) = storage::test_sqlite_db().await;
        let db = Arc::new(db);
        let (user, key) = a_user_and_their_key(&db).await;
        crate::users::deactivate(&db, &user.id, None).await.unwrap();
        let auth = Authenticator::new(db.clone()).await.unwrap();
        for _ in 0..3 {
            assert_eq!(auth.authenticate(&key.key).await.unwrap_err().status(), 401);
        }
        // The CLI's own connection to the same file: this process hears of it only through
        // the database.
        let cli = Db::open(&crate::config::DbLocation::Local(dir.path().join("vault.db"))).await.unwrap();
        let back = crate::users::UserUpdate { is_active: Some(true), ..Default::default() };
        crate::users::update(&cli, &user.id, back, None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().user_id, Some(user.id));
    }

    #[test]
    fn refused_keys_made_up_by_the_thousand_cannot_grow_the_cache() {
        let mut refused = Refused::default();
        for i in 0..MAX_REFUSED * 3 {
            refused.remember((0, 0), secrets::sha256(&i.to_string()));
        }
        assert!(refused.keys.len() <= MAX_REFUSED);
        assert!(refused.keys.contains(&secrets::sha256(&(MAX_REFUSED * 3 - 1).to_string())));
        // Keys read under older counters go.
        refused.remember((0, 1), secrets::sha256("new"));
        assert_eq!(refused.keys.len(), 1);
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
        let demote = || crate::users::UserUpdate { role: Some(Role::User), ..Default::default() };
        // Demoting the holder of the only admin key would leave the box without an admin.
        let err = crate::users::update(&db, &admin.id, demote(), None).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::LastAdminKey);
        assert_eq!(crate::users::deactivate(&db, &admin.id, None).await.unwrap_err().code, ErrorCode::LastAdminKey);
        create(&db, "spare", Scope::Admin, None, None).await.unwrap();
        crate::users::update(&db, &admin.id, demote(), None).await.unwrap();
        assert_eq!(auth.authenticate(&key.key).await.unwrap().scope, Scope::User);
    }

    #[tokio::test]
    async fn revoke_rejects_bad_references() {
        let (_dir, db) = storage::test_db().await;
        assert_eq!(revoke(&db, "nonsense", None).await.unwrap_err().status(), 400);
        assert_eq!(revoke(&db, "999", None).await.unwrap_err().status(), 404);
        let key = create(&db, "x", Scope::User, None, None).await.unwrap();
        revoke(&db, &key.key, None).await.unwrap();
        assert_eq!(revoke(&db, &key.info.id.to_string(), None).await.unwrap_err().code, "key_already_revoked");
        assert_eq!(revoke_by_id(&db, 999, None).await.unwrap_err().code, "key_not_found");
        assert_eq!(create(&db, "  ", Scope::User, None, None).await.unwrap_err().status(), 400);
    }

    #[tokio::test]
    async fn the_last_admin_key_cannot_be_revoked() {
        let (_dir, db) = storage::test_db().await;
        let first = create(&db, "first", Scope::Admin, None, None).await.unwrap();
        let second = create(&db, "second", Scope::Admin, None, None).await.unwrap();
        revoke_by_id(&db, first.info.id, None).await.unwrap();
        let err = revoke_by_id(&db, second.info.id, None).await.unwrap_err();
        assert_eq!((err.code, err.status()), (ErrorCode::LastAdminKey, 409));
        // A user key never counts as the last admin key, and the refusal changed nothing.
        let user = create(&db, "user", Scope::User, None, None).await.unwrap();
        revoke_by_id(&db, user.info.id, None).await.unwrap();
        assert!(list(&db, false).await.unwrap().iter().any(|k| k.id == second.info.id));
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
