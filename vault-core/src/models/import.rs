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
//!
//! A copy holds a lock on its hidden folder; one found without its lock at start-up was
//! left by a process that died mid-copy, and is removed. A gateway that shuts down stops
//! its copies and removes what they had copied.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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

/// Opens a file of the folder being imported as it was checked, whatever was swapped in
/// since: never through a link (the file the kernel opened must still lie under `source`),
/// a regular file (a FIFO or device is not waited on), of the size planned.
fn open_planned(source: &Path, relative: &Path, size: u64) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(source.join(relative))?;
    let meta = file.metadata()?;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if !meta.is_file() || meta.len() != size || !opened.starts_with(source) {
        return Err(std::io::Error::other("a file changed after it was checked"));
    }
    Ok(file)
}

/// Whether a safetensors file's header parses and its tensors end exactly at its end.
fn safetensors_whole(source: &Path, relative: &Path, size: u64) -> bool {
    let check = || -> Option<bool> {
        let mut file = open_planned(source, relative, size).ok()?;
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
        Some(8u64.checked_add(length)?.checked_add(end)? == size)
    };
    check().unwrap_or(false)
}

/// Checks the folder at `path` and the room for it (beside `reserved` bytes other imports
/// will take); what to copy.
fn plan(config: &Config, path: &str, id: Option<&str>, reserved: u64) -> Result<Plan> {
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
        Some(size) => {
            let mut raw = Vec::new();
            open_planned(&source, Path::new("config.json"), size)
                .and_then(|mut file| file.read_to_end(&mut raw))
                .map_err(|_| refused("config.json cannot be read"))?;
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
            || name.extension().is_some_and(|e| e == "safetensors") && !safetensors_whole(&source, name, *size);
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
    let total = files.iter().try_fold(0u64, |sum, (_, size)| sum.checked_add(*size));
    let needed = total
        .and_then(|t| t.checked_add(t / MARGIN_DIVISOR)?.checked_add(config.min_free_bytes)?.checked_add(reserved));
    let (Some(total), Some(needed)) = (total, needed) else {
        return Err(refused("the model folder's files are too large to be real"));
    };
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

/// Why a copy ended when the gateway stopped it (not an I/O error of its own).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gateway is stopping")
    }
}

impl std::error::Error for Stopped {}

impl Stopped {
    fn is(err: &std::io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<Stopped>())
    }
}

/// The hidden folders copies are made in.
const STAGING_PREFIX: &str = ".import-";

/// Copies the planned files into a hidden folder of the models dir, syncs them, and renames
/// the folder into place; removes it on any failure, or when `stopped` says so (checked
/// after each MiB).
fn copy(
    plan: &Plan,
    models_dir: &Path,
    staging: &Path,
    copied_bytes: &mut dyn FnMut(u64),
    stopped: &dyn Fn() -> bool,
) -> std::io::Result<()> {
    let mut folders = std::fs::DirBuilder::new();
    folders.recursive(true).mode(0o750);
    let copied = (|| {
        folders.create(staging)?;
        // Held until the folder is renamed or removed: see `remove_abandoned_copies`.
        let held = std::fs::File::open(staging)?;
        held.try_lock().map_err(|_| std::io::Error::other("the staging folder is in use"))?;
        for (name, size) in &plan.files {
            let to = staging.join(name);
            if let Some(dir) = to.parent() {
                folders.create(dir)?;
            }
            // Only the bytes planned: a file growing meanwhile cannot fill the disk.
            let mut from = open_planned(&plan.source, name, *size)?.take(*size);
            let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(&to)?;
            let mut buffer = vec![0u8; 1 << 20];
            let mut written = 0u64;
            loop {
                if stopped() {
                    return Err(std::io::Error::other(Stopped));
                }
                let n = from.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buffer[..n])?;
                written += n as u64;
                copied_bytes(n as u64);
            }
            if written != *size {
                return Err(std::io::Error::other("a file shrank while it was copied"));
            }
            // On disk before it can appear under its final name.
            out.sync_all()?;
        }
        let target = models_dir.join(&plan.target);
        let parent = target.parent().unwrap_or(models_dir).to_path_buf();
        folders.create(&parent)?;
        // The organisation's folder, if any, must be a real folder of the models dir, and
        // no model itself.
        if parent != models_dir && (!super::real_dir(models_dir, &parent) || parent.join("config.json").exists()) {
            return Err(std::io::Error::other("the model's organisation folder is not a plain folder"));
        }
        std::fs::rename(staging, &target)?;
        if let Err(err) = std::fs::File::open(&parent).and_then(|dir| dir.sync_all()) {
            tracing::warn!(error = %err, "the models dir could not be synced after an import");
        }
        Ok(())
    })();
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    copied
}

/// Starts importing the model folder at `path` (as model `id`, or under its folder's name).
pub async fn import(vault: &Arc<Vault>, path: &str, id: Option<&str>, actor: &str) -> Result<Operation> {
    let (config, path_owned, id_owned) = (vault.config.clone(), path.to_string(), id.map(String::from));
    let reserved = vault.operations.import_bytes_left();
    let plan = tokio::task::spawn_blocking(move || plan(&config, &path_owned, id_owned.as_deref(), reserved))
        .await
        .map_err(|e| VaultError::internal("checking an import", e))??;
    let mut operation = new_operation(OperationKind::Import, &plan.target, Vec::new(), false);
    operation.progress = Some(Progress { done_bytes: 0, total_bytes: plan.total });
    let models_dir = vault.config.models_dir.clone();
    let made = models_dir.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(made))
        .await
        .map_err(|e| VaultError::internal("importing a model", e))?
        .map_err(|e| VaultError::internal("importing a model", e))?;
    let done = vault.operations.begin_import(operation.clone(), &plan.target)?;
    let staging = models_dir.join(format!("{STAGING_PREFIX}{}", operation.id));
    let stop = vault.operations.imports_stopping();
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
            let stopped = || stop.is_cancelled();
            copy(&plan, &models_dir, &staging, &mut |n| _ = done.fetch_add(n, Ordering::Relaxed), &stopped)
        })
        .await;
        let failure = match copied {
            Ok(Ok(())) => None,
            Ok(Err(err)) if Stopped::is(&err) => {
                tracing::warn!(model = %target, "model import stopped: the gateway is shutting down");
                Some("the copy was stopped: the gateway shut down".into())
            }
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
    let plan = plan(config, path, id, 0)?;
    std::fs::create_dir_all(&config.models_dir).map_err(|e| VaultError::internal("importing a model", e))?;
    let staging = config.models_dir.join(format!("{STAGING_PREFIX}{}", crate::secrets::new_id()));
    let mut done = 0;
    let mut copied = |n| {
        done += n;
        progress(done, plan.total);
    };
    copy(&plan, &config.models_dir, &staging, &mut copied, &|| false)
        .map_err(|e| VaultError::internal("importing a model", e))?;
    Ok(plan.target)
}

/// Removes the hidden folders of copies that no process is making any more (their maker
/// died mid-copy: no lock is held on them); gives how many. Folders that are links are
/// only unlinked.
pub fn remove_abandoned_copies(models_dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            std::fs::remove_file(&path)?;
        } else if std::fs::File::open(&path)?.try_lock().is_ok() {
            std::fs::remove_dir_all(&path)?;
        } else {
            continue;
        }
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_opened_only_as_it_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let source = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(source.join("a.bin"), b"1234").unwrap();
        assert!(open_planned(&source, Path::new("a.bin"), 4).is_ok());
        assert!(open_planned(&source, Path::new("a.bin"), 5).is_err(), "another size");
        // Swapped for a link, even one into the folder itself.
        std::fs::remove_file(source.join("a.bin")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", source.join("a.bin")).unwrap();
        assert!(open_planned(&source, Path::new("a.bin"), 4).is_err());
        // A folder swapped for a link to one outside.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("b.bin"), b"1234").unwrap();
        std::os::unix::fs::symlink(outside.path(), source.join("sub")).unwrap();
        assert!(open_planned(&source, Path::new("sub/b.bin"), 4).is_err());
        // A FIFO is refused at once, never waited on.
        let fifo = source.join("pipe.bin");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(open_planned(&source, Path::new("pipe.bin"), 0).is_err());
    }

    #[test]
    fn a_stopped_copy_leaves_nothing_behind() {
        let (usb, models) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = std::fs::canonicalize(usb.path()).unwrap();
        std::fs::write(source.join("model.safetensors"), vec![0u8; 3 << 20]).unwrap();
        let plan = Plan {
            source,
            target: "m".into(),
            files: vec![(PathBuf::from("model.safetensors"), 3 << 20)],
            total: 3 << 20,
        };
        let staging = models.path().join(".import-1");
        let mut copied = 0;
        let stopped = std::cell::Cell::new(false);
        let err = copy(
            &plan,
            models.path(),
            &staging,
            &mut |n| {
                copied += n;
                stopped.set(true);
            },
            &|| stopped.get(),
        )
        .unwrap_err();
        assert!(Stopped::is(&err), "{err}");
        assert_eq!(copied, 1 << 20, "it stops within a MiB");
        assert!(!staging.exists() && !models.path().join("m").exists());
    }

    #[test]
    fn only_copies_nobody_is_making_are_removed() {
        let models = tempfile::tempdir().unwrap();
        let abandoned = models.path().join(".import-dead");
        std::fs::create_dir_all(abandoned.join("sub")).unwrap();
        std::fs::write(abandoned.join("sub/model.safetensors"), b"partial").unwrap();
        let running = models.path().join(".import-live");
        std::fs::create_dir(&running).unwrap();
        let held = std::fs::File::open(&running).unwrap();
        held.try_lock().unwrap();
        // A link by that name is unlinked, never followed.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), models.path().join(".import-link")).unwrap();
        std::fs::create_dir(models.path().join("a-model")).unwrap();

        assert_eq!(remove_abandoned_copies(models.path()).unwrap(), 2);
        assert!(!abandoned.exists() && running.exists() && models.path().join("a-model").exists());
        assert!(!models.path().join(".import-link").exists() && outside.path().join("keep").exists());
        drop(held);
        assert_eq!(remove_abandoned_copies(models.path()).unwrap(), 1, "its maker is gone");
        assert_eq!(remove_abandoned_copies(&models.path().join("missing")).unwrap(), 0);
    }
}
