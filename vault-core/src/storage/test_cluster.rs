//! A throwaway PostgreSQL server for tests: `initdb` in a temporary folder, the server on
//! a free loopback port, a fresh database for each test. The server stops and its folder
//! is removed when the test process ends (it watches its standard input, which closes
//! with the process). Not used by Vault itself.
//!
//! Tests that need it call [`database`]; without PostgreSQL's programs it returns `None`
//! (the test is skipped with a line saying so), unless `VAULT_TEST_POSTGRES=required`,
//! which the project's test command sets, so CI cannot skip them silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Debian puts the server's programs outside `PATH`, in a folder per version.
const DEBIAN_DIR: &str = "/usr/lib/postgresql";

/// The name the test server's certificate is for (not the address it listens on, so a
/// test can show a name mismatch); reach it with `hostaddr=127.0.0.1`.
pub const TLS_HOST: &str = "db.vault.test";
/// A role that must log in with a password (SCRAM) over TLS, for tests of channel binding.
pub const SCRAM_ROLE: &str = "vault_scram";

struct Cluster {
    port: u16,
    /// The server's folder, which holds the certificate of the CA that signed its own.
    dir: PathBuf,
    /// Keeps the server's standard input open until the process ends.
    _server: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Whether tests must have PostgreSQL (and fail without it).
pub fn required() -> bool {
    std::env::var("VAULT_TEST_POSTGRES").is_ok_and(|v| v == "required")
}

/// The certificate (PEM) of the CA that signed the test server's certificate.
pub fn tls_root() -> Option<PathBuf> {
    match CLUSTER.get() {
        Some(Ok(cluster)) => Some(cluster.dir.join("ca.crt")),
        _ => None,
    }
}

/// The URL of a new, empty database on the shared test server, or `None` when PostgreSQL
/// is not installed and not required.
#[allow(clippy::panic)]
pub async fn database() -> Option<String> {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) if !required() => {
            eprintln!("skipped: no PostgreSQL for this test ({why})");
            return None;
        }
        Err(why) => panic!("VAULT_TEST_POSTGRES=required, but no test PostgreSQL: {why}"),
    };
    let name = format!("vault_test_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_database(&admin, &name).await {
            Ok(()) => return Some(format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)),
            // The server may still be starting.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("cannot create a test database: {e}"),
        }
    }
}

async fn create_database(admin: &str, name: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let created = client.batch_execute(&format!("CREATE DATABASE {name}")).await;
    drop(client);
    let _ = task.await;
    created
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(DEBIAN_DIR)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.into_iter().rev().find(|d| d.join("initdb").exists()).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find(|d| d.join("initdb").exists() && d.join("postgres").exists())
    })
}

/// Runs `program` as the `postgres` user when this process is root (the server refuses
/// to run as root).
fn command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir().ok_or("initdb not found")?;
    let as_postgres = running_as_root();
    let dir = std::env::temp_dir().join(format!("vault-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if as_postgres {
        let status = Command::new("chown").arg("postgres").arg(&dir).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("cannot give the test folder to the postgres user".into());
        }
    }
    let data = dir.join("data");
    let init = command(&bin, "initdb", as_postgres)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)));
    }
    write_tls_files(&dir, as_postgres)?;
    // Trust for everyone but one role, which needs a password over TLS (first match wins).
    let hba = data.join("pg_hba.conf");
    let trust = std::fs::read_to_string(&hba).map_err(|e| format!("reading pg_hba.conf: {e}"))?;
    std::fs::write(&hba, format!("hostssl all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256\n{trust}"))
        .map_err(|e| format!("writing pg_hba.conf: {e}"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    // The shell stops the server (fast shutdown) and removes its folder once standard input
    // closes, which happens when this process ends, however it ends.
    let script = r#"
        "$1/postgres" -D "$2/data" -p "$3" -k "$2" -h 127.0.0.1 -c fsync=off -c synchronous_commit=off \
            -c full_page_writes=off -c max_connections=200 -c log_min_messages=fatal \
            -c ssl=on -c ssl_cert_file="$2/server.crt" -c ssl_key_file="$2/server.key" >"$2/server.log" 2>&1 &
        pid=$!
        cat >/dev/null
        kill -INT "$pid"
        wait "$pid"
        rm -rf "$2"
    "#;
    let mut shell = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script, "sh"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script, "sh"]);
        c
    };
    let server = shell
        .arg(&bin)
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    Ok(Cluster { port, dir, _server: Mutex::new(server) })
}

/// A CA, and a server certificate it signed for [`TLS_HOST`]; the server's key readable by
/// the server alone, as PostgreSQL demands.
fn write_tls_files(dir: &Path, as_postgres: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |e: rcgen::Error| format!("making the test certificates: {e}");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Vault test CA");
    let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).map_err(failed)?;
    let server_key = rcgen::KeyPair::generate().map_err(failed)?;
    let server = rcgen::CertificateParams::new(vec![TLS_HOST.to_owned()])
        .and_then(|params| params.signed_by(&server_key, &ca))
        .map_err(failed)?;
    let files = [("ca.crt", ca.pem()), ("server.crt", server.pem()), ("server.key", server_key.serialize_pem())];
    for (name, contents) in &files {
        std::fs::write(dir.join(name), contents).map_err(|e| format!("writing {name}: {e}"))?;
    }
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    if as_postgres {
        let status = Command::new("chown").arg("postgres").arg(&key).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("cannot give the server's key to the postgres user".into());
        }
    }
    Ok(())
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
