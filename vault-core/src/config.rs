//! Configuration: every setting comes from an environment variable (listed in the
//! README), which a shell may override with a flag of the same meaning. Parsing happens once, here, and a
//! bad value stops start-up with one line that names the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::VaultError;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// An embedded libsql file.
    Local(PathBuf),
    /// A libsql server (`libsql://`, `http(s)://`), which this build refuses.
    Remote { url: String, auth_token: Option<String> },
    /// A PostgreSQL database shared by several gateways (`postgres://`). `local` is the
    /// base name of this box's own files (the audit journal), in the data directory.
    Postgres { url: String, local: PathBuf },
}

/// The resolved configuration of one Vault process.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// A second port that answers plain HTTP with a redirect to HTTPS on `port`.
    pub http_redirect_port: Option<u16>,
    /// A loopback address serving `GET /metrics` without a key, for a scraper on the box.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    pub db: DbLocation,
    /// The upstreams' URLs as one comma-separated list (for display).
    pub vllm_base_url: String,
    /// The vLLM servers requests are routed to (one, unless `VLLM_BASE_URL` lists several or
    /// `VAULT_UPSTREAMS` names a file).
    pub upstreams: Vec<crate::inference::router::UpstreamSpec>,
    /// The file they were read from (`VAULT_UPSTREAMS`), which the gateway follows.
    pub upstreams_file: Option<PathBuf>,
    /// Time allowed for the upstream to start answering (response headers).
    pub upstream_timeout: Duration,
    pub models_dir: PathBuf,
    /// The inference service's model configuration: which models vLLM serves, on which
    /// GPUs (written by model load and unload).
    pub gpu_config: PathBuf,
    /// Folders models may be imported from (mount points of removable disks).
    pub import_roots: Vec<PathBuf>,
    /// GPUs to pretend the box has (total memory of each), for the demo and tests on a
    /// machine without any: model loads are checked against them instead of NVML.
    pub simulated_gpus: Option<Vec<u64>>,
    pub models_manifest: PathBuf,
    /// Whether the manifest was named explicitly (then it must exist).
    pub models_manifest_explicit: bool,
    pub setup_flag_path: PathBuf,
    pub tls_cert_dir: PathBuf,
    pub cors_origins: Vec<String>,
    pub log_level: String,
    /// Where the server also writes its JSON log (what `/vault/system/logs` reads); `None`:
    /// stdout only.
    pub log_file: Option<PathBuf>,
    /// The log file is rotated (to `.1`, `.2`, …) when it would grow past this.
    pub log_max_bytes: u64,
    /// Whether host changes (network, time zone) are applied or only recorded.
    pub system_control: SystemControl,
    /// Below this much free space on the database's disk, inference is refused (503)
    /// rather than served with an audit trail that may not be kept.
    pub min_free_bytes: u64,
    /// The largest non-streamed answer taken from the upstream; a larger one is a 502.
    pub max_upstream_body: usize,
    /// Time a client has from a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// Time a connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// The longest silence of the upstream within a streamed answer.
    pub stream_idle_timeout: Duration,
    /// Open connections at most; `None`: as many as the open-files limit allows.
    pub max_connections: Option<usize>,
    /// The rate limits of a key that has none of its own (`VAULT_DEFAULT_*`).
    pub default_limits: crate::model::limits::LimitSet,
    /// Fair admission to the engine while it is full; `None`: off.
    pub admission: Option<crate::inference::admission::AdmissionConfig>,
    secret_key: Option<Secret>,
    /// The key vLLM was started with (`--api-key`), sent with every upstream request.
    vllm_api_key: Option<Secret>,
}

/// A setting that must never be shown: its `Debug` prints a placeholder.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// How host changes are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemControl {
    /// Record the commands, change nothing (the default).
    DryRun,
    /// Run them on this host (hostnamectl, nmcli, timedatectl).
    Host,
}

/// Named settings a shell passes in; a value here wins over the environment.
pub type Overrides = HashMap<&'static str, String>;

pub const VAULT_HOST: &str = "VAULT_HOST";
pub const VAULT_PORT: &str = "VAULT_PORT";
pub const VAULT_HTTP_REDIRECT_PORT: &str = "VAULT_HTTP_REDIRECT_PORT";
pub const VAULT_METRICS_ADDR: &str = "VAULT_METRICS_ADDR";
pub const VAULT_DATA_DIR: &str = "VAULT_DATA_DIR";
pub const VAULT_DB_URL: &str = "VAULT_DB_URL";
pub const VAULT_DB_AUTH_TOKEN: &str = "VAULT_DB_AUTH_TOKEN";
pub const VLLM_BASE_URL: &str = "VLLM_BASE_URL";
pub const VLLM_API_KEY: &str = "VLLM_API_KEY";
pub const VAULT_UPSTREAMS: &str = "VAULT_UPSTREAMS";
pub const VAULT_UPSTREAM_TIMEOUT: &str = "VAULT_UPSTREAM_TIMEOUT";
pub const VAULT_SECRET_KEY: &str = "VAULT_SECRET_KEY";
pub const VAULT_MODELS_DIR: &str = "VAULT_MODELS_DIR";
pub const VAULT_GPU_CONFIG: &str = "VAULT_GPU_CONFIG";
pub const VAULT_SIMULATED_GPUS_MB: &str = "VAULT_SIMULATED_GPUS_MB";
pub const VAULT_IMPORT_ROOTS: &str = "VAULT_IMPORT_ROOTS";
pub const VAULT_MODELS_MANIFEST: &str = "VAULT_MODELS_MANIFEST";
pub const VAULT_SETUP_FLAG_PATH: &str = "VAULT_SETUP_FLAG_PATH";
pub const VAULT_TLS_CERT_DIR: &str = "VAULT_TLS_CERT_DIR";
pub const VAULT_CORS_ORIGINS: &str = "VAULT_CORS_ORIGINS";
pub const VAULT_LOG_LEVEL: &str = "VAULT_LOG_LEVEL";
pub const VAULT_LOG_FILE: &str = "VAULT_LOG_FILE";
pub const VAULT_LOG_MAX_MB: &str = "VAULT_LOG_MAX_MB";
pub const VAULT_SYSTEM_CONTROL: &str = "VAULT_SYSTEM_CONTROL";
pub const VAULT_MIN_FREE_MB: &str = "VAULT_MIN_FREE_MB";
pub const VAULT_MAX_UPSTREAM_BODY_MB: &str = "VAULT_MAX_UPSTREAM_BODY_MB";
pub const VAULT_HEADER_TIMEOUT: &str = "VAULT_HEADER_TIMEOUT";
pub const VAULT_IDLE_TIMEOUT: &str = "VAULT_IDLE_TIMEOUT";
pub const VAULT_STREAM_IDLE_TIMEOUT: &str = "VAULT_STREAM_IDLE_TIMEOUT";
pub const VAULT_MAX_CONNECTIONS: &str = "VAULT_MAX_CONNECTIONS";
pub const VAULT_DEFAULT_RPM: &str = "VAULT_DEFAULT_RPM";
pub const VAULT_DEFAULT_TPM: &str = "VAULT_DEFAULT_TPM";
pub const VAULT_DEFAULT_CONCURRENCY: &str = "VAULT_DEFAULT_CONCURRENCY";
pub const VAULT_ADMISSION: &str = "VAULT_ADMISSION";
pub const VAULT_ADMISSION_THRESHOLD: &str = "VAULT_ADMISSION_THRESHOLD";
pub const VAULT_ADMISSION_MAX_WAIT: &str = "VAULT_ADMISSION_MAX_WAIT";

const DEFAULT_UPSTREAM_TIMEOUT_SECS: f64 = 300.0;
const DEFAULT_MIN_FREE_MB: u64 = 1024;
const DEFAULT_MAX_UPSTREAM_BODY_MB: u64 = 64;
const DEFAULT_LOG_MAX_MB: u64 = 50;
/// Requests vLLM may have waiting for its batch before Vault queues new ones itself: enough
/// that the engine never idles between two of its steps.
const DEFAULT_ADMISSION_THRESHOLD: u64 = 8;
const MAX_ADMISSION_THRESHOLD: u64 = 100_000;
const DEFAULT_ADMISSION_MAX_WAIT_SECS: u64 = 60;
const MIB: u64 = 1024 * 1024;

fn bad(var: &str, why: impl std::fmt::Display) -> VaultError {
    VaultError::config(format!("{var}: {why}"))
}

impl Config {
    /// Reads the configuration from the process environment, with `overrides` first.
    pub fn load(overrides: &Overrides) -> Result<Config, VaultError> {
        Self::from_lookup(|name| {
            overrides.get(name).cloned().or_else(|| std::env::var(name).ok()).filter(|value| !value.trim().is_empty())
        })
    }

    /// Builds a configuration from any source of named values (used by tests and embedders).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, VaultError> {
        let host = match lookup(VAULT_HOST) {
            Some(v) if v == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v.parse().map_err(|_| bad(VAULT_HOST, format!("`{v}` is not an IP address")))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let port = match lookup(VAULT_PORT) {
            Some(v) => v.parse().map_err(|_| bad(VAULT_PORT, format!("`{v}` is not a port number (0-65535)")))?,
            None => 8000,
        };
        let http_redirect_port = match lookup(VAULT_HTTP_REDIRECT_PORT) {
            None => None,
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p != 0 && p == port => {
                    return Err(bad(VAULT_HTTP_REDIRECT_PORT, format!("`{v}` is VAULT_PORT itself")));
                }
                Ok(p) => Some(p),
                Err(_) => return Err(bad(VAULT_HTTP_REDIRECT_PORT, format!("`{v}` is not a port number (0-65535)"))),
            },
        };
        let metrics_addr = match lookup(VAULT_METRICS_ADDR) {
            None => None,
            Some(v) => match v.parse::<std::net::SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => Some(addr),
                Ok(_) => {
                    return Err(bad(
                        VAULT_METRICS_ADDR,
                        format!("`{v}` is not a loopback address: metrics without a key are served on this box only"),
                    ));
                }
                Err(_) => {
                    return Err(bad(VAULT_METRICS_ADDR, format!("`{v}` is not an address:port like 127.0.0.1:9464")));
                }
            },
        };
        let data_dir = PathBuf::from(lookup(VAULT_DATA_DIR).unwrap_or_else(|| "./data".into()));
        let db = match lookup(VAULT_DB_URL) {
            None => DbLocation::Local(data_dir.join("vault.db")),
            Some(url) => parse_db_url(&url, lookup(VAULT_DB_AUTH_TOKEN), &data_dir)?,
        };
        let upstreams_file = lookup(VAULT_UPSTREAMS).map(PathBuf::from);
        let upstreams = match lookup(VAULT_UPSTREAMS) {
            Some(file) => read_upstreams(Path::new(&file)).map_err(|why| bad(VAULT_UPSTREAMS, why))?,
            None => {
                let urls = lookup(VLLM_BASE_URL).unwrap_or_else(|| "http://localhost:8001".into());
                let specs = urls
                    .split(',')
                    .map(|url| {
                        let url = parse_http_url(url.trim())?;
                        Ok(crate::inference::router::UpstreamSpec { url, models: None, weight: 1 })
                    })
                    .collect::<Result<Vec<_>, String>>();
                specs.map_err(|why| bad(VLLM_BASE_URL, why))?
            }
        };
        let urls: Vec<&str> = upstreams.iter().map(|u| u.url.as_str()).collect();
        if let Some(twice) = listed_twice(&upstreams) {
            return Err(bad(VLLM_BASE_URL, format!("{twice} is listed twice")));
        }
        let vllm_base_url = urls.join(",");
        let upstream_timeout = match lookup(VAULT_UPSTREAM_TIMEOUT) {
            Some(v) => parse_seconds(&v).map_err(|why| bad(VAULT_UPSTREAM_TIMEOUT, why))?,
            None => Duration::from_secs_f64(DEFAULT_UPSTREAM_TIMEOUT_SECS),
        };
        let models_dir = lookup(VAULT_MODELS_DIR).map(PathBuf::from).unwrap_or_else(|| data_dir.join("models"));
        let gpu_config =
            lookup(VAULT_GPU_CONFIG).map(PathBuf::from).unwrap_or_else(|| data_dir.join("gpu-config.json"));
        let import_roots: Vec<PathBuf> = lookup(VAULT_IMPORT_ROOTS)
            .unwrap_or_else(|| "/media,/mnt".into())
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(PathBuf::from)
            .collect();
        if let Some(relative) = import_roots.iter().find(|r| !r.is_absolute()) {
            return Err(bad(VAULT_IMPORT_ROOTS, format!("`{}` is not an absolute path", relative.display())));
        }
        let simulated_gpus = match lookup(VAULT_SIMULATED_GPUS_MB) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|mb| mb.trim().parse::<u64>().ok().filter(|mb| *mb > 0).map(|mb| mb * MIB))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(|| {
                        bad(VAULT_SIMULATED_GPUS_MB, format!("`{list}` is not a list of sizes in MB, like 81920,81920"))
                    })?,
            ),
        };
        let manifest = lookup(VAULT_MODELS_MANIFEST);
        let models_manifest_explicit = manifest.is_some();
        let models_manifest = manifest.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config/models.json"));
        let setup_flag_path =
            lookup(VAULT_SETUP_FLAG_PATH).map(PathBuf::from).unwrap_or_else(|| data_dir.join(".setup_complete"));
        let tls_cert_dir = lookup(VAULT_TLS_CERT_DIR).map(PathBuf::from).unwrap_or_else(|| data_dir.join("tls"));
        let cors_origins = lookup(VAULT_CORS_ORIGINS)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        let log_level = lookup(VAULT_LOG_LEVEL).unwrap_or_else(|| "info".into());
        let log_file = match lookup(VAULT_LOG_FILE).as_deref() {
            Some("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(data_dir.join("logs").join("vault.log")),
        };
        let system_control = match lookup(VAULT_SYSTEM_CONTROL).as_deref() {
            None | Some("dry-run") => SystemControl::DryRun,
            Some("host") => SystemControl::Host,
            Some(other) => return Err(bad(VAULT_SYSTEM_CONTROL, format!("`{other}` must be dry-run or host"))),
        };
        let megabytes = |var: &str, default: u64, min: u64| -> Result<u64, VaultError> {
            match lookup(var) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= min && n <= 1024 * 1024 => Ok(n),
                    _ => Err(bad(var, format!("`{v}` is not a number of MB between {min} and 1048576"))),
                },
            }
        };
        let min_free_bytes = megabytes(VAULT_MIN_FREE_MB, DEFAULT_MIN_FREE_MB, 0)? * MIB;
        let log_max_bytes = megabytes(VAULT_LOG_MAX_MB, DEFAULT_LOG_MAX_MB, 1)? * MIB;
        let max_upstream_body =
            usize::try_from(megabytes(VAULT_MAX_UPSTREAM_BODY_MB, DEFAULT_MAX_UPSTREAM_BODY_MB, 1)? * MIB)
                .unwrap_or(usize::MAX);
        let seconds = |var: &str, default: u64| -> Result<Duration, VaultError> {
            match lookup(var) {
                Some(v) => parse_seconds(&v).map_err(|why| bad(var, why)),
                None => Ok(Duration::from_secs(default)),
            }
        };
        let header_timeout = seconds(VAULT_HEADER_TIMEOUT, 30)?;
        let idle_timeout = seconds(VAULT_IDLE_TIMEOUT, 120)?;
        let stream_idle_timeout = seconds(VAULT_STREAM_IDLE_TIMEOUT, 60)?;
        let max_connections = match lookup(VAULT_MAX_CONNECTIONS) {
            None => None,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => return Err(bad(VAULT_MAX_CONNECTIONS, format!("`{v}` is not a positive number"))),
            },
        };
        let limit = |var: &str| -> Result<Option<u64>, VaultError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= 1 => Ok(Some(n)),
                    _ => Err(bad(var, format!("`{v}` is not a positive whole number"))),
                },
            }
        };
        let default_limits = crate::model::limits::LimitSet {
            rpm: limit(VAULT_DEFAULT_RPM)?,
            tpm: limit(VAULT_DEFAULT_TPM)?,
            concurrency: limit(VAULT_DEFAULT_CONCURRENCY)?,
            weight: None,
        };
        crate::limits::check(&default_limits).map_err(|e| {
            let var = [("rpm", VAULT_DEFAULT_RPM), ("tpm", VAULT_DEFAULT_TPM)]
                .into_iter()
                .find_map(|(field, var)| e.message.starts_with(field).then_some(var))
                .unwrap_or(VAULT_DEFAULT_CONCURRENCY);
            bad(var, e.message)
        })?;
        // Both are checked even when admission is off, so that turning it on cannot fail.
        let fair = crate::inference::admission::AdmissionConfig {
            threshold: match lookup(VAULT_ADMISSION_THRESHOLD) {
                None => DEFAULT_ADMISSION_THRESHOLD,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n <= MAX_ADMISSION_THRESHOLD => n,
                    _ => {
                        return Err(bad(
                            VAULT_ADMISSION_THRESHOLD,
                            format!("`{v}` is not a whole number from 0 to {MAX_ADMISSION_THRESHOLD}"),
                        ));
                    }
                },
            },
            max_wait: seconds(VAULT_ADMISSION_MAX_WAIT, DEFAULT_ADMISSION_MAX_WAIT_SECS)?,
        };
        let admission = match lookup(VAULT_ADMISSION).as_deref().map(str::trim) {
            None | Some("fair") => Some(fair),
            Some("off") => None,
            Some(other) => return Err(bad(VAULT_ADMISSION, format!("`{other}` must be fair or off"))),
        };
        Ok(Config {
            host,
            port,
            http_redirect_port,
            metrics_addr,
            data_dir,
            db,
            vllm_base_url,
            upstreams,
            upstreams_file,
            upstream_timeout,
            models_dir,
            gpu_config,
            import_roots,
            simulated_gpus,
            models_manifest,
            models_manifest_explicit,
            setup_flag_path,
            tls_cert_dir,
            cors_origins,
            log_level,
            log_file,
            log_max_bytes,
            system_control,
            min_free_bytes,
            max_upstream_body,
            header_timeout,
            idle_timeout,
            stream_idle_timeout,
            max_connections,
            default_limits,
            admission,
            secret_key: lookup(VAULT_SECRET_KEY).map(Secret),
            vllm_api_key: lookup(VLLM_API_KEY).map(|key| Secret(key.trim().to_string())),
        })
    }

    /// A configuration rooted in `data_dir` with every other setting at its default.
    pub fn for_data_dir(data_dir: &Path) -> Result<Config, VaultError> {
        let dir = data_dir.to_string_lossy().into_owned();
        Self::from_lookup(|name| (name == VAULT_DATA_DIR).then(|| dir.clone()))
    }

    /// Checks what can only be checked on disk: the data dir is writable and an explicitly
    /// named manifest exists. Creates the data dir when missing.
    pub fn prepare_data_dir(&self) -> Result<(), VaultError> {
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| bad(VAULT_DATA_DIR, format!("cannot create {}: {e}", self.data_dir.display())))?;
        let probe = self.data_dir.join(".write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| bad(VAULT_DATA_DIR, format!("{} is not writable: {e}", self.data_dir.display())))?;
        if self.models_manifest_explicit && !self.models_manifest.is_file() {
            return Err(bad(VAULT_MODELS_MANIFEST, format!("{} does not exist", self.models_manifest.display())));
        }
        Ok(())
    }

    /// The server secret as it is now — configured, or stored in the data dir — without
    /// making one (for tools that check what the server signed).
    pub fn existing_secret_key(&self) -> Option<String> {
        if let Some(Secret(secret)) = &self.secret_key {
            return Some(secret.clone());
        }
        let stored = std::fs::read_to_string(self.data_dir.join("secret_key")).ok()?;
        Some(stored.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The server secret: the configured one, else the one stored in the data dir,
    /// else a new one written there (readable by the owner only).
    pub fn secret_key(&self) -> Result<String, VaultError> {
        if let Some(Secret(secret)) = &self.secret_key {
            return Ok(secret.clone());
        }
        let path = self.data_dir.join("secret_key");
        match std::fs::read_to_string(&path) {
            Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().to_string()),
            _ => {
                let secret = crate::secrets::random_alphanumeric(64)?;
                write_private_file(&path, secret.as_bytes())
                    .map_err(|e| bad(VAULT_SECRET_KEY, format!("cannot store a generated secret: {e}")))?;
                Ok(secret)
            }
        }
    }

    /// The key to send vLLM, when it was started with one.
    pub fn vllm_api_key(&self) -> Option<&str> {
        self.vllm_api_key.as_ref().map(|Secret(key)| key.as_str())
    }

    /// The settings as a reader may see them: everything but secrets (the server secret,
    /// the database token, vLLM's key: only whether one is set).
    pub fn summary(&self) -> serde_json::Value {
        let db = match &self.db {
            DbLocation::Local(path) => path.display().to_string(),
            DbLocation::Remote { url, .. } => url.clone(),
            DbLocation::Postgres { url, .. } => crate::storage::postgres::parse_url(url)
                .map(|(c, _)| crate::storage::postgres::describe(&c))
                .unwrap_or_default(),
        };
        serde_json::json!({
            "host": self.host.to_string(),
            "port": self.port,
            "http_redirect_port": self.http_redirect_port,
            "metrics_addr": self.metrics_addr.map(|a| a.to_string()),
            "data_dir": self.data_dir.display().to_string(),
            "db_url": db,
            "vllm_base_url": self.vllm_base_url,
            "upstreams": self.upstreams,
            "vllm_api_key_set": self.vllm_api_key.is_some(),
            "upstream_timeout_seconds": self.upstream_timeout.as_secs_f64(),
            "models_dir": self.models_dir.display().to_string(),
            "gpu_config": self.gpu_config.display().to_string(),
            "import_roots": self.import_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
            "simulated_gpus_mb": self.simulated_gpus.as_ref().map(|g| g.iter().map(|b| b / MIB).collect::<Vec<_>>()),
            "models_manifest": self.models_manifest.display().to_string(),
            "setup_flag_path": self.setup_flag_path.display().to_string(),
            "tls_cert_dir": self.tls_cert_dir.display().to_string(),
            "cors_origins": self.cors_origins,
            "log_level": self.log_level,
            "log_file": self.log_file.as_ref().map(|p| p.display().to_string()),
            "log_max_mb": self.log_max_bytes / MIB,
            "system_control": match self.system_control {
                SystemControl::DryRun => "dry-run",
                SystemControl::Host => "host",
            },
            "min_free_mb": self.min_free_bytes / MIB,
            "max_upstream_body_mb": self.max_upstream_body as u64 / MIB,
            "header_timeout_seconds": self.header_timeout.as_secs_f64(),
            "idle_timeout_seconds": self.idle_timeout.as_secs_f64(),
            "stream_idle_timeout_seconds": self.stream_idle_timeout.as_secs_f64(),
            "max_connections": self.max_connections,
            "default_limits": self.default_limits,
            "admission": self.admission.map(|a| serde_json::json!({
                "threshold": a.threshold,
                "max_wait_seconds": a.max_wait.as_secs_f64(),
            })),
        })
    }

    /// Whether a browser page of `origin` (an `Origin` header) may use this gateway from
    /// script where the browser does not ask first (a WebSocket): only when it is one of
    /// `VAULT_CORS_ORIGINS`. (Comparing it with `Host` instead would let a page that
    /// re-pointed its own name at the box — DNS rebinding — pass as the box's own.)
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|allowed| allowed == origin)
    }

    /// The listen address as `host:port`.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host, self.port)
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents)
}

fn parse_db_url(url: &str, auth_token: Option<String>, data_dir: &Path) -> Result<DbLocation, VaultError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        crate::storage::postgres::parse_url(url)?;
        return Ok(DbLocation::Postgres { url: url.to_string(), local: data_dir.join("vault-postgres") });
    }
    if ["libsql://", "http://", "https://", "ws://", "wss://"].iter().any(|s| lower.starts_with(s)) {
        return Ok(DbLocation::Remote { url: url.to_string(), auth_token });
    }
    let path = url.strip_prefix("file:").unwrap_or(url);
    if path.is_empty() {
        return Err(bad(VAULT_DB_URL, "empty database path"));
    }
    Ok(DbLocation::Local(PathBuf::from(path)))
}

/// The upstreams listed in a JSON file: `{"upstreams": [{"url": "http://…", "models":
/// ["…"], "weight": 1}]}` (`models` and `weight` optional). An empty list, or no file yet,
/// is an engine serving no model yet.
pub(crate) fn read_upstreams(path: &Path) -> Result<Vec<crate::inference::router::UpstreamSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        upstreams: Vec<crate::inference::router::UpstreamSpec>,
    }
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        // Not written yet: `vault-cli models launch` writes it as the engine starts.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: File = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    let upstreams = file
        .upstreams
        .into_iter()
        .map(|mut spec| {
            spec.url = parse_http_url(&spec.url)?;
            if !(1..=100).contains(&spec.weight) {
                return Err(format!("{}: weight must be from 1 to 100", spec.url));
            }
            if spec.models.as_ref().is_some_and(|m| m.is_empty() || m.iter().any(|id| id.trim().is_empty())) {
                return Err(format!("{}: models must name at least one model, none empty", spec.url));
            }
            Ok(spec)
        })
        .collect::<Result<Vec<_>, String>>()?;
    if let Some(twice) = listed_twice(&upstreams) {
        return Err(format!("{}: {twice} is listed twice", path.display()));
    }
    Ok(upstreams)
}

/// The first URL listed twice: one server would take two shares.
fn listed_twice(upstreams: &[crate::inference::router::UpstreamSpec]) -> Option<&str> {
    upstreams
        .iter()
        .enumerate()
        .find_map(|(i, u)| upstreams[..i].iter().any(|v| v.url == u.url).then_some(u.url.as_str()))
}

/// Validates an http base URL and returns it without a trailing slash.
pub(crate) fn parse_http_url(raw: &str) -> Result<String, String> {
    let uri: http::Uri = raw.parse().map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        // The upstream client is built without TLS (vLLM sits beside the gateway on the box).
        Some("https") => {
            return Err(format!("`{raw}`: https upstreams are not supported; reach vLLM over http on the appliance"));
        }
        _ => return Err(format!("`{raw}` must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{raw}`: a base URL has no query"));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

fn parse_seconds(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("`{raw}` is not a number of seconds between 0 and 86400")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, VaultError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:8000");
        assert_eq!(c.db, DbLocation::Local(PathBuf::from("./data/vault.db")));
        assert_eq!(c.vllm_base_url, "http://localhost:8001");
        assert_eq!(c.setup_flag_path, PathBuf::from("./data/.setup_complete"));
        assert_eq!(c.models_dir, PathBuf::from("./data/models"));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.system_control, SystemControl::DryRun);
        assert!(!c.models_manifest_explicit);
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.log_file, Some(PathBuf::from("./data/logs/vault.log")));
        assert_eq!(config(&[(VAULT_LOG_FILE, "off")]).unwrap().log_file, None);
        let admission = c.admission.unwrap();
        assert_eq!((admission.threshold, admission.max_wait), (8, Duration::from_secs(60)));
        assert_eq!(config(&[(VAULT_ADMISSION, "off")]).unwrap().admission, None);
        let several = config(&[(VLLM_BASE_URL, "http://a:1/, http://b:2")]).unwrap();
        assert_eq!(several.upstreams.iter().map(|u| u.url.as_str()).collect::<Vec<_>>(), ["http://a:1", "http://b:2"]);
        assert_eq!(several.vllm_base_url, "http://a:1,http://b:2");
        let c = config(&[(VAULT_METRICS_ADDR, "[::1]:9464")]).unwrap();
        assert_eq!(c.metrics_addr.map(|a| a.to_string()).as_deref(), Some("[::1]:9464"));
    }

    #[test]
    fn an_upstreams_file_lists_urls_models_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("upstreams.json");
        let path = file.to_str().unwrap();
        std::fs::write(
            &file,
            r#"{"upstreams": [{"url": "http://a:1/", "models": ["x"], "weight": 2}, {"url": "http://b:2"}]}"#,
        )
        .unwrap();
        let c = config(&[(VAULT_UPSTREAMS, path), (VLLM_BASE_URL, "http://ignored:9")]).unwrap();
        assert_eq!(c.upstreams[0].url, "http://a:1");
        assert_eq!((c.upstreams[0].models.clone(), c.upstreams[0].weight), (Some(vec!["x".to_string()]), 2));
        assert_eq!((c.upstreams[1].models.clone(), c.upstreams[1].weight), (None, 1));
        assert_eq!(c.upstreams_file.as_deref(), Some(file.as_path()));
        std::fs::write(&file, r#"{"upstreams": []}"#).unwrap();
        assert!(config(&[(VAULT_UPSTREAMS, path)]).unwrap().upstreams.is_empty(), "an engine serving nothing yet");
        let not_yet = dir.path().join("not-yet.json");
        assert!(config(&[(VAULT_UPSTREAMS, not_yet.to_str().unwrap())]).unwrap().upstreams.is_empty());
        for bad in [
            r#"{"upstreams": [{"url": "ftp://a"}]}"#,
            r#"{"upstreams": [{"url": "http://a:1", "weight": 0}]}"#,
            r#"{"upstreams": [{"url": "http://a:1", "models": []}]}"#,
            r#"{"upstreams": [{"url": "http://a:1", "model": "x"}]}"#,
            "not json",
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = config(&[(VAULT_UPSTREAMS, path)]).unwrap_err();
            assert!(err.message.starts_with(VAULT_UPSTREAMS), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (VAULT_PORT, "80000"),
            (VAULT_HOST, "not an ip"),
            (VLLM_BASE_URL, "ftp://x"),
            (VLLM_BASE_URL, "::::"),
            (VLLM_BASE_URL, "https://vllm.example"),
            (VLLM_BASE_URL, "http://"),
            (VLLM_BASE_URL, "http://vllm:8001/?x=1"),
            (VAULT_UPSTREAM_TIMEOUT, "-1"),
            (VAULT_SYSTEM_CONTROL, "yes"),
            (VLLM_BASE_URL, "http://a:1,ftp://b"),
            (VLLM_BASE_URL, "http://a:1,"),
            (VLLM_BASE_URL, "http://a:1,http://a:1/"),
            (VAULT_UPSTREAMS, "/"),
            (VAULT_ADMISSION, "maybe"),
            (VAULT_ADMISSION_THRESHOLD, "-1"),
            (VAULT_ADMISSION_THRESHOLD, "1e9"),
            (VAULT_ADMISSION_MAX_WAIT, "0"),
            (VAULT_MIN_FREE_MB, "-5"),
            (VAULT_MAX_UPSTREAM_BODY_MB, "0"),
            (VAULT_HEADER_TIMEOUT, "never"),
            (VAULT_MAX_CONNECTIONS, "0"),
            (VAULT_DEFAULT_RPM, "0"),
            (VAULT_DEFAULT_RPM, "99999999999"),
            (VAULT_DEFAULT_TPM, "-5"),
            (VAULT_DEFAULT_CONCURRENCY, "lots"),
            (VAULT_METRICS_ADDR, "0.0.0.0:9464"),
            (VAULT_METRICS_ADDR, "localhost"),
            (VAULT_LOG_MAX_MB, "0"),
            (VAULT_SIMULATED_GPUS_MB, "80000,lots"),
            (VAULT_IMPORT_ROOTS, "media"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert!(err.message.starts_with(var), "{var}: {}", err.message);
            assert_eq!(err.code, "invalid_config");
        }
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let c = config(&[(VAULT_CORS_ORIGINS, "https://dash.clinic.example")]).unwrap();
        assert!(c.allows_origin("https://dash.clinic.example"));
        assert!(!c.allows_origin("http://vault:8000"), "not even one that names the box itself");
        assert!(!c.allows_origin("https://evil.example"));
        assert!(!c.allows_origin("null"));
    }

    #[test]
    fn the_summary_never_shows_secrets() {
        let c = config(&[
            (VAULT_SECRET_KEY, "topsecret"),
            (VAULT_DB_AUTH_TOKEN, "tok"),
            (VAULT_DB_URL, "libsql://db"),
            (VLLM_API_KEY, "vllmsecret"),
        ])
        .unwrap();
        let text = c.summary().to_string();
        assert!(!text.contains("topsecret") && !text.contains("tok\"") && !text.contains("vllmsecret"));
        assert_eq!(c.summary()["db_url"], "libsql://db");
        assert_eq!(c.summary()["vllm_api_key_set"], true);
        let debug = format!("{c:?}");
        assert!(!debug.contains("topsecret") && !debug.contains("vllmsecret"), "{debug}");
        assert_eq!(c.vllm_api_key(), Some("vllmsecret"));
    }

    #[test]
    fn remote_db_urls_are_recognised() {
        let c = config(&[(VAULT_DB_URL, "libsql://db.example"), (VAULT_DB_AUTH_TOKEN, "t")]).unwrap();
        assert_eq!(c.db, DbLocation::Remote { url: "libsql://db.example".into(), auth_token: Some("t".into()) });
        let c = config(&[(VAULT_DB_URL, "file:/tmp/x.db")]).unwrap();
        assert_eq!(c.db, DbLocation::Local(PathBuf::from("/tmp/x.db")));
    }

    #[test]
    fn postgres_urls_are_recognised_and_shown_without_their_password() {
        let url = "postgres://vault:hunter2@db.clinic.lan:5433/vault";
        let c = config(&[(VAULT_DB_URL, url), (VAULT_DATA_DIR, "/srv/vault")]).unwrap();
        assert_eq!(c.db, DbLocation::Postgres { url: url.into(), local: PathBuf::from("/srv/vault/vault-postgres") });
        assert_eq!(c.summary()["db_url"], "postgres://vault@db.clinic.lan:5433/vault");
        let err = config(&[(VAULT_DB_URL, "postgresql://vault:hunter2@db:port/vault")]).unwrap_err();
        assert!(err.message.starts_with("VAULT_DB_URL") && !err.message.contains("hunter2"), "{}", err.message);
    }

    #[test]
    fn explicit_manifest_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_string_lossy().into_owned();
        let c = config(&[(VAULT_DATA_DIR, &data), (VAULT_MODELS_MANIFEST, "/nonexistent/models.json")]).unwrap();
        let err = c.prepare_data_dir().unwrap_err();
        assert!(err.message.starts_with(VAULT_MODELS_MANIFEST));
    }

    #[test]
    fn generated_secret_is_stored_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::for_data_dir(dir.path()).unwrap();
        let first = c.secret_key().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(c.secret_key().unwrap(), first);
    }
}
