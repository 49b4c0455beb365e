//! Models on disk: one folder per model under `VAULT_MODELS_DIR` (`config.json` plus
//! weights), an id being the folder's path there — `qwen2.5-32b-awq`, or `Qwen/Qwen2.5-7B`
//! for a folder inside an organisation's folder, as vLLM names models. Each is merged with
//! the manifest and with what the upstream serves now.
//!
//! Nothing outside the models dir is ever read or removed: ids are checked segment by
//! segment (no `..`, `.`, empty or odd segment), and a symbolic link is never followed — a
//! link where a model's folder would be is no model (listing skips it, asking for it is a
//! 404), and links inside a model's folder are removed with it, never what they point to.

pub mod gpu_config;
pub mod import;
pub mod launch;
pub mod operations;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{ErrorCode, ErrorKind, Result, VaultError};
use crate::inference::Inference;

/// File extensions of weights.
pub(crate) const WEIGHT_EXTENSIONS: &[&str] = &["safetensors", "bin", "pt", "pth", "gguf"];
/// A `config.json` larger than this is not a model's configuration.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Memory a loaded model takes beyond its weights (activations, CUDA graphs), as a share
/// of the weights: the load check's estimate is `weights × VRAM_OVERHEAD`.
pub const VRAM_OVERHEAD: f64 = 1.2;
/// Files listed per model at most.
const MAX_FILES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// The upstream serves it.
    Loaded,
    /// Complete on disk, not served.
    Available,
    /// A folder without weights, or whose `config.json` does not parse.
    Incomplete,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Loaded => "loaded",
            ModelStatus::Available => "available",
            ModelStatus::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelSummary {
    pub id: String,
    /// The manifest's display name.
    pub name: Option<String>,
    pub status: ModelStatus,
    /// Whether a folder for it is in the models dir (a served model may come from elsewhere).
    pub on_disk: bool,
    pub size_bytes: u64,
    /// Why it is incomplete.
    pub reason: Option<String>,
}

/// What `config.json` says.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ConfigFacts {
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    pub context_length: Option<u64>,
    pub dtype: Option<String>,
    pub quantization: Option<String>,
    /// Counted from the safetensors headers; `None` for quantized weights (packed) or other
    /// formats.
    pub parameters: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelFile {
    /// Relative to the model's folder.
    pub name: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub summary: ModelSummary,
    pub config: ConfigFacts,
    pub files: Vec<ModelFile>,
    /// Memory the load check expects it to take on the GPUs: weights × [`VRAM_OVERHEAD`].
    pub vram_estimate_bytes: u64,
    /// The manifest's entry, as written.
    pub manifest: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Checks a model id and gives its folder: one or two segments of letters, digits, `.`, `_`
/// and `-`, none of them `.` or `..`.
pub fn folder_of(models_dir: &Path, id: &str) -> Result<PathBuf> {
    let segments: Vec<&str> = id.split('/').collect();
    // No segment starts with `.`: not `.`, `..`, nor a hidden folder (an import's staging).
    let segment_ok = |s: &&str| {
        !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if segments.len() > 2 || !segments.iter().all(segment_ok) {
        return Err(VaultError::invalid_field(
            "model_id: a model id is a folder name, or an organisation and a folder name (`org/name`), \
             of letters, digits, `.`, `_` and `-`, not starting with `.`",
        ));
    }
    Ok(segments.iter().fold(models_dir.to_path_buf(), |path, segment| path.join(segment)))
}

fn not_found(id: &str) -> VaultError {
    VaultError::not_found(ErrorCode::ModelNotFound, format!("There is no model `{id}` here."))
        .with_suggestion("List the models with GET /vault/models.")
}

/// The folder is a real directory (no link anywhere from the models dir down to it).
pub(crate) fn real_dir(models_dir: &Path, folder: &Path) -> bool {
    let Ok(relative) = folder.strip_prefix(models_dir) else { return false };
    let mut path = models_dir.to_path_buf();
    relative.components().all(|part| {
        path.push(part);
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir())
    })
}

/// The files of a model's folder (links skipped, subfolders walked), with their sizes.
fn files_of(folder: &Path) -> Vec<ModelFile> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(folder.join(&relative)) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let name = relative.join(entry.file_name());
            if meta.is_dir() {
                pending.push(name);
            } else if meta.is_file() && files.len() < MAX_FILES {
                files.push(ModelFile { name: name.to_string_lossy().into_owned(), size_bytes: meta.len() });
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

fn is_weight(file: &ModelFile) -> bool {
    Path::new(&file.name).extension().and_then(|e| e.to_str()).is_some_and(|e| WEIGHT_EXTENSIONS.contains(&e))
}

/// Reads `config.json`: its facts, or why the folder is incomplete.
fn read_config(folder: &Path) -> std::result::Result<ConfigFacts, String> {
    let path = folder.join("config.json");
    let meta = std::fs::symlink_metadata(&path).map_err(|_| "no config.json".to_string())?;
    if !meta.is_file() {
        return Err("config.json is not a file".into());
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("config.json is larger than {} KiB", MAX_CONFIG_BYTES / 1024));
    }
    let raw = std::fs::read(&path).map_err(|_| "config.json cannot be read".to_string())?;
    let config: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| format!("config.json does not parse ({e})"))?;
    let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(String::from);
    Ok(ConfigFacts {
        architecture: config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).map(String::from),
        model_type: text("model_type"),
        context_length: ["max_position_embeddings", "max_seq_len", "seq_length"]
            .iter()
            .find_map(|key| config.get(*key).and_then(|v| v.as_u64())),
        dtype: text("torch_dtype").or_else(|| text("dtype")),
        quantization: config
            .get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(|m| m.as_str())
            .map(String::from),
        parameters: None,
    })
}

/// The number of tensor elements a safetensors file declares in its header; `None` when
/// the header does not parse.
pub fn safetensors_elements(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut size = [0u8; 8];
    file.read_exact(&mut size).ok()?;
    let size = u64::from_le_bytes(size);
    // Headers are small; a huge one is not a header.
    if size > 100 * 1024 * 1024 || size > file.metadata().ok()?.len() {
        return None;
    }
    let mut header = vec![0u8; usize::try_from(size).ok()?];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let mut total = 0u64;
    for (name, tensor) in &header {
        if name == "__metadata__" {
            continue;
        }
        let shape = tensor.get("shape")?.as_array()?;
        total = total.checked_add(shape.iter().try_fold(1u64, |n, d| n.checked_mul(d.as_u64()?))?)?;
    }
    Some(total)
}

struct OnDisk {
    id: String,
    folder: PathBuf,
    files: Vec<ModelFile>,
    config: std::result::Result<ConfigFacts, String>,
}

impl OnDisk {
    fn read(id: String, folder: PathBuf) -> OnDisk {
        let files = files_of(&folder);
        let config = read_config(&folder);
        OnDisk { id, folder, files, config }
    }

    fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    fn weights_size(&self) -> u64 {
        self.files.iter().filter(|f| is_weight(f)).map(|f| f.size_bytes).sum()
    }

    /// Why it cannot be loaded, if it cannot.
    fn incomplete(&self) -> Option<String> {
        match &self.config {
            Err(why) => Some(why.clone()),
            Ok(_) if self.weights_size() == 0 => Some("no weight files".into()),
            Ok(_) => None,
        }
    }
}

/// Every model folder: the folders of the models dir with a `config.json` or weights, and
/// those one level down in an organisation's folder. Links are skipped.
fn scan(models_dir: &Path) -> Vec<OnDisk> {
    model_folders(models_dir).into_iter().map(|(id, folder)| OnDisk::read(id, folder)).collect()
}

/// The model folders' ids and paths, by id, without reading them.
fn model_folders(models_dir: &Path) -> Vec<(String, PathBuf)> {
    let subdirs = |dir: &Path| -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(name, _)| !name.starts_with('.'))
            .collect()
    };
    let looks_like_model = |folder: &Path| {
        folder.join("config.json").symlink_metadata().is_ok()
            || files_of(folder).iter().any(|f| is_weight(f) && !f.name.contains('/'))
    };
    let mut found = Vec::new();
    for (name, folder) in subdirs(models_dir) {
        let inner = if looks_like_model(&folder) { Vec::new() } else { subdirs(&folder) };
        if inner.is_empty() {
            // A model, or an empty folder or one of loose files: a model not yet complete.
            found.push((name, folder));
            continue;
        }
        found.extend(inner.into_iter().map(|(model, path)| (format!("{name}/{model}"), path)));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The ids the upstream serves now; `None` when it cannot be asked.
async fn served(inference: &Inference) -> Option<Vec<String>> {
    let list = inference.list_models().await.ok()?;
    let cards = list.get("data")?.as_array()?;
    Some(cards.iter().filter_map(|c| c.get("id")?.as_str().map(String::from)).collect())
}

/// The ids that may be in use: those served now, and with several upstreams, those of
/// upstreams out of rotation too (a model is not free to delete because the one upstream
/// serving it is restarting).
async fn maybe_in_use(inference: &Inference) -> Option<Vec<String>> {
    let mut ids = served(inference).await?;
    for upstream in inference.upstream_states().unwrap_or_default() {
        ids.extend(upstream.models);
    }
    Some(ids)
}

fn summary(disk: &OnDisk, served: &[String], name: Option<String>) -> ModelSummary {
    let reason = disk.incomplete();
    let status = if served.contains(&disk.id) {
        ModelStatus::Loaded
    } else if reason.is_some() {
        ModelStatus::Incomplete
    } else {
        ModelStatus::Available
    };
    ModelSummary { id: disk.id.clone(), name, status, on_disk: true, size_bytes: disk.size(), reason }
}

fn manifest_name(manifest: &crate::manifest::ManifestFile, id: &str) -> Option<String> {
    manifest.entry(id).and_then(|e| e.get("name")).and_then(|n| n.as_str()).map(String::from)
}

async fn on_disk(models_dir: &Path) -> Result<Vec<OnDisk>> {
    let dir = models_dir.to_path_buf();
    tokio::task::spawn_blocking(move || scan(&dir)).await.map_err(|e| VaultError::internal("reading the models", e))
}

/// Every model on disk, and every model the upstream serves from elsewhere, by id.
pub async fn list(inference: &Inference, models_dir: &Path) -> Result<Vec<ModelSummary>> {
    let manifest = inference.manifest().load()?;
    let served = served(inference).await.unwrap_or_default();
    let disk = on_disk(models_dir).await?;
    let mut models: Vec<ModelSummary> =
        disk.iter().map(|d| summary(d, &served, manifest_name(&manifest, &d.id))).collect();
    for id in served.iter().filter(|id| !disk.iter().any(|d| &d.id == *id)) {
        models.push(ModelSummary {
            id: id.clone(),
            name: manifest_name(&manifest, id),
            status: ModelStatus::Loaded,
            on_disk: false,
            size_bytes: 0,
            reason: None,
        });
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(models)
}

/// One model on disk in detail.
pub async fn detail(inference: &Inference, models_dir: &Path, id: &str) -> Result<ModelDetail> {
    let folder = folder_of(models_dir, id)?;
    let (dir, id_owned) = (models_dir.to_path_buf(), id.to_string());
    let disk = tokio::task::spawn_blocking(move || {
        is_model_folder(&dir, &id_owned, &folder).then(|| {
            let mut disk = OnDisk::read(id_owned, folder);
            let shards: Vec<PathBuf> = disk
                .files
                .iter()
                .filter(|f| f.name.ends_with(".safetensors"))
                .map(|f| disk.folder.join(&f.name))
                .collect();
            if let Ok(config) = disk.config.as_mut()
                && config.quantization.is_none()
                && !shards.is_empty()
            {
                config.parameters = shards.iter().map(|s| safetensors_elements(s)).sum::<Option<u64>>();
            }
            disk
        })
    })
    .await
    .map_err(|e| VaultError::internal("reading a model", e))?
    .ok_or_else(|| not_found(id))?;
    let manifest = inference.manifest().load()?;
    let served = served(inference).await.unwrap_or_default();
    Ok(ModelDetail {
        summary: summary(&disk, &served, manifest_name(&manifest, id)),
        vram_estimate_bytes: (disk.weights_size() as f64 * VRAM_OVERHEAD) as u64,
        config: disk.config.clone().unwrap_or_default(),
        files: disk.files,
        manifest: manifest.entry(id).cloned(),
    })
}

/// Whether `id` names a model folder as the listing finds them (not an organisation's
/// folder, nor a folder inside a model), through real folders only.
fn is_model_folder(models_dir: &Path, id: &str, folder: &Path) -> bool {
    real_dir(models_dir, folder) && model_folders(models_dir).iter().any(|(found, _)| found == id)
}

/// Removes a model's folder with everything in it (links inside are removed, never
/// followed). Refused while the upstream serves it (or cannot say), while the model
/// configuration lists it, or while `busy` says an operation is on it.
pub async fn delete(
    inference: &Inference,
    config: &crate::config::Config,
    id: &str,
    actor: &str,
    db: &crate::storage::Db,
    busy: &(dyn Fn(&str) -> bool + Sync),
) -> Result<()> {
    let models_dir = &config.models_dir;
    let folder = folder_of(models_dir, id)?;
    let exists = {
        let (folder, dir, id) = (folder.clone(), models_dir.to_path_buf(), id.to_string());
        tokio::task::spawn_blocking(move || is_model_folder(&dir, &id, &folder))
            .await
            .map_err(|e| VaultError::internal("deleting a model", e))?
    };
    if !exists {
        return Err(not_found(id));
    }
    let Some(served) = maybe_in_use(inference).await else {
        return Err(VaultError::new(
            ErrorKind::UpstreamUnavailable,
            ErrorCode::InferenceUnavailable,
            "The inference engine does not answer, so it cannot be known whether it uses this model.",
        ));
    };
    let configured = gpu_config::GpuConfig::read(&config.gpu_config)?;
    if served.iter().any(|s| s == id) || configured.get(id).is_some() {
        return Err(VaultError::conflict(ErrorCode::ModelLoaded, format!("The model `{id}` is loaded."))
            .with_suggestion("Unload it first (POST /vault/models/{model_id}/unload)."));
    }
    if busy(id) {
        return Err(VaultError::conflict(
            ErrorCode::OperationInProgress,
            format!("An operation on `{id}` is under way."),
        ));
    }
    let dir = models_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // Checked again right before: nothing swapped in since is followed.
        if !real_dir(&dir, &folder) {
            return Err(std::io::Error::other("the model's folder changed while it was being deleted"));
        }
        std::fs::remove_dir_all(&folder)
    })
    .await
    .map_err(|e| VaultError::internal("deleting a model", e))?
    .map_err(|e| VaultError::internal("deleting a model", e))?;
    tracing::info!(model = id, actor, "model deleted");
    crate::activity::record(db, "model.deleted", Some(actor), Some(id), format!("Model {id} deleted")).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of one F16 tensor of `shape`.
    fn safetensors(path: &Path, shape: &[u64]) {
        let elements: u64 = shape.iter().product();
        let header = serde_json::json!({"weight": {"dtype": "F16", "shape": shape, "data_offsets": [0, elements * 2]}});
        let header = serde_json::to_vec(&header).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.resize(bytes.len() + (elements * 2) as usize, 0);
        std::fs::write(path, bytes).unwrap();
    }

    fn model(dir: &Path, id: &str, config: &str, weights: &[(&str, &[u64])]) {
        let folder = dir.join(id);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("config.json"), config).unwrap();
        for (name, shape) in weights {
            safetensors(&folder.join(name), shape);
        }
    }

    const CONFIG: &str = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}"#;

    #[test]
    fn model_ids_stay_inside_the_models_dir() {
        let dir = Path::new("/srv/models");
        assert_eq!(folder_of(dir, "qwen").unwrap(), dir.join("qwen"));
        assert_eq!(folder_of(dir, "Qwen/Qwen2.5-7B").unwrap(), dir.join("Qwen").join("Qwen2.5-7B"));
        for bad in ["..", ".", "a/../..", "a/..", "../etc", "a/b/c", "", "a//b", "/etc", "a\0b", "a\\b", "a b"] {
            let err = folder_of(dir, bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
            assert!(err.message.starts_with("model_id"));
        }
    }

    #[test]
    fn folders_are_found_one_or_two_levels_down_and_judged_complete_or_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("models");
        model(&dir, "alpha", CONFIG, &[("model.safetensors", &[4, 8])]);
        model(
            &dir,
            "Qwen/Qwen2.5-7B",
            CONFIG,
            &[("model-00001.safetensors", &[2, 2]), ("model-00002.safetensors", &[3])],
        );
        model(&dir, "broken", "{not json", &[("model.safetensors", &[1])]);
        model(&dir, "no-weights", CONFIG, &[]);
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        model(&dir, "huge-config", &" ".repeat(MAX_CONFIG_BYTES as usize + 1), &[("m.safetensors", &[1])]);
        // A link to a folder outside the models dir is not a model.
        model(root.path(), "outside", CONFIG, &[("model.safetensors", &[1])]);
        std::os::unix::fs::symlink(root.path().join("outside"), dir.join("linked")).unwrap();

        let found = scan(&dir);
        let ids: Vec<&str> = found.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["Qwen/Qwen2.5-7B", "alpha", "broken", "empty", "huge-config", "no-weights"]);
        let reason = |id: &str| found.iter().find(|d| d.id == id).unwrap().incomplete();
        assert_eq!(reason("alpha"), None);
        assert_eq!(reason("Qwen/Qwen2.5-7B"), None);
        assert!(reason("broken").unwrap().starts_with("config.json does not parse"));
        assert_eq!(reason("no-weights").as_deref(), Some("no weight files"));
        assert_eq!(reason("empty").as_deref(), Some("no config.json"));
        assert!(reason("huge-config").unwrap().contains("larger than"));

        let alpha = found.iter().find(|d| d.id == "alpha").unwrap();
        assert_eq!(alpha.config.as_ref().unwrap().architecture.as_deref(), Some("Qwen2ForCausalLM"));
        assert_eq!(alpha.config.as_ref().unwrap().context_length, Some(32768));
        let shard = dir.join("Qwen/Qwen2.5-7B/model-00001.safetensors");
        assert_eq!(safetensors_elements(&shard), Some(4));
        std::fs::write(dir.join("alpha/truncated.safetensors"), [200, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        assert_eq!(safetensors_elements(&dir.join("alpha/truncated.safetensors")), None);
        assert!(real_dir(&dir, &dir.join("alpha")));
        assert!(!real_dir(&dir, &dir.join("linked")), "a link is not followed");
    }
}
