//! Harness for the end-to-end tests.
//!
//! [`TestApp::spawn`] starts a gateway and a fake vLLM inside the test's own process, on
//! ephemeral ports, with a fresh data dir: what most tests need, and nothing to build
//! first. The few tests about processes themselves (start-up, SIGTERM, the CLI beside a
//! running server) start real binaries with [`ServerProcess`] and [`run_cli`], given the
//! path from their own package's `env!("CARGO_BIN_EXE_…")`, so Cargo builds exactly the
//! binary the test runs.

// A harness step that fails must stop the test loudly: unwrap and expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
/// The WebSocket client the tests use.
pub use tokio_tungstenite;
use vault_core::audit::AuditEntry;
use vault_core::config::{self, DbLocation, Overrides};
use vault_core::keys::{self, Scope};
use vault_core::storage::{self, Db};
use vault_server::embedded::EmbeddedGateway;
pub use vault_server::embedded::{FakeOptions, Upstream};

/// A gateway and (unless told otherwise) a fake vLLM, running in this process.
pub struct TestApp {
    pub url: String,
    /// The metrics port's URL, when `VAULT_METRICS_ADDR` was set.
    pub metrics_url: Option<String>,
    pub upstream_url: String,
    pub data_dir: PathBuf,
    gateway: Option<EmbeddedGateway>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// A gateway in front of a fake vLLM, with default settings.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Upstream::Fake(FakeOptions::default()), &[]).await
    }

    /// A gateway in front of `upstream`, with `settings` (variable, value) on top of the
    /// defaults. The environment of the test process is not read.
    pub async fn spawn_with(upstream: Upstream, settings: &[(&'static str, &str)]) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut overrides: Overrides = HashMap::new();
        overrides.insert(config::VAULT_PORT, "0".into());
        overrides.insert(config::VAULT_DATA_DIR, data_dir.display().to_string());
        for (name, value) in settings {
            overrides.insert(name, value.to_string());
        }
        let gateway = EmbeddedGateway::start_isolated(overrides, upstream).await.expect("the gateway starts");
        TestApp {
            url: gateway.url().to_string(),
            metrics_url: gateway.metrics_url().map(String::from),
            upstream_url: gateway.upstream_url().to_string(),
            data_dir,
            gateway: Some(gateway),
            http: client(),
            _dir: dir,
        }
    }

    /// The gateway's core, for what only it can tell.
    pub fn vault(&self) -> &std::sync::Arc<vault_core::Vault> {
        &self.gateway.as_ref().expect("running").vault
    }

    /// The host commands the gateway's dry-run system controller recorded, oldest first.
    pub fn host_commands(&self) -> Vec<Vec<String>> {
        self.gateway.as_ref().expect("running").vault.controller.recorded()
    }

    pub fn db(&self) -> &Db {
        &self.gateway.as_ref().expect("running").vault.db
    }

    /// Creates a key in the gateway's database and returns the raw key.
    pub async fn create_key(&self, scope: Scope) -> String {
        keys::create(self.db(), "test", scope, None, Some("test")).await.unwrap().key
    }

    /// `method path` with `key` (none: no Authorization header) and a JSON `body`.
    pub async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// The audit row of a request, by its request id; waits a little for rows written
    /// after the client left.
    pub async fn audit_row(&self, request_id: &str) -> Option<AuditEntry> {
        audit_row(self.db(), request_id).await
    }

    /// The committed audit rows whose path starts with `path_prefix`, newest first.
    pub async fn audit_rows(&self, path_prefix: &str) -> Vec<AuditEntry> {
        self.vault().audit.flush().await;
        let filter = vault_core::audit::AuditFilter { path_prefix: Some(path_prefix.into()), ..Default::default() };
        vault_core::audit::query(self.db(), &filter, None, None).await.unwrap()
    }

    pub async fn audit_count(&self) -> i64 {
        storage::audit::count(&self.db().connect().await.unwrap()).await.unwrap()
    }

    /// The fake upstream's `GET /_fake/stats`: open streams and requests served.
    pub async fn upstream_stats(&self) -> Value {
        self.http.get(format!("{}/_fake/stats", self.upstream_url)).send().await.unwrap().json().await.unwrap()
    }

    /// The last request bodies the fake upstream received, as sent.
    pub async fn upstream_received(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/requests", self.upstream_url)).send().await.unwrap().json().await.unwrap()
    }

    /// What the heads of the last requests the fake upstream received said: `x-request-id`,
    /// `traceparent`, and whether an `Authorization` came with them.
    pub async fn upstream_heads(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/headers", self.upstream_url)).send().await.unwrap().json().await.unwrap()
    }

    /// Stops the gateway as SIGTERM would: in-flight requests finish, every row is stored.
    /// The data dir stays until the app is dropped.
    pub async fn stop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop_in_background();
        }
    }
}

/// A fake vLLM alone, in this process (for a gateway that runs as a process).
pub async fn start_fake_upstream() -> fake_vllm::RunningFake {
    fake_vllm::start(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), FakeOptions::default()).await.unwrap()
}

/// Opens the database of a data dir as another process would.
pub async fn open_db(data_dir: &Path) -> Db {
    Db::open(&DbLocation::Local(data_dir.join("vault.db"))).await.unwrap()
}

/// The audit row of a request by its id, waiting up to a second for it.
pub async fn audit_row(db: &Db, request_id: &str) -> Option<AuditEntry> {
    let conn = db.connect().await.unwrap();
    for _ in 0..50 {
        if let Some(row) = storage::audit::by_request_id(&conn, request_id).await.unwrap() {
            return Some(row);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Runs the CLI binary at `binary` on a data dir.
pub async fn run_cli(binary: &str, data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary)
        .env_clear()
        .env(config::VAULT_DATA_DIR, data_dir)
        .args(args)
        .output()
        .await
        .expect("vault-cli runs")
}

/// A `vault-server` process with its own data dir.
pub struct ServerProcess {
    pub url: String,
    pub data_dir: PathBuf,
    /// Its stdout, line by line (JSON log lines).
    pub log: Arc<Mutex<Vec<String>>>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary at `binary` in front of `upstream`, with `env` on top of a clean
    /// environment, and waits for it to report its address.
    pub async fn start(binary: &str, upstream: &str, env: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_in(binary, upstream, env, data_dir, dir).await
    }

    /// Starts it again on the same data dir, as a restart would (after `kill`).
    pub async fn restart(self, binary: &str, upstream: &str) -> ServerProcess {
        let ServerProcess { data_dir, _dir, .. } = self;
        Self::start_in(binary, upstream, &[], data_dir, _dir).await
    }

    async fn start_in(
        binary: &str,
        upstream: &str,
        env: &[(&str, &str)],
        data_dir: PathBuf,
        dir: tempfile::TempDir,
    ) -> ServerProcess {
        let mut child = Command::new(binary)
            .env_clear()
            .env(config::VAULT_PORT, "0")
            .env(config::VAULT_DATA_DIR, &data_dir)
            .env(config::VLLM_BASE_URL, upstream)
            .env(config::VAULT_LOG_LEVEL, "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("vault-server starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = wait_for_line(&mut child, log.clone(), |l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["message"] == "vault-server listening").then(|| v["addr"].as_str().unwrap_or_default().to_string())
        })
        .await;
        ServerProcess { url: format!("http://{addr}"), data_dir, log, child, _dir: dir }
    }

    /// Kills the process (SIGKILL: no chance to flush anything) and waits for it.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap()
    }
}

/// Reads a child's stdout until a line matches, then keeps draining it into `lines`.
async fn wait_for_line(
    child: &mut Child,
    lines: Arc<Mutex<Vec<String>>>,
    pick: impl Fn(&str) -> Option<String>,
) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut reader = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line.clone());
            if let Some(found) = pick(&line) {
                return Some(found);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    });
    found.expect("the process did not report its address")
}

/// A client that never retries.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Asserts the API's error shape and returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}

/// The request id the gateway gave a response.
pub fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// A chat request for the fake's default model.
pub fn chat_body(stream: bool) -> Value {
    serde_json::json!({
        "model": "qwen2.5-32b-awq",
        "messages": [{"role": "user", "content": "Summarise the patient note please"}],
        "stream": stream,
    })
}

/// Sends a raw HTTP/1.1 `request` (with `Connection: close`) to `addr` over TLS, trusting
/// only the certificates in `ca` and checking the name `localhost`; the answer's text and
/// the SHA-256 fingerprint (vault-core's format) of the certificate the server showed.
pub async fn over_tls(addr: &str, ca: &Path, request: &str) -> (String, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    (String::from_utf8_lossy(&answer).into_owned(), fingerprint(&peer))
}

fn fingerprint(der: &[u8]) -> String {
    // vault-core's own fingerprint format: uppercase hex pairs joined by `:`.
    use sha2::Digest;
    use std::fmt::Write;
    let digest = sha2::Sha256::digest(der);
    digest.iter().fold(String::new(), |mut out, b| {
        if !out.is_empty() {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
        out
    })
}
