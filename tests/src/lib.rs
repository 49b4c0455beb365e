//! Harness for end-to-end tests and benchmarks: starts the real `fake-vllm` and
//! `vault-server` binaries on ephemeral ports, runs `vault-cli`, and reads the audit log.
//!
//! The binaries come from the same target directory as the test executable; build them
//! first with `cargo build --workspace --bins` (the test command does).

// A harness step that fails must stop the test loudly: unwrap and expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use vault_core::audit::AuditEntry;
use vault_core::config::DbLocation;
use vault_core::storage::{self, Db};

/// The path of a workspace binary built beside the running test or bench executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (same profile)",
        path.display()
    );
    path
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

/// A `fake-vllm` process.
pub struct FakeVllm {
    pub url: String,
    _child: Child,
}

impl FakeVllm {
    pub async fn start() -> FakeVllm {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> FakeVllm {
        let mut child = Command::new(binary("fake-vllm"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("fake-vllm starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let url =
            wait_for_line(&mut child, lines, |l| l.strip_prefix("fake-vllm listening on ").map(str::to_string)).await;
        FakeVllm { url, _child: child }
    }

    /// `GET /_fake/stats`: open streams and requests served.
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_fake/stats", self.url)).await.unwrap().json().await.unwrap()
    }

    /// The last request bodies the fake received.
    pub async fn received(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("{}/_fake/requests", self.url)).await.unwrap().json().await.unwrap()
    }
}

/// A `vault-server` process with its own data dir.
pub struct Gateway {
    pub url: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(upstream: &str) -> Gateway {
        Self::start_with(upstream, &[]).await
    }

    /// Starts a gateway in front of `upstream` with extra environment settings.
    pub async fn start_with(upstream: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut child = Command::new(binary("vault-server"))
            .env_clear()
            .env("VAULT_PORT", "0")
            .env("VAULT_DATA_DIR", &data_dir)
            .env("VLLM_BASE_URL", upstream)
            .env("VAULT_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("vault-server starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = wait_for_line(&mut child, log.clone(), |l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "vault-server listening").then(|| v["addr"].as_str().unwrap_or_default().to_string())
        })
        .await;
        Gateway { url: format!("http://{addr}"), data_dir, log, child, _dir: dir }
    }

    /// Runs `vault-cli` against this gateway's database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("vault-cli"))
            .env_clear()
            .env("VAULT_DATA_DIR", &self.data_dir)
            .args(args)
            .output()
            .await
            .expect("vault-cli runs")
    }

    /// Creates a key with the CLI and returns the raw key.
    pub async fn create_key(&self, scope: &str) -> String {
        let out = self.cli(&["create-key", "--label", "test", "--scope", scope, "--json"]).await;
        assert!(out.status.success(), "create-key failed: {}", String::from_utf8_lossy(&out.stderr));
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        created["key"].as_str().unwrap().to_string()
    }

    async fn db(&self) -> Db {
        Db::open(&DbLocation::Local(self.data_dir.join("vault.db"))).await.unwrap()
    }

    /// The audit row of a request, by its request id; waits a little for rows that are
    /// written after the client left.
    pub async fn audit_row(&self, request_id: &str) -> Option<AuditEntry> {
        let db = self.db().await;
        let conn = db.connect().await.unwrap();
        for _ in 0..50 {
            if let Some(row) = storage::audit::by_request_id(&conn, request_id).await.unwrap() {
                return Some(row);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub async fn audit_count(&self) -> i64 {
        let db = self.db().await;
        storage::audit::count(&db.connect().await.unwrap()).await.unwrap()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        (status, self)
    }
}

/// A client that never retries and keeps no connection secrets.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}
