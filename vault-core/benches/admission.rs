//! The CPU cost of admission on each inference request: the rate limiter (a key and its user
//! with every limit set, none reached, and the answer's `x-ratelimit-*` headers) and fair admission (active, with the engine reading
//! room), with 64 requests under way at once on one thread as the gateway serves the
//! benchmark's c=64 — against, in the same run, the same loop with neither.
//!
//! Run: `cargo bench -p vault-core --bench admission` (BENCH_REQUESTS to change the count, at most a million: the limit of requests per minute).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_core::inference::EngineLoad;
use vault_core::inference::admission::{Admission, AdmissionConfig};
use vault_core::limits::{LimitSet, Limiter, Limits};
use vault_core::model::keys::Principal;

const UNDER_WAY: usize = 64;

/// Serves `requests` requests, 64 at a time, each passing the limiter and the gate when
/// given; returns the time taken (one thread: its CPU time).
async fn serve(requests: usize, limiter: Option<Arc<Limiter>>, gate: Option<Arc<Admission>>) -> Duration {
    let mut who = Principal::for_user("bench");
    let generous =
        LimitSet { rpm: Some(1_000_000), tpm: Some(1_000_000_000), concurrency: Some(100_000), weight: None };
    who.limits = Limits { key: generous, user: generous };
    let who = Arc::new(who);
    let started = Instant::now();
    let tasks: Vec<_> = (0..UNDER_WAY)
        .map(|_| {
            let (limiter, gate, who) = (limiter.clone(), gate.clone(), who.clone());
            tokio::spawn(async move {
                for _ in 0..requests / UNDER_WAY {
                    let mut permit = limiter.as_ref().map(|l| l.admit(&who, 300).unwrap());
                    // The answer's own headers, as every variant has them, and with limits its
                    // `x-ratelimit-*` headers, as the gateway adds them.
                    let mut headers = http::HeaderMap::new();
                    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    headers
                        .insert("x-request-id", http::HeaderValue::from_static("0193b5e0-7a1c-7d2e-9f00-4c1d2e3f4a5b"));
                    if let Some(status) = permit.as_ref().and_then(|p| p.status()) {
                        status.add_headers(&mut headers);
                    }
                    std::hint::black_box(headers);
                    let entry = match &gate {
                        Some(gate) => Some(gate.enter(&who).await.unwrap()),
                        None => None,
                    };
                    // The upstream's turn: the other requests run meanwhile.
                    tokio::task::yield_now().await;
                    drop(entry);
                    if let Some(permit) = permit.as_mut() {
                        permit.settle(Some(280));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// The gate as the poller leaves it while 64 requests are under way and the engine keeps up
/// (nobody waits in it): room for twice as many.
async fn fair_gate() -> Arc<Admission> {
    let config = AdmissionConfig { threshold: 8, max_wait: Duration::from_secs(60) };
    let gate = Admission::new(Some(config), tokio_util::sync::CancellationToken::new());
    let who = Principal::for_user("bench");
    let mut under_way = Vec::new();
    for _ in 0..UNDER_WAY {
        under_way.push(gate.enter(&who).await.unwrap());
    }
    gate.on_reading(EngineLoad { running: UNDER_WAY as u64, waiting: 0, kv_cache_usage: None });
    assert_eq!(gate.snapshot().limit, Some(2 * UNDER_WAY as u64));
    gate
}

fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(960_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let per_request = |d: Duration| d.as_secs_f64() * 1e9 / requests as f64;
    println!("{requests} requests, {UNDER_WAY} under way at once, one thread; ns of CPU per request (best of 5)");
    let mut best = [f64::MAX; 4];
    for _ in 0..5 {
        let runs = [
            runtime.block_on(serve(requests, None, None)),
            runtime.block_on(serve(requests, Some(Limiter::new(LimitSet::default())), None)),
            runtime.block_on(async { serve(requests, None, Some(fair_gate().await)).await }),
            runtime.block_on(async {
                serve(requests, Some(Limiter::new(LimitSet::default())), Some(fair_gate().await)).await
            }),
        ];
        for (slot, run) in best.iter_mut().zip(runs) {
            *slot = slot.min(per_request(run));
        }
    }
    let [bare, limits, admission, both] = best;
    println!("{:<32} {:>8.0} ns", "neither (the baseline)", bare);
    println!("{:<32} {:>8.0} ns  (+{:.0})", "rate limits", limits, limits - bare);
    println!("{:<32} {:>8.0} ns  (+{:.0})", "fair admission", admission, admission - bare);
    println!("{:<32} {:>8.0} ns  (+{:.0}; goal: +2000)", "both", both, both - bare);
}
