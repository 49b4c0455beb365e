//! The JSON shapes of `/vault/models`.

use poem_openapi::Object;
use vault_core::models;

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
