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
    // The box now answers in HTTPS only (plain HTTP is redirected).
    let admin_key = app.create_key(Scope::Admin).await;
    let ca = app.data_dir.join("tls/cert.pem");
    for auth in [String::new(), format!("Authorization: Bearer {admin_key}\r\n")] {
        let request = format!("GET /vault/setup/status HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        let (answer, _) = vault_e2e::over_tls(app.url.trim_start_matches("http://"), &ca, &request).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains(r#""code":"not_found""#), "{answer}");
    }
}

#[tokio::test]
async fn the_certificate_routes_need_an_admin_key() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    let body = json!({"mode": "self_signed"});
    for (method, path, body) in [
        ("GET", "/vault/admin/config", None),
        ("GET", "/vault/admin/config/tls", None),
        ("POST", "/vault/admin/config/tls", Some(&body)),
        ("PUT", "/vault/admin/config", Some(&json!({"system": {"language": "de"}}))),
    ] {
        assert_error(app.send(method, path, None, body).await, 401, "invalid_api_key").await;
        assert_error(app.send(method, path, Some(&user), body).await, 403, "insufficient_scope").await;
    }
    let listed = std::fs::read_dir(app.data_dir.join("tls")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(listed, 0, "a refused request installed a certificate");
}

#[tokio::test]
async fn an_admin_installs_a_certificate_and_a_bad_upload_changes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let status: Value = app.send("GET", "/vault/admin/config/tls", Some(&admin), None).await.json().await.unwrap();
    assert_eq!((status["installed"].as_bool(), &status["certificate"]), (Some(false), &Value::Null));

    let made = app.send("POST", "/vault/admin/config/tls", Some(&admin), Some(&json!({"mode": "self_signed"}))).await;
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.unwrap();
    let fingerprint = made["fingerprint_sha256"].as_str().unwrap().to_string();
    let chain = std::fs::read_to_string(app.data_dir.join("tls/cert.pem")).unwrap();
    let key = std::fs::read_to_string(app.data_dir.join("tls/key.pem")).unwrap();

    let other_key = include_str!("../../vault-core/testdata/tls/ec-p256-sec1.key.pem");
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let huge = "A".repeat(10 * 1024 * 1024);
    let cases: [(&str, &str, u16, &str); 5] = [
        ("garbage", &key, 400, "certificate:"),
        (&chain, "garbage", 400, "key:"),
        (&chain, other_key, 400, "key: does not match"),
        (&chain, encrypted, 400, "key: the private key is encrypted"),
        (&huge, &key, 413, "certificate: larger than 1 MiB"),
    ];
    for (certificate, private_key, status, message) in cases {
        let body = json!({"mode": "pem", "certificate": certificate, "private_key": private_key});
        let response = app.send("POST", "/vault/admin/config/tls", Some(&admin), Some(&body)).await;
        let code = if status == 413 { "payload_too_large" } else { "invalid_request" };
        let error = assert_error(response, status, code).await;
        assert!(error["error"]["message"].as_str().unwrap().starts_with(message), "{error}");
        let now: Value = app.send("GET", "/vault/admin/config/tls", Some(&admin), None).await.json().await.unwrap();
        assert_eq!(now["certificate"]["fingerprint_sha256"], fingerprint.as_str(), "a bad upload replaced it");
        // And a new connection is still served with it.
        let request = "GET /vault/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let ca = app.data_dir.join("tls/cert.pem");
        let (answer, served) = vault_e2e::over_tls(app.url.trim_start_matches("http://"), &ca, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(served, fingerprint);
    }

    // The same pair uploaded as PEM is taken.
    let body = json!({"mode": "pem", "certificate": chain, "private_key": key});
    let uploaded: Value =
        app.send("POST", "/vault/admin/config/tls", Some(&admin), Some(&body)).await.json().await.unwrap();
    assert_eq!(uploaded["fingerprint_sha256"], fingerprint.as_str(), "{uploaded}");

    let config: Value = app.send("GET", "/vault/admin/config", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(config["tls"]["installed"], true, "{config}");
    assert_eq!(config["setup"], "pending", "the admin route is not a wizard step");
    assert!(config["inference"]["vllm_base_url"].is_string());
    let text = config.to_string();
    assert!(!text.contains("BEGIN") && !text.contains(app.data_dir.to_str().unwrap()), "{text}");
}

#[tokio::test]
async fn a_partial_config_change_changes_only_what_it_names_and_a_bad_field_changes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let put = |body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move { app.send("PUT", "/vault/admin/config", Some(&admin), Some(&body)).await }
    };
    let made = app.send("POST", "/vault/admin/config/tls", Some(&admin), Some(&json!({"mode": "self_signed"}))).await;
    assert_eq!(made.status(), 200);

    let answer: Value = put(json!({"system": {"language": "de-CH"}})).await.json().await.unwrap();
    assert_eq!(answer["changed"], json!(["system.language"]), "{answer}");
    assert_eq!(answer["config"]["system"]["timezone"], "UTC");
    assert_eq!(answer["restart_required"], json!([]));
    assert_eq!(answer["warnings"], json!([]));

    let answer: Value = put(json!({"network": {"hostname": "new-box"}})).await.json().await.unwrap();
    assert_eq!(answer["changed"], json!(["network.hostname"]), "{answer}");
    assert!(answer["commands"].as_array().unwrap().contains(&json!(["hostnamectl", "set-hostname", "new-box"])));
    assert_eq!(answer["dry_run"], true);
    let warning = answer["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with("tls:") && warning.contains("new-box"), "{answer}");

    let cases = [
        (json!({"network": {"hostname": "-bad-"}, "system": {"language": "fr"}}), "network.hostname"),
        (json!({"system": {"language": "fr", "timezone": "Mars/Olympus"}}), "system.timezone"),
        (json!({"network": {"hostnme": "x"}}), "hostnme"),
        (json!({"inference": {"default_model": "no-such-model"}}), "inference.default_model"),
        (json!({"system": {"audit_retention_days": "ten"}}), "audit_retention_days"),
    ];
    for (body, field) in cases {
        let error = vault_e2e::assert_error(put(body.clone()).await, 400, "invalid_request").await;
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{body}: {error}");
    }
    let config: Value = app.send("GET", "/vault/admin/config", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(config["system"]["language"], "de-CH", "a refused change changed something");
    assert_eq!(config["network"]["hostname"], "new-box");
}

#[tokio::test]
async fn setup_completed_by_another_gateway_on_the_same_database_closes_the_routes_here_too() {
    let app = TestApp::spawn().await;
    assert_eq!(app.send("GET", "/vault/setup/status", None, None).await.status(), 200);
    // Another gateway (or the CLI) on the same database completes setup.
    let conn = app.db().connect().await.unwrap();
    vault_core::storage::settings::put(&conn, "setup.complete", "true", "2026-01-01T00:00:00Z").await.unwrap();
    // Every route is gone within the watch interval...
    let mut gone = false;
    for _ in 0..40 {
        if app.send("GET", "/vault/setup/status", None, None).await.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the setup routes stayed open");
}

#[tokio::test]
async fn a_step_after_another_gateway_completed_setup_is_refused_at_once() {
    let app = TestApp::spawn().await;
    let conn = app.db().connect().await.unwrap();
    vault_core::storage::settings::put(&conn, "setup.complete", "true", "2026-01-01T00:00:00Z").await.unwrap();
    // ...and a step is refused even before that: it looks at the database itself.
    let body = json!({"hostname": "evil", "ip_mode": "dhcp", "dns_servers": []});
    assert_error(app.send("POST", "/vault/setup/network", None, Some(&body)).await, 404, "not_found").await;
    let network = vault_core::settings::network(app.db()).await.unwrap();
    assert_ne!(network.hostname, "evil");
}

#[tokio::test]
async fn an_admin_claim_left_by_a_call_that_never_finished_is_taken_over_once_stale() {
    let app = TestApp::spawn().await;
    let conn = app.db().connect().await.unwrap();
    let body = json!({"name": "Admin", "email": "admin@clinic.example"});
    // A claim made just now (a call in flight) is respected...
    let now = vault_core::time::now_rfc3339();
    vault_core::storage::settings::put(&conn, "setup.admin_claim", "claimed", &now).await.unwrap();
    assert_error(app.send("POST", "/vault/setup/admin", None, Some(&body)).await, 409, "admin_exists").await;
    // ...one left minutes ago by a process that stopped half-way is not.
    vault_core::storage::settings::put(&conn, "setup.admin_claim", "claimed", "2020-01-01T00:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(app.send("POST", "/vault/setup/admin", None, Some(&body)).await.status(), 201);
    assert_error(app.send("POST", "/vault/setup/admin", None, Some(&body)).await, 409, "admin_exists").await;
}
