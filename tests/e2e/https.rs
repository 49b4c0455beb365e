//! HTTPS on the gateway's own port: a TLS client that trusts the installed certificate gets
//! its answers; a new certificate is used from the next connection on, without a restart;
//! plain HTTP is served while setup runs and redirected once it is complete.

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, over_tls};

async fn get_over_tls(app: &TestApp, ca: &std::path::Path, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    over_tls(app.url.trim_start_matches("http://"), ca, &request).await
}

#[tokio::test]
async fn the_installed_certificate_serves_https_and_a_new_one_is_used_without_a_restart() {
    let app = TestApp::spawn().await;
    let ca = app.data_dir.join("tls/cert.pem");
    let made: Value =
        app.send("POST", "/vault/setup/tls", None, Some(&json!({"mode": "self_signed"}))).await.json().await.unwrap();
    let first = made["fingerprint_sha256"].as_str().unwrap().to_string();

    let (answer, seen) = get_over_tls(&app, &ca, "/vault/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(seen, first);

    // While setup runs, plain HTTP is still served (the wizard may have started in it).
    assert_eq!(app.send("GET", "/vault/setup/status", None, None).await.status(), 200);

    let admin = app.create_key(Scope::Admin).await;
    let replaced: Value = app
        .send("POST", "/vault/admin/config/tls", Some(&admin), Some(&json!({"mode": "self_signed"})))
        .await
        .json()
        .await
        .unwrap();
    let second = replaced["fingerprint_sha256"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let (answer, seen) = get_over_tls(&app, &ca, "/vault/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(seen, second, "a new connection still got the old certificate");

    // Once setup is complete, plain HTTP only redirects.
    let body = json!({"name": "Admin", "email": "admin@clinic.example"});
    assert_eq!(app.send("POST", "/vault/setup/admin", None, Some(&body)).await.status(), 201);
    assert_eq!(app.send("POST", "/vault/setup/complete", None, None).await.status(), 200);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let plain = no_redirects.get(format!("{}/v1/models?x=1", app.url)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(plain.status(), 308);
    let host = app.url.trim_start_matches("http://");
    assert_eq!(plain.headers()["location"], format!("https://{host}/v1/models?x=1").as_str());
    let (answer, _) = get_over_tls(&app, &ca, "/vault/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn certificate_files_that_cannot_be_used_do_not_lock_clients_out_of_plain_http() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Admin", "email": "admin@clinic.example"});
    assert_eq!(app.send("POST", "/vault/setup/admin", None, Some(&body)).await.status(), 201);
    let tls = json!({"mode": "self_signed"});
    assert_eq!(app.send("POST", "/vault/setup/tls", None, Some(&tls)).await.status(), 200);
    assert_eq!(app.send("POST", "/vault/setup/complete", None, None).await.status(), 200);
    // Someone replaces the pair by hand with files that do not load.
    std::fs::write(app.data_dir.join("tls/cert.pem"), "not a certificate").unwrap();
    std::fs::write(app.data_dir.join("tls/key.pem"), "not a key").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let admin = app.create_key(Scope::Admin).await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = no_redirects.get(format!("{}/vault/admin/config", app.url)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(answer.status(), 200, "redirected to an HTTPS that cannot answer");
}
