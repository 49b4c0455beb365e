//! Gateway overhead benchmark: the same load sent straight to fake-vllm and through
//! vault-server (auth and audit on), in one run, with the ratio printed.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p vault-e2e --bench gateway`
//! Knobs: BENCH_CONCURRENCY (default 64), BENCH_REQUESTS per side (default 20000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_e2e::{FakeVllm, Gateway};

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Sends `total` copies of `body` to `url` from `concurrency` workers over kept-alive connections.
async fn drive(url: &str, key: Option<&str>, body: &'static str, concurrency: usize, total: usize) -> Run {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let per_worker = total / concurrency;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let url = url.to_string();
            let key = key.map(str::to_string);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                let mut failures = 0;
                for _ in 0..per_worker {
                    let mut request = client.post(&url).header("content-type", "application/json").body(body);
                    if let Some(key) = &key {
                        request = request.bearer_auth(key);
                    }
                    let sent = Instant::now();
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run { latencies, elapsed, failures }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let total = env_usize("BENCH_REQUESTS", 20_000);
    let fake = FakeVllm::start().await;
    let gateway = Arc::new(Gateway::start_with(&fake.url, &[("VAULT_LOG_LEVEL", "warn,vault_server=info")]).await);
    let key = gateway.create_key("user").await;
    let body = r#"{"model":"qwen2.5-32b-awq","messages":[{"role":"user","content":"Hello there"}],"max_tokens":8}"#;
    let direct_url = format!("{}/v1/chat/completions", fake.url);
    let gateway_url = format!("{}/v1/chat/completions", gateway.url);

    // Warm both paths (connections, caches) before measuring.
    drive(&direct_url, None, body, concurrency, concurrency * 20).await;
    drive(&gateway_url, Some(&key), body, concurrency, concurrency * 20).await;

    let direct = drive(&direct_url, None, body, concurrency, total).await;
    let through = drive(&gateway_url, Some(&key), body, concurrency, total).await;

    println!("non-stream chat completions, {concurrency} concurrent connections, {total} requests each");
    println!("{:<22} {:>10} {:>10} {:>10} {:>9}", "", "req/s", "p50 ms", "p99 ms", "failures");
    for (name, run) in [("fake-vllm directly", &direct), ("through vault-server", &through)] {
        println!(
            "{name:<22} {:>10.0} {:>10.3} {:>10.3} {:>9}",
            run.rps(),
            ms(run.percentile(0.50)),
            ms(run.percentile(0.99)),
            run.failures
        );
    }
    println!(
        "ratio (gateway/direct): throughput {:.2}x, p50 {:.2}x; added p50 {:.3} ms, added p99 {:.3} ms",
        through.rps() / direct.rps(),
        ms(through.percentile(0.50)) / ms(direct.percentile(0.50)),
        ms(through.percentile(0.50)) - ms(direct.percentile(0.50)),
        ms(through.percentile(0.99)) - ms(direct.percentile(0.99)),
    );
    let rows = gateway.audit_count().await;
    println!("audit rows written: {rows}");
}
