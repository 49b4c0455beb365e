//! Two `vault-server` processes on one PostgreSQL database, as two boxes of one site run:
//! keys, revocations, audit rows and conversations are shared, and a change made anywhere
//! reaches the other gateway's very next request. Bad database URLs stop start-up with one
//! line naming `VAULT_DB_URL`. Skipped without PostgreSQL, unless the test command asks for
//! it (`VAULT_TEST_POSTGRES=required`).

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use vault_core::config::DbLocation;
use vault_core::model::keys::Scope;
use vault_core::storage::{self, Db};
use vault_e2e::{ServerProcess, chat_body, client, request_id, start_fake_upstream};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-server");
/// Both gateways sign the audit chain with the same secret, as the README tells.
const SECRET: &str = "a-secret-shared-by-every-gateway-of-this-site-0123456789";

async fn open(url: &str, dir: &tempfile::TempDir) -> Db {
    Db::open(&DbLocation::Postgres { url: url.into(), local: dir.path().join("vault-postgres") }).await.unwrap()
}

async fn post(gateway: &ServerProcess, path: &str, key: &str, body: Value) -> Value {
    let response = client().post(format!("{}{path}", gateway.url)).bearer_auth(key).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

async fn status(gateway: &ServerProcess, key: &str) -> u16 {
    client().get(format!("{}/v1/models", gateway.url)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn two_gateways_share_keys_revocations_audit_and_conversations() {
    let Some(url) = storage::test_cluster::database().await else { return };
    let fake = start_fake_upstream().await;
    // A reaches the database over TLS with the certificate and host name verified (its key
    // watcher too), B with the default (TLS as the server offers it).
    let verified = format!(
        "{}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        url.replace("127.0.0.1", storage::test_cluster::TLS_HOST),
        storage::test_cluster::tls_root().unwrap().display()
    );
    let a =
        ServerProcess::start(BINARY, &fake.base_url(), &[("VAULT_DB_URL", &verified), ("VAULT_SECRET_KEY", SECRET)])
            .await;
    let b =
        ServerProcess::start(BINARY, &fake.base_url(), &[("VAULT_DB_URL", &url), ("VAULT_SECRET_KEY", SECRET)]).await;
    // The start-up log says how each reached the database.
    let said = |gateway: &ServerProcess, what: &str| gateway.log.lock().unwrap().iter().any(|l| l.contains(what));
    assert!(said(&a, "connected to PostgreSQL over TLS (certificate and host name verified)"));
    assert!(said(&b, "connected to PostgreSQL over TLS (server not verified)"));
    // Another process on the same database, as vault-cli is.
    let dir = tempfile::tempdir().unwrap();
    let cli = open(&url, &dir).await;
    let admin = vault_core::keys::create(&cli, "admin", Scope::Admin, None, None).await.unwrap().key;

    // A key created through A works on B.
    let created = post(&a, "/vault/admin/keys", &admin, json!({"label": "doctor"})).await;
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(status(&b, &key).await, 200);
    assert_eq!(status(&a, &key).await, 200);

    // A conversation created on A is read on B.
    let conversation = post(&a, "/vault/conversations", &key, json!({"title": "rounds"})).await;
    let id = conversation["id"].as_str().unwrap();
    let read = client().get(format!("{}/vault/conversations/{id}", b.url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["title"], "rounds");

    // Audit rows of both gateways land in one table, each with its own request id, in one
    // chain that verifies.
    let mut ids = Vec::new();
    for gateway in [&a, &b, &a, &b] {
        let response = client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ids.push(request_id(&response));
    }
    for id in &ids {
        assert!(vault_e2e::audit_row(&cli, id).await.is_some(), "no audit row for {id}");
    }
    let verified = vault_core::audit::chain::verify(&cli, SECRET.as_bytes(), None, &mut |_, _| {}).await.unwrap();
    assert!(verified.intact, "{:?}", verified.problem);
    assert_eq!(verified.rows_checked, 9, "the key, two model lists, the conversation twice, four chats");

    // Revoked through B's admin API: refused on A's next request.
    let key_id = created["id"].as_i64().unwrap();
    let revoked =
        client().delete(format!("{}/vault/admin/keys/{key_id}", b.url)).bearer_auth(&admin).send().await.unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(status(&a, &key).await, 401);

    // Revoked by another process (the CLI's way): refused on both at their next request.
    let other = vault_core::keys::create(&cli, "nurse", Scope::User, None, None).await.unwrap();
    assert_eq!((status(&a, &other.key).await, status(&b, &other.key).await), (200, 200));
    vault_core::keys::revoke_by_id(&cli, other.info.id, None).await.unwrap();
    assert_eq!((status(&a, &other.key).await, status(&b, &other.key).await), (401, 401));
}

#[tokio::test]
async fn bad_database_urls_stop_start_up_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let missing_root = dir.path().join("missing-ca.pem");
    let mut cases = Vec::new();
    if let Some(url) = storage::test_cluster::database().await {
        let db = open(&url, &dir).await;
        let conn = db.connect().await.unwrap();
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')", ())
            .await
            .unwrap();
        // The server's certificate is not for the address in the URL. (The test server
        // trusts every login; the password is there to show it is never printed.)
        let root = storage::test_cluster::tls_root().unwrap();
        let with_password = url.replace("postgres@", "postgres:secret@");
        let wrong_name = format!("{with_password}?sslmode=verify-full&sslrootcert={}", root.display());
        cases.push((wrong_name, "not valid for name"));
        let no_file = format!("{with_password}?sslmode=verify-ca&sslrootcert={}", missing_root.display());
        cases.push((no_file, "missing-ca.pem"));
        cases.push((url, "newer than this build"));
    }
    let free_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("postgres://vault:secret@127.0.0.1:{free_port}/vault");
    cases.push(("postgres://vault:secret@db.local:notaport/vault".to_string(), "not a valid postgres:// URL"));
    cases.push((unreachable, "cannot connect to postgres://vault@127.0.0.1"));
    cases.push(("postgres://vault:secret@db.local/vault?sslmode=verify-full".to_string(), "need `sslrootcert"));
    for (url, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(BINARY)
                .env_clear()
                .env("VAULT_DATA_DIR", dir.path().join("data"))
                .env("VAULT_PORT", "0")
                .env("VAULT_DB_URL", &url)
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{url}: {stderr}");
        assert!(lines[0].starts_with("vault-server: VAULT_DB_URL:") && lines[0].contains(why), "{stderr}");
        assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
    }
}
