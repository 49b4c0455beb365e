//! The inference service's model configuration (`VAULT_GPU_CONFIG`): which models vLLM
//! serves, from which folder, on which GPUs, with which memory share and context length.
//! The appliance's vLLM unit starts from it; Vault writes it on load and unload, whole and
//! atomically (a temporary file renamed over it), so vLLM never reads half of one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GpuConfig {
    #[serde(default)]
    pub models: Vec<ServedModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServedModel {
    pub id: String,
    /// The model's folder.
    pub path: String,
    /// The GPUs it runs on (tensor-parallel across them when more than one).
    pub gpus: Vec<u32>,
    /// vLLM's `--gpu-memory-utilization`.
    pub gpu_memory_utilization: f64,
    /// vLLM's `--max-model-len`, when the model says it.
    #[serde(default)]
    pub max_model_len: Option<u64>,
    /// The GPU memory the load check expected it to take.
    #[serde(default)]
    pub estimate_bytes: u64,
}

impl GpuConfig {
    /// The configuration at `path`; none written yet is an empty one.
    pub fn read(path: &Path) -> Result<GpuConfig> {
        match std::fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                VaultError::internal("reading the model configuration", format!("{}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GpuConfig::default()),
            Err(e) => Err(VaultError::internal("reading the model configuration", e)),
        }
    }

    /// Replaces the file at `path` with this configuration in one step.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| VaultError::internal("writing the model configuration", e))?;
        write_whole(path, &text).map_err(|e| VaultError::internal("writing the model configuration", e))
    }

    pub fn get(&self, id: &str) -> Option<&ServedModel> {
        self.models.iter().find(|m| m.id == id)
    }
}

/// Replaces the file at `path` with `contents` in one step: a reader sees the old file or
/// the new one, never half of one, even after a power loss.
pub(crate) fn write_whole(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(".new");
    let mut file = std::fs::File::create(&temporary)?;
    std::io::Write::write_all(&mut file, contents)?;
    // On disk before it replaces the old one: a power loss leaves one or the other.
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpu-config.json");
        assert_eq!(GpuConfig::read(&path).unwrap(), GpuConfig::default(), "none yet is empty");
        let model = ServedModel {
            id: "Qwen/Qwen2.5-7B".into(),
            path: "/models/Qwen/Qwen2.5-7B".into(),
            gpus: vec![0, 1],
            gpu_memory_utilization: 0.9,
            max_model_len: Some(32768),
            estimate_bytes: 1 << 30,
        };
        let config = GpuConfig { models: vec![model] };
        config.write(&path).unwrap();
        assert_eq!(GpuConfig::read(&path).unwrap(), config);
        assert!(!dir.path().join("gpu-config.json.new").exists());
        std::fs::write(&path, "{broken").unwrap();
        assert_eq!(GpuConfig::read(&path).unwrap_err().status(), 500);
    }
}
