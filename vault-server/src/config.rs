//! Command-line flags for every setting (the README lists them); each also reads its
//! environment variable.

use clap::Args;
use vault_core::config::{self, Overrides};

#[derive(Args, Debug, Default, Clone)]
pub struct ConfigArgs {
    /// Address to listen on.
    #[arg(long, env = config::VAULT_HOST, global = true)]
    pub host: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = config::VAULT_PORT, global = true)]
    pub port: Option<String>,
    /// A second port answering plain HTTP with a 308 to HTTPS on the main port [default: none].
    #[arg(long, env = config::VAULT_HTTP_REDIRECT_PORT, global = true)]
    pub http_redirect_port: Option<String>,
    /// A loopback address:port serving `GET /metrics` without a key, for a scraper on this box [default: none].
    #[arg(long, env = config::VAULT_METRICS_ADDR, global = true)]
    pub metrics_addr: Option<String>,
    /// Where the database, secret, flag file, TLS files and models live by default [default: ./data].
    #[arg(long, env = config::VAULT_DATA_DIR, global = true)]
    pub data_dir: Option<String>,
    /// Database: a file path, or libsql://… for a shared server [default: <data dir>/vault.db].
    #[arg(long, env = config::VAULT_DB_URL, global = true)]
    pub db_url: Option<String>,
    /// Token for a remote database.
    #[arg(long, env = config::VAULT_DB_AUTH_TOKEN, hide_env_values = true, global = true)]
    pub db_auth_token: Option<String>,
    /// The vLLM server, or several separated by commas [default: http://localhost:8001].
    #[arg(long, env = config::VLLM_BASE_URL, global = true)]
    pub vllm_base_url: Option<String>,
    /// The key vLLM was started with (`vllm serve --api-key`), sent with every upstream request.
    #[arg(long, env = config::VLLM_API_KEY, hide_env_values = true, global = true)]
    pub vllm_api_key: Option<String>,
    /// Seconds the upstream may take to start answering before a 504 [default: 300].
    #[arg(long, env = config::VAULT_UPSTREAM_TIMEOUT, global = true)]
    pub upstream_timeout: Option<String>,
    /// Server secret [default: generated into the data dir].
    #[arg(long, env = config::VAULT_SECRET_KEY, hide_env_values = true, global = true)]
    pub secret_key: Option<String>,
    /// Models on disk [default: <data dir>/models].
    #[arg(long, env = config::VAULT_MODELS_DIR, global = true)]
    pub models_dir: Option<String>,
    /// The inference service's model configuration, written by model load and unload [default: <data dir>/gpu-config.json].
    #[arg(long, env = config::VAULT_GPU_CONFIG, global = true)]
    pub gpu_config: Option<String>,
    /// Comma-separated folders models may be imported from [default: /media,/mnt].
    #[arg(long, env = config::VAULT_IMPORT_ROOTS, global = true)]
    pub import_roots: Option<String>,
    /// Pretend the box has GPUs of these sizes in MB (demos and tests without GPUs), e.g. 81920,81920 [default: none].
    #[arg(long, env = config::VAULT_SIMULATED_GPUS_MB, global = true)]
    pub simulated_gpus_mb: Option<String>,
    /// The model manifest [default: config/models.json].
    #[arg(long, env = config::VAULT_MODELS_MANIFEST, global = true)]
    pub models_manifest: Option<String>,
    /// First-boot wizard lock file [default: <data dir>/.setup_complete].
    #[arg(long, env = config::VAULT_SETUP_FLAG_PATH, global = true)]
    pub setup_flag_path: Option<String>,
    /// Certificate and key directory [default: <data dir>/tls].
    #[arg(long, env = config::VAULT_TLS_CERT_DIR, global = true)]
    pub tls_cert_dir: Option<String>,
    /// Comma-separated origins allowed by CORS [default: none].
    #[arg(long, env = config::VAULT_CORS_ORIGINS, global = true)]
    pub cors_origins: Option<String>,
    /// Log filter, e.g. `info` or `vault_core=debug` [default: info].
    #[arg(long, env = config::VAULT_LOG_LEVEL, global = true)]
    pub log_level: Option<String>,
    /// The JSON log file, rotated by size (`off`: stdout only) [default: <data dir>/logs/vault.log].
    #[arg(long, env = config::VAULT_LOG_FILE, global = true)]
    pub log_file: Option<String>,
    /// The log file is rotated when it would grow past this many MB; four old files are kept [default: 50].
    #[arg(long, env = config::VAULT_LOG_MAX_MB, global = true)]
    pub log_max_mb: Option<String>,
    /// `dry-run` records host changes (network, time zone) without making them; `host` makes them [default: dry-run].
    #[arg(long, env = config::VAULT_SYSTEM_CONTROL, global = true)]
    pub system_control: Option<String>,
    /// Below this many MB free on the database's disk, inference answers 503 [default: 1024].
    #[arg(long, env = config::VAULT_MIN_FREE_MB, global = true)]
    pub min_free_mb: Option<String>,
    /// The largest non-streamed upstream answer taken, in MB; a larger one is a 502 [default: 64].
    #[arg(long, env = config::VAULT_MAX_UPSTREAM_BODY_MB, global = true)]
    pub max_upstream_body_mb: Option<String>,
    /// Seconds a client has from a request's first byte to the end of its head [default: 30].
    #[arg(long, env = config::VAULT_HEADER_TIMEOUT, global = true)]
    pub header_timeout: Option<String>,
    /// Seconds a connection may stay idle between requests [default: 120].
    #[arg(long, env = config::VAULT_IDLE_TIMEOUT, global = true)]
    pub idle_timeout: Option<String>,
    /// Seconds the upstream may stay silent within a streamed answer before the stream is
    /// ended with an `inference_timeout` error event [default: 60].
    #[arg(long, env = config::VAULT_STREAM_IDLE_TIMEOUT, global = true)]
    pub stream_idle_timeout: Option<String>,
    /// Open connections at most; past it the longest-idle one is closed [default: from the open-files limit].
    #[arg(long, env = config::VAULT_MAX_CONNECTIONS, global = true)]
    pub max_connections: Option<String>,
    /// Requests per minute of a key without a limit of its own [default: unlimited].
    #[arg(long, env = config::VAULT_DEFAULT_RPM, global = true)]
    pub default_rpm: Option<String>,
    /// Tokens per minute (prompt and completion) of a key without a limit of its own [default: unlimited].
    #[arg(long, env = config::VAULT_DEFAULT_TPM, global = true)]
    pub default_tpm: Option<String>,
    /// Requests at once of a key without a limit of its own [default: unlimited].
    #[arg(long, env = config::VAULT_DEFAULT_CONCURRENCY, global = true)]
    pub default_concurrency: Option<String>,
    /// A JSON file listing the vLLM upstreams (`{"upstreams": [{"url", "models", "weight"}]}`);
    /// replaces VLLM_BASE_URL [default: none].
    #[arg(long, env = config::VAULT_UPSTREAMS, global = true)]
    pub upstreams: Option<String>,
    /// `fair`: while vLLM has more requests waiting than the threshold, hold new ones in a
    /// queue per user and admit them in turn; `off`: send every request on at once [default: fair].
    #[arg(long, env = config::VAULT_ADMISSION, global = true)]
    pub admission: Option<String>,
    /// Requests vLLM may have waiting for its batch before requests queue in Vault [default: 8].
    #[arg(long, env = config::VAULT_ADMISSION_THRESHOLD, global = true)]
    pub admission_threshold: Option<String>,
    /// Seconds a request may wait its turn before it is answered 503 `inference_busy` [default: 60].
    #[arg(long, env = config::VAULT_ADMISSION_MAX_WAIT, global = true)]
    pub admission_max_wait: Option<String>,
}

impl ConfigArgs {
    /// The given settings, keyed by their variable names.
    pub fn overrides(&self) -> Overrides {
        let pairs = [
            (config::VAULT_HOST, &self.host),
            (config::VAULT_PORT, &self.port),
            (config::VAULT_HTTP_REDIRECT_PORT, &self.http_redirect_port),
            (config::VAULT_METRICS_ADDR, &self.metrics_addr),
            (config::VAULT_DATA_DIR, &self.data_dir),
            (config::VAULT_DB_URL, &self.db_url),
            (config::VAULT_DB_AUTH_TOKEN, &self.db_auth_token),
            (config::VLLM_BASE_URL, &self.vllm_base_url),
            (config::VLLM_API_KEY, &self.vllm_api_key),
            (config::VAULT_UPSTREAM_TIMEOUT, &self.upstream_timeout),
            (config::VAULT_SECRET_KEY, &self.secret_key),
            (config::VAULT_MODELS_DIR, &self.models_dir),
            (config::VAULT_MODELS_MANIFEST, &self.models_manifest),
            (config::VAULT_GPU_CONFIG, &self.gpu_config),
            (config::VAULT_IMPORT_ROOTS, &self.import_roots),
            (config::VAULT_SIMULATED_GPUS_MB, &self.simulated_gpus_mb),
            (config::VAULT_SETUP_FLAG_PATH, &self.setup_flag_path),
            (config::VAULT_TLS_CERT_DIR, &self.tls_cert_dir),
            (config::VAULT_CORS_ORIGINS, &self.cors_origins),
            (config::VAULT_LOG_LEVEL, &self.log_level),
            (config::VAULT_LOG_FILE, &self.log_file),
            (config::VAULT_LOG_MAX_MB, &self.log_max_mb),
            (config::VAULT_SYSTEM_CONTROL, &self.system_control),
            (config::VAULT_MIN_FREE_MB, &self.min_free_mb),
            (config::VAULT_MAX_UPSTREAM_BODY_MB, &self.max_upstream_body_mb),
            (config::VAULT_HEADER_TIMEOUT, &self.header_timeout),
            (config::VAULT_IDLE_TIMEOUT, &self.idle_timeout),
            (config::VAULT_STREAM_IDLE_TIMEOUT, &self.stream_idle_timeout),
            (config::VAULT_MAX_CONNECTIONS, &self.max_connections),
            (config::VAULT_DEFAULT_RPM, &self.default_rpm),
            (config::VAULT_DEFAULT_TPM, &self.default_tpm),
            (config::VAULT_DEFAULT_CONCURRENCY, &self.default_concurrency),
            (config::VAULT_UPSTREAMS, &self.upstreams),
            (config::VAULT_ADMISSION, &self.admission),
            (config::VAULT_ADMISSION_THRESHOLD, &self.admission_threshold),
            (config::VAULT_ADMISSION_MAX_WAIT, &self.admission_max_wait),
        ];
        pairs.into_iter().filter_map(|(name, value)| value.clone().map(|v| (name, v))).collect()
    }
}
