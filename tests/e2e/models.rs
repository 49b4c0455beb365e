//! `/vault/models`: folders on disk merged with what the engine serves; delete removes one
//! folder and nothing outside the models dir.

use std::path::Path;

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error};

/// A safetensors file of one F16 tensor of `elements` elements.
fn safetensors(path: &Path, elements: u64) {
    let header = json!({"w": {"dtype": "F16", "shape": [elements], "data_offsets": [0, elements * 2]}});
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.resize(bytes.len() + (elements * 2) as usize, 0);
    std::fs::write(path, bytes).unwrap();
}

fn model(dir: &Path, id: &str, elements: Option<u64>) {
    let folder = dir.join(id);
    std::fs::create_dir_all(&folder).unwrap();
    let config =
        json!({"architectures": ["MistralForCausalLM"], "max_position_embeddings": 8192, "torch_dtype": "bfloat16"});
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    if let Some(elements) = elements {
        safetensors(&folder.join("model.safetensors"), elements);
    }
}

#[tokio::test]
async fn models_on_disk_are_listed_with_their_status_and_detail() {
    let app = TestApp::spawn().await;
    let user = app.create_key(Scope::User).await;
    let dir = app.data_dir.join("models");
    // The fake engine serves these two.
    model(&dir, "qwen2.5-32b-awq", Some(64));
    model(&dir, "Qwen/Qwen2.5-7B-Instruct", Some(64));
    model(&dir, "mistral-7b", Some(1000));
    model(&dir, "half-copied", None);

    let list: Value = app.send("GET", "/vault/models", Some(&user), None).await.json().await.unwrap();
    let statuses: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("Qwen/Qwen2.5-7B-Instruct", "loaded"),
            ("half-copied", "incomplete"),
            ("mistral-7b", "available"),
            ("qwen2.5-32b-awq", "loaded")
        ]
    );
    assert_eq!(list["items"][1]["reason"], "no weight files");

    let detail: Value = app.send("GET", "/vault/models/mistral-7b", Some(&user), None).await.json().await.unwrap();
    assert_eq!(detail["config"]["architecture"], "MistralForCausalLM");
    assert_eq!(
        (detail["config"]["context_length"].as_u64(), detail["config"]["parameters"].as_u64()),
        (Some(8192), Some(1000))
    );
    let weights = detail["files"].as_array().unwrap().iter().find(|f| f["name"] == "model.safetensors").unwrap();
    let weight_bytes = weights["size_bytes"].as_u64().unwrap();
    assert_eq!(detail["vram_estimate_bytes"].as_u64(), Some((weight_bytes as f64 * 1.2) as u64));
    // An id with `/`, as vLLM names models, in the path as it is.
    let nested = app.send("GET", "/vault/models/Qwen/Qwen2.5-7B-Instruct", Some(&user), None).await;
    assert_eq!(nested.status(), 200);
    assert_eq!(nested.json::<Value>().await.unwrap()["status"], "loaded");

    assert_error(app.send("GET", "/vault/models/nothing-here", Some(&user), None).await, 404, "model_not_found").await;
    let traversal = app.send("GET", "/vault/models/..%2F..%2Fetc", Some(&user), None).await;
    assert_error(traversal, 400, "invalid_request").await;
}

#[tokio::test]
async fn delete_removes_one_folder_never_a_loaded_model_nor_anything_outside() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let dir = app.data_dir.join("models");
    model(&dir, "qwen2.5-32b-awq", Some(8));
    model(&dir, "old-model", Some(8));
    // Outside the models dir: a sentinel, a model-shaped folder linked into the models dir,
    // and a link inside a model pointing out.
    let sentinel = app.data_dir.join("sentinel.txt");
    std::fs::write(&sentinel, "keep").unwrap();
    model(&app.data_dir, "outside", Some(8));
    std::os::unix::fs::symlink(app.data_dir.join("outside"), dir.join("linked")).unwrap();
    std::os::unix::fs::symlink(&sentinel, dir.join("old-model").join("notes.txt")).unwrap();

    assert_error(app.send("DELETE", "/vault/models/old-model", Some(&user), None).await, 403, "insufficient_scope")
        .await;
    let loaded = app.send("DELETE", "/vault/models/qwen2.5-32b-awq", Some(&admin), None).await;
    assert_error(loaded, 409, "model_loaded").await;
    for (path, status) in [
        ("/vault/models/..", 404),
        // The client normalizes an encoded dot segment away: no such route.
        ("/vault/models/%2E%2E", 404),
        ("/vault/models/.", 404),
        ("/vault/models/a%2F..%2F..", 400),
        ("/vault/models/..%2Fsentinel.txt", 400),
        ("/vault/models/linked", 404),
        ("/vault/models/nothing-here", 404),
    ] {
        let response = app.send("DELETE", path, Some(&admin), None).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    assert!(sentinel.exists() && app.data_dir.join("outside/config.json").exists() && dir.join("linked").exists());
    // Only a model's own folder: not an organisation's folder holding a loaded model, not a
    // folder inside a model, not a hidden one; and not one the model configuration lists.
    model(&dir, "Qwen/Qwen2.5-7B-Instruct", Some(8));
    std::fs::create_dir_all(dir.join("old-model/original")).unwrap();
    for (path, status) in
        [("/vault/models/Qwen", 404), ("/vault/models/old-model%2Foriginal", 404), ("/vault/models/.import-x", 400)]
    {
        assert_eq!(app.send("DELETE", path, Some(&admin), None).await.status(), status, "{path}");
    }
    assert!(dir.join("Qwen/Qwen2.5-7B-Instruct/config.json").exists());
    model(&dir, "configured", Some(8));
    std::fs::write(
        app.data_dir.join("gpu-config.json"),
        r#"{"models": [{"id": "configured", "path": "x", "gpus": [0], "gpu_memory_utilization": 0.9}]}"#,
    )
    .unwrap();
    assert_error(app.send("DELETE", "/vault/models/configured", Some(&admin), None).await, 409, "model_loaded").await;

    assert_eq!(app.send("DELETE", "/vault/models/old-model", Some(&admin), None).await.status(), 204);
    assert!(!dir.join("old-model").exists());
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "keep", "a link inside was removed, not followed");
    assert!(dir.join("qwen2.5-32b-awq").exists());
}

/// Follows operation `id` until it is no longer running.
async fn settled(app: &TestApp, admin: &str, id: &str) -> Value {
    for _ in 0..100 {
        let operation: Value =
            app.send("GET", &format!("/vault/models/operations/{id}"), Some(admin), None).await.json().await.unwrap();
        if operation["state"] != "running" {
            return operation;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("operation {id} still running");
}

async fn served(app: &TestApp, key: &str) -> Vec<String> {
    let list: Value = app.send("GET", "/v1/models", Some(key), None).await.json().await.unwrap();
    list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_load_makes_the_engine_serve_the_model_and_an_unload_stops_it() {
    let app =
        TestApp::spawn_with(vault_e2e::Upstream::Fake(Default::default()), &[("VAULT_SIMULATED_GPUS_MB", "64,1024")])
            .await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    model(&app.data_dir.join("models"), "mistral-7b", Some(100_000));
    assert!(!served(&app, &user).await.contains(&"mistral-7b".to_string()));

    let started = app.send("POST", "/vault/models/mistral-7b/load", Some(&admin), None).await;
    assert_eq!(started.status(), 202);
    let started: Value = started.json().await.unwrap();
    assert_eq!((started["kind"].as_str(), started["dry_run"].as_bool()), (Some("load"), Some(true)));
    assert_eq!(started["gpus"], json!([1]), "the freest GPU");
    let done = settled(&app, &admin, started["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(served(&app, &user).await.contains(&"mistral-7b".to_string()), "the engine serves it");
    assert_eq!(app.host_commands(), [["systemctl", "restart", "--no-block", "vllm.service"]]);

    let active: Value = app.send("GET", "/vault/models/active", Some(&user), None).await.json().await.unwrap();
    assert_eq!((active["available"].as_bool(), active["simulated"].as_bool()), (Some(true), Some(true)));
    let placed = active["models"].as_array().unwrap().iter().find(|m| m["id"] == "mistral-7b").unwrap();
    assert_eq!(placed["gpus"], json!([1]));
    assert_eq!(active["gpus"][1]["used_bytes"], placed["estimate_bytes"]);

    assert_error(app.send("POST", "/vault/models/mistral-7b/load", Some(&admin), None).await, 409, "model_loaded")
        .await;
    assert_error(app.send("DELETE", "/vault/models/mistral-7b", Some(&admin), None).await, 409, "model_loaded").await;
    // An id with `/` reaches its model's own routes too.
    model(&app.data_dir.join("models"), "Qwen/Qwen2.5-7B-Instruct", Some(10));
    let nested = app.send("POST", "/vault/models/Qwen/Qwen2.5-7B-Instruct/load", Some(&admin), None).await;
    assert_error(nested, 409, "model_loaded").await;

    let unloading: Value =
        app.send("POST", "/vault/models/mistral-7b/unload", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(settled(&app, &admin, unloading["id"].as_str().unwrap()).await["state"], "succeeded");
    assert!(!served(&app, &user).await.contains(&"mistral-7b".to_string()));
    let again = app.send("POST", "/vault/models/mistral-7b/unload", Some(&admin), None).await;
    assert_error(again, 409, "invalid_state").await;
}

#[tokio::test]
async fn loads_that_cannot_be_done_are_refused_and_change_nothing() {
    // A fake that reads another configuration: a load never settles, so one stays running.
    let elsewhere = tempfile::tempdir().unwrap();
    let fake = vault_e2e::FakeOptions { gpu_config: Some(elsewhere.path().join("other.json")), ..Default::default() };
    let app = TestApp::spawn_with(vault_e2e::Upstream::Fake(fake), &[("VAULT_SIMULATED_GPUS_MB", "1")]).await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let dir = app.data_dir.join("models");
    model(&dir, "too-big", Some(600_000));
    model(&dir, "small", Some(1_000));
    model(&dir, "tiny", Some(1_000));
    model(&dir, "no-weights", None);

    let refused = app.send("POST", "/vault/models/too-big/load", Some(&admin), None).await;
    let error = assert_error(refused, 409, "insufficient_gpu_memory").await;
    let details = &error["error"]["details"];
    assert!(details["estimate_bytes"].as_u64().unwrap() > details["free_bytes"].as_u64().unwrap(), "{error}");
    assert_error(app.send("POST", "/vault/models/small/load", Some(&user), None).await, 403, "insufficient_scope")
        .await;
    assert_error(app.send("POST", "/vault/models/nothing/load", Some(&admin), None).await, 404, "model_not_found")
        .await;
    assert_error(app.send("POST", "/vault/models/no-weights/load", Some(&admin), None).await, 409, "invalid_state")
        .await;
    assert_error(app.send("POST", "/vault/models/a%2F..%2F../load", Some(&admin), None).await, 400, "invalid_request")
        .await;
    assert!(!app.data_dir.join("gpu-config.json").exists() && app.host_commands().is_empty(), "nothing changed");

    let running: Value = app.send("POST", "/vault/models/small/load", Some(&admin), None).await.json().await.unwrap();
    assert_eq!(running["state"], "running");
    let busy = app.send("POST", "/vault/models/tiny/load", Some(&admin), None).await;
    let error = assert_error(busy, 409, "operation_in_progress").await;
    assert_eq!(error["error"]["details"]["operation"], running["id"]);
    let missing = app.send("GET", "/vault/models/operations/nope", Some(&admin), None).await;
    assert_error(missing, 404, "operation_not_found").await;
}

/// A safetensors file of `elements` F16 elements, sparse (its data is a hole).
fn sparse_safetensors(path: &Path, elements: u64) {
    let header = json!({"w": {"dtype": "F16", "shape": [elements], "data_offsets": [0, elements * 2]}});
    let header = serde_json::to_vec(&header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    std::fs::write(path, &bytes).unwrap();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(bytes.len() as u64 + elements * 2).unwrap();
}

#[tokio::test]
async fn an_import_copies_in_the_background_with_progress_while_requests_are_served() {
    let usb = tempfile::tempdir().unwrap();
    let roots = usb.path().display().to_string();
    let app =
        TestApp::spawn_with(vault_e2e::Upstream::Fake(Default::default()), &[("VAULT_IMPORT_ROOTS", &roots)]).await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let source = usb.path().join("mistral-7b");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("config.json"), r#"{"architectures": ["MistralForCausalLM"]}"#).unwrap();
    for shard in ["model-00001.safetensors", "model-00002.safetensors"] {
        sparse_safetensors(&source.join(shard), 50 * 1024 * 1024);
    }
    let body = json!({"path": source.display().to_string()});
    let started = app.send("POST", "/vault/models/import", Some(&admin), Some(&body)).await;
    assert_eq!(started.status(), 202);
    let started: Value = started.json().await.unwrap();
    let total = started["progress"]["total_bytes"].as_u64().unwrap();
    assert!(total > 200 * 1000 * 1000, "{started}");
    // Other requests are answered meanwhile: the copy runs off the request threads.
    let chat = app.send("POST", "/v1/chat/completions", Some(&user), Some(&vault_e2e::chat_body(false))).await;
    assert_eq!(chat.status(), 200);
    let answered = vault_core::time::now_rfc3339();
    let id = started["id"].as_str().unwrap();
    let mut seen = Vec::new();
    let done = loop {
        let operation: Value =
            app.send("GET", &format!("/vault/models/operations/{id}"), Some(&admin), None).await.json().await.unwrap();
        seen.push(operation["progress"]["done_bytes"].as_u64().unwrap());
        if operation["state"] != "running" {
            break operation;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(answered.as_str() < done["finished_at"].as_str().unwrap(), "the chat waited for the copy: {done}");
    assert_eq!(done["progress"]["done_bytes"].as_u64(), Some(total));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
    let listed: Value = app.send("GET", "/vault/models/mistral-7b", Some(&user), None).await.json().await.unwrap();
    assert_eq!((listed["status"].as_str(), listed["size_bytes"].as_u64()), (Some("available"), Some(total)));
    assert_eq!(hidden_entries(&app.data_dir.join("models")), Vec::<String>::new(), "no staging folder is left");
    let again = app.send("POST", "/vault/models/import", Some(&admin), Some(&body)).await;
    assert_error(again, 409, "model_exists").await;

    // A failed copy leaves nothing behind: here the organisation folder named is a model.
    let nested = json!({"path": source.display().to_string(), "id": "mistral-7b/inside"});
    let started: Value =
        app.send("POST", "/vault/models/import", Some(&admin), Some(&nested)).await.json().await.unwrap();
    let id = started["id"].as_str().unwrap();
    let failed = loop {
        let operation: Value =
            app.send("GET", &format!("/vault/models/operations/{id}"), Some(&admin), None).await.json().await.unwrap();
        if operation["state"] != "running" {
            break operation;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(!app.data_dir.join("models/mistral-7b/inside").exists());
    assert_eq!(
        hidden_entries(&app.data_dir.join("models")),
        Vec::<String>::new(),
        "a failed import left its staging folder"
    );
}

/// The hidden entries of a models dir (staging folders of copies).
fn hidden_entries(models: &Path) -> Vec<String> {
    std::fs::read_dir(models)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name.starts_with('.'))
        .collect()
}

#[tokio::test]
async fn imports_cut_short_leave_nothing_behind() {
    let (usb, models) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // What a gateway that died mid-copy left: removed at the next start.
    std::fs::create_dir_all(models.path().join(".import-dead/sub")).unwrap();
    std::fs::write(models.path().join(".import-dead/sub/model.safetensors"), b"partial").unwrap();
    let settings =
        [("VAULT_IMPORT_ROOTS", usb.path().to_str().unwrap()), ("VAULT_MODELS_DIR", models.path().to_str().unwrap())];
    let mut app = TestApp::spawn_with(vault_e2e::Upstream::Fake(Default::default()), &settings).await;
    assert_eq!(hidden_entries(models.path()), Vec::<String>::new());

    // A shutdown stops a copy (1 GiB: seconds of work) and removes what it had copied.
    let admin = app.create_key(Scope::Admin).await;
    let source = usb.path().join("big");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("config.json"), r#"{"architectures": ["MistralForCausalLM"]}"#).unwrap();
    sparse_safetensors(&source.join("model.safetensors"), 512 * 1024 * 1024);
    let body = json!({"path": source.display().to_string()});
    let started = app.send("POST", "/vault/models/import", Some(&admin), Some(&body)).await;
    assert_eq!(started.status(), 202);
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the copy held the shutdown up");
    assert_eq!(hidden_entries(models.path()), Vec::<String>::new());
    assert!(!models.path().join("big").exists());
}

#[tokio::test]
async fn imports_from_outside_the_roots_or_of_broken_folders_are_refused_without_echoing_paths() {
    let usb = tempfile::tempdir().unwrap();
    let roots = usb.path().display().to_string();
    let app =
        TestApp::spawn_with(vault_e2e::Upstream::Fake(Default::default()), &[("VAULT_IMPORT_ROOTS", &roots)]).await;
    let admin = app.create_key(Scope::Admin).await;
    let user = app.create_key(Scope::User).await;
    let folder = |name: &str, config: Option<&str>, elements: Option<u64>| {
        let dir = usb.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(config) = config {
            std::fs::write(dir.join("config.json"), config).unwrap();
        }
        if let Some(elements) = elements {
            sparse_safetensors(&dir.join("model.safetensors"), elements);
        }
        dir.display().to_string()
    };
    let good = folder("good", Some("{}"), Some(10));
    let truncated = folder("truncated", Some("{}"), Some(10));
    let file = std::fs::OpenOptions::new().write(true).open(usb.path().join("truncated/model.safetensors")).unwrap();
    file.set_len(file.metadata().unwrap().len() - 1).unwrap();
    let huge_config = folder("huge-config", None, Some(10));
    let config = std::fs::File::create(usb.path().join("huge-config/config.json")).unwrap();
    config.set_len(2 * 1024 * 1024 * 1024).unwrap();
    let no_weights = folder("no-weights", Some("{}"), None);
    let with_link = folder("with-link", Some("{}"), Some(10));
    std::os::unix::fs::symlink("/etc/hostname", usb.path().join("with-link/notes.txt")).unwrap();
    std::os::unix::fs::symlink(&app.data_dir, usb.path().join("escape")).unwrap();
    let escape = usb.path().join("escape").display().to_string();

    let import = |path: &str| json!({"path": path});
    assert_error(
        app.send("POST", "/vault/models/import", Some(&user), Some(&import(&good))).await,
        403,
        "insufficient_scope",
    )
    .await;
    for (body, why) in [
        (import("../etc"), "absolute"),
        (import("/etc"), "import root"),
        (import(&escape), "import root"),
        (import(&format!("{good}\u{0}x")), "not a path"),
        (import(&huge_config), "larger than"),
        (import(&truncated), "truncated"),
        (import(&no_weights), "no weights"),
        (import(&with_link), "symbolic link"),
        (json!({"path": good, "id": "../../etc"}), "model_id"),
        (json!({"paht": good}), ""),
    ] {
        let response = app.send("POST", "/vault/models/import", Some(&admin), Some(&body)).await;
        let error = assert_error(response, 400, "invalid_request").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{body}: {message}");
        assert!(!message.contains(&app.data_dir.display().to_string()), "a resolved path is echoed: {message}");
    }
    assert!(
        !app.data_dir.join("models").exists() || std::fs::read_dir(app.data_dir.join("models")).unwrap().count() == 0
    );
}
