//! The server's log file as an operator reads it: through `/vault/system/logs`, newest
//! first and paged, and never with a key in it — not even one sent as `?token=`.

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{ServerProcess, client, open_db, start_fake_upstream, tokio_tungstenite};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-server");

async fn get(server: &ServerProcess, key: &str, path: &str) -> Value {
    let response = client().get(format!("{}{path}", server.url)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_log_file_is_read_through_the_api_and_never_holds_a_token() {
    let fake = start_fake_upstream().await;
    let server = ServerProcess::start(BINARY, &fake.base_url(), &[]).await;
    let db = open_db(&server.data_dir).await;
    let admin = vault_core::keys::create(&db, "ops", Scope::Admin, None, None).await.unwrap().key;
    let user = vault_core::keys::create(&db, "wall", Scope::User, None, None).await.unwrap().key;

    let ws = format!("{}/ws/system?token={user}", server.url.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
    futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap();
    drop(socket);
    let health = client().get(format!("{}/vault/health?token={user}", server.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for _ in 0..3 {
        get(&server, &user, "/v1/models").await;
    }
    // The log thread writes every few milliseconds.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let file = std::fs::read_to_string(server.data_dir.join("logs").join("vault.log")).unwrap();
    assert!(file.contains("\"path\":\"/ws/system\""), "the upgrade is logged");
    assert!(!file.contains(&user[9..]) && !file.contains(&admin[9..]), "a key reached the log file");

    let page = get(&server, &admin, "/vault/system/logs?text=/v1/models&limit=2").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert!(items.iter().all(|i| i["service"] == "vault" && i["fields"]["path"] == "/v1/models"), "{page}");
    assert!(items[0]["timestamp"].as_str() >= items[1]["timestamp"].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(&server, &admin, &format!("/vault/system/logs?text=/v1/models&limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    let started = get(&server, &admin, "/vault/system/logs?text=vault-server%20listening&level=info").await;
    assert_eq!(started["items"][0]["message"], "vault-server listening");
    let errors = get(&server, &admin, "/vault/system/logs?level=error").await;
    assert!(errors["items"].as_array().unwrap().iter().all(|i| i["level"] == "ERROR"));

    for (query, status) in
        [("level=loud", 400), ("since=yesterday", 400), ("service=nginx", 404), ("cursor=1.2.3", 400)]
    {
        let response =
            client().get(format!("{}/vault/system/logs?{query}", server.url)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), status, "{query}");
    }
    let as_user = client().get(format!("{}/vault/system/logs", server.url)).bearer_auth(&user).send().await.unwrap();
    assert_eq!(as_user.status(), 403);
}
