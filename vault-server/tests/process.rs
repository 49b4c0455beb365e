//! The `vault-server` binary as a process: bad settings stop it with one clear line,
//! SIGTERM lets in-flight streams finish and flushes their audit rows, and SIGKILL loses no
//! row of an answered request.

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use vault_e2e::{ServerProcess, chat_body, client, open_db, request_id, start_fake_upstream};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-server");

#[tokio::test]
async fn bad_settings_stop_start_up_with_one_line_naming_the_variable() {
    let cases = [
        ("VAULT_PORT", "70000"),
        ("VAULT_HTTP_REDIRECT_PORT", "http"),
        ("VLLM_BASE_URL", "not a url"),
        ("VAULT_UPSTREAM_TIMEOUT", "soon"),
        ("VAULT_MODELS_MANIFEST", "/nonexistent/models.json"),
        ("VAULT_DATA_DIR", "/proc/vault-cannot-write-here"),
        ("VAULT_LOG_LEVEL", "info,=[bad"),
        ("VAULT_LOG_FILE", "/proc/vault-cannot-write-here/vault.log"),
        ("VAULT_METRICS_ADDR", "0.0.0.0:9464"),
    ];
    for (var, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(BINARY)
            .env_clear()
            .env("VAULT_DATA_DIR", dir.path().join("data"))
            .env("VAULT_PORT", "0")
            .env(var, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        assert!(lines[0].starts_with(&format!("vault-server: {var}:")), "{var}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_and_flushes_its_audit_row() {
    let fake = start_fake_upstream().await;
    let mut server = ServerProcess::start(BINARY, &fake.base_url(), &[]).await;
    let key = vault_core::keys::create(&open_db(&server.data_dir).await, "t", Default::default(), None, None)
        .await
        .unwrap()
        .key;
    let mut body = chat_body(true);
    body["fake_mode"] = json!("delay:100");
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = request_id(&response);
    let reader = tokio::spawn(async move { response.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let status = server.terminate().await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let text = reader.await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream was cut by shutdown: {text}");
    let row = vault_e2e::audit_row(&open_db(&server.data_dir).await, &id).await.expect("flushed before exit");
    assert!(row.completed);
    assert_eq!(row.tokens_output, Some(12));
}

#[tokio::test]
async fn the_log_has_one_line_per_request_with_a_refused_key_by_its_prefix_only() {
    let fake = start_fake_upstream().await;
    let mut server = ServerProcess::start(BINARY, &fake.base_url(), &[]).await;
    let unknown = format!("vault_sk_{}", "Q".repeat(48));
    let response = client().get(format!("{}/v1/models", server.url)).bearer_auth(&unknown).send().await.unwrap();
    let id = request_id(&response);
    assert_eq!(response.status(), 401);
    assert!(server.terminate().await.success());
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains(&unknown), "a raw key reached the log");
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == id.as_str())
        .expect("a log line for the request");
    assert_eq!((line["status"].as_u64(), line["user_key_prefix"].as_str()), (Some(401), Some(&unknown[..13])));
}

#[tokio::test]
async fn no_row_of_an_answered_request_is_lost_to_sigkill() {
    let fake = start_fake_upstream().await;
    let mut server = ServerProcess::start(BINARY, &fake.base_url(), &[]).await;
    let db = open_db(&server.data_dir).await;
    let key = vault_core::keys::create(&db, "t", Default::default(), None, None).await.unwrap().key;
    // Hold the database's write lock: the gateway can answer, but not commit a row.
    let conn = db.connect().await.unwrap();
    let lock = vault_core::storage::write_transaction(&conn).await.unwrap();
    let mut ids = Vec::new();
    for stream in [false, true, false, true] {
        let response = client()
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(&key)
            .json(&chat_body(stream))
            .send()
            .await
            .unwrap();
        ids.push(request_id(&response));
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    server.kill().await;
    lock.rollback().await.unwrap();
    for id in &ids {
        assert!(vault_core::storage::audit::by_request_id(&conn, id).await.unwrap().is_none(), "committed early");
    }
    // The next start commits what the journal holds.
    let server = server.restart(BINARY, &fake.base_url()).await;
    for id in &ids {
        let row = vault_e2e::audit_row(&db, id).await.unwrap_or_else(|| panic!("{id} was lost"));
        assert_eq!(row.status, 200);
    }
    drop(server);
}

#[tokio::test]
async fn a_demo_that_cannot_listen_leaves_no_admin_key_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let out = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("VAULT_DATA_DIR", &data_dir)
        .env("VAULT_PORT", &port)
        .arg("demo")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VAULT_PORT: cannot listen"));
    if data_dir.join("vault.db").exists() {
        let keys = vault_core::keys::list(&open_db(&data_dir).await, true).await.unwrap();
        assert!(keys.is_empty(), "a key was left behind: {keys:?}");
    }
}
