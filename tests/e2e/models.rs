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
