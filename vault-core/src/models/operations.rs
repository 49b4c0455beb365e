//! Loading and unloading models: the model configuration is rewritten, the inference
//! service restarted through the system controller, and an operation — answered at once,
//! followed in the background — reports until the engine serves the model (or stops
//! serving it), or the attempt failed and why.
//!
//! One load or unload runs at a time. A load is checked first: the model is complete on
//! disk, not loaded already, and fits the free memory of one GPU (its weights ×
//! `VRAM_OVERHEAD`, against NVML's free figure, or the simulated GPUs'). Which GPU: the one
//! with the most free memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::gpu_config::{GpuConfig, ServedModel};
use crate::app::Vault;
use crate::controller::HostChange;
use crate::error::{ErrorCode, Result, VaultError};
use crate::gpu::GpuMemory;

/// The systemd unit of the inference service.
const INFERENCE_UNIT: &str = "vllm.service";
/// How long the engine has to start serving a model (or stop) before the operation fails.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often the engine is asked meanwhile.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// vLLM's share of a GPU's memory for a model Vault loads.
const GPU_MEMORY_UTILIZATION: f64 = 0.9;
/// Finished operations kept for reading.
const KEPT: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Load,
    Unload,
    Import,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Running,
    Succeeded,
    Failed,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Load => "load",
            OperationKind::Unload => "unload",
            OperationKind::Import => "import",
        }
    }
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Operation {
    pub id: String,
    pub kind: OperationKind,
    pub model: String,
    pub state: OperationState,
    /// Why it failed.
    pub reason: Option<String>,
    /// The GPUs the model is placed on (a load).
    pub gpus: Vec<u32>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Whether the host change was only recorded (`VAULT_SYSTEM_CONTROL=dry-run`).
    pub dry_run: bool,
    /// How far an import has copied.
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// The operations of this gateway: the load or unload running, the imports copying, and
/// the last finished ones.
#[derive(Default)]
pub struct Operations {
    all: Mutex<HashMap<String, Operation>>,
    running: Mutex<Option<String>>,
    /// Imports under way: the model id each creates, and its bytes copied so far.
    imports: Mutex<HashMap<String, (String, Arc<AtomicU64>)>>,
    /// Cancelled when the gateway shuts down: the copies stop.
    stopping_imports: tokio_util::sync::CancellationToken,
}

impl Operations {
    pub fn get(&self, id: &str) -> Result<Operation> {
        let mut operation = self.all.lock().ok().and_then(|all| all.get(id).cloned()).ok_or_else(|| {
            VaultError::not_found(ErrorCode::OperationNotFound, format!("There is no operation `{id}` here."))
        })?;
        if let (Some(progress), Ok(imports)) = (operation.progress.as_mut(), self.imports.lock())
            && let Some((_, done)) = imports.get(id)
        {
            progress.done_bytes = done.load(Ordering::Relaxed);
        }
        Ok(operation)
    }

    /// What tells the copies to stop.
    pub(super) fn imports_stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stopping_imports.clone()
    }

    /// Stops the imports under way, and waits (up to `patience`) until each has removed
    /// what it had copied.
    pub async fn stop_imports(&self, patience: std::time::Duration) {
        self.stopping_imports.cancel();
        let deadline = tokio::time::Instant::now() + patience;
        while self.imports.lock().is_ok_and(|imports| !imports.is_empty()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Bytes the imports under way have still to copy: room they will take on the disk.
    pub fn import_bytes_left(&self) -> u64 {
        let Ok(imports) = self.imports.lock() else { return 0 };
        let Ok(all) = self.all.lock() else { return 0 };
        imports
            .iter()
            .filter_map(|(id, (_, done))| {
                let total = all.get(id)?.progress?.total_bytes;
                Some(total.saturating_sub(done.load(Ordering::Relaxed)))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Whether a load, unload or import of model `model` is under way.
    pub fn busy_with(&self, model: &str) -> bool {
        let running = self.running.lock().ok().and_then(|r| r.clone());
        let loading =
            running.is_some_and(|id| self.all.lock().is_ok_and(|all| all.get(&id).is_some_and(|o| o.model == model)));
        loading || self.imports.lock().is_ok_and(|imports| imports.values().any(|(target, _)| target == model))
    }

    /// Claims the one slot for a load or unload.
    fn begin(&self, operation: Operation) -> Result<()> {
        let mut running = self.running.lock().map_err(|_| VaultError::internal("starting an operation", "lock"))?;
        if let Some(other) = running.as_ref() {
            return Err(VaultError::conflict(
                ErrorCode::OperationInProgress,
                "Another model load or unload is under way.",
            )
            .with_details(serde_json::json!({"operation": other})));
        }
        *running = Some(operation.id.clone());
        self.keep(operation);
        Ok(())
    }

    /// Records an import that creates model `target`; gives its counter of bytes copied.
    pub(super) fn begin_import(&self, operation: Operation, target: &str) -> Result<Arc<AtomicU64>> {
        let mut imports = self.imports.lock().map_err(|_| VaultError::internal("starting an import", "lock"))?;
        if let Some((other, _)) = imports.iter().find(|(_, (model, _))| model == target) {
            return Err(VaultError::conflict(
                ErrorCode::OperationInProgress,
                format!("`{target}` is being imported already."),
            )
            .with_details(serde_json::json!({"operation": other})));
        }
        let done = Arc::new(AtomicU64::new(0));
        imports.insert(operation.id.clone(), (target.to_string(), done.clone()));
        self.keep(operation);
        Ok(done)
    }

    fn keep(&self, operation: Operation) {
        if let Ok(mut all) = self.all.lock() {
            if all.len() >= KEPT {
                let oldest = all
                    .values()
                    .filter(|o| o.state != OperationState::Running)
                    .min_by(|a, b| a.started_at.cmp(&b.started_at))
                    .map(|o| o.id.clone());
                if let Some(oldest) = oldest {
                    all.remove(&oldest);
                }
            }
            all.insert(operation.id.clone(), operation);
        }
    }

    pub(super) fn finish(&self, id: &str, failure: Option<String>) {
        let copied = self.imports.lock().ok().and_then(|mut imports| imports.remove(id)).map(|(_, done)| done);
        if let Ok(mut all) = self.all.lock()
            && let Some(operation) = all.get_mut(id)
        {
            if let (Some(progress), Some(done)) = (operation.progress.as_mut(), copied) {
                progress.done_bytes = done.load(Ordering::Relaxed);
            }
            operation.state = if failure.is_some() { OperationState::Failed } else { OperationState::Succeeded };
            operation.reason = failure;
            operation.finished_at = Some(crate::time::now_rfc3339());
        }
        if let Ok(mut running) = self.running.lock()
            && running.as_deref() == Some(id)
        {
            *running = None;
        }
    }
}

/// The GPUs' memory now — NVML's figures, or the simulated GPUs' — with what the model
/// configuration placed on each GPU counted as used even while the engine is not running
/// (restarting, or after a failed load), so two models are never placed in one's room.
/// `None` when no figures are known.
async fn gpu_memory(vault: &Vault, config: &GpuConfig) -> Option<Vec<GpuMemory>> {
    let readings = match &vault.config.simulated_gpus {
        Some(totals) => totals
            .iter()
            .zip(0u32..)
            .map(|(total, index)| GpuMemory { index, total_bytes: *total, used_bytes: 0, free_bytes: *total })
            .collect(),
        None => tokio::task::spawn_blocking(crate::gpu::memory).await.ok().flatten()?,
    };
    Some(
        readings
            .into_iter()
            .map(|gpu| {
                let placed = config.models.iter().filter(|m| m.gpus.contains(&gpu.index)).map(|m| m.estimate_bytes);
                let used = gpu.used_bytes.max(placed.sum::<u64>()).min(gpu.total_bytes);
                GpuMemory { used_bytes: used, free_bytes: gpu.total_bytes - used, ..gpu }
            })
            .collect(),
    )
}

/// The GPU memory view of `/vault/models/active` and of the load check.
pub async fn memory_now(vault: &Vault) -> Result<(Option<Vec<GpuMemory>>, GpuConfig)> {
    let config = GpuConfig::read(&vault.config.gpu_config)?;
    Ok((gpu_memory(vault, &config).await, config))
}

async fn restart_engine(vault: &Vault) -> Result<()> {
    let controller = vault.controller.clone();
    tokio::task::spawn_blocking(move || controller.apply(&HostChange::RestartService(INFERENCE_UNIT.into())))
        .await
        .map_err(|e| VaultError::internal("restarting the inference service", e))?
        .map(drop)
}

pub(super) fn new_operation(kind: OperationKind, model: &str, gpus: Vec<u32>, dry_run: bool) -> Operation {
    Operation {
        id: crate::secrets::new_id(),
        kind,
        model: model.into(),
        state: OperationState::Running,
        reason: None,
        gpus,
        started_at: crate::time::now_rfc3339(),
        finished_at: None,
        dry_run,
        progress: None,
    }
}

/// Starts loading model `id`: checks, rewrites the configuration, restarts the engine.
pub async fn load(vault: &Arc<Vault>, id: &str, actor: &str) -> Result<Operation> {
    let detail = super::detail(&vault.inference, &vault.config.models_dir, id).await?;
    if let Some(reason) = &detail.summary.reason {
        return Err(VaultError::conflict(
            ErrorCode::InvalidState,
            format!("The model `{id}` is incomplete: {reason}."),
        ));
    }
    let folder = super::folder_of(&vault.config.models_dir, id)?;
    let (memory, config) = memory_now(vault).await?;
    if detail.summary.status == super::ModelStatus::Loaded || config.get(id).is_some() {
        return Err(VaultError::conflict(ErrorCode::ModelLoaded, format!("The model `{id}` is loaded already.")));
    }
    let estimate = detail.vram_estimate_bytes;
    let gpus = match memory.as_ref().and_then(|m| m.iter().max_by_key(|g| g.free_bytes).copied()) {
        Some(gpu) if gpu.free_bytes < estimate => {
            return Err(VaultError::conflict(
                ErrorCode::InsufficientGpuMemory,
                format!(
                    "The model `{id}` needs about {} MiB of GPU memory; the freest GPU has {} MiB.",
                    estimate >> 20,
                    gpu.free_bytes >> 20
                ),
            )
            .with_details(
                serde_json::json!({"estimate_bytes": estimate, "free_bytes": gpu.free_bytes, "gpu": gpu.index}),
            ));
        }
        Some(gpu) => vec![gpu.index],
        // No GPU figures (no NVML): the engine decides, and says if it cannot.
        None => vec![0],
    };
    let operation = new_operation(OperationKind::Load, id, gpus.clone(), vault.controller.is_dry_run());
    vault.operations.begin(operation.clone())?;
    let mut config = read_holding_the_slot(vault, &operation)?;
    config.models.push(ServedModel {
        id: id.into(),
        path: folder.display().to_string(),
        gpus,
        gpu_memory_utilization: GPU_MEMORY_UTILIZATION,
        max_model_len: detail.config.context_length,
        estimate_bytes: estimate,
    });
    apply(vault, &operation, &config, actor, true).await
}

/// Starts unloading model `id`: rewrites the configuration without it, restarts the engine.
pub async fn unload(vault: &Arc<Vault>, id: &str, actor: &str) -> Result<Operation> {
    super::folder_of(&vault.config.models_dir, id)?;
    let mut config = GpuConfig::read(&vault.config.gpu_config)?;
    let Some(placed) = config.get(id).cloned() else {
        return Err(VaultError::conflict(
            ErrorCode::InvalidState,
            format!("The model `{id}` is not loaded through Vault's model configuration."),
        ));
    };
    let operation = new_operation(OperationKind::Unload, id, placed.gpus, vault.controller.is_dry_run());
    vault.operations.begin(operation.clone())?;
    config = read_holding_the_slot(vault, &operation)?;
    config.models.retain(|m| m.id != id);
    apply(vault, &operation, &config, actor, false).await
}

/// The model configuration, read (again) once `operation` holds the slot, so no load or
/// unload that finished since the checks is lost; on failure the slot is freed.
fn read_holding_the_slot(vault: &Vault, operation: &Operation) -> Result<GpuConfig> {
    GpuConfig::read(&vault.config.gpu_config).inspect_err(|err| {
        vault.operations.finish(&operation.id, Some(err.message.clone()));
    })
}

/// Writes the configuration, restarts the engine, and follows the operation until the
/// engine serves the model (`present`) or not.
async fn apply(
    vault: &Arc<Vault>,
    operation: &Operation,
    config: &GpuConfig,
    actor: &str,
    present: bool,
) -> Result<Operation> {
    // Should this request be dropped before the follower takes over, the slot is freed.
    let mut unhanded = Unhanded { operations: &vault.operations, id: Some(operation.id.clone()) };
    let previous = GpuConfig::read(&vault.config.gpu_config);
    let applied = match config.write(&vault.config.gpu_config) {
        Ok(()) => restart_engine(vault).await,
        Err(err) => Err(err),
    };
    if let Err(err) = applied {
        // Nothing changed after all: the configuration as it was, the slot free.
        if let Ok(previous) = previous {
            let _ = previous.write(&vault.config.gpu_config);
        }
        unhanded.id = None;
        vault.operations.finish(&operation.id, Some(err.message.clone()));
        return Err(err);
    }
    let verb = operation.kind.as_str();
    tracing::info!(model = %operation.model, actor, operation = %operation.id, "model {verb} started");
    crate::activity::record(
        &vault.db,
        &format!("model.{verb}"),
        Some(actor),
        Some(&operation.model),
        format!("Model {} {verb} started", operation.model),
    )
    .await;
    tokio::spawn(follow(Arc::downgrade(vault), operation.id.clone(), operation.model.clone(), present));
    unhanded.id = None;
    Ok(operation.clone())
}

/// Finishes an operation as failed when the request that started it is dropped before its
/// follower takes over (the client left, the server stopped), so the slot is not held.
struct Unhanded<'a> {
    operations: &'a Operations,
    id: Option<String>,
}

impl Drop for Unhanded<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.operations.finish(&id, Some("the request that started it was cancelled".into()));
        }
    }
}

async fn follow(vault: std::sync::Weak<Vault>, operation: String, model: String, present: bool) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let Some(vault) = vault.upgrade() else { return };
        if let Some(served) = super::served(&vault.inference).await
            && served.contains(&model) == present
        {
            vault.operations.finish(&operation, None);
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let what = if present { "start serving" } else { "stop serving" };
            let minutes = SETTLE_TIMEOUT.as_secs() / 60;
            if present {
                // A load that did not take is taken back, so the engine does not keep
                // failing on it, and it can be tried again.
                withdraw(&vault, &model).await;
            }
            vault
                .operations
                .finish(&operation, Some(format!("the inference engine did not {what} it within {minutes} minutes")));
            return;
        }
        drop(vault);
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Removes `model` from the model configuration and restarts the engine without it.
async fn withdraw(vault: &Vault, model: &str) {
    let mut config = match GpuConfig::read(&vault.config.gpu_config) {
        Ok(config) => config,
        Err(err) => return tracing::warn!(model, error = %err.message, "a failed load could not be withdrawn"),
    };
    config.models.retain(|m| m.id != model);
    let withdrawn = match config.write(&vault.config.gpu_config) {
        Ok(()) => restart_engine(vault).await,
        Err(err) => Err(err),
    };
    if let Err(err) = withdrawn {
        tracing::warn!(model, error = %err.message, "a failed load could not be withdrawn");
    }
}

/// What runs on the GPUs now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Active {
    /// Whether GPU memory figures are known (NVML, or simulated GPUs).
    pub available: bool,
    /// Whether the GPUs are simulated (`VAULT_SIMULATED_GPUS_MB`).
    pub simulated: bool,
    pub gpus: Vec<GpuMemory>,
    pub models: Vec<ActiveModel>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActiveModel {
    pub id: String,
    /// The GPUs the model configuration places it on; empty when the engine serves it
    /// from a configuration of its own.
    pub gpus: Vec<u32>,
    /// The GPU memory the load check expected it to take.
    pub estimate_bytes: Option<u64>,
}

/// The models the engine serves, with their placement, and the GPUs' memory.
pub async fn active(vault: &Vault) -> Result<Active> {
    let (memory, config) = memory_now(vault).await?;
    let served = super::served(&vault.inference).await.ok_or_else(|| {
        VaultError::new(
            crate::error::ErrorKind::UpstreamUnavailable,
            ErrorCode::InferenceUnavailable,
            "The inference engine does not answer, so which models are loaded is not known.",
        )
    })?;
    let models = served
        .into_iter()
        .map(|id| {
            let placed = config.get(&id);
            ActiveModel {
                gpus: placed.map(|p| p.gpus.clone()).unwrap_or_default(),
                estimate_bytes: placed.map(|p| p.estimate_bytes),
                id,
            }
        })
        .collect();
    Ok(Active {
        available: memory.is_some(),
        simulated: vault.config.simulated_gpus.is_some(),
        gpus: memory.unwrap_or_default(),
        models,
    })
}
