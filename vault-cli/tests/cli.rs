//! `vault-cli` beside a running gateway: changes it makes count on the gateway's very next
//! request, it writes while the gateway is under load, and its errors have exit codes.

// Helpers of a test fail loudly, like the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use serde_json::Value;
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error, chat_body, client, run_cli};

const BINARY: &str = env!("CARGO_BIN_EXE_vault-cli");

async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    run_cli(BINARY, &app.data_dir, args).await
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_key_created_and_revoked_with_the_cli_counts_on_the_next_request() {
    let app = TestApp::spawn().await;
    let created = json_out(&cli(&app, &["create-key", "--label", "ops", "--scope", "user", "--json"]).await);
    for field in ["id", "key", "prefix", "label", "scope"] {
        assert!(!created[field].is_null(), "create-key --json lacks {field}: {created}");
    }
    let key = created["key"].as_str().unwrap();
    for _ in 0..3 {
        // Warm the gateway's key cache.
        assert_eq!(app.send("GET", "/v1/models", Some(key), None).await.status(), 200);
    }
    let revoked = json_out(&cli(&app, &["revoke-key", &key[..13], "--json"]).await);
    assert_eq!(revoked["is_active"], false);
    assert_error(app.send("GET", "/v1/models", Some(key), None).await, 401, "invalid_api_key").await;
    // The use reaches the database with the audit writer's next commit, moments later.
    let mut listed = json_out(&cli(&app, &["list-keys", "--all", "--json"]).await);
    for _ in 0..50 {
        if listed[0]["last_used_at"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        listed = json_out(&cli(&app, &["list-keys", "--all", "--json"]).await);
    }
    assert!(listed[0]["revoked_at"].is_string());
    assert!(listed[0]["last_used_at"].is_string(), "use before revocation was recorded");
}

#[tokio::test]
async fn a_key_revoked_with_the_cli_while_the_gateway_idles_is_refused_on_the_next_request() {
    let app = TestApp::spawn().await;
    let created = json_out(&cli(&app, &["create-key", "--label", "ops", "--json"]).await);
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.send("GET", "/v1/models", Some(key), None).await.status(), 200);
    // Long enough for the gateway's key watcher to stop looking for changes.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(cli(&app, &["revoke-key", &key[..13]]).await.status.success());
    assert_error(app.send("GET", "/v1/models", Some(key), None).await, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn a_user_deactivated_with_the_cli_loses_every_key_on_the_next_request() {
    let app = TestApp::spawn().await;
    let user =
        json_out(&cli(&app, &["create-user", "--name", "Dr. Ng", "--email", "ng@clinic.example", "--json"]).await);
    let user_id = user["id"].as_str().unwrap();
    let mut keys = Vec::new();
    for label in ["desk", "laptop"] {
        let created = json_out(&cli(&app, &["create-key", "--label", label, "--user", user_id, "--json"]).await);
        assert_eq!(created["user_id"], user_id);
        keys.push(created["key"].as_str().unwrap().to_string());
    }
    for key in &keys {
        assert_eq!(app.send("GET", "/v1/models", Some(key), None).await.status(), 200);
    }
    assert!(cli(&app, &["deactivate-user", user_id]).await.status.success());
    for key in &keys {
        assert_error(app.send("GET", "/v1/models", Some(key), None).await, 401, "invalid_api_key").await;
    }
}

#[tokio::test]
async fn errors_go_to_stderr_with_an_exit_code_per_kind() {
    let app = TestApp::spawn().await;
    let missing = cli(&app, &["deactivate-user", "nobody"]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("vault-cli: No user with id nobody."));
    let bad = cli(&app, &["create-user", "--name", "X", "--email", "not-an-email"]).await;
    assert_eq!(bad.status.code(), Some(2));
    let as_json = cli(&app, &["revoke-key", "999", "--json"]).await;
    assert_eq!(as_json.status.code(), Some(3));
    let error: Value = serde_json::from_slice(&as_json.stderr).unwrap();
    assert_eq!(error["error"]["code"], "key_not_found");
    cli(&app, &["create-user", "--name", "A", "--email", "a@clinic.example"]).await;
    let taken = cli(&app, &["create-user", "--name", "B", "--email", "A@clinic.example"]).await;
    assert_eq!(taken.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_during_cli_key_churn_all_succeed_and_are_audited() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let key = app.create_key(Scope::User).await;
    let before = app.audit_count().await;
    let churn = {
        let app = app.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let created = json_out(&cli(&app, &["create-key", "--label", "churn", "--json"]).await);
                let out = cli(&app, &["revoke-key", created["key"].as_str().unwrap()]).await;
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        })
    };
    let http = client();
    let requests = (0..200).map(|i| {
        let (http, url, key) = (http.clone(), format!("{}/v1/chat/completions", app.url), key.clone());
        async move {
            let id = format!("load-{i}");
            let response =
                http.post(url).bearer_auth(key).header("x-request-id", &id).json(&chat_body(i % 2 == 0)).send().await;
            let response = response.unwrap();
            let status = response.status().as_u16();
            (id, status, response.text().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(requests).await;
    churn.await.unwrap();
    for (id, status, body) in &results {
        assert_eq!(*status, 200, "{id}: {body}");
    }
    let mut seen = HashSet::new();
    for (id, _, _) in &results {
        let row = app.audit_row(id).await.unwrap_or_else(|| panic!("{id} has no audit row"));
        assert_eq!(row.status, 200);
        seen.insert(row.request_id);
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(app.audit_count().await, before + 200, "one row per request, no more");
}

#[tokio::test]
async fn the_wizard_and_its_certificate_are_seen_and_reset_from_the_console() {
    let app = TestApp::spawn().await;
    let status = json_out(&cli(&app, &["setup-status", "--json"]).await);
    assert_eq!(status["status"], "pending");
    assert_eq!(json_out(&cli(&app, &["tls-info", "--json"]).await), Value::Null);

    let admin = serde_json::json!({"name": "Admin", "email": "admin@clinic.example"});
    assert_eq!(app.send("POST", "/vault/setup/admin", None, Some(&admin)).await.status(), 201);
    let tls = serde_json::json!({"mode": "self_signed"});
    assert_eq!(app.send("POST", "/vault/setup/tls", None, Some(&tls)).await.status(), 200);
    assert_eq!(app.send("POST", "/vault/setup/complete", None, None).await.status(), 200);
    let status = json_out(&cli(&app, &["setup-status", "--json"]).await);
    assert_eq!((status["status"].as_str(), status["flag_file"].as_bool()), (Some("complete"), Some(true)));
    let info = json_out(&cli(&app, &["tls-info", "--json"]).await);
    assert_eq!(info["self_signed"], true);
    assert!(info["sans"].as_array().unwrap().contains(&Value::from("localhost")), "{info}");
    let text = cli(&app, &["tls-info"]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains(info["fingerprint_sha256"].as_str().unwrap()));

    // Without --yes nothing changes.
    let refused = cli(&app, &["reset-setup"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(json_out(&cli(&app, &["setup-status", "--json"]).await)["status"], "complete");

    let reset = json_out(&cli(&app, &["reset-setup", "--yes", "--json"]).await);
    assert_eq!((reset["status"].as_str(), reset["flag_file"].as_bool()), (Some("pending"), Some(false)));
    // Users and keys stay.
    let users = json_out(&cli(&app, &["list-users", "--json"]).await);
    assert_eq!(users[0]["email"], "admin@clinic.example");
}

#[tokio::test]
async fn the_audit_log_is_exported_to_a_file_or_stdout_and_summarised() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    let admin = app.create_key(Scope::Admin).await;
    for _ in 0..5 {
        let response = app.send("POST", "/v1/chat/completions", Some(&user), Some(&chat_body(false))).await;
        assert_eq!(response.status(), 200);
    }
    // Reading the log through the gateway commits every answered request's row.
    assert_eq!(app.send("GET", "/vault/admin/audit?limit=1", Some(&admin), None).await.status(), 200);

    let file = app.data_dir.join("audit.csv");
    let args = ["audit", "export", "--format", "csv", "-o", file.to_str().unwrap(), "--json"];
    let summary = json_out(&cli(&app, &args).await);
    // The five chats at least (the row of the reading request may still be on its way).
    assert!(summary["rows"].as_u64().unwrap() >= 5, "{summary}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with("id,timestamp,request_id,"));
    assert_eq!(csv.lines().filter(|l| l.contains(",/v1/chat/completions,")).count(), 5);
    assert!(!app.data_dir.join("audit.csv.partial").exists());

    let out = cli(&app, &["audit", "export", "--format", "json", "--path", "/v1/chat"]).await;
    let rows: Vec<Value> = json_out(&out).as_array().unwrap().clone();
    assert_eq!(rows.len(), 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Exported 5 rows to stdout"));

    let bad_date = cli(&app, &["audit", "export", "--from", "yesterday"]).await;
    assert_eq!(bad_date.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_date.stderr).contains("from: not an RFC 3339"), "{bad_date:?}");
    let nowhere = app.data_dir.join("no-such-dir").join("x.csv");
    let unwritable = cli(&app, &["audit", "export", "-o", nowhere.to_str().unwrap()]).await;
    assert_eq!(unwritable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("output: cannot create"));

    let stats = json_out(&cli(&app, &["audit", "stats", "--json"]).await);
    assert_eq!(stats["totals"]["requests"], 5, "{stats}");
    assert_eq!(stats["models"][0]["model"], chat_body(false)["model"]);
    let text = cli(&app, &["audit", "stats"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Requests 5   errors 0 (0.00%)") && text.contains("By model"), "{text}");
    let backwards =
        cli(&app, &["audit", "stats", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"]).await;
    assert_eq!(backwards.status.code(), Some(2));
}

#[tokio::test]
async fn models_are_listed_shown_and_deleted_from_the_command_line() {
    let app = TestApp::spawn().await;
    let dir = app.data_dir.join("models");
    for (id, weights) in [("qwen2.5-32b-awq", true), ("mistral-7b", true), ("half-copied", false)] {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("config.json"), r#"{"architectures": ["MistralForCausalLM"]}"#).unwrap();
        if weights {
            std::fs::write(dir.join(id).join("model.bin"), vec![0u8; 4096]).unwrap();
        }
    }
    let upstream = ["--vllm-base-url", app.upstream_url.as_str()];
    let with = |args: &[&'static str]| [args, &upstream[..]].concat();

    let listed = json_out(&cli(&app, &with(&["models", "list", "--json"])).await);
    let statuses: Vec<(&str, &str)> =
        listed.as_array().unwrap().iter().map(|m| (m["id"].as_str().unwrap(), m["status"].as_str().unwrap())).collect();
    assert!(statuses.contains(&("qwen2.5-32b-awq", "loaded")), "{listed}");
    assert!(statuses.contains(&("mistral-7b", "available")) && statuses.contains(&("half-copied", "incomplete")));
    let shown = json_out(&cli(&app, &with(&["models", "show", "mistral-7b", "--json"])).await);
    assert_eq!(
        (shown["config"]["architecture"].as_str(), shown["size_bytes"].as_u64()),
        (Some("MistralForCausalLM"), Some(4096 + 41))
    );
    let text = cli(&app, &with(&["models", "list"])).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("incomplete (no weight files)"));

    let unconfirmed = cli(&app, &with(&["models", "delete", "mistral-7b"])).await;
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(dir.join("mistral-7b").exists());
    let loaded = cli(&app, &with(&["models", "delete", "qwen2.5-32b-awq", "--yes"])).await;
    assert_eq!(loaded.status.code(), Some(4), "{}", String::from_utf8_lossy(&loaded.stderr));
    let traversal = cli(&app, &with(&["models", "delete", "../models", "--yes"])).await;
    assert_eq!(traversal.status.code(), Some(2));
    assert!(cli(&app, &with(&["models", "delete", "mistral-7b", "--yes"])).await.status.success());
    assert!(!dir.join("mistral-7b").exists() && dir.join("qwen2.5-32b-awq").exists());

    // Import it back from a "USB disk".
    let usb = tempfile::tempdir().unwrap();
    let source = usb.path().join("mistral-7b");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("config.json"), "{}").unwrap();
    std::fs::write(source.join("model.bin"), vec![1u8; 1 << 20]).unwrap();
    let (path, roots) = (source.display().to_string(), usb.path().display().to_string());
    let import = ["models", "import", path.as_str(), "--import-roots", roots.as_str(), "--json"];
    let imported = json_out(&cli(&app, &[&import[..], &upstream[..]].concat()).await);
    assert_eq!((imported["id"].as_str(), imported["size_bytes"].as_u64()), (Some("mistral-7b"), Some((1 << 20) + 2)));
    assert_eq!(std::fs::read(dir.join("mistral-7b/model.bin")).unwrap().len(), 1 << 20);
    let outside = ["models", "import", "/etc", "--import-roots", roots.as_str()];
    assert_eq!(cli(&app, &[&outside[..], &upstream[..]].concat()).await.status.code(), Some(2));
}

#[tokio::test]
async fn a_read_only_command_pointed_at_no_database_says_so_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("not-the-server");
    for args in [&["list-keys"][..], &["revoke-key", "vault_sk_AbCd"], &["setup-status", "--json"]] {
        let out = run_cli(BINARY, &data_dir, args).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("There is no database at"), "{args:?}");
    }
    assert!(!data_dir.join("vault.db").exists(), "no empty database was made");
    let created = run_cli(BINARY, &data_dir, &["create-key", "--label", "first", "--scope", "admin", "--json"]).await;
    assert!(created.status.success(), "provisioning starts one");
    assert!(run_cli(BINARY, &data_dir, &["list-keys"]).await.status.success());
}

#[tokio::test]
async fn limits_set_with_the_cli_hold_on_the_next_request() {
    let app = TestApp::spawn().await;
    let created = json_out(&cli(&app, &["create-key", "--label", "script", "--json"]).await);
    let (key, id) = (created["key"].as_str().unwrap(), created["id"].to_string());
    assert_eq!(app.send("POST", "/v1/chat/completions", Some(key), Some(&chat_body(false))).await.status(), 200);
    let set = json_out(&cli(&app, &["limits", "set", "--key", &id, "--rpm", "1", "--tpm", "100000", "--json"]).await);
    assert_eq!((set["limits"]["rpm"].as_u64(), set["limits"]["tpm"].as_u64()), (Some(1), Some(100000)));
    // Counted from the change on: one request this minute, then none.
    assert_eq!(app.send("POST", "/v1/chat/completions", Some(key), Some(&chat_body(false))).await.status(), 200);
    let refused = app.send("POST", "/v1/chat/completions", Some(key), Some(&chat_body(false))).await;
    assert_error(refused, 429, "rate_limited").await;
    // Only the limit named changes; `none` removes it.
    let lifted = json_out(&cli(&app, &["limits", "set", "--key", &id, "--rpm", "none", "--json"]).await);
    assert_eq!(lifted["limits"], serde_json::json!({"rpm": null, "tpm": 100000, "concurrency": null, "weight": null}));
    let weighted = json_out(&cli(&app, &["limits", "set", "--key", &id, "--weight", "3", "--json"]).await);
    assert_eq!(weighted["limits"], serde_json::json!({"rpm": null, "tpm": 100000, "concurrency": null, "weight": 3}));
    let heavy = cli(&app, &["limits", "set", "--key", &id, "--weight", "101"]).await;
    assert_eq!(heavy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&heavy.stderr).contains("weight"));
    assert_eq!(app.send("POST", "/v1/chat/completions", Some(key), Some(&chat_body(false))).await.status(), 200);
    let text = cli(&app, &["limits", "show", "--key", &id]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("100000"));

    let zero = cli(&app, &["limits", "set", "--key", &id, "--rpm", "0"]).await;
    assert_eq!(zero.status.code(), Some(2), "{}", String::from_utf8_lossy(&zero.stderr));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("rpm"));
    let unknown = cli(&app, &["limits", "show", "--user", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(3));
    let neither = cli(&app, &["limits", "show"]).await;
    assert!(!neither.status.success());
}

#[tokio::test]
async fn the_audit_chain_verifies_until_a_row_is_edited_behind_the_gateways_back() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let admin = app.create_key(Scope::Admin).await;
    for _ in 0..5 {
        assert_eq!(app.send("POST", "/v1/chat/completions", Some(&key), Some(&chat_body(false))).await.status(), 200);
    }
    let report: Value = app.send("GET", "/vault/admin/audit/verify", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert!(report["rows_checked"].as_u64().unwrap() >= 5);
    let verified = json_out(&cli(&app, &["audit", "verify", "--json"]).await);
    assert_eq!(verified["intact"], true);

    // Someone with the database file changes what a request did.
    let row = app.audit_rows("/v1/chat/completions").await[2].id;
    let db = vault_e2e::open_db(&app.data_dir).await;
    db.connect().await.unwrap().execute("UPDATE audit_log SET status = 404 WHERE id = ?1", [row]).await.unwrap();
    let caught = cli(&app, &["audit", "verify"]).await;
    assert_eq!(caught.status.code(), Some(4), "{}", String::from_utf8_lossy(&caught.stderr));
    assert!(String::from_utf8_lossy(&caught.stderr).contains(&format!("Row {row} was altered")));
    let report: Value = app.send("GET", "/vault/admin/audit/verify", Some(&admin), None).await.json().await.unwrap();
    assert_eq!((report["intact"].as_bool(), report["problem"]["row_id"].as_i64()), (Some(false), Some(row)));
    assert_error(app.send("GET", "/vault/admin/audit/verify", Some(&key), None).await, 403, "insufficient_scope").await;
    assert_error(app.send("GET", "/vault/admin/audit/verify", None, None).await, 401, "invalid_api_key").await;
    let bad = app.send("GET", "/vault/admin/audit/verify?from=abc", Some(&admin), None).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn models_launch_starts_a_server_per_loaded_model_and_writes_the_upstreams_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // No database: the engine starts before the gateway has made one.
    let nothing = run_cli(BINARY, data, &["models", "launch", "--dry-run"]).await;
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("No model is loaded"));
    std::fs::write(
        data.join("gpu-config.json"),
        r#"{"models": [
            {"id": "a", "path": "/models/a", "gpus": [0], "gpu_memory_utilization": 0.9, "max_model_len": 4096},
            {"id": "b", "path": "/models/b", "gpus": [1, 2], "gpu_memory_utilization": 0.5}]}"#,
    )
    .unwrap();
    let planned = run_cli(BINARY, data, &["models", "launch", "--dry-run", "--port", "9001", "--json"]).await;
    let planned: Value = serde_json::from_slice(&planned.stdout).unwrap();
    let engines = planned["plan"]["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    assert_eq!(engines[1]["port"], 9002);
    assert!(!data.join("upstreams.json").exists(), "a dry run writes nothing");

    // A stand-in for vLLM that notes how it was started; b's ends by itself once a's has
    // started. The launch then fails (the engine is not whole), having stopped a and
    // written the gateway's upstreams file.
    let program = data.join("vllm.sh");
    let marks = data.display();
    let body = format!(
        "port=$7\ntrap 'exit 0' TERM\necho \"$CUDA_VISIBLE_DEVICES $*\" >> {marks}/started\n\
         if [ \"$port\" = 8002 ]; then until grep -q -- '--port 8001' {marks}/started; do sleep 0.01; done; exit 0; fi\n\
         while :; do sleep 0.01; done"
    );
    // Written by a child process: no descriptor of it is open here when it runs.
    let written = std::process::Command::new("sh")
        .args(["-c", &format!("cat > '{0}' <<'END'\n#!/bin/sh\n{body}\nEND\nchmod +x '{0}'", program.display())])
        .status()
        .unwrap();
    assert!(written.success());
    let ran = run_cli(BINARY, data, &["models", "launch", "--vllm", program.to_str().unwrap()]).await;
    assert!(!ran.status.success(), "a server ending by itself fails the launch");
    assert!(String::from_utf8_lossy(&ran.stderr).contains("The inference server of b ended"), "{ran:?}");
    let started = std::fs::read_to_string(data.join("started")).unwrap();
    assert!(started.contains("0 serve /models/a --served-model-name=a --host 127.0.0.1 --port 8001"), "{started}");
    let upstreams: Value = serde_json::from_slice(&std::fs::read(data.join("upstreams.json")).unwrap()).unwrap();
    assert_eq!(
        upstreams["upstreams"][1],
        serde_json::json!({"url": "http://127.0.0.1:8002", "models": ["b"], "weight": 1})
    );

    assert!(!data.join("vault.db").exists(), "the launcher makes no database");
    let missing = run_cli(BINARY, data, &["models", "launch", "--vllm", "/nonexistent/vllm"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot start"));
}
