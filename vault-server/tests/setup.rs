//! The first-boot wizard walked end to end against a `vault-server` process, and its
//! lockout: after `complete`, and after a restart, every spelling of every setup route
//! answers 404 in the error shape.

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};
use vault_e2e::{ServerProcess, client, over_tls, start_fake_upstream};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-server");
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/models.json");

async fn call(server: &ServerProcess, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", server.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_wizard_walks_to_the_end_and_its_routes_are_gone_for_good() {
    let fake = start_fake_upstream().await;
    let mut server = ServerProcess::start(BINARY, &fake.base_url(), &[("VAULT_MODELS_MANIFEST", MANIFEST)]).await;

    let (status, body) = call(&server, Method::GET, "/vault/setup/status", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    assert!(body["steps"].as_array().unwrap().iter().all(|s| s["state"] == "pending"), "{body}");

    // Completing before the required steps names what is missing.
    let (status, body) = call(&server, Method::POST, "/vault/setup/complete", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("setup_incomplete")), "{body}");
    let missing = body["error"]["message"].as_str().unwrap();
    assert!(missing.contains("admin") && missing.contains("tls"), "{missing}");

    let network = json!({"hostname": "vault-box", "ip_mode": "dhcp", "dns_servers": ["10.0.0.53"]});
    let (status, body) = call(&server, Method::POST, "/vault/setup/network", Some(network)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    assert!(body["commands"].as_array().unwrap().contains(&json!(["hostnamectl", "set-hostname", "vault-box"])));

    let admin = json!({"name": "Dr. Admin", "email": "admin@clinic.example"});
    let (status, body) = call(&server, Method::POST, "/vault/setup/admin", Some(admin.clone())).await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"]["key"].as_str().unwrap().to_string();
    assert_eq!((body["key"]["scope"].as_str(), body["user"]["role"].as_str()), (Some("admin"), Some("admin")));
    let (status, body) = call(&server, Method::POST, "/vault/setup/admin", Some(admin)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("admin_exists")), "{body}");

    let (status, body) = call(&server, Method::POST, "/vault/setup/tls", Some(json!({"mode": "self_signed"}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["sans"].as_array().unwrap().contains(&json!("vault-box")), "{body}");
    assert_eq!(body["self_signed"], true);

    let (status, body) = call(&server, Method::POST, "/vault/setup/model", Some(json!({"model_id": "nope"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let chosen = json!({"model_id": "qwen2.5-32b-awq"});
    let (status, body) = call(&server, Method::POST, "/vault/setup/model", Some(chosen)).await;
    assert_eq!((status, body["model_id"].as_str()), (200, Some("qwen2.5-32b-awq")), "{body}");

    let (status, body) = call(&server, Method::GET, "/vault/setup/verify", None).await;
    assert_eq!(status, 200, "{body}");
    let check = |name: &str| body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(check("database")["ok"], true, "{body}");
    assert_eq!(check("inference")["ok"], true, "{body}");
    assert_eq!(check("tls")["ok"], true, "{body}");
    // No NVIDIA driver here: a failed check with its reason, not an error.
    assert!(check("gpu")["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let (status, body) = call(&server, Method::GET, "/vault/setup/status", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("in_progress")), "{body}");
    assert!(body["steps"].as_array().unwrap().iter().all(|s| s["state"] == "complete"), "{body}");

    let (status, body) = call(&server, Method::POST, "/vault/setup/complete", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("complete")), "{body}");

    assert_setup_is_gone(&server).await;
    assert!(server.terminate().await.success());
    let server = server.restart(BINARY, &fake.base_url()).await;
    assert_setup_is_gone(&server).await;

    // The admin key the wizard made works (over HTTPS).
    let (status, answer) = call_tls(&server, "GET", "/vault/admin/users", Some(&key)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("admin@clinic.example"), "{answer}");
}

/// `method path` over HTTPS, trusting the server's installed certificate: the status and the
/// answer's text.
async fn call_tls(server: &ServerProcess, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let ca = server.data_dir.join("tls/cert.pem");
    let (answer, _) = over_tls(server.url.trim_start_matches("http://"), &ca, &request).await;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

async fn assert_setup_is_gone(server: &ServerProcess) {
    let paths = [
        "/vault/setup/status",
        "/vault/setup/network",
        "/vault/setup/admin",
        "/vault/setup/tls",
        "/vault/setup/model",
        "/vault/setup/verify",
        "/vault/setup/complete",
        "/vault/setup",
        "/vault/setup/",
        "/vault/setup/status/",
        "//vault//setup/status",
        "/vault/%73etup/status",
        "/vault/setup/unknown",
    ];
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
            let (status, answer) = call_tls(server, method, path, None).await;
            assert_eq!(status, 404, "{method} {path}: {answer}");
            assert!(answer.contains(r#""code":"not_found""#), "{method} {path}: {answer}");
        }
        let (status, answer) = call_tls(server, "HEAD", path, None).await;
        assert_eq!(status, 404, "HEAD {path}: {answer}");
        // Plain HTTP only points to HTTPS now.
        let plain = no_redirects().get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(plain.status(), 308, "plain GET {path}");
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn the_redirect_port_sends_every_plain_request_to_https_on_the_main_port() {
    let fake = start_fake_upstream().await;
    let server = ServerProcess::start(BINARY, &fake.base_url(), &[("VAULT_HTTP_REDIRECT_PORT", "0")]).await;
    let redirect_addr = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "vault-server listening")
        .and_then(|v| v["redirect_addr"].as_str().map(String::from))
        .expect("the start-up line names the redirect port");
    let main_port = server.url.rsplit(':').next().unwrap();
    let redirected = |method: Method, path: &'static str| {
        let redirect_addr = redirect_addr.clone();
        async move {
            let answer = no_redirects()
                .request(method.clone(), format!("http://{redirect_addr}{path}"))
                .header("host", format!("vault-box:{}", redirect_addr.rsplit(':').next().unwrap()))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 308, "{method} {path}");
            answer.headers()["location"].to_str().unwrap().to_string()
        }
    };
    // No certificate yet: the main port speaks plain HTTP, and the wizard must stay reachable.
    assert_eq!(
        redirected(Method::GET, "/vault/setup/status").await,
        format!("http://vault-box:{main_port}/vault/setup/status")
    );
    let (status, _) = call(&server, Method::POST, "/vault/setup/tls", Some(json!({"mode": "self_signed"}))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for (method, path) in [(Method::GET, "/v1/models?limit=2"), (Method::POST, "/vault/setup/status")] {
        assert_eq!(redirected(method, path).await, format!("https://vault-box:{main_port}{path}"));
    }
}
