//! `vault-cli` on a PostgreSQL database shared with a running gateway (`--db-url`, or
//! `VAULT_DB_URL`): the same commands, their changes counted on the gateway's next request,
//! and a bad URL refused in one line. Skipped without PostgreSQL, unless the test command
//! asks for it (`VAULT_TEST_POSTGRES=required`).

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use vault_core::storage::test_cluster;
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error, chat_body, run_cli};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-cli");

async fn cli(app: &TestApp, url: &str, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = args.iter().copied().chain(["--db-url", url]).collect();
    run_cli(BINARY, &app.data_dir, &args).await
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_manages_keys_and_users_and_verifies_the_audit_chain_on_postgres() {
    let Some(url) = test_cluster::database().await else { return };
    let app = TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_DB_URL", url.as_str())]).await;

    let user = json_out(
        &cli(&app, &url, &["create-user", "--name", "Dr. Ng", "--email", "ng@clinic.example", "--json"]).await,
    );
    let user_id = user["id"].as_str().unwrap();
    let created = json_out(&cli(&app, &url, &["create-key", "--label", "desk", "--user", user_id, "--json"]).await);
    let key = created["key"].as_str().unwrap();
    for _ in 0..3 {
        // The gateway knows the key, and caches it.
        assert_eq!(app.send("POST", "/v1/chat/completions", Some(key), Some(&chat_body(false))).await.status(), 200);
    }
    let listed = json_out(&cli(&app, &url, &["list-keys", "--json"]).await);
    assert!(listed.as_array().unwrap().iter().any(|k| k["prefix"] == created["prefix"]), "{listed}");

    // Answered requests are journaled at once and committed within a few milliseconds.
    assert!(app.vault().audit.flush().await);
    let verified = json_out(&cli(&app, &url, &["audit", "verify", "--json"]).await);
    assert_eq!(verified["intact"], true, "{verified}");
    assert!(verified["rows_checked"].as_u64().unwrap() >= 3, "{verified}");

    // Revoked from the console: refused on the gateway's very next request.
    let revoked = json_out(&cli(&app, &url, &["revoke-key", &key[..13], "--json"]).await);
    assert_eq!(revoked["is_active"], false);
    assert_error(app.send("GET", "/v1/models", Some(key), None).await, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn a_bad_database_url_is_refused_in_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("postgres://vault:secret@127.0.0.1:{free_port}/vault");
    for (url, why) in [
        ("postgres://vault:secret@db.local:notaport/vault", "not a valid postgres:// URL"),
        (unreachable.as_str(), "cannot connect to postgres://vault@127.0.0.1"),
    ] {
        let out = run_cli(BINARY, dir.path(), &["list-keys", "--db-url", url]).await;
        assert_eq!(out.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{url}: {stderr}");
        assert!(stderr.contains("VAULT_DB_URL") && stderr.contains(why), "{url}: {stderr}");
        assert!(!stderr.contains("secret"), "the password is never shown: {stderr}");
    }
}
