//! How requests use the runtime's worker threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use vault_core::keys::Scope;
use vault_e2e::{FakeOptions, TestApp, Upstream, chat_body};

/// Sends `count` chat requests one after the other on one kept-alive connection, from a
/// plain thread, and checks each answer is a 200.
fn chat_requests(address: &str, key: &str, count: usize) {
    let body = chat_body(false).to_string();
    let stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for _ in 0..count {
        write!(
            writer,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        reader.read_exact(&mut vec![0; length]).unwrap();
    }
}

/// hyper hands a request's body to the handler through a channel, and the handler, run in
/// the connection's task, wakes that same task when it takes the body. Left to the runtime,
/// that wake-up queues the task again and unparks a second worker for every request; the
/// gateway polls the connection again at once instead, so a request is served by the worker
/// that read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_does_not_wake_a_second_worker() {
    // The upstream runs on a runtime of its own, so that only the gateway uses these workers.
    let (upstream_url, upstream_url_rx) = std::sync::mpsc::channel();
    let (stop_upstream, upstream_stopped) = tokio::sync::oneshot::channel::<()>();
    let upstream = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let fake = fake_vllm::start(([127, 0, 0, 1], 0).into(), FakeOptions::default()).await.unwrap();
            upstream_url.send(fake.base_url()).unwrap();
            let _ = upstream_stopped.await;
            fake.stop().await;
        });
    });
    let app = TestApp::spawn_with(Upstream::Url(upstream_url_rx.recv().unwrap()), &[]).await;
    let key = app.create_key(Scope::User).await;
    let address = app.url.trim_start_matches("http://").to_string();
    let metrics = tokio::runtime::Handle::current().metrics();
    let parks = move || (0..metrics.num_workers()).map(|worker| metrics.worker_park_count(worker)).sum::<u64>();

    // The first requests open the connections to the upstream.
    let (warm_address, warm_key) = (address.clone(), key.clone());
    tokio::task::spawn_blocking(move || chat_requests(&warm_address, &warm_key, 20)).await.unwrap();
    const REQUESTS: u64 = 200;
    let before = parks();
    tokio::task::spawn_blocking(move || chat_requests(&address, &key, REQUESTS as usize)).await.unwrap();
    let per_request = (parks() - before) as f64 / REQUESTS as f64;

    // A worker parks once waiting for the request and once for the upstream's answer: about
    // 2.2 times a request in all. A second worker woken for each request parks again too
    // (3.8). The gateway's timers park the workers about twice a second when idle: a
    // slowdown to seconds for the 200 requests would still leave the margin.
    assert!(per_request < 3.0, "{per_request:.2} parks of the workers per request");
    drop(app);
    let _ = stop_upstream.send(());
    upstream.join().unwrap();
}
