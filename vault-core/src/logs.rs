//! The logs an operator reads through the API: Vault's own JSON log file, written with
//! size-based rotation, and the journal of the managed services (through the system
//! controller).
//!
//! Pages are newest first. A page of Vault's log is read backwards from where the previous
//! one stopped, so page 1 costs a read of the file's tail, however large the file; its
//! cursor names the file by inode (which survives rotation's renames) and a byte offset.
//! A page reads at most [`SCAN_LIMIT`] bytes: a rare match may take several pages to find,
//! some of them empty — follow `next_cursor` until it is null.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::controller::SystemController;
use crate::error::{Result, VaultError};
use crate::model::page::PageBounds;

/// Rotated files kept beside the log: `vault.log.1` (newest) to `vault.log.4`.
pub const KEEP_ROTATED: u32 = 4;
/// Bytes of log one page reads at most.
pub const SCAN_LIMIT: u64 = 32 * 1024 * 1024;
/// Entries per page: 100 unless asked, at most 1000.
pub const PAGES: PageBounds = PageBounds { default: 100, max: 1000 };
/// The service name of Vault's own log.
pub const VAULT_SERVICE: &str = "vault";
/// Levels, most severe first.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// A log file that moves itself aside (`.1`, `.2`, …, [`KEEP_ROTATED`] kept) when a line
/// would take it past `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl RotatingFile {
    /// Opens (or creates, with its directory) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { path: path.to_path_buf(), max_bytes, file, size })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..KEEP_ROTATED).rev() {
            let older = rotated(&self.path, n);
            if older.exists() {
                std::fs::rename(&older, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    /// Writes whole lines: a buffer is never split across two files.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Conditions on log entries; every one given must hold.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// `vault` (the default) or a managed service's name.
    pub service: Option<String>,
    /// This level and the more severe ones.
    pub level: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Entries whose line contains this, ignoring case.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    pub timestamp: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    pub service: String,
    pub message: String,
    /// The entry's other fields (target, request id, path, …).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    /// Pass as `cursor` for the next (older) page; `None` when there is no more.
    pub next_cursor: Option<String>,
}

/// A query checked once: its bounds parsed, its level ranked.
struct Checked {
    service: String,
    /// Index into `LEVELS` of the least severe level wanted.
    level: usize,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    text: Option<String>,
    /// Binds cursors to this query.
    digest: String,
}

impl Checked {
    fn new(query: &LogQuery) -> Result<Checked> {
        let service = query.service.clone().unwrap_or_else(|| VAULT_SERVICE.into());
        if service != VAULT_SERVICE {
            crate::services::find(&service)?;
        }
        let level = match &query.level {
            None => LEVELS.len() - 1,
            Some(raw) => LEVELS
                .iter()
                .position(|l| l.eq_ignore_ascii_case(raw))
                .ok_or_else(|| VaultError::invalid_field(format!("level: must be one of {}", LEVELS.join(", "))))?,
        };
        let time = |field: &str, raw: &Option<String>| -> Result<Option<SystemTime>> {
            raw.as_deref()
                .map(|raw| {
                    crate::time::parse_rfc3339(raw)
                        .ok_or_else(|| VaultError::invalid_field(format!("{field}: not an RFC 3339 timestamp")))
                })
                .transpose()
        };
        let (since, until) = (time("since", &query.since)?, time("until", &query.until)?);
        let text = query.text.as_ref().filter(|t| !t.is_empty()).map(|t| t.to_lowercase());
        let fields = [Some(&service), query.level.as_ref(), query.since.as_ref(), query.until.as_ref(), text.as_ref()];
        let bound: Vec<&str> = fields.iter().map(|f| f.map_or("\u{0}", |s| s.as_str())).collect();
        let digest = crate::secrets::sha256_hex(&bound.join("\u{1f}"))[..16].to_string();
        Ok(Checked { service, level, since, until, text, digest })
    }

    fn level_wanted(&self, level: &str) -> bool {
        LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level)).is_none_or(|rank| rank <= self.level)
    }

    /// Whether the entry (and its raw line) is wanted; `None` when it is older than `since`
    /// (so nothing further back is).
    fn wants(&self, entry: &LogEntry, line: &str) -> Option<bool> {
        let at = crate::time::parse_rfc3339(&entry.timestamp);
        if let (Some(since), Some(at)) = (self.since, at)
            && at < since
        {
            return None;
        }
        let before_until = match (self.until, at) {
            (Some(until), Some(at)) => at < until,
            _ => true,
        };
        let has_text = self.text.as_ref().is_none_or(|t| line.to_lowercase().contains(t));
        Some(before_until && has_text && self.level_wanted(&entry.level))
    }
}

/// One entry of Vault's JSON log; `None` for a line that is not one.
fn parse_vault_line(line: &str) -> Option<LogEntry> {
    let serde_json::Value::Object(mut fields) = serde_json::from_str(line).ok()? else { return None };
    let mut take = |key: &str| match fields.remove(key) {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let (timestamp, level, message) = (take("timestamp"), take("level"), take("message"));
    Some(LogEntry { timestamp, level, service: VAULT_SERVICE.into(), message, fields })
}

/// Reads a file's lines backwards from `end`, a block at a time.
struct Backwards {
    file: File,
    /// Bytes before this are not read yet.
    pos: u64,
    /// The start of a line whose end was read (its beginning is further back).
    partial: Vec<u8>,
}

const BLOCK: u64 = 64 * 1024;

impl Backwards {
    fn new(file: File, end: u64) -> Backwards {
        Backwards { file, pos: end, partial: Vec::new() }
    }

    /// The previous line and the offset it starts at; `bytes_read` grows by what was read
    /// for it. A line still being written (no newline yet) comes as it is.
    fn previous(&mut self, bytes_read: &mut u64) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        // What is left ends with the newline of the line wanted (or is the file's start).
        if self.partial.last() == Some(&b'\n') {
            self.partial.pop();
        }
        loop {
            if let Some(i) = self.partial.iter().rposition(|&b| b == b'\n') {
                let line = self.partial.split_off(i + 1);
                return Ok(Some((self.pos + i as u64 + 1, line)));
            }
            if self.pos == 0 {
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((0, std::mem::take(&mut self.partial))));
            }
            let start = self.pos.saturating_sub(BLOCK);
            let mut block = vec![0u8; (self.pos - start) as usize];
            self.file.seek(SeekFrom::Start(start))?;
            self.file.read_exact(&mut block)?;
            *bytes_read += block.len() as u64;
            block.extend_from_slice(&self.partial);
            self.partial = block;
            self.pos = start;
        }
    }
}

/// The log files, newest first: the file itself, then `.1`, `.2`, ….
fn files_newest_first(path: &Path) -> Vec<PathBuf> {
    std::iter::once(path.to_path_buf()).chain((1..=KEEP_ROTATED).map(|n| rotated(path, n))).collect()
}

/// Where a page ends: the file (by inode) and the offset its last line starts at, with a
/// digest binding both to the query, so an edited position or another query's cursor is
/// refused.
fn cursor(inode: u64, offset: u64, digest: &str) -> String {
    format!("{inode}.{offset}.{}", position_digest(inode, offset, digest))
}

fn position_digest(inode: u64, offset: u64, digest: &str) -> String {
    crate::secrets::sha256_hex(&format!("{inode}.{offset}.{digest}"))[..16].to_string()
}

/// A page of Vault's own log at `path`.
fn vault_page(path: &Path, query: &Checked, limit: usize, after: Option<&str>) -> Result<LogPage> {
    let invalid = || VaultError::invalid_field("cursor: not a cursor this API gave for these filters");
    let mut files: Vec<(u64, File, u64)> = files_newest_first(path)
        .into_iter()
        .filter_map(|p| File::open(p).ok())
        .filter_map(|f| f.metadata().ok().map(|m| (m.ino(), f, m.len())))
        .collect();
    // A rotation between two opens shows one file under two names: read it once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.0));
    let (mut index, mut end) = match after {
        None => (0, files.first().map_or(0, |f| f.2)),
        Some(raw) => {
            let mut parts = raw.splitn(3, '.');
            let inode: u64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
            let offset: u64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
            if parts.next() != Some(position_digest(inode, offset, &query.digest).as_str()) {
                return Err(invalid());
            }
            let index = files.iter().position(|f| f.0 == inode).ok_or_else(|| {
                VaultError::invalid_field("cursor: the log it points into has been rotated away; start again")
            })?;
            (index, offset.min(files[index].2))
        }
    };
    let mut items = Vec::new();
    let mut bytes_read = 0u64;
    while let Some((inode, file, _)) = files.get(index) {
        let file = file.try_clone().map_err(|e| VaultError::internal("reading the log", e))?;
        let mut lines = Backwards::new(file, end);
        // Lines starting before this are not read yet: where the next page begins.
        let mut resume_at = end;
        loop {
            if items.len() >= limit || bytes_read >= SCAN_LIMIT {
                return Ok(LogPage { items, next_cursor: Some(cursor(*inode, resume_at, &query.digest)) });
            }
            let previous = lines.previous(&mut bytes_read).map_err(|e| VaultError::internal("reading the log", e))?;
            let Some((start, line)) = previous else { break };
            resume_at = start;
            let text = String::from_utf8_lossy(&line);
            let Some(entry) = parse_vault_line(text.trim_end()) else { continue };
            match query.wants(&entry, &text) {
                None => return Ok(LogPage { items, next_cursor: None }),
                Some(true) => items.push(entry),
                Some(false) => {}
            }
        }
        index += 1;
        end = files.get(index).map_or(0, |f| f.2);
    }
    Ok(LogPage { items, next_cursor: None })
}

/// A page of the journal of `unit`, read through the controller.
fn journal_page(
    controller: &dyn SystemController,
    unit: &str,
    query: &Checked,
    limit: usize,
    after: Option<&str>,
) -> Result<LogPage> {
    let invalid = || VaultError::invalid_field("cursor: not a cursor this API gave for these filters");
    let after = match after {
        None => None,
        Some(raw) => {
            let (hex, digest) = raw.rsplit_once('.').ok_or_else(invalid)?;
            if digest != query.digest {
                return Err(invalid());
            }
            Some(from_hex(hex).ok_or_else(invalid)?)
        }
    };
    let lines = controller.journal(unit, limit, after.as_deref(), query.since, query.until)?;
    let mut items = Vec::new();
    let mut last_cursor = None;
    for line in &lines {
        let Some((entry, cursor)) = parse_journal_line(line, unit) else { continue };
        last_cursor = Some(cursor);
        if query.wants(&entry, line) == Some(true) {
            items.push(entry);
        }
    }
    let next_cursor = last_cursor.filter(|_| lines.len() >= limit).map(|c| format!("{}.{}", to_hex(&c), query.digest));
    Ok(LogPage { items, next_cursor })
}

/// journald cursors hold `;` and `=`: hex keeps them one plain token in a URL.
fn to_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// One entry of `journalctl -o json` and its cursor.
fn parse_journal_line(line: &str, service: &str) -> Option<(LogEntry, String)> {
    let serde_json::Value::Object(fields) = serde_json::from_str(line).ok()? else { return None };
    let cursor = fields.get("__CURSOR")?.as_str()?.to_string();
    let micros: u64 = fields.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    let timestamp = crate::time::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros));
    let priority: u8 = fields.get("PRIORITY").and_then(|p| p.as_str()).and_then(|p| p.parse().ok()).unwrap_or(6);
    let level = match priority {
        0..=3 => "ERROR",
        4 => "WARN",
        5 | 6 => "INFO",
        _ => "DEBUG",
    };
    // journald gives a message that is not UTF-8 as an array of bytes.
    let message = match fields.get("MESSAGE") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(bytes)) => {
            String::from_utf8_lossy(&bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<_>>())
                .into_owned()
        }
        _ => String::new(),
    };
    let mut kept = serde_json::Map::new();
    for key in ["_PID", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER"] {
        if let Some(value) = fields.get(key) {
            kept.insert(key.to_ascii_lowercase().trim_start_matches('_').to_string(), value.clone());
        }
    }
    Some((LogEntry { timestamp, level: level.into(), service: service.into(), message, fields: kept }, cursor))
}

/// A page of logs, newest first: Vault's own (from `log_file`, `None` when it writes none)
/// or a managed service's journal.
pub async fn page(
    log_file: Option<PathBuf>,
    controller: Arc<dyn SystemController>,
    query: &LogQuery,
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<LogPage> {
    let limit = PAGES.page(limit, None)?.limit as usize;
    let checked = Checked::new(query)?;
    tokio::task::spawn_blocking(move || {
        if checked.service != VAULT_SERVICE {
            let service = crate::services::find(&checked.service)?;
            return journal_page(controller.as_ref(), service.unit, &checked, limit, cursor.as_deref());
        }
        match log_file {
            Some(path) => vault_page(&path, &checked, limit, cursor.as_deref()),
            None => Ok(LogPage { items: Vec::new(), next_cursor: None }),
        }
    })
    .await
    .map_err(|e| VaultError::internal("reading the logs", e))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::DryRunController;

    fn line(i: usize, level: &str, at: &str) -> String {
        format!("{{\"timestamp\":\"{at}\",\"level\":\"{level}\",\"message\":\"event {i}\",\"i\":{i}}}\n")
    }

    fn at(second: usize) -> String {
        format!("2026-11-28T10:{:02}:{:02}.000000Z", second / 60, second % 60)
    }

    async fn read_all(path: &Path, query: &LogQuery, limit: u32) -> Vec<u64> {
        let controller: Arc<dyn SystemController> = Arc::new(DryRunController::default());
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = page(Some(path.to_path_buf()), controller.clone(), query, Some(limit), cursor).await.unwrap();
            assert!(page.items.len() <= limit as usize);
            seen.extend(page.items.iter().map(|e| e.fields["i"].as_u64().unwrap()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
    }

    #[test]
    fn the_file_is_rotated_by_size_and_four_old_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("vault.log");
        let mut file = RotatingFile::open(&path, 400).unwrap();
        for i in 0..100 {
            file.write_all(line(i, "INFO", &at(i)).as_bytes()).unwrap();
        }
        for n in 1..=KEEP_ROTATED {
            assert!(rotated(&path, n).exists(), ".{n}");
        }
        assert!(!rotated(&path, KEEP_ROTATED + 1).exists());
        for p in files_newest_first(&path) {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 400 && text.ends_with('\n'), "{}: whole lines only", p.display());
        }
        assert!(std::fs::read_to_string(&path).unwrap().contains("event 99"));
    }

    #[tokio::test]
    async fn pages_go_back_through_the_rotated_files_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.log");
        let mut file = RotatingFile::open(&path, 1000).unwrap();
        for i in 0..60 {
            file.write_all(line(i, "INFO", &at(i)).as_bytes()).unwrap();
        }
        let seen = read_all(&path, &LogQuery::default(), 7).await;
        let oldest = *seen.last().unwrap();
        assert_eq!(seen, (oldest..60).rev().collect::<Vec<_>>());
        assert!(oldest > 0, "the oldest lines were rotated away");

        // A cursor holds while the log grows and rotates under it.
        let controller: Arc<dyn SystemController> = Arc::new(DryRunController::default());
        let first = page(Some(path.clone()), controller.clone(), &LogQuery::default(), Some(5), None).await.unwrap();
        for i in 60..75 {
            file.write_all(line(i, "INFO", &at(i)).as_bytes()).unwrap();
        }
        let second =
            page(Some(path.clone()), controller, &LogQuery::default(), Some(5), first.next_cursor).await.unwrap();
        let ids: Vec<u64> = second.items.iter().map(|e| e.fields["i"].as_u64().unwrap()).collect();
        assert_eq!(ids, [54, 53, 52, 51, 50]);
    }

    #[tokio::test]
    async fn entries_are_filtered_by_level_text_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.log");
        let mut file = RotatingFile::open(&path, 1 << 20).unwrap();
        let levels = ["INFO", "WARN", "ERROR", "DEBUG"];
        for i in 0..40 {
            file.write_all(line(i, levels[i % 4], &at(i)).as_bytes()).unwrap();
        }
        file.write_all(b"not json\n\n").unwrap();
        let warn = LogQuery { level: Some("warn".into()), ..LogQuery::default() };
        let seen = read_all(&path, &warn, 100).await;
        assert_eq!(seen.len(), 20);
        assert!(seen.iter().all(|i| i % 4 == 1 || i % 4 == 2));
        let text = LogQuery { text: Some("EVENT 3".into()), ..LogQuery::default() };
        assert_eq!(read_all(&path, &text, 3).await, [39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 3]);
        let window = LogQuery { since: Some(at(10)), until: Some(at(13)), ..LogQuery::default() };
        assert_eq!(read_all(&path, &window, 100).await, [12, 11, 10]);
    }

    #[tokio::test]
    async fn bad_queries_and_foreign_cursors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.log");
        let mut file = RotatingFile::open(&path, 1 << 20).unwrap();
        for i in 0..10 {
            file.write_all(line(i, "INFO", &at(i)).as_bytes()).unwrap();
        }
        let controller: Arc<dyn SystemController> = Arc::new(DryRunController::default());
        let ask = async |query: LogQuery, limit: Option<u32>, cursor: Option<String>| {
            page(Some(path.clone()), controller.clone(), &query, limit, cursor).await
        };
        let status = |r: Result<LogPage>| r.unwrap_err().status();
        assert_eq!(status(ask(LogQuery { level: Some("loud".into()), ..Default::default() }, None, None).await), 400);
        assert_eq!(status(ask(LogQuery { since: Some("today".into()), ..Default::default() }, None, None).await), 400);
        assert_eq!(
            status(ask(LogQuery { service: Some("nginx".into()), ..Default::default() }, None, None).await),
            404
        );
        assert_eq!(status(ask(LogQuery { service: Some("VLLM".into()), ..Default::default() }, None, None).await), 400);
        assert_eq!(status(ask(LogQuery::default(), Some(0), None).await), 400);
        let cursor = ask(LogQuery::default(), Some(2), None).await.unwrap().next_cursor.unwrap();
        let other = LogQuery { text: Some("x".into()), ..LogQuery::default() };
        assert_eq!(status(ask(other, Some(2), Some(cursor.clone())).await), 400);
        let parts: Vec<&str> = cursor.split('.').collect();
        let moved = format!("{}.{}.{}", parts[0], parts[1].parse::<u64>().unwrap() - 1, parts[2]);
        assert_eq!(status(ask(LogQuery::default(), Some(2), Some(moved)).await), 400, "an edited offset");
        let edited = format!("{}.{}.{}", parts[0].parse::<u64>().unwrap() + 1, parts[1], parts[2]);
        assert_eq!(status(ask(LogQuery::default(), Some(2), Some(edited)).await), 400, "an edited file");
        assert_eq!(status(ask(LogQuery::default(), Some(2), Some("garbage".into())).await), 400);
        // A managed service's journal: nothing in a dry run.
        let vllm = ask(LogQuery { service: Some("vllm".into()), ..Default::default() }, None, None).await.unwrap();
        assert_eq!((vllm.items.len(), vllm.next_cursor), (0, None));
    }

    #[test]
    fn journal_lines_become_entries() {
        let line = r#"{"__CURSOR":"s=ab;i=1f","__REALTIME_TIMESTAMP":"1764323702000000","PRIORITY":"3","MESSAGE":"CUDA out of memory","_PID":"4242","_SYSTEMD_UNIT":"vllm.service"}"#;
        let (entry, cursor) = parse_journal_line(line, "vllm").unwrap();
        assert_eq!(cursor, "s=ab;i=1f");
        assert_eq!((entry.level.as_str(), entry.message.as_str()), ("ERROR", "CUDA out of memory"));
        assert_eq!(entry.timestamp, "2025-11-28T09:55:02.000Z");
        assert_eq!(entry.fields["pid"], "4242");
        let bytes = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105]}"#;
        assert_eq!(parse_journal_line(bytes, "vllm").unwrap().0.message, "hi");
        assert_eq!(from_hex(&to_hex("s=1;i=2")).as_deref(), Some("s=1;i=2"));
    }
}
