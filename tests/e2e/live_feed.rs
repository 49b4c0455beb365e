//! `GET /ws/system`: a frame every two seconds for a valid key, refused upgrades in the
//! error shape, a socket closed once its key is revoked, one sampler for every socket.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, client};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(app: &TestApp, query: &str) -> String {
    format!("{}/ws/system{query}", app.url.replacen("http://", "ws://", 1))
}

async fn connect(app: &TestApp, key: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(ws_url(app, &format!("?token={key}"))).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// The next message that is not a ping, within `within`.
async fn next_message(socket: &mut Socket, within: Duration) -> Message {
    loop {
        let message = tokio::time::timeout(within, socket.next()).await.expect("a message in time");
        match message.expect("the socket is open").expect("a message") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

async fn next_frame(socket: &mut Socket) -> Value {
    match next_message(socket, Duration::from_secs(5)).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("not a frame: {other:?}"),
    }
}

/// Opens `request`, expecting the upgrade to be refused; the refusal's status and body.
async fn refused(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Err(Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        other => panic!("the upgrade was not refused: {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test]
async fn frames_come_every_two_seconds_with_the_documented_fields() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let mut socket = connect(&app, &key).await;
    let mut arrivals = Vec::new();
    for _ in 0..3 {
        let frame = next_frame(&mut socket).await;
        arrivals.push(Instant::now());
        assert_eq!(frame["type"], "system");
        assert!(frame["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(frame["cpu"]["usage_percent"].is_number() && frame["cpu"]["cores"].as_u64().unwrap() > 0);
        assert!(frame["memory"]["total_bytes"].as_u64().unwrap() > 0);
        assert!(frame["gpu_available"].is_boolean() && frame["gpus"].is_array());
        for field in ["requests_per_minute", "tokens_per_second", "active_streams"] {
            assert!(frame["inference"][field].is_number(), "{field}: {frame}");
        }
    }
    for gap in arrivals.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap > Duration::from_millis(1500) && gap < Duration::from_millis(2600), "{gap:?}");
    }
    // The upgrade is on the audit trail, without the token.
    let row = app.audit_rows("/ws/system").await;
    assert_eq!(row.len(), 1);
    assert_eq!((row[0].status, row[0].key_prefix.as_deref()), (101, Some(&key[..13])));
}

#[tokio::test]
async fn missing_keys_bad_keys_and_foreign_origins_are_refused_in_the_error_shape() {
    let app = TestApp::spawn_with(
        vault_e2e::Upstream::Fake(vault_e2e::FakeOptions::default()),
        &[("VAULT_CORS_ORIGINS", "https://dash.clinic.example")],
    )
    .await;
    let key = app.create_key(Scope::User).await;
    for query in ["", "?token=vault_sk_nope"] {
        let (status, body) = refused(ws_url(&app, query).into_client_request().unwrap()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")), "{query}");
    }
    let mut foreign = ws_url(&app, &format!("?token={key}")).into_client_request().unwrap();
    foreign.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let (status, body) = refused(foreign).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("origin_not_allowed")));

    // A listed origin, and the key in `Authorization` instead of the query.
    let mut listed = ws_url(&app, "").into_client_request().unwrap();
    listed.headers_mut().insert("origin", "https://dash.clinic.example".parse().unwrap());
    listed.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(listed).await.unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "system");

    // Not an upgrade at all.
    let plain = client().get(format!("{}/ws/system?token={key}", app.url)).send().await.unwrap();
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn a_revoked_key_closes_its_socket_within_one_interval() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let created: Value = app
        .send("POST", "/vault/admin/keys", Some(&admin), Some(&serde_json::json!({"label": "wall screen"})))
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    let mut socket = connect(&app, key).await;
    next_frame(&mut socket).await;
    let revoked = app.send("DELETE", &format!("/vault/admin/keys/{}", created["id"]), Some(&admin), None).await;
    assert_eq!(revoked.status(), 200);
    let revoked_at = Instant::now();
    let closing = loop {
        match next_message(&mut socket, Duration::from_secs(3)).await {
            Message::Text(_) => continue,
            other => break other,
        }
    };
    match closing {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("not a close frame: {other:?}"),
    }
    assert!(revoked_at.elapsed() < Duration::from_millis(2600), "closed after {:?}", revoked_at.elapsed());
}

#[tokio::test]
async fn many_sockets_share_one_sampler() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let mut sockets = Vec::new();
    for _ in 0..25 {
        sockets.push(connect(&app, &key).await);
    }
    for socket in &mut sockets {
        next_frame(socket).await;
    }
    for socket in &mut sockets {
        next_frame(socket).await;
    }
    let taken = app.vault().feed.samples_taken();
    assert!((2..=4).contains(&taken), "{taken} samples for 25 sockets");
    // With every socket gone, the sampler stops (at its next tick).
    assert!(app.vault().feed.is_sampling());
    drop(sockets);
    let gone = Instant::now();
    while app.vault().feed.is_sampling() {
        assert!(gone.elapsed() < Duration::from_secs(5), "still sampling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And a new socket starts it again.
    let mut again = connect(&app, &key).await;
    next_frame(&mut again).await;
    assert!(app.vault().feed.is_sampling());
}
