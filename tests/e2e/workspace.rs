//! The workspace routes (conversations, training jobs, admin, system, insights, activity):
//! who may call them, and what bad input gets.

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error};

/// A running app with an admin key and a user key.
struct Stack {
    app: TestApp,
    admin: String,
    user: String,
}

impl Stack {
    async fn start() -> Stack {
        let app = TestApp::spawn().await;
        let admin = app.create_key(Scope::Admin).await;
        let user = app.create_key(Scope::User).await;
        Stack { app, admin, user }
    }

    async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> reqwest::Response {
        self.app.send(method, path, key, body.as_ref()).await
    }

    /// Sends a request and expects `status`; returns the JSON body (Null when empty).
    async fn expect(&self, status: u16, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        let response = self.send(method, path, Some(key), body).await;
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }
}

/// Every operation of the generated spec: method, a path with its parameters filled in,
/// and the security scheme it names (`UserKey`, `AdminKey`, or none).
fn operations() -> Vec<(String, String, Option<String>)> {
    let spec: Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    let mut out = Vec::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let mut filled = path.clone();
            for param in operation["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap();
                    let value = if param["schema"]["type"] == "integer" { "1" } else { "x" };
                    filled = filled.replace(&format!("{{{name}}}"), value);
                }
            }
            let scheme = operation["security"][0].as_object().and_then(|s| s.keys().next().cloned());
            out.push((method.to_uppercase(), filled, scheme));
        }
    }
    out
}

#[tokio::test]
async fn every_route_needs_a_key_and_admin_routes_refuse_user_keys() {
    let stack = Stack::start().await;
    let operations = operations();
    assert!(operations.iter().any(|(_, _, s)| s.as_deref() == Some("AdminKey")), "the spec names AdminKey");
    for (method, path, scheme) in operations {
        let Some(scheme) = scheme else { continue };
        let body = ["POST", "PUT"].contains(&method.as_str()).then(|| json!({}));
        let response = stack.send(&method, &path, None, body.clone()).await;
        assert_eq!(response.status(), 401, "{method} {path} without a key");
        assert_error(response, 401, "invalid_api_key").await;
        if scheme == "AdminKey" {
            let response = stack.send(&method, &path, Some(&stack.user), body).await;
            assert_eq!(response.status(), 403, "{method} {path} with a user key");
            assert_error(response, 403, "insufficient_scope").await;
        }
    }
}

#[tokio::test]
async fn malformed_bodies_and_parameters_get_400_naming_the_field() {
    let stack = Stack::start().await;
    let admin = Some(stack.admin.as_str());
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("POST", "/vault/conversations", json!({"title": ["not", "text"]}), "title"),
        ("POST", "/vault/admin/users", json!({"name": "n"}), "email"),
        ("POST", "/vault/admin/users", json!({"name": "n", "email": "not-an-email"}), "email"),
        ("POST", "/vault/admin/users", json!({"name": "n", "email": "a@b.org", "role": "root"}), "role"),
        ("POST", "/vault/admin/keys", json!({"label": "l", "scope": "superuser"}), "scope"),
        ("POST", "/vault/training/jobs", json!({"name": "n", "model": "m"}), "dataset"),
        ("POST", "/vault/training/jobs", json!({"name": "n", "model": "m", "dataset": "d", "config": [1]}), "config"),
        (
            "PUT",
            "/vault/admin/config/network",
            json!({"hostname": "bad_host!", "ip_mode": "dhcp", "dns_servers": []}),
            "hostname",
        ),
        (
            "PUT",
            "/vault/admin/config/network",
            json!({"hostname": "h", "ip_mode": "static", "ip_address": "300.1.1.1", "prefix_length": 24, "dns_servers": []}),
            "ip_address",
        ),
        (
            "PUT",
            "/vault/admin/config/network",
            json!({"hostname": "h", "ip_mode": "dhcp", "dns_servers": ["x"]}),
            "dns_servers",
        ),
        (
            "PUT",
            "/vault/admin/config/system",
            json!({"timezone": "Mars/Base", "language": "en", "audit_retention_days": 30}),
            "timezone",
        ),
    ];
    for (method, path, body, field) in cases {
        let response = stack.send(method, path, admin, Some(body.clone())).await;
        assert_eq!(response.status(), 400, "{method} {path} {body}");
        let error = assert_error(response, 400, "invalid_request").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{method} {path} {body}: {message}");
    }
    for query in ["/vault/insights?range=1y", "/vault/activity?limit=0", "/vault/conversations?limit=abc"] {
        let response = stack.send("GET", query, Some(&stack.user), None).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    let array = stack.send("POST", "/vault/conversations", Some(&stack.user), Some(json!([null, null]))).await;
    let error = assert_error(array, 400, "invalid_request").await;
    assert_eq!(error["error"]["message"], "body: must be a JSON object");
    let no_body = stack.send("POST", "/vault/admin/users", admin, None).await;
    assert_error(no_body, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn conversations_are_private_and_complete() {
    let stack = Stack::start().await;
    let other = stack.app.create_key(Scope::User).await;
    let me = stack.user.as_str();
    let created = stack
        .expect(201, "POST", "/vault/conversations", me, Some(json!({"title": "Ward notes", "model_id": "m"})))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/vault/conversations/{id}");
    let message = json!({"role": "user", "content": "Patient stable."});
    stack.expect(201, "POST", &format!("{path}/messages"), me, Some(message.clone())).await;
    stack
        .expect(201, "POST", &format!("{path}/messages"), me, Some(json!({"role": "assistant", "content": "Noted."})))
        .await;
    let full = stack.expect(200, "GET", &path, me, None).await;
    assert_eq!(full["messages"].as_array().unwrap().len(), 2);
    assert_eq!(full["messages"][0]["content"], "Patient stable.");
    let renamed = stack.expect(200, "PUT", &path, me, Some(json!({"title": "Ward 3"}))).await;
    assert_eq!(renamed["title"], "Ward 3");
    let page = stack.expect(200, "GET", "/vault/conversations?limit=10", me, None).await;
    assert_eq!((page["total"].as_u64(), page["items"][0]["message_count"].as_u64()), (Some(1), Some(2)));

    // Another key (another owner) sees nothing and can touch nothing.
    let theirs = stack.expect(200, "GET", "/vault/conversations", &other, None).await;
    assert_eq!(theirs["total"], 0);
    for (method, p, body) in [
        ("GET", path.clone(), None),
        ("PUT", path.clone(), Some(json!({"title": "x"}))),
        ("POST", format!("{path}/messages"), Some(message.clone())),
        ("DELETE", path.clone(), None),
    ] {
        let response = stack.send(method, &p, Some(&other), body).await;
        assert_error(response, 404, "conversation_not_found").await;
    }
    // Admins too: a conversation is its owner's.
    assert_error(stack.send("GET", &path, Some(&stack.admin), None).await, 404, "conversation_not_found").await;

    let bad_role =
        stack.send("POST", &format!("{path}/messages"), Some(me), Some(json!({"role": "robot", "content": "x"}))).await;
    let error = assert_error(bad_role, 400, "invalid_request").await;
    assert!(error["error"]["message"].as_str().unwrap().starts_with("role"));

    // Export: a file for the owner, 404 for anyone else, 400 for a format it cannot be.
    let markdown = stack.send("GET", &format!("{path}/export?format=markdown"), Some(me), None).await;
    assert_eq!(markdown.status(), 200);
    assert_eq!(markdown.headers()["content-type"], "text/markdown; charset=utf-8");
    let disposition = markdown.headers()["content-disposition"].to_str().unwrap().to_string();
    assert_eq!(disposition, format!("attachment; filename=\"conversation-{id}.md\""));
    let text = markdown.text().await.unwrap();
    assert!(text.starts_with("# Ward 3\n") && text.contains("## User (") && text.contains("Noted."), "{text}");
    let json_export = stack.send("GET", &format!("{path}/export"), Some(me), None).await;
    assert_eq!(json_export.headers()["content-type"], "application/json");
    let document: Value = json_export.json().await.unwrap();
    assert_eq!(
        (document["title"].as_str(), document["messages"][1]["content"].as_str()),
        (Some("Ward 3"), Some("Noted."))
    );
    let theirs = stack.send("GET", &format!("{path}/export?format=markdown"), Some(&other), None).await;
    assert_error(theirs, 404, "conversation_not_found").await;
    let error = assert_error(
        stack.send("GET", &format!("{path}/export?format=pdf"), Some(me), None).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(error["error"]["message"].as_str().unwrap().starts_with("format"), "{error}");

    stack.expect(204, "DELETE", &path, me, None).await;
    assert_error(stack.send("GET", &path, Some(me), None).await, 404, "conversation_not_found").await;
}

#[tokio::test]
async fn training_jobs_follow_their_state_machine() {
    let stack = Stack::start().await;
    let admin = stack.admin.as_str();
    let body = json!({"name": "Clinical notes LoRA", "model": "qwen2.5-32b-awq", "dataset": "/data/notes.jsonl", "config": {"lr": 0.0002}});
    let job = stack.expect(201, "POST", "/vault/training/jobs", admin, Some(body)).await;
    assert_eq!(job["status"], "queued");
    assert_eq!(job["config"]["lr"], 0.0002);
    let path = format!("/vault/training/jobs/{}", job["id"].as_str().unwrap());
    // Users may read.
    let listed = stack.expect(200, "GET", "/vault/training/jobs?status=queued", &stack.user, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    stack.expect(200, "GET", &path, &stack.user, None).await;
    // A queued job cannot be paused or resumed, nor deleted before it ends.
    for action in ["pause", "resume"] {
        let response = stack.send("POST", &format!("{path}/{action}"), Some(admin), None).await;
        let error = assert_error(response, 409, "invalid_state").await;
        assert_eq!(error["error"]["details"]["status"], "queued");
    }
    assert_error(stack.send("DELETE", &path, Some(admin), None).await, 409, "invalid_state").await;
    let cancelled = stack.expect(200, "POST", &format!("{path}/cancel"), admin, None).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["completed_at"].is_string());
    assert_error(stack.send("POST", &format!("{path}/cancel"), Some(admin), None).await, 409, "invalid_state").await;
    stack.expect(204, "DELETE", &path, admin, None).await;
    assert_error(stack.send("GET", &path, Some(admin), None).await, 404, "training_job_not_found").await;
    assert_error(stack.send("POST", &format!("{path}/pause"), Some(admin), None).await, 404, "training_job_not_found")
        .await;
}

#[tokio::test]
async fn users_and_their_keys_are_managed_through_the_api() {
    let stack = Stack::start().await;
    let admin = stack.admin.as_str();
    let user = stack
        .expect(
            201,
            "POST",
            "/vault/admin/users",
            admin,
            Some(json!({"name": "Dr. Lee", "email": "lee@clinic.example"})),
        )
        .await;
    let user_id = user["id"].as_str().unwrap();
    let duplicate = stack
        .send("POST", "/vault/admin/users", Some(admin), Some(json!({"name": "X", "email": "LEE@clinic.example"})))
        .await;
    assert_error(duplicate, 409, "email_taken").await;

    let created = stack
        .expect(201, "POST", "/vault/admin/keys", admin, Some(json!({"label": "lee laptop", "user_id": user_id})))
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["scope"], "user");
    let listed = stack.expect(200, "GET", "/vault/admin/keys", admin, None).await;
    let text = listed.to_string();
    assert!(!text.contains(&key) && !text.contains("hash"), "listing leaks secrets: {text}");

    // The user's key works until the user is deactivated.
    stack.expect(200, "GET", "/v1/models", &key, None).await;
    let conversation = stack.expect(201, "POST", "/vault/conversations", &key, Some(json!({}))).await;
    let deactivated = stack.expect(200, "DELETE", &format!("/vault/admin/users/{user_id}"), admin, None).await;
    assert_eq!(deactivated["is_active"], false);
    assert_error(stack.send("GET", "/v1/models", Some(&key), None).await, 401, "invalid_api_key").await;
    let reactivated = stack
        .expect(200, "PUT", &format!("/vault/admin/users/{user_id}"), admin, Some(json!({"is_active": true})))
        .await;
    assert_eq!(reactivated["is_active"], true);
    // Conversations belong to the user, so they survive and come back with them.
    stack
        .expect(200, "GET", &format!("/vault/conversations/{}", conversation["id"].as_str().unwrap()), &key, None)
        .await;

    // Revoked keys stay listed; the active-only listing leaves them out.
    stack.expect(200, "DELETE", &format!("/vault/admin/keys/{}", created["id"]), admin, None).await;
    let listed = stack.expect(200, "GET", "/vault/admin/keys", admin, None).await;
    assert!(
        listed["items"].as_array().unwrap().iter().any(|k| k["id"] == created["id"] && k["revoked_at"].is_string())
    );
    let active_only = stack.expect(200, "GET", "/vault/admin/keys?include_revoked=false", admin, None).await;
    assert!(active_only["items"].as_array().unwrap().iter().all(|k| k["is_active"] == true));

    assert_error(stack.send("DELETE", "/vault/admin/users/nobody", Some(admin), None).await, 404, "user_not_found")
        .await;
    assert_error(
        stack.send("PUT", "/vault/admin/users/nobody", Some(admin), Some(json!({"name": "x"}))).await,
        404,
        "user_not_found",
    )
    .await;
    let for_nobody =
        stack.send("POST", "/vault/admin/keys", Some(admin), Some(json!({"label": "x", "user_id": "nobody"}))).await;
    assert_error(for_nobody, 404, "user_not_found").await;
}

#[tokio::test]
async fn configuration_is_validated_stored_and_applied_as_a_dry_run() {
    let stack = Stack::start().await;
    let admin = stack.admin.as_str();
    let network = stack.expect(200, "GET", "/vault/admin/config/network", admin, None).await;
    assert_eq!(network["ip_mode"], "dhcp");
    let wanted = json!({"hostname": "vault-cube", "ip_mode": "static", "ip_address": "10.20.0.5", "prefix_length": 24,
                        "gateway": "10.20.0.1", "dns_servers": ["10.20.0.1", "9.9.9.9"]});
    let applied = stack.expect(200, "PUT", "/vault/admin/config/network", admin, Some(wanted)).await;
    assert_eq!(applied["dry_run"], true);
    assert_eq!(applied["commands"][0], json!(["hostnamectl", "set-hostname", "vault-cube"]));
    let stored = stack.expect(200, "GET", "/vault/admin/config/network", admin, None).await;
    assert_eq!(stored["ip_address"], "10.20.0.5");

    let settings = json!({"timezone": "Europe/Zurich", "language": "de-CH", "audit_retention_days": 90});
    let applied = stack.expect(200, "PUT", "/vault/admin/config/system", admin, Some(settings)).await;
    assert_eq!(applied["commands"][0], json!(["timedatectl", "set-timezone", "Europe/Zurich"]));
    let stored = stack.expect(200, "GET", "/vault/admin/config/system", admin, None).await;
    assert_eq!((stored["language"].as_str(), stored["audit_retention_days"].as_u64()), (Some("de-CH"), Some(90)));
}

#[tokio::test]
async fn system_metrics_insights_and_activity() {
    let stack = Stack::start().await;
    let resources = stack.expect(200, "GET", "/vault/system/resources", &stack.user, None).await;
    assert!(resources["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert!(resources["memory"]["total_bytes"].as_u64().unwrap() > 0);
    // The route reports what NVML reports (on a box without NVML: no GPUs, unavailable).
    let gpu = stack.expect(200, "GET", "/vault/system/gpu", &stack.user, None).await;
    let presence = vault_core::gpu::presence();
    assert_eq!(gpu["available"], presence.available);
    assert_eq!(gpu["gpus"].as_array().unwrap().len(), presence.count as usize);

    for _ in 0..3 {
        stack.expect(200, "POST", "/v1/chat/completions", &stack.user, Some(vault_e2e::chat_body(false))).await;
    }
    stack.expect(200, "POST", "/v1/embeddings", &stack.admin, Some(json!({"input": "x"}))).await;
    let everyone = stack.expect(200, "GET", "/vault/insights?range=24h", &stack.admin, None).await;
    assert_eq!(everyone["totals"]["requests"], 4);
    assert_eq!(everyone["totals"]["active_users"], 2);
    assert_eq!(everyone["totals"]["tokens_input"], 3 * 6 + 1);
    assert!(everyone["totals"]["p95_latency_ms"].is_number());
    let mine = stack.expect(200, "GET", "/vault/insights?range=24h", &stack.user, None).await;
    assert_eq!(mine["totals"]["requests"], 3);
    assert_eq!(mine["models"][0]["model"], "qwen2.5-32b-awq");
    let week = stack.expect(200, "GET", "/vault/insights", &stack.admin, None).await;
    assert_eq!((week["range"].as_str(), week["bucket"].as_str()), (Some("7d"), Some("day")));

    stack.expect(201, "POST", "/vault/conversations", &stack.user, Some(json!({"title": "mine"}))).await;
    stack.expect(201, "POST", "/vault/admin/users", &stack.admin, Some(json!({"name": "A", "email": "a@x.org"}))).await;
    let all = stack.expect(200, "GET", "/vault/activity?limit=50", &stack.admin, None).await;
    let kinds: Vec<&str> = all["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert!(!all.to_string().contains("mine"), "a private conversation's title reached the feed: {all}");
    assert_eq!(kinds[..2], ["user.created", "conversation.created"]);
    assert!(kinds.contains(&"key.created"));
    let own = stack.expect(200, "GET", "/vault/activity", &stack.user, None).await;
    let own_kinds: Vec<&str> = own["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(own_kinds, ["conversation.created"], "a user sees only their own activity");
}
