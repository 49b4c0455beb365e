//! Several upstreams: requests go to an upstream that serves their model, spread by load; an
//! upstream that stops is left out without a client error and comes back when it answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream};

async fn fake(addr: SocketAddr, model: &str) -> fake_vllm::RunningFake {
    let options = FakeOptions { models: vec![model.into()], ..Default::default() };
    fake_vllm::start(addr, options).await.unwrap()
}

async fn received(fake: &fake_vllm::RunningFake) -> u64 {
    let stats: Value =
        vault_e2e::client().get(format!("{}/_fake/stats", fake.base_url())).send().await.unwrap().json().await.unwrap();
    stats["requests"].as_u64().unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
}

/// Sends `n` requests for `model`, `at_once` at a time; all must succeed.
async fn ask(app: &TestApp, key: &str, model: &str, n: usize, at_once: usize) {
    let body = chat(model);
    for _ in 0..n / at_once {
        let batch = (0..at_once).map(|_| app.send("POST", "/v1/chat/completions", Some(key), Some(&body)));
        for answer in futures_util::future::join_all(batch).await {
            assert_eq!(answer.status(), 200, "{model}");
        }
    }
}

/// Waits until `/vault/health` counts `up` upstreams in rotation.
async fn until_up(app: &TestApp, up: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health: Value = app.send("GET", "/vault/health", None, None).await.json().await.unwrap();
        if health["inference"]["upstreams_up"] == up {
            assert_eq!(health["inference"]["upstreams"], 3);
            return;
        }
        assert!(Instant::now() < deadline, "never {up} upstreams up: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_follow_their_model_spread_by_load_and_survive_an_upstream_stopping() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (x1, x2, y) = (fake(any, "model-x").await, fake(any, "model-x").await, fake(any, "model-y").await);
    let urls = [&x1, &x2, &y].map(|f| f.base_url()).join(",");
    let app = TestApp::spawn_with(Upstream::Url(urls), &[]).await;
    let key = app.create_key(Scope::User).await;
    // Each upstream's models are learned from its /v1/models at start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.vault().inference.upstream_states().unwrap().iter().any(|u| u.models.is_empty()) {
        assert!(Instant::now() < deadline, "the upstreams' models were never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The models of all of them, each once.
    let models: Value = app.send("GET", "/v1/models", Some(&key), None).await.json().await.unwrap();
    let mut ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["model-x", "model-y"]);

    ask(&app, &key, "model-x", 40, 8).await;
    ask(&app, &key, "model-y", 6, 3).await;
    let (on_x1, on_x2, on_y) = (received(&x1).await, received(&x2).await, received(&y).await);
    assert_eq!((on_x1 + on_x2, on_y), (40, 6), "each model only where it is served");
    assert!(on_x1 >= 10 && on_x2 >= 10, "the load is spread: {on_x1} and {on_x2}");

    // x1 stops: its requests go to x2 without a client error, and after a few refused
    // connections x1 is out of rotation.
    let x1_addr = x1.addr;
    x1.stop().await;
    ask(&app, &key, "model-x", 20, 4).await;
    until_up(&app, 2).await;
    let admin = app.create_key(Scope::Admin).await;
    let system: Value = app.send("GET", "/vault/system/health", Some(&admin), None).await.json().await.unwrap();
    let x1_line = system["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "upstream 1")
        .unwrap_or_else(|| panic!("no line for x1 in {system}"))
        .clone();
    assert_eq!(x1_line["status"], "degraded", "{x1_line}");
    assert!(x1_line["detail"].as_str().unwrap().starts_with(&format!("http://{x1_addr}; ")), "{x1_line}");
    let user_view: Value = app.send("GET", "/vault/system/health", Some(&key), None).await.json().await.unwrap();
    assert!(!user_view.to_string().contains(&x1_addr.to_string()), "where upstreams are is for admins: {user_view}");

    // Back on the same address: back in rotation after its next health check.
    let x1 = fake(x1_addr, "model-x").await;
    until_up(&app, 3).await;
    ask(&app, &key, "model-x", 20, 4).await;
    assert!(received(&x1).await >= 4, "x1 takes requests again");
    let unknown = app.send("POST", "/v1/chat/completions", Some(&key), Some(&chat("model-z"))).await;
    assert_eq!(unknown.status(), 404, "a model nobody serves is refused by an upstream, in its words");

    // A request that reached an upstream and failed there is not sent to another.
    let before = received(&x1).await + received(&x2).await;
    let failing =
        json!({"model": "model-x", "messages": [{"role": "user", "content": "hi"}], "fake_mode": "error:500"});
    let failed = app.send("POST", "/v1/chat/completions", Some(&key), Some(&failing)).await;
    assert_eq!(failed.status(), 500);
    assert_eq!(received(&x1).await + received(&x2).await, before + 1, "sent once, not again elsewhere");
    let states = app.vault().inference.upstream_states().unwrap();
    assert!(states.iter().all(|u| u.in_flight == 0), "every request gave its place back: {states:?}");
}

#[tokio::test]
async fn the_gateway_follows_the_upstreams_file_as_the_engine_changes() {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (x, y) = (fake(any, "model-x").await, fake(any, "model-y").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upstreams.json");
    let list = |fakes: &[(&fake_vllm::RunningFake, &str)]| {
        let upstreams: Vec<Value> =
            fakes.iter().map(|(f, model)| json!({"url": f.base_url(), "models": [model]})).collect();
        json!({ "upstreams": upstreams }).to_string()
    };
    // No file yet: the engine serves nothing, and says so.
    let settings = [("VAULT_UPSTREAMS", file.to_str().unwrap())];
    let app = TestApp::spawn_with(Upstream::Url("http://127.0.0.1:9".into()), &settings).await;
    let key = app.create_key(Scope::User).await;
    let refused = app.send("POST", "/v1/chat/completions", Some(&key), Some(&chat("model-x"))).await;
    assert_eq!(refused.status(), 503);

    // Replaced whole, as `vault-cli models launch` writes it.
    let replace = |text: String| {
        let next = dir.path().join("upstreams.json.new");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &file).unwrap();
    };
    replace(list(&[(&x, "model-x")]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.vault().inference.upstream_states().unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "the new file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ask(&app, &key, "model-x", 4, 2).await;

    let x_state = app.vault().inference.upstream_states().unwrap()[0].clone();
    replace(list(&[(&x, "model-x"), (&y, "model-y")]));
    while app.vault().inference.upstream_states().unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "the changed file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ask(&app, &key, "model-y", 2, 2).await;
    assert_eq!((received(&x).await, received(&y).await), (4, 2));
    let kept = &app.vault().inference.upstream_states().unwrap()[0];
    assert_eq!((kept.url.as_str(), kept.models.as_slice()), (x_state.url.as_str(), x_state.models.as_slice()));

    // Down to y alone: x is out, y kept.
    replace(list(&[(&y, "model-y")]));
    while app.vault().inference.upstream_states().unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "the shrunk file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = app.send("POST", "/v1/chat/completions", Some(&key), Some(&chat("model-x"))).await;
    assert_eq!(refused.status(), 404, "y refuses a model it does not serve");
    ask(&app, &key, "model-y", 2, 2).await;
    assert_eq!(received(&y).await, 5, "two, the refused one, and two more");
}
