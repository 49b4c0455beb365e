//! The live metrics feed behind `/ws/system`: a frame every [`INTERVAL`] with CPU, memory,
//! each GPU, inference throughput and active streams.
//!
//! One sampler serves every subscriber: it starts with the first and stops when the last
//! has gone, so a hundred dashboards cost the same sampling as one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::app::Vault;

/// How often a frame is taken.
pub const INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Frame {
    /// Always `system`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub cpu: CpuFrame,
    pub memory: MemoryFrame,
    /// Whether NVML found GPUs; `gpus` is empty when not.
    pub gpu_available: bool,
    pub gpus: Vec<GpuFrame>,
    pub inference: InferenceFrame,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuFrame {
    pub usage_percent: f32,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryFrame {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub usage_percent: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuFrame {
    pub index: u32,
    pub name: Option<String>,
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
}

/// Over the last five minutes, except `active_streams` (now, on this gateway).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InferenceFrame {
    pub requests_per_minute: f64,
    pub tokens_per_second: f64,
    pub active_streams: i64,
}

pub type Frames = watch::Receiver<Option<Arc<Frame>>>;

/// The shared sampler and its subscribers.
pub struct Feed {
    frames: watch::Sender<Option<Arc<Frame>>>,
    /// Whether the sampler runs; held while it starts or decides to stop, so a subscriber
    /// arriving then is never left without one.
    running: Mutex<bool>,
    samples: AtomicU64,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { frames: watch::Sender::new(None), running: Mutex::new(false), samples: AtomicU64::new(0) }
    }
}

impl Feed {
    /// Frames from now on (the next one comes within an interval), sampled for `vault`.
    pub fn subscribe(&self, vault: &Arc<Vault>) -> Frames {
        let Ok(mut running) = self.running.lock() else {
            return self.frames.subscribe();
        };
        let frames = self.frames.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(sample(Arc::downgrade(vault)));
        }
        frames
    }

    /// Frames taken so far, by every sampler this feed had.
    pub fn samples_taken(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Whether a sampler runs now.
    pub fn is_sampling(&self) -> bool {
        self.running.lock().map(|r| *r).unwrap_or(false)
    }

    /// Whether the sampler should go on; when not, it is marked stopped.
    fn keep_sampling(&self) -> bool {
        let Ok(mut running) = self.running.lock() else { return false };
        if self.frames.receiver_count() == 0 {
            *running = false;
        }
        *running
    }
}

/// Marks the sampler stopped however its task ends (a panic, the runtime shutting down), so
/// the next subscriber starts another.
struct Stopped(Weak<Vault>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(vault) = self.0.upgrade()
            && let Ok(mut running) = vault.feed.running.lock()
        {
            *running = false;
        }
    }
}

async fn sample(vault: Weak<Vault>) {
    let _stopped = Stopped(vault.clone());
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(vault) = vault.upgrade() else { return };
        if !vault.feed.keep_sampling() {
            return;
        }
        let frame = take_frame(&vault).await;
        vault.feed.samples.fetch_add(1, Ordering::Relaxed);
        vault.feed.frames.send_replace(Some(Arc::new(frame)));
    }
}

async fn take_frame(vault: &Vault) -> Frame {
    let resources = vault.monitor.resources().await.ok();
    let gpus = tokio::task::spawn_blocking(crate::gpu::report).await.ok();
    let active_streams = vault.audit.metrics().active_streams();
    let five_minutes = crate::live::inference_stats(&vault.db, active_streams)
        .await
        .ok()
        .and_then(|stats| stats.windows.into_iter().next());
    Frame {
        kind: "system",
        timestamp: crate::time::now_rfc3339(),
        cpu: CpuFrame {
            usage_percent: resources.as_ref().map_or(0.0, |r| r.cpu.usage_percent),
            cores: resources.as_ref().map_or(0, |r| r.cpu.cores),
        },
        memory: MemoryFrame {
            total_bytes: resources.as_ref().map_or(0, |r| r.memory.total_bytes),
            used_bytes: resources.as_ref().map_or(0, |r| r.memory.used_bytes),
            usage_percent: resources.as_ref().map_or(0.0, |r| r.memory.usage_percent),
        },
        gpu_available: gpus.as_ref().is_some_and(|g| g.available),
        gpus: gpus
            .into_iter()
            .flat_map(|g| g.gpus)
            .map(|g| GpuFrame {
                index: g.index,
                name: g.name,
                utilization_percent: g.utilization_gpu_percent,
                memory_used_bytes: g.memory_used_bytes,
                memory_total_bytes: g.memory_total_bytes,
                temperature_celsius: g.temperature_celsius,
            })
            .collect(),
        inference: InferenceFrame {
            requests_per_minute: five_minutes.as_ref().map_or(0.0, |w| w.requests_per_minute),
            tokens_per_second: five_minutes.as_ref().map_or(0.0, |w| w.tokens_per_second),
            active_streams,
        },
    }
}
