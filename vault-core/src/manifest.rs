//! The model manifest (`config/models.json`): what the operator says about each model —
//! display name, size, quantization, context window — used to enrich the upstream's cards.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Result, VaultError};

#[derive(Debug, Clone, Deserialize, Default)]
pub struct ManifestFile {
    #[serde(default)]
    pub models: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Where the manifest lives. It is read on use, so an edit shows without a restart.
#[derive(Debug, Clone)]
pub struct Manifest {
    path: Option<PathBuf>,
}

/// The fields of a manifest entry copied onto a model card (never overwriting the card).
const ENRICHING_FIELDS: &[&str] =
    &["name", "description", "parameters", "quantization", "context_window", "vram_required_gb"];

impl Manifest {
    pub fn new(path: PathBuf) -> Manifest {
        Manifest { path: Some(path) }
    }

    /// No manifest: cards are shown as the upstream gives them.
    pub fn none() -> Manifest {
        Manifest { path: None }
    }

    /// The manifest's contents; a missing file is an empty manifest.
    pub fn load(&self) -> Result<ManifestFile> {
        let Some(path) = &self.path else {
            return Ok(ManifestFile::default());
        };
        match std::fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map_err(|e| VaultError::internal("reading the model manifest", format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ManifestFile::default()),
            Err(e) => Err(VaultError::internal("reading the model manifest", e)),
        }
    }
}

impl ManifestFile {
    /// The entry of the model with this id.
    pub fn entry(&self, id: &str) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.models.iter().find(|m| m.get("id").and_then(|v| v.as_str()) == Some(id))
    }

    /// Adds the manifest's fields for this card's model, if the manifest knows it.
    pub fn enrich(&self, card: &mut serde_json::Value) {
        let Some(id) = card.get("id").and_then(|v| v.as_str()).map(String::from) else {
            return;
        };
        let Some(entry) = self.entry(&id) else {
            return;
        };
        if let Some(card) = card.as_object_mut() {
            for field in ENRICHING_FIELDS {
                if let Some(value) = entry.get(*field) {
                    card.entry(*field).or_insert_with(|| value.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_gain_manifest_fields_without_losing_their_own() {
        let manifest: ManifestFile = serde_json::from_str(
            r#"{"models":[{"id":"Qwen/Q","name":"Qwen","context_window":32768,"path":"/opt/x"}]}"#,
        )
        .unwrap();
        let mut card = serde_json::json!({"id": "Qwen/Q", "object": "model", "name": "upstream name"});
        manifest.enrich(&mut card);
        assert_eq!(card["context_window"], 32768);
        assert_eq!(card["name"], "upstream name");
        assert!(card.get("path").is_none(), "paths on disk are not shown");
        let mut other = serde_json::json!({"id": "other"});
        manifest.enrich(&mut other);
        assert_eq!(other, serde_json::json!({"id": "other"}));
    }

    #[test]
    fn a_missing_manifest_is_empty() {
        let m = Manifest::new(PathBuf::from("/nonexistent/models.json"));
        assert!(m.load().unwrap().models.is_empty());
    }
}
