//! The first-boot wizard: its steps, what each stored, and the lock that ends it.
//!
//! Setup is complete once its flag file exists or the database says so (either one survives
//! a restart, and either one is enough). Until then the wizard's routes need no key; each
//! step records its state (`pending` → `in_progress` → `complete`) and a summary of what it
//! stored, so a wizard interrupted half-way resumes where it stopped. The server reads the
//! lock from memory on every request ([`SetupLock`]).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::app::Vault;
use crate::certificate::{self, TlsSource};
use crate::config::Config;
use crate::error::{ErrorCode, Result, VaultError};
use crate::keys::{self, CreatedKey, Scope};
use crate::settings::{self, Applied, NetworkConfig};
use crate::storage::{self, Db};
use crate::tls::{self, CertificateInfo, TlsStore};
use crate::users::{self, Role, User};

const COMPLETE_KEY: &str = "setup.complete";
/// Taken by the one wizard call that creates the admin; every later call finds it taken.
const ADMIN_CLAIM_KEY: &str = "setup.admin_claim";
/// The model chosen in the wizard, used where a request names none.
pub const DEFAULT_MODEL_KEY: &str = "inference.default_model";

/// The steps, in the order the wizard walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Network,
    Admin,
    Tls,
    Model,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Network, Step::Admin, Step::Tls, Step::Model];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Network => "network",
            Step::Admin => "admin",
            Step::Tls => "tls",
            Step::Model => "model",
        }
    }

    fn key(self) -> String {
        format!("setup.step.{}", self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    InProgress,
    Complete,
}

/// A step as the wizard left it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStatus {
    pub name: Step,
    pub state: StepState,
    pub updated_at: Option<String>,
    /// What the step stored (never a secret).
    pub summary: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepRecord {
    state: StepState,
    updated_at: String,
    #[serde(default)]
    summary: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetupStatus {
    /// `pending`, `in_progress` or `complete`.
    pub status: String,
    pub flag_file: bool,
    pub steps: Vec<StepStatus>,
}

pub async fn status(config: &Config, db: &Db) -> Result<SetupStatus> {
    let conn = db.connect().await?;
    let flag_file = config.setup_flag_path.is_file();
    let recorded_complete = storage::settings::get(&conn, COMPLETE_KEY).await?.as_deref() == Some("true");
    let status = if flag_file || recorded_complete {
        "complete"
    } else if storage::settings::any_with_prefix(&conn, "setup.").await? {
        "in_progress"
    } else {
        "pending"
    };
    let mut steps = Vec::with_capacity(Step::ALL.len());
    for step in Step::ALL {
        let record = storage::settings::get(&conn, &step.key())
            .await?
            .and_then(|raw| serde_json::from_str::<StepRecord>(&raw).ok());
        steps.push(match record {
            Some(r) => StepStatus { name: step, state: r.state, updated_at: Some(r.updated_at), summary: r.summary },
            None => StepStatus { name: step, state: StepState::Pending, updated_at: None, summary: None },
        });
    }
    Ok(SetupStatus { status: status.into(), flag_file, steps })
}

/// Whether the wizard is over, read from memory on every request; set at start-up from the
/// flag file and the database, and by [`complete`].
#[derive(Debug, Default)]
pub struct SetupLock {
    complete: AtomicBool,
}

impl SetupLock {
    pub async fn load(config: &Config, db: &Db) -> Result<SetupLock> {
        let complete = status(config, db).await?.status == "complete";
        Ok(SetupLock { complete: AtomicBool::new(complete) })
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Looks again at the flag file and the database (another gateway on the same database,
    /// or the CLI, may have completed setup); says whether setup is complete. Once complete,
    /// it stays so in this process.
    pub async fn refresh(&self, config: &Config, db: &Db) -> bool {
        if !self.is_complete() && status(config, db).await.is_ok_and(|s| s.status == "complete") {
            self.close();
        }
        self.is_complete()
    }

    fn close(&self) {
        self.complete.store(true, Ordering::Release);
    }
}

/// The answer every wizard route gives once setup is over: the routes no longer exist.
pub fn gone() -> VaultError {
    VaultError::not_found(ErrorCode::NotFound, "There is no such route.")
}

/// Refuses once setup is complete — here or in another gateway on the same database, which
/// the in-memory lock may not know yet.
async fn ensure_open(vault: &Vault) -> Result<()> {
    if vault.setup.is_complete() || vault.setup.refresh(&vault.config, &vault.db).await {
        return Err(gone());
    }
    Ok(())
}

async fn mark(db: &Db, step: Step, state: StepState, summary: Option<serde_json::Value>) -> Result<()> {
    let at = crate::time::now_rfc3339();
    let record = StepRecord { state, updated_at: at.clone(), summary };
    let raw = serde_json::to_string(&record).map_err(|e| VaultError::internal("recording a setup step", e))?;
    storage::settings::put(&db.connect().await?, &step.key(), &raw, &at).await
}

/// Runs a step whose input is valid: in progress while it applies (so an interruption shows),
/// complete with its summary once it has.
async fn run_step<T>(
    db: &Db,
    step: Step,
    apply: impl Future<Output = Result<T>>,
    summary: impl FnOnce(&T) -> serde_json::Value,
) -> Result<T> {
    mark(db, step, StepState::InProgress, None).await?;
    let done = apply.await?;
    mark(db, step, StepState::Complete, Some(summary(&done))).await?;
    Ok(done)
}

/// Step `network`: hostname, addresses and DNS, applied through the system controller.
pub async fn network(vault: &Vault, config: NetworkConfig) -> Result<Applied<NetworkConfig>> {
    ensure_open(vault).await?;
    let config = config.validated()?;
    run_step(
        &vault.db,
        Step::Network,
        settings::set_network(&vault.db, vault.controller.as_ref(), config, Some("setup")),
        |applied| serde_json::json!({"hostname": applied.settings.hostname, "dry_run": applied.dry_run}),
    )
    .await
}

/// What the `admin` step created: the user and its key, shown this once.
#[derive(Debug, Clone)]
pub struct AdminCreated {
    pub user: User,
    pub key: CreatedKey,
}

/// Step `admin`: the first admin user and an admin key for it. Exactly one call ever
/// creates them, however many arrive at once (the claim is one row the database lets only
/// one writer insert); every other call answers 409.
pub async fn admin(vault: &Vault, name: &str, email: &str) -> Result<AdminCreated> {
    ensure_open(vault).await?;
    let (name, email) = users::checked_new(name, email)?;
    let conn = vault.db.connect().await?;
    let now = crate::time::now_rfc3339();
    if !storage::settings::insert_new(&conn, ADMIN_CLAIM_KEY, "claimed", &now).await?
        && !reclaim_stale(&conn, &vault.config, &vault.db, &now).await?
    {
        return Err(VaultError::conflict(
            ErrorCode::AdminExists,
            "The setup admin was already created; sign in with its key, or reset setup at the console.",
        ));
    }
    let created = run_step(&vault.db, Step::Admin, create_admin(&vault.db, &name, &email), |created| {
        serde_json::json!({"user_id": created.user.id, "email": created.user.email, "key_prefix": created.key.info.prefix})
    })
    .await;
    if created.is_err() {
        // Nothing was created (the email is taken, or the database refused): as if the
        // call had not happened, so the next one may try again. Should this fail too, the
        // claim goes stale and is taken over after `STALE_CLAIM`.
        let _ = storage::settings::delete(&conn, &Step::Admin.key()).await;
        let _ = storage::settings::delete(&conn, ADMIN_CLAIM_KEY).await;
    }
    created
}

/// How long a claim on the admin step may stand without the step completing before another
/// call takes it over (the process that made it stopped half-way).
const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// Takes over a claim on the admin step left by a call that never finished; says whether
/// it did. Exactly one caller wins, as with the claim itself.
async fn reclaim_stale(conn: &crate::storage::Conn, config: &Config, db: &Db, now: &str) -> Result<bool> {
    let admin_done =
        status(config, db).await?.steps.iter().any(|s| s.name == Step::Admin && s.state == StepState::Complete);
    if admin_done {
        return Ok(false);
    }
    let stale_before = crate::time::format_rfc3339(std::time::SystemTime::now() - STALE_CLAIM);
    storage::settings::replace_if_older(conn, ADMIN_CLAIM_KEY, "claimed", now, &stale_before).await
}

async fn create_admin(db: &Db, name: &str, email: &str) -> Result<AdminCreated> {
    let user = users::create(db, name, email, Role::Admin, Some("setup")).await?;
    let key = keys::create(db, "setup admin", Scope::Admin, Some(&user.id), Some("setup")).await?;
    Ok(AdminCreated { user, key })
}

/// Step `tls`: a self-signed certificate or an uploaded one. (Installing is all or
/// nothing, so the step has no in-between state to show.)
pub async fn tls(vault: &Vault, source: TlsSource) -> Result<CertificateInfo> {
    ensure_open(vault).await?;
    let info = certificate::install(&vault.config, &vault.db, source, "setup").await?;
    let summary = serde_json::json!({
        "subject": info.subject,
        "not_after": info.not_after,
        "fingerprint_sha256": info.fingerprint_sha256,
        "self_signed": info.self_signed,
    });
    mark(&vault.db, Step::Tls, StepState::Complete, Some(summary)).await?;
    crate::activity::record(
        &vault.db,
        "config.tls",
        Some("setup"),
        None,
        format!("Certificate installed ({})", info.subject),
    )
    .await;
    Ok(info)
}

/// Step `model`: the default model, which must be one the manifest lists.
pub async fn model(vault: &Vault, model_id: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    ensure_open(vault).await?;
    let model_id = crate::validate::text("model_id", model_id, 256)?;
    let manifest = vault.inference.manifest().load()?;
    let Some(entry) = manifest.entry(&model_id).cloned() else {
        let known: Vec<&str> = manifest.models.iter().filter_map(|m| m.get("id").and_then(|v| v.as_str())).collect();
        return Err(VaultError::invalid_field(format!(
            "model_id: `{model_id}` is not in the model manifest (known: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    };
    let db = &vault.db;
    run_step(
        db,
        Step::Model,
        async {
            let conn = db.connect().await?;
            storage::settings::put(&conn, DEFAULT_MODEL_KEY, &model_id, &crate::time::now_rfc3339()).await?;
            Ok(entry)
        },
        |_| serde_json::json!({"model_id": model_id}),
    )
    .await
}

/// One check of the `verify` step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or why it failed.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verification {
    /// Whether every check passed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Step `verify`: real checks of what the box needs, each with a reason; never an error.
pub async fn verify(vault: &Vault) -> Result<Verification> {
    ensure_open(vault).await?;
    let check = |name, outcome: std::result::Result<String, String>| match outcome {
        Ok(reason) => Check { name, ok: true, reason },
        Err(reason) => Check { name, ok: false, reason },
    };
    let checks = vec![
        check("database", database_round_trip(&vault.db).await),
        check("inference", upstream_models(vault).await),
        check("gpu", gpus()),
        check("tls", certificate(vault).await),
    ];
    Ok(Verification { ok: checks.iter().all(|c| c.ok), checks })
}

/// Writes a row and reads it back.
async fn database_round_trip(db: &Db) -> std::result::Result<String, String> {
    let probe = crate::secrets::new_id();
    let round_trip = async {
        let conn = db.connect().await?;
        storage::settings::put(&conn, "setup.verify_probe", &probe, &crate::time::now_rfc3339()).await?;
        storage::settings::get(&conn, "setup.verify_probe").await
    };
    match round_trip.await {
        Ok(Some(read)) if read == probe => Ok("a row was written and read back".into()),
        Ok(_) => Err("a row written was not read back".into()),
        Err(err) => Err(format!("the database refused a write or a read: {}", err.message)),
    }
}

async fn upstream_models(vault: &Vault) -> std::result::Result<String, String> {
    match vault.inference.list_models().await {
        Ok(list) => {
            let ids: Vec<&str> = list
                .get("data")
                .and_then(|d| d.as_array())
                .map(|cards| cards.iter().filter_map(|c| c.get("id").and_then(|v| v.as_str())).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                Err("the inference service answers but serves no model".into())
            } else {
                Ok(format!("the inference service serves {}", ids.join(", ")))
            }
        }
        Err(err) => Err(err.message),
    }
}

fn gpus() -> std::result::Result<String, String> {
    let presence = crate::gpu::presence();
    match (presence.available, presence.count) {
        (false, _) => Err("NVML is not available: no NVIDIA driver or GPU was found".into()),
        (true, 0) => Err("NVML answers but reports no GPU".into()),
        (true, n) => Ok(format!("{n} GPU(s) found through NVML")),
    }
}

/// The installed certificate: present, valid now, and made out to the box's host name.
async fn certificate(vault: &Vault) -> std::result::Result<String, String> {
    let info = match TlsStore::new(&vault.config.tls_cert_dir).info() {
        Ok(Some(info)) => info,
        Ok(None) => return Err("no certificate is installed".into()),
        Err(err) => return Err(format!("the installed certificate cannot be read: {}", err.message)),
    };
    if info.days_left < 0 {
        return Err(format!("the certificate expired on {}", info.not_after));
    }
    let hostname = settings::network(&vault.db).await.map(|n| n.hostname).map_err(|e| e.message)?;
    if !tls::covers_host(&info, &hostname) {
        return Err(format!("the certificate ({}) is not made out to the host name {hostname}", info.sans.join(", ")));
    }
    Ok(format!("{} is valid for {} more days and covers {hostname}", info.subject, info.days_left))
}

/// Ends the wizard: refuses (409, naming what is missing) until an admin exists and a
/// certificate is installed; then
/// records completion in the database and in the flag file, and closes the routes.
pub async fn complete(vault: &Vault) -> Result<SetupStatus> {
    ensure_open(vault).await?;
    let current = status(&vault.config, &vault.db).await?;
    let admin_done = current.steps.iter().any(|s| s.name == Step::Admin && s.state == StepState::Complete);
    let has_certificate = TlsStore::new(&vault.config.tls_cert_dir).info().ok().flatten().is_some();
    let missing: Vec<&str> =
        [(!admin_done).then_some("admin"), (!has_certificate).then_some("tls")].into_iter().flatten().collect();
    if !missing.is_empty() {
        return Err(VaultError::conflict(
            ErrorCode::SetupIncomplete,
            format!("Setup cannot complete yet; still missing: {}.", missing.join(", ")),
        ));
    }
    let conn = vault.db.connect().await?;
    storage::settings::put(&conn, COMPLETE_KEY, "true", &crate::time::now_rfc3339()).await?;
    // The database marker alone keeps setup closed: the routes close now, whatever the
    // flag file does.
    vault.setup.close();
    if let Err(err) = write_flag_file(&vault.config) {
        tracing::warn!(error = %err.message, "setup is complete, but its flag file could not be written");
    }
    crate::activity::record(&vault.db, "setup.completed", Some("setup"), None, "First-boot setup completed".into())
        .await;
    status(&vault.config, &vault.db).await
}

fn write_flag_file(config: &Config) -> Result<()> {
    let path = &config.setup_flag_path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| VaultError::internal("writing the setup flag file", e))?;
    }
    std::fs::write(path, format!("completed {}\n", crate::time::now_rfc3339()))
        .map_err(|e| VaultError::internal("writing the setup flag file", e))
}

/// Re-opens the wizard (for a technician at the console): removes the flag file and the
/// wizard's records, keeps users and keys. A running server sees it after a restart.
pub async fn reset(config: &Config, db: &Db, actor: &str) -> Result<()> {
    match std::fs::remove_file(&config.setup_flag_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VaultError::internal("removing the setup flag file", e)),
    }
    storage::settings::delete_with_prefix(&db.connect().await?, "setup.").await?;
    crate::activity::record(db, "setup.reset", Some(actor), None, "First-boot setup re-opened".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_moves_from_pending_to_complete() {
        let (dir, db) = storage::test_db().await;
        let config = Config::for_data_dir(dir.path()).unwrap();
        let pending = status(&config, &db).await.unwrap();
        assert_eq!(pending.status, "pending");
        assert!(pending.steps.iter().all(|s| s.state == StepState::Pending));
        mark(&db, Step::Network, StepState::InProgress, None).await.unwrap();
        let started = status(&config, &db).await.unwrap();
        assert_eq!(started.status, "in_progress");
        assert_eq!(started.steps[0].state, StepState::InProgress);
        std::fs::write(&config.setup_flag_path, "").unwrap();
        let done = status(&config, &db).await.unwrap();
        assert_eq!((done.status.as_str(), done.flag_file), ("complete", true));
    }

    #[tokio::test]
    async fn reset_reopens_the_wizard_and_keeps_nothing_of_it() {
        let (dir, db) = storage::test_db().await;
        let config = Config::for_data_dir(dir.path()).unwrap();
        mark(&db, Step::Admin, StepState::Complete, None).await.unwrap();
        storage::settings::put(&db.connect().await.unwrap(), COMPLETE_KEY, "true", "t").await.unwrap();
        write_flag_file(&config).unwrap();
        assert_eq!(status(&config, &db).await.unwrap().status, "complete");
        reset(&config, &db, "cli").await.unwrap();
        assert_eq!(status(&config, &db).await.unwrap().status, "pending");
        assert!(!config.setup_flag_path.exists());
    }
}
