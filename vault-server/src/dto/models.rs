//! The JSON shapes of `/vault/models`.

use poem_openapi::Object;
use vault_core::models::{self, operations};

#[derive(Object)]
pub struct ModelInventory {
    /// By id.
    pub items: Vec<ModelSummary>,
}

#[derive(Object)]
pub struct ModelSummary {
    /// The folder's path in the models dir (`org/name` for one in an organisation's folder).
    pub id: String,
    /// The manifest's display name.
    #[oai(nullable)]
    pub name: Option<String>,
    /// `loaded` (the engine serves it), `available` (complete on disk) or `incomplete`.
    pub status: String,
    /// Whether a folder for it is in the models dir (a served model may come from elsewhere).
    pub on_disk: bool,
    pub size_bytes: u64,
    /// Why it is incomplete.
    #[oai(nullable)]
    pub reason: Option<String>,
}

#[derive(Object)]
pub struct ModelDetail {
    pub id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub status: String,
    pub on_disk: bool,
    pub size_bytes: u64,
    #[oai(nullable)]
    pub reason: Option<String>,
    pub config: ModelConfigFacts,
    pub files: Vec<ModelFile>,
    /// Memory the load check expects it to take on the GPUs: the weights × 1.2.
    pub vram_estimate_bytes: u64,
    /// The manifest's entry, as written.
    #[oai(nullable)]
    pub manifest: Option<serde_json::Value>,
}

/// What `config.json` says.
#[derive(Object)]
pub struct ModelConfigFacts {
    #[oai(nullable)]
    pub architecture: Option<String>,
    #[oai(nullable)]
    pub model_type: Option<String>,
    #[oai(nullable)]
    pub context_length: Option<u64>,
    #[oai(nullable)]
    pub dtype: Option<String>,
    #[oai(nullable)]
    pub quantization: Option<String>,
    /// Counted from the safetensors headers; null for quantized weights or other formats.
    #[oai(nullable)]
    pub parameters: Option<u64>,
}

#[derive(Object)]
pub struct ModelFile {
    /// Relative to the model's folder.
    pub name: String,
    pub size_bytes: u64,
}

impl From<models::ModelSummary> for ModelSummary {
    fn from(m: models::ModelSummary) -> Self {
        ModelSummary {
            id: m.id,
            name: m.name,
            status: m.status.as_str().into(),
            on_disk: m.on_disk,
            size_bytes: m.size_bytes,
            reason: m.reason,
        }
    }
}

impl From<models::ModelDetail> for ModelDetail {
    fn from(d: models::ModelDetail) -> Self {
        let (s, c) = (d.summary, d.config);
        ModelDetail {
            id: s.id,
            name: s.name,
            status: s.status.as_str().into(),
            on_disk: s.on_disk,
            size_bytes: s.size_bytes,
            reason: s.reason,
            config: ModelConfigFacts {
                architecture: c.architecture,
                model_type: c.model_type,
                context_length: c.context_length,
                dtype: c.dtype,
                quantization: c.quantization,
                parameters: c.parameters,
            },
            files: d.files.into_iter().map(|f| ModelFile { name: f.name, size_bytes: f.size_bytes }).collect(),
            vram_estimate_bytes: d.vram_estimate_bytes,
            manifest: d.manifest.map(serde_json::Value::Object),
        }
    }
}

/// A model load or unload, followed until the engine serves the model (or stops).
#[derive(Object)]
pub struct ModelOperation {
    pub id: String,
    /// `load` or `unload`.
    pub kind: String,
    pub model: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// Why it failed.
    #[oai(nullable)]
    pub reason: Option<String>,
    /// The GPUs the model is placed on.
    pub gpus: Vec<u32>,
    pub started_at: String,
    #[oai(nullable)]
    pub finished_at: Option<String>,
    /// Whether the restart of the inference service was only recorded (a dry run).
    pub dry_run: bool,
    /// How far an import has copied.
    #[oai(nullable)]
    pub progress: Option<ImportProgress>,
}

#[derive(Object)]
pub struct ImportProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// A model folder to import.
#[derive(Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ImportModel {
    /// An absolute path under one of the import roots (`VAULT_IMPORT_ROOTS`).
    #[oai(validator(max_length = 4096))]
    pub path: String,
    /// The id to import it as [default: the folder's name].
    #[oai(validator(max_length = 257), nullable)]
    pub id: Option<String>,
}

impl From<operations::Operation> for ModelOperation {
    fn from(o: operations::Operation) -> Self {
        ModelOperation {
            id: o.id,
            kind: o.kind.as_str().into(),
            model: o.model,
            state: o.state.as_str().into(),
            reason: o.reason,
            gpus: o.gpus,
            started_at: o.started_at,
            finished_at: o.finished_at,
            dry_run: o.dry_run,
            progress: o.progress.map(|p| ImportProgress { done_bytes: p.done_bytes, total_bytes: p.total_bytes }),
        }
    }
}

/// What runs on the GPUs now.
#[derive(Object)]
pub struct ActiveModels {
    /// Whether GPU memory figures are known (NVML, or simulated GPUs).
    pub available: bool,
    /// Whether the GPUs are simulated (`VAULT_SIMULATED_GPUS_MB`, for demos and tests).
    pub simulated: bool,
    pub gpus: Vec<GpuMemory>,
    /// The models the engine serves.
    pub models: Vec<ActiveModel>,
}

#[derive(Object)]
pub struct GpuMemory {
    pub index: u32,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Object)]
pub struct ActiveModel {
    pub id: String,
    /// The GPUs Vault's model configuration places it on; empty when the engine serves it
    /// from a configuration of its own.
    pub gpus: Vec<u32>,
    /// The GPU memory the load check expected it to take.
    #[oai(nullable)]
    pub estimate_bytes: Option<u64>,
}

impl From<operations::Active> for ActiveModels {
    fn from(a: operations::Active) -> Self {
        ActiveModels {
            available: a.available,
            simulated: a.simulated,
            gpus: a
                .gpus
                .into_iter()
                .map(|g| GpuMemory {
                    index: g.index,
                    total_bytes: g.total_bytes,
                    used_bytes: g.used_bytes,
                    free_bytes: g.free_bytes,
                })
                .collect(),
            models: a
                .models
                .into_iter()
                .map(|m| ActiveModel { id: m.id, gpus: m.gpus, estimate_bytes: m.estimate_bytes })
                .collect(),
        }
    }
}
