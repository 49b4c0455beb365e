//! The first-boot wizard in front of real clients: races on the admin step, bad bodies,
//! and what a key does (nothing) to the wizard's routes.

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error};

#[tokio::test]
async fn fifty_concurrent_admin_calls_create_exactly_one_admin_and_one_key() {
    let app = TestApp::spawn().await;
    let calls = (0..50).map(|i| {
        let body = json!({"name": format!("Admin {i}"), "email": format!("admin{i}@clinic.example")});
        let app = &app;
        async move { app.send("POST", "/vault/setup/admin", None, Some(&body)).await }
    });
    let responses = futures_util::future::join_all(calls).await;
    let mut created = 0;
    for response in responses {
        match response.status().as_u16() {
            201 => created += 1,
            409 => {
                assert_error(response, 409, "admin_exists").await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1);
    let users = vault_core::users::list(app.db()).await.unwrap();
    assert_eq!(users.iter().filter(|u| u.role == vault_core::users::Role::Admin).count(), 1);
    let keys = vault_core::keys::list(app.db(), true).await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.scope == Scope::Admin).count(), 1);
}

#[tokio::test]
async fn bad_wizard_bodies_name_their_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Value, &str); 9] = [
        ("/vault/setup/admin", json!({"name": "A"}), "email"),
        ("/vault/setup/admin", json!({"name": "A", "email": "a@b.example", "role": "admin"}), "role"),
        ("/vault/setup/admin", json!({"name": 5, "email": "a@b.example"}), "name"),
        ("/vault/setup/admin", json!({"name": "A", "email": "not-an-email"}), "email"),
        ("/vault/setup/model", json!({}), "model_id"),
        ("/vault/setup/model", json!({"model_id": ["x"]}), "model_id"),
        ("/vault/setup/network", json!({"hostname": "-bad-", "ip_mode": "dhcp", "dns_servers": []}), "hostname"),
        ("/vault/setup/tls", json!({"mode": "pem", "certificate": "garbage"}), "private_key"),
        ("/vault/setup/tls", json!({"mode": "sometimes"}), "mode"),
    ];
    for (path, body, field) in cases {
        let response = app.send("POST", path, None, Some(&body)).await;
        let error = assert_error(response, 400, "invalid_request").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{path} {body}: {message}");
    }
    let status: Value = app.send("GET", "/vault/setup/status", None, None).await.json().await.unwrap();
    assert_eq!(status["status"], "pending", "{status}");
}

#[tokio::test]
async fn the_wizard_needs_no_key_while_pending_and_answers_404_to_anyone_once_complete() {
    let app = TestApp::spawn().await;
    let response = app.send("GET", "/vault/setup/status", None, None).await;
    assert_eq!(response.status(), 200);
    let admin = json!({"name": "Admin", "email": "admin@clinic.example"});
    assert_eq!(app.send("POST", "/vault/setup/admin", None, Some(&admin)).await.status(), 201);
    let tls = json!({"mode": "self_signed"});
    assert_eq!(app.send("POST", "/vault/setup/tls", None, Some(&tls)).await.status(), 200);
    assert_eq!(app.send("POST", "/vault/setup/complete", None, None).await.status(), 200);
    let admin_key = app.create_key(Scope::Admin).await;
    for key in [None, Some(admin_key.as_str())] {
        let response = app.send("GET", "/vault/setup/status", key, None).await;
        assert_error(response, 404, "not_found").await;
    }
}
