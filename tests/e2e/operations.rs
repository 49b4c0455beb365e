//! Operating the box: the expanded health report and the managed services.

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, assert_error};

fn component<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["components"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| {
        panic!("no component {name}: {health}");
    })
}

async fn system_health(app: &TestApp, key: &str) -> (u16, Value) {
    let response = app.send("GET", "/vault/system/health", Some(key), None).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_health_report_names_every_part_with_a_status() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    let (status, health) = system_health(&app, &user).await;
    assert_eq!(status, 200, "{health}");
    assert_ne!(health["status"], "down");
    for name in ["database", "audit", "inference"] {
        assert_eq!(component(&health, name)["status"], "ok", "{health}");
    }
    assert!(component(&health, "disk")["detail"].as_str().unwrap().contains("GiB free of"));
    assert_eq!(component(&health, "certificate")["detail"], "none installed; HTTPS is off");
    // The dry-run controller asks no systemd: the services are unknown, and degrade nothing.
    for name in ["service:vllm", "service:vault"] {
        let service = component(&health, name);
        assert_eq!(service["status"], "unknown");
        assert!(service["reason"].as_str().unwrap().starts_with("dry run"), "{service}");
    }
}

#[tokio::test]
async fn the_health_report_is_degraded_without_the_engine_and_503_without_records() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestApp::spawn_with(Upstream::Url(format!("http://127.0.0.1:{port}")), &[]).await;
    let user = app.create_key(Scope::User).await;
    let (status, health) = system_health(&app, &user).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")), "{health}");
    assert_eq!(component(&health, "inference")["status"], "down");

    let full = TestApp::spawn_with(Upstream::Fake(FakeOptions::default()), &[("VAULT_MIN_FREE_MB", "1048576")]).await;
    let user = full.create_key(Scope::User).await;
    let (status, health) = system_health(&full, &user).await;
    assert_eq!((status, health["status"].as_str()), (503, Some("down")), "{health}");
    assert_eq!(component(&health, "audit")["status"], "down");
    let disk = component(&health, "disk");
    assert_eq!(disk["status"], "down");
    assert!(disk["reason"].as_str().unwrap().contains("the audit trail needs"), "{disk}");
}

#[tokio::test]
async fn services_are_listed_and_restarted_only_by_exact_name_with_an_admin_key() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let listed: Value = app.send("GET", "/vault/system/services", Some(&admin), None).await.json().await.unwrap();
    let names: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vllm", "vault"]);
    assert_eq!(listed["items"][0]["unit"], "vllm.service");
    assert_error(app.send("GET", "/vault/system/services", Some(&user), None).await, 403, "insufficient_scope").await;
    let restart = "/vault/system/services/vllm/restart";
    assert_error(app.send("POST", restart, Some(&user), None).await, 403, "insufficient_scope").await;
    assert_error(app.send("POST", restart, None, None).await, 401, "invalid_api_key").await;

    for (name, status, code) in [
        ("vllm;id", 400, "invalid_request"),
        ("vllm%20--help", 400, "invalid_request"),
        ("..%2Fvllm", 400, "invalid_request"),
        ("VLLM", 400, "invalid_request"),
        ("vllm%20", 400, "invalid_request"),
        ("nginx", 404, "service_not_found"),
    ] {
        let response = app.send("POST", &format!("/vault/system/services/{name}/restart"), Some(&admin), None).await;
        assert_error(response, status, code).await;
    }
    assert!(app.host_commands().is_empty(), "a refused name reached the controller: {:?}", app.host_commands());

    let response = app.send("POST", restart, Some(&admin), None).await;
    assert_eq!(response.status(), 202);
    let request_id = vault_e2e::request_id(&response);
    let done: Value = response.json().await.unwrap();
    assert_eq!((done["service"].as_str(), done["dry_run"].as_bool()), (Some("vllm"), Some(true)));
    assert_eq!(app.host_commands(), [["systemctl", "restart", "--no-block", "vllm.service"]]);
    // Who asked is on the record: the request's audit row and the activity feed.
    let row = app.audit_row(&request_id).await.unwrap();
    assert_eq!((row.path.as_str(), row.status), ("/vault/system/services/vllm/restart", 202));
    assert_eq!(row.key_prefix.as_deref(), Some(&admin[..13]));
    let feed: Value = app.send("GET", "/vault/activity", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(feed["items"][0]["kind"], "service.restarted", "{feed}");
}

#[tokio::test]
async fn inference_stats_cover_the_last_minutes_with_time_to_first_token_for_streams() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    for stream in [false, false, false, true, true] {
        let body = vault_e2e::chat_body(stream);
        let response = app.send("POST", "/v1/chat/completions", Some(&user), Some(&body)).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let response = app.send("GET", "/vault/system/inference", Some(&user), None).await;
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await.unwrap();
    let windows = stats["windows"].as_array().unwrap();
    assert_eq!(windows.iter().map(|w| w["minutes"].as_u64().unwrap()).collect::<Vec<_>>(), [5, 60]);
    let five = &windows[0];
    assert_eq!((five["requests"].as_i64(), five["errors"].as_i64()), (Some(5), Some(0)), "{stats}");
    // Five requests over the five minutes and the part of this one gone by.
    let per_minute = five["requests_per_minute"].as_f64().unwrap();
    assert!(per_minute > 0.8 && per_minute <= 1.0, "{per_minute}");
    assert!(five["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(five["latency_ms"]["p95"].as_f64().is_some() && five["ttft_ms"]["p50"].as_f64().is_some(), "{stats}");
    assert_eq!(stats["active_streams"], 0);
}
