//! `Vault`: one running instance of the gateway's core — database, key checks, audit
//! writer and inference — as the server (or an embedding program) uses it.

use std::sync::Arc;

use serde::Serialize;

use crate::audit::{self, AuditLog, RequestAudit};
use crate::config::{Config, SystemControl};
use crate::controller::{DryRunController, HostController, SystemController};
use crate::error::Result;
use crate::gpu::{self, GpuPresence};
use crate::inference::{Inference, InferenceBackend};
use crate::insights;
use crate::keys::{self, Authenticator, Principal};
use crate::manifest::Manifest;
use crate::setup::SetupLock;
use crate::storage::Db;
use crate::system::SystemMonitor;

pub struct Vault {
    pub config: Config,
    pub db: Arc<Db>,
    pub auth: Authenticator,
    pub audit: AuditLog,
    pub inference: Inference,
    pub controller: Arc<dyn SystemController>,
    pub monitor: SystemMonitor,
    /// Whether the first-boot wizard is over (its routes then no longer exist).
    pub setup: SetupLock,
    /// Cancelled when streams must end because the gateway stops.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The live metrics feed of `/ws/system`.
    pub feed: crate::feed::Feed,
    /// Model loads and unloads, running and done.
    pub operations: crate::models::operations::Operations,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`; `degraded` when the upstream does not answer; `unavailable` when Vault cannot
    /// keep its records (database or audit trail), so it serves no inference.
    pub status: &'static str,
    pub version: &'static str,
    pub inference: UpstreamHealth,
    pub database: Check,
    pub audit: Check,
    pub gpu: GpuPresence,
}

/// One check of the health answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

impl Health {
    /// Whether Vault can serve: it keeps its records (the upstream may still be down).
    pub fn is_ready(&self) -> bool {
        self.database.ok && self.audit.ok
    }

    /// Whether Vault can answer inference: it keeps its records and the upstream answers.
    pub fn serves_inference(&self) -> bool {
        self.is_ready() && self.inference.reachable
    }
}

impl Check {
    fn of(outcome: std::result::Result<(), String>) -> Check {
        Check { ok: outcome.is_ok(), reason: outcome.err() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealth {
    pub reachable: bool,
    /// With several upstreams: how many are in rotation, of how many.
    pub upstreams_up: usize,
    pub upstreams: usize,
}

/// How often a gateway whose setup is open looks whether it was completed elsewhere (another
/// gateway on the same database): its routes then close here too.
const SETUP_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

async fn watch_setup(vault: std::sync::Weak<Vault>) {
    loop {
        tokio::time::sleep(SETUP_WATCH_INTERVAL).await;
        let Some(vault) = vault.upgrade() else { return };
        if vault.setup.refresh(&vault.config, &vault.db).await {
            return;
        }
    }
}

/// How long shutdown waits for stopped imports to remove their partial copies (each stops
/// within a MiB of copying).
const IMPORT_STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Vault {
    /// Opens the data dir and database and starts the audit writer, with vLLM at
    /// `VLLM_BASE_URL` as the upstream.
    pub async fn open(config: Config) -> Result<Arc<Vault>> {
        let backend = crate::inference::backend_for(&config)?;
        Self::open_with_backend(config, backend).await
    }

    pub async fn open_with_backend(config: Config, backend: Arc<dyn InferenceBackend>) -> Result<Arc<Vault>> {
        config.prepare_data_dir()?;
        // Made (or read) before anything else: the audit chain's checkpoints are signed with it.
        let secret = config.secret_key()?;
        let db = Arc::new(Db::open(&config.db).await?);
        let auth = Authenticator::new(db.clone()).await?;
        let audit = AuditLog::start_with(db.clone(), config.min_free_bytes, secret.into_bytes()).await?;
        let stopping = tokio_util::sync::CancellationToken::new();
        let manifest = Manifest::new(config.models_manifest.clone());
        let limiter = crate::limits::Limiter::new(config.default_limits);
        let admission = crate::inference::admission::Admission::new(config.admission, stopping.clone());
        let inference =
            Inference::new(backend, manifest, stopping.clone(), config.stream_idle_timeout, limiter, admission);
        inference.watch_engine();
        let controller: Arc<dyn SystemController> = match config.system_control {
            SystemControl::DryRun => Arc::new(DryRunController::default()),
            SystemControl::Host => Arc::new(HostController),
        };
        let monitor = SystemMonitor::new()?;
        let setup = SetupLock::load(&config, &db).await?;
        let feed = crate::feed::Feed::default();
        let operations = crate::models::operations::Operations::default();
        let models_dir = config.models_dir.clone();
        match tokio::task::spawn_blocking(move || crate::models::import::remove_abandoned_copies(&models_dir)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(folders)) => {
                tracing::warn!(folders, "removed the partial copies of model imports that were cut short")
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "could not look for partial copies of model imports"),
            Err(err) => tracing::warn!(error = %err, "could not look for partial copies of model imports"),
        }
        let vault = Arc::new(Vault {
            config,
            db,
            auth,
            audit,
            inference,
            controller,
            monitor,
            setup,
            stopping,
            feed,
            operations,
        });
        if !vault.setup.is_complete() {
            tokio::spawn(watch_setup(Arc::downgrade(&vault)));
        }
        Ok(vault)
    }

    /// Resolves the raw key a request presented and records in its audit record who it
    /// acts as — or, for a refused key, only its display prefix: the raw key goes no further.
    pub async fn authenticate(&self, raw_key: &str, audit: &RequestAudit) -> Result<Principal> {
        let outcome = self.auth.authenticate(raw_key).await;
        match &outcome {
            Ok(principal) => audit.set_principal(principal),
            Err(_) => audit.set_refused_key_prefix(keys::display_prefix(raw_key)),
        }
        outcome
    }

    /// Usage insights as `who` may see them, counting every request answered so far (the
    /// audit rows they are read from reach the database moments after their answers).
    pub async fn insights(&self, range: insights::Range, who: &Principal) -> Result<insights::Insights> {
        self.audit.flush().await;
        insights::visible_to(&self.db, range, who).await
    }

    /// Audit stats over `[from, to)` widened to whole hours, with every answered request in.
    pub async fn audit_stats(&self, from: Option<&str>, to: Option<&str>) -> Result<audit::AuditStats> {
        let hours = audit::stats::covering_hours(from, to, std::time::SystemTime::now())?;
        self.audit.flush().await;
        audit::stats::stats_for(&self.db, &hours).await
    }

    /// Checks the audit log's hash chain from its start (or row `from`), with every answered
    /// request in, on a thread of its own: a million rows take a few seconds of CPU that
    /// the requests being served do not wait for.
    pub async fn verify_audit(&self, from: Option<i64>) -> Result<audit::chain::Verification> {
        self.audit.flush().await;
        let (db, key) = (self.db.clone(), self.config.secret_key()?.into_bytes());
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| crate::error::VaultError::internal("verifying the audit log", e))?;
            runtime.block_on(audit::chain::verify(&db, &key, from, &mut |_, _| {}))
        })
        .await
        .map_err(|e| crate::error::VaultError::internal("verifying the audit log", e))?
    }

    /// Requests per minute, tokens per second, latency and time to first token over the last
    /// minutes, with every answered request in.
    pub async fn inference_stats(&self) -> Result<crate::live::InferenceStats> {
        self.audit.flush().await;
        let mut stats = crate::live::inference_stats(&self.db, self.audit.metrics().active_streams()).await?;
        stats.engine = self.inference.engine_load().await;
        Ok(stats)
    }

    /// A page of logs, newest first: this gateway's own log file, or a managed service's
    /// journal (see `logs`).
    pub async fn logs(
        &self,
        query: &crate::logs::LogQuery,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<crate::logs::LogPage> {
        crate::logs::page(self.config.log_file.clone(), self.controller.clone(), query, limit, cursor).await
    }

    /// The gateway's Prometheus metrics, as text (see `metrics`).
    pub fn metrics_text(&self) -> String {
        let (key_cache_hits, key_cache_misses) = self.auth.cache_lookups();
        let snapshot = crate::metrics::Snapshot {
            audit_queue_depth: self.audit.queue_depth(),
            key_cache_hits,
            key_cache_misses,
            admission: self.inference.admission().snapshot(),
        };
        self.audit.metrics().encode(snapshot)
    }

    pub async fn health(&self) -> Health {
        let reachable = self.inference.upstream_healthy().await;
        let database = Check::of(self.db.check_file().map_err(String::from));
        let audit = Check::of(self.audit.available().map_err(|e| e.message));
        let status = match (database.ok && audit.ok, reachable) {
            (false, _) => "unavailable",
            (true, false) => "degraded",
            (true, true) => "ok",
        };
        Health {
            status,
            version: env!("CARGO_PKG_VERSION"),
            inference: match self.inference.upstream_states() {
                // One upstream: in rotation while it answers.
                None => UpstreamHealth { reachable, upstreams_up: usize::from(reachable), upstreams: 1 },
                Some(states) => UpstreamHealth {
                    reachable,
                    upstreams_up: states.iter().filter(|s| s.state == "up").count(),
                    upstreams: states.len(),
                },
            },
            database,
            audit,
            gpu: gpu::presence(),
        }
    }

    /// Stops the model imports under way (removing what they copied) and stores every audit
    /// row still queued. Call after the server stopped taking requests.
    pub async fn shutdown(&self) {
        self.operations.stop_imports(IMPORT_STOP_PATIENCE).await;
        self.audit.shutdown().await;
        let stats = self.audit.stats();
        tracing::info!(
            rows = stats.rows,
            commits = stats.commits,
            checkpoints = stats.checkpoints,
            journal_writes = stats.journal_writes,
            "audit log flushed"
        );
    }
}
