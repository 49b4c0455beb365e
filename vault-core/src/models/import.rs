//! Importing a model from a local folder — a USB disk mounted under one of the import
//! roots (`VAULT_IMPORT_ROOTS`) — into the models dir.
//!
//! Everything is checked before a byte is copied: the folder is under an import root once
//! links are resolved, holds no link itself, has a `config.json` that parses (under 1 MiB)
//! and weights with known extensions, each safetensors file's header parses and matches
//! its size, and the whole fits the free disk with a margin. The copy then runs in the
//! background (an operation reports bytes copied), into a hidden folder of the models dir
//! that is synced and renamed into place only when complete: a failed import leaves
//! nothing behind. Errors never echo the resolved path.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::operations::{Operation, OperationKind, Progress, new_operation};
use super::{MAX_CONFIG_BYTES, WEIGHT_EXTENSIONS, folder_of};
use crate::app::Vault;
use crate::config::Config;
use crate::error::{ErrorCode, ErrorKind, Result, VaultError};

/// Files an imported folder may hold at most.
const MAX_FILES: usize = 10_000;
/// Room left on the disk beyond the model: a tenth of its size, and the audit trail's minimum.
const MARGIN_DIVISOR: u64 = 10;

/// What an import will copy.
struct Plan {
    source: PathBuf,
    target: String,
    /// Relative paths and sizes.
    files: Vec<(PathBuf, u64)>,
    total: u64,
}

fn refused(why: impl Into<String>) -> VaultError {
    VaultError::invalid_field(format!("path: {}", why.into()))
}

/// Whether a safetensors file's header parses and its tensors end exactly at its end.
fn safetensors_whole(path: &Path, size: u64) -> bool {
    let check = || -> Option<bool> {
        let mut file = std::fs::File::open(path).ok()?;
        let mut length = [0u8; 8];
        file.read_exact(&mut length).ok()?;
        let length = u64::from_le_bytes(length);
        if length > 100 * 1024 * 1024 || 8 + length > size {
            return Some(false);
        }
        let mut header = vec![0u8; usize::try_from(length).ok()?];
        file.read_exact(&mut header).ok()?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
        let end = header
            .iter()
            .filter(|(name, _)| name.as_str() != "__metadata__")
            .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
            .max()
            .unwrap_or(0);
        Some(8 + length + end == size)
    };
    check().unwrap_or(false)
}

/// Checks the folder at `path` and the room for it; what to copy.
fn plan(config: &Config, path: &str, id: Option<&str>) -> Result<Plan> {
    if path.contains('\0') {
        return Err(refused("not a path"));
    }
    let given = Path::new(path);
    if !given.is_absolute() {
        return Err(refused("must be an absolute path"));
    }
    let roots: Vec<String> = config.import_roots.iter().map(|r| r.display().to_string()).collect();
    let outside = || refused(format!("not a folder under an import root ({})", roots.join(", ")));
    // Links resolved first, so one pointing out of the roots is out of them.
    let source = std::fs::canonicalize(given).map_err(|_| outside())?;
    let inside =
        config.import_roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|r| source.starts_with(r));
    if !inside || !source.is_dir() {
        return Err(outside());
    }
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(source.join(&relative)).map_err(|_| refused("cannot be read"))?;
        for entry in entries {
            let entry = entry.map_err(|_| refused("cannot be read"))?;
            let meta = std::fs::symlink_metadata(entry.path()).map_err(|_| refused("cannot be read"))?;
            let name = relative.join(entry.file_name());
            if meta.file_type().is_symlink() {
                return Err(refused(format!("the model folder holds a symbolic link ({})", name.display())));
            } else if meta.is_dir() {
                pending.push(name);
            } else if meta.is_file() {
                files.push((name, meta.len()));
            }
            if files.len() > MAX_FILES {
                return Err(refused(format!("the model folder holds more than {MAX_FILES} files")));
            }
        }
    }
    let config_size = files.iter().find(|(name, _)| name == Path::new("config.json")).map(|(_, size)| *size);
    match config_size {
        None => return Err(refused("the model folder has no config.json")),
        Some(size) if size > MAX_CONFIG_BYTES => {
            return Err(refused(format!("config.json is larger than {} KiB", MAX_CONFIG_BYTES / 1024)));
        }
        Some(_) => {
            let raw = std::fs::read(source.join("config.json")).map_err(|_| refused("config.json cannot be read"))?;
            if !serde_json::from_slice::<serde_json::Value>(&raw).is_ok_and(|c| c.is_object()) {
                return Err(refused("config.json is not a JSON object"));
            }
        }
    }
    let is_weight =
        |name: &Path| name.extension().and_then(|e| e.to_str()).is_some_and(|e| WEIGHT_EXTENSIONS.contains(&e));
    let weights: Vec<&(PathBuf, u64)> = files.iter().filter(|(name, _)| is_weight(name)).collect();
    if weights.is_empty() {
        return Err(refused(format!("the model folder has no weights ({})", WEIGHT_EXTENSIONS.join(", "))));
    }
    for (name, size) in &weights {
        let truncated = *size == 0
            || name.extension().is_some_and(|e| e == "safetensors") && !safetensors_whole(&source.join(name), *size);
        if truncated {
            return Err(refused(format!("{} is empty or truncated", name.display())));
        }
    }
    let target = match id {
        Some(id) => id.to_string(),
        None => source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let folder = folder_of(&config.models_dir, &target)?;
    if std::fs::symlink_metadata(&folder).is_ok() {
        return Err(VaultError::conflict(
            ErrorCode::ModelExists,
            format!("A model `{target}` is in the models dir already."),
        ));
    }
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    let needed = total + total / MARGIN_DIVISOR + config.min_free_bytes;
    let existing = config.models_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if let Some(free) = crate::system::free_space(existing)
        && free < needed
    {
        return Err(VaultError::new(
            ErrorKind::Conflict,
            ErrorCode::InsufficientDiskSpace,
            format!("The model takes {} MiB; the models dir's disk has {} MiB free.", total >> 20, free >> 20),
        )
        .with_details(serde_json::json!({"needed_bytes": needed, "free_bytes": free})));
    }
    Ok(Plan { source, target, files, total })
}

/// Copies the planned files into a hidden folder of the models dir, syncs them, and renames
/// the folder into place; removes it on any failure.
fn copy(plan: &Plan, models_dir: &Path, staging: &Path, copied_bytes: &mut dyn FnMut(u64)) -> std::io::Result<()> {
    let copied = (|| {
        for (name, _) in &plan.files {
            let to = staging.join(name);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut from = std::fs::File::open(plan.source.join(name))?;
            let mut out = std::fs::File::create(&to)?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = from.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buffer[..n])?;
                copied_bytes(n as u64);
            }
            // On disk before it can appear under its final name.
            out.sync_all()?;
        }
        let target = models_dir.join(&plan.target);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(staging, &target)?;
        std::fs::File::open(target.parent().unwrap_or(models_dir))?.sync_all()
    })();
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    copied
}

/// Starts importing the model folder at `path` (as model `id`, or under its folder's name).
pub async fn import(vault: &Arc<Vault>, path: &str, id: Option<&str>, actor: &str) -> Result<Operation> {
    let (config, path_owned, id_owned) = (vault.config.clone(), path.to_string(), id.map(String::from));
    let plan = tokio::task::spawn_blocking(move || plan(&config, &path_owned, id_owned.as_deref()))
        .await
        .map_err(|e| VaultError::internal("checking an import", e))??;
    let mut operation = new_operation(OperationKind::Import, &plan.target, Vec::new(), false);
    operation.progress = Some(Progress { done_bytes: 0, total_bytes: plan.total });
    let done = vault.operations.begin_import(operation.clone(), &plan.target)?;
    let models_dir = vault.config.models_dir.clone();
    std::fs::create_dir_all(&models_dir).map_err(|e| VaultError::internal("importing a model", e))?;
    let staging = models_dir.join(format!(".import-{}", operation.id));
    let (weak, id, target) = (Arc::downgrade(vault), operation.id.clone(), plan.target.clone());
    tracing::info!(model = %target, actor, bytes = plan.total, operation = %id, "model import started");
    crate::activity::record(
        &vault.db,
        "model.import",
        Some(actor),
        Some(&target),
        format!("Model {target} import started"),
    )
    .await;
    tokio::spawn(async move {
        let copied = tokio::task::spawn_blocking(move || {
            copy(&plan, &models_dir, &staging, &mut |n| {
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .await;
        let failure = match copied {
            Ok(Ok(())) => None,
            Ok(Err(err)) => {
                tracing::warn!(model = %target, error = %err, "model import failed");
                Some(format!("the copy failed ({})", err.kind()))
            }
            Err(err) => Some(format!("the copy stopped ({err})")),
        };
        if let Some(vault) = weak.upgrade() {
            vault.operations.finish(&id, failure);
        }
    });
    Ok(operation)
}

/// Imports the model folder at `path` here and now (for `vault-cli`, beside or without a
/// running server), telling `progress` the bytes copied and the total. Gives the model's id.
pub fn import_now(config: &Config, path: &str, id: Option<&str>, progress: &mut dyn FnMut(u64, u64)) -> Result<String> {
    let plan = plan(config, path, id)?;
    std::fs::create_dir_all(&config.models_dir).map_err(|e| VaultError::internal("importing a model", e))?;
    let staging = config.models_dir.join(format!(".import-{}", crate::secrets::new_id()));
    let mut done = 0;
    copy(&plan, &config.models_dir, &staging, &mut |n| {
        done += n;
        progress(done, plan.total);
    })
    .map_err(|e| VaultError::internal("importing a model", e))?;
    Ok(plan.target)
}
