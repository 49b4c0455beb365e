//! The JSON shapes of `/vault/system/*`, `/vault/insights` and `/vault/activity`.

use poem_openapi::Object;
use vault_core::{activity, gpu, health, insights, live, logs, services, system};

#[derive(Object)]
pub struct Resources {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    pub disks: Vec<DiskUsage>,
    pub network: Vec<NetworkUsage>,
    #[oai(nullable)]
    pub uptime_seconds: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    #[oai(nullable)]
    pub load_average: Option<Vec<f64>>,
}

#[derive(Object)]
pub struct CpuUsage {
    pub usage_percent: f32,
    pub cores: usize,
    pub per_core_percent: Vec<f32>,
}

#[derive(Object)]
pub struct MemoryUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub usage_percent: f64,
}

#[derive(Object)]
pub struct DiskUsage {
    pub mount_point: String,
    pub file_system: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub usage_percent: f64,
}

#[derive(Object)]
pub struct NetworkUsage {
    pub interface: String,
    pub received_bytes_total: u64,
    pub transmitted_bytes_total: u64,
    pub received_bytes_per_second: f64,
    pub transmitted_bytes_per_second: f64,
}

impl From<system::Resources> for Resources {
    fn from(r: system::Resources) -> Self {
        Resources {
            cpu: CpuUsage {
                usage_percent: r.cpu.usage_percent,
                cores: r.cpu.cores,
                per_core_percent: r.cpu.per_core_percent,
            },
            memory: MemoryUsage {
                total_bytes: r.memory.total_bytes,
                used_bytes: r.memory.used_bytes,
                available_bytes: r.memory.available_bytes,
                usage_percent: r.memory.usage_percent,
            },
            disks: r
                .disks
                .into_iter()
                .map(|d| DiskUsage {
                    mount_point: d.mount_point,
                    file_system: d.file_system,
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                    usage_percent: d.usage_percent,
                })
                .collect(),
            network: r
                .network
                .into_iter()
                .map(|n| NetworkUsage {
                    interface: n.interface,
                    received_bytes_total: n.received_bytes_total,
                    transmitted_bytes_total: n.transmitted_bytes_total,
                    received_bytes_per_second: n.received_bytes_per_second,
                    transmitted_bytes_per_second: n.transmitted_bytes_per_second,
                })
                .collect(),
            uptime_seconds: r.uptime_seconds,
            load_average: r.load_average.map(|l| l.to_vec()),
        }
    }
}

/// Readings of one GPU; a reading the GPU does not offer is null.
#[derive(Object)]
pub struct Gpu {
    pub index: u32,
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub uuid: Option<String>,
    #[oai(nullable)]
    pub pci_bus_id: Option<String>,
    #[oai(nullable)]
    pub memory_total_bytes: Option<u64>,
    #[oai(nullable)]
    pub memory_used_bytes: Option<u64>,
    #[oai(nullable)]
    pub memory_free_bytes: Option<u64>,
    #[oai(nullable)]
    pub utilization_gpu_percent: Option<u32>,
    #[oai(nullable)]
    pub utilization_memory_percent: Option<u32>,
    #[oai(nullable)]
    pub temperature_celsius: Option<u32>,
    #[oai(nullable)]
    pub power_draw_watts: Option<f64>,
    #[oai(nullable)]
    pub power_limit_watts: Option<f64>,
    #[oai(nullable)]
    pub sm_clock_mhz: Option<u32>,
    /// `P0` (fastest) to `P15`.
    #[oai(nullable)]
    pub performance_state: Option<String>,
    #[oai(nullable)]
    pub fan_speed_percent: Option<u32>,
    #[oai(nullable)]
    pub ecc_errors_corrected: Option<u64>,
    #[oai(nullable)]
    pub ecc_errors_uncorrected: Option<u64>,
}

/// All GPUs; `{"gpus": [], "available": false}` on a box without NVML.
#[derive(Object)]
pub struct GpuReport {
    pub gpus: Vec<Gpu>,
    pub available: bool,
}

impl From<gpu::GpuReport> for GpuReport {
    fn from(r: gpu::GpuReport) -> Self {
        GpuReport {
            available: r.available,
            gpus: r
                .gpus
                .into_iter()
                .map(|g| Gpu {
                    index: g.index,
                    name: g.name,
                    uuid: g.uuid,
                    pci_bus_id: g.pci_bus_id,
                    memory_total_bytes: g.memory_total_bytes,
                    memory_used_bytes: g.memory_used_bytes,
                    memory_free_bytes: g.memory_free_bytes,
                    utilization_gpu_percent: g.utilization_gpu_percent,
                    utilization_memory_percent: g.utilization_memory_percent,
                    temperature_celsius: g.temperature_celsius,
                    power_draw_watts: g.power_draw_watts,
                    power_limit_watts: g.power_limit_watts,
                    sm_clock_mhz: g.sm_clock_mhz,
                    performance_state: g.performance_state,
                    fan_speed_percent: g.fan_speed_percent,
                    ecc_errors_corrected: g.ecc_errors_corrected,
                    ecc_errors_uncorrected: g.ecc_errors_uncorrected,
                })
                .collect(),
        }
    }
}

/// Usage over a range. An admin key sees everyone's; a user key sees its own.
#[derive(Object)]
pub struct Insights {
    /// `24h`, `7d`, `30d` or `90d`.
    pub range: String,
    /// `hour` or `day`.
    pub bucket: String,
    pub since: String,
    pub totals: InsightTotals,
    pub series: Vec<InsightPoint>,
    pub models: Vec<ModelUsage>,
}

#[derive(Object)]
pub struct InsightTotals {
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    pub active_users: i64,
    #[oai(nullable)]
    pub avg_latency_ms: Option<f64>,
    /// An estimate from a latency histogram (at most 19% high).
    #[oai(nullable)]
    pub p95_latency_ms: Option<f64>,
}

#[derive(Object)]
pub struct InsightPoint {
    pub bucket: String,
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

#[derive(Object)]
pub struct ModelUsage {
    pub model: String,
    pub requests: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

impl From<insights::ModelUsage> for ModelUsage {
    fn from(m: insights::ModelUsage) -> Self {
        ModelUsage {
            model: m.model,
            requests: m.requests,
            tokens_input: m.tokens_input,
            tokens_output: m.tokens_output,
        }
    }
}

impl From<insights::Insights> for Insights {
    fn from(i: insights::Insights) -> Self {
        let t = i.totals;
        Insights {
            range: i.range,
            bucket: i.bucket,
            since: i.since,
            totals: InsightTotals {
                requests: t.requests,
                errors: t.errors,
                tokens_input: t.tokens_input,
                tokens_output: t.tokens_output,
                active_users: t.active_users,
                avg_latency_ms: t.avg_latency_ms,
                p95_latency_ms: t.p95_latency_ms,
            },
            series: i
                .series
                .into_iter()
                .map(|p| InsightPoint {
                    bucket: p.bucket,
                    requests: p.requests,
                    errors: p.errors,
                    tokens_input: p.tokens_input,
                    tokens_output: p.tokens_output,
                })
                .collect(),
            models: i.models.into_iter().map(ModelUsage::from).collect(),
        }
    }
}

#[derive(Object)]
pub struct ActivityItem {
    pub timestamp: String,
    /// e.g. `key.created`, `user.deactivated`, `training.paused`.
    pub kind: String,
    /// The user id or key prefix that acted.
    #[oai(nullable)]
    pub actor: Option<String>,
    #[oai(nullable)]
    pub subject: Option<String>,
    pub summary: String,
}

#[derive(Object)]
pub struct ActivityFeed {
    pub items: Vec<ActivityItem>,
}

impl From<activity::ActivityItem> for ActivityItem {
    fn from(a: activity::ActivityItem) -> Self {
        ActivityItem { timestamp: a.timestamp, kind: a.kind, actor: a.actor, subject: a.subject, summary: a.summary }
    }
}

#[derive(Object)]
pub struct SystemHealth {
    /// `ok`; `degraded` when a part is not well; `down` when Vault cannot keep its records
    /// (the answer is then a 503).
    pub status: String,
    pub version: String,
    pub checked_at: String,
    pub components: Vec<HealthComponent>,
}

#[derive(Object)]
pub struct HealthComponent {
    /// `database`, `audit`, `inference`, `disk`, `certificate`, `gpu`, or `service:<name>`.
    pub name: String,
    /// `ok`, `degraded`, `down`, or `unknown` (could not be checked).
    pub status: String,
    /// Why it is not `ok`.
    #[oai(nullable)]
    pub reason: Option<String>,
    /// What was seen, for people.
    #[oai(nullable)]
    pub detail: Option<String>,
}

impl From<health::SystemHealth> for SystemHealth {
    fn from(h: health::SystemHealth) -> Self {
        SystemHealth {
            status: h.status.as_str().into(),
            version: h.version.into(),
            checked_at: h.checked_at,
            components: h
                .components
                .into_iter()
                .map(|c| HealthComponent {
                    name: c.name,
                    status: c.status.as_str().into(),
                    reason: c.reason,
                    detail: c.detail,
                })
                .collect(),
        }
    }
}

#[derive(Object)]
pub struct ServiceList {
    pub items: Vec<Service>,
}

#[derive(Object)]
pub struct Service {
    pub name: String,
    /// The systemd unit.
    pub unit: String,
    pub description: String,
    /// systemd's active state (`active`, `inactive`, `failed`, `activating`, …),
    /// `not-found` when the unit is not installed, `unknown` when systemd was not asked.
    pub state: String,
    #[oai(nullable)]
    pub sub_state: Option<String>,
    /// When it entered its current state.
    #[oai(nullable)]
    pub since: Option<String>,
    #[oai(nullable)]
    pub memory_bytes: Option<u64>,
    #[oai(nullable)]
    pub main_pid: Option<u32>,
    /// Why the state is `unknown` or `not-found`.
    #[oai(nullable)]
    pub reason: Option<String>,
}

impl From<services::ServiceStatus> for Service {
    fn from(s: services::ServiceStatus) -> Self {
        Service {
            name: s.name,
            unit: s.unit,
            description: s.description,
            state: s.state,
            sub_state: s.sub_state,
            since: s.since,
            memory_bytes: s.memory_bytes,
            main_pid: s.main_pid,
            reason: s.reason,
        }
    }
}

#[derive(Object)]
pub struct RestartRequested {
    pub service: String,
    pub unit: String,
    /// The command run (in a dry run: that would have been).
    pub command: Vec<String>,
    pub dry_run: bool,
}

impl From<services::RestartRequested> for RestartRequested {
    fn from(r: services::RestartRequested) -> Self {
        RestartRequested { service: r.service, unit: r.unit, command: r.command, dry_run: r.dry_run }
    }
}

#[derive(Object)]
pub struct InferenceStats {
    /// The last 5 and the last 60 minutes (the current minute included).
    pub windows: Vec<InferenceWindow>,
    /// Streamed answers this gateway is sending now.
    pub active_streams: i64,
    /// What vLLM's scheduler reports now on its `/metrics`; null when it serves none.
    #[oai(nullable)]
    pub engine: Option<EngineLoad>,
}

/// vLLM's scheduler: requests generating and waiting for a place in the batch, and how
/// full its KV cache is.
#[derive(Object)]
pub struct EngineLoad {
    pub running: u64,
    pub waiting: u64,
    /// 0 to 1; null when vLLM does not report it.
    #[oai(nullable)]
    pub kv_cache_usage: Option<f64>,
}

#[derive(Object)]
pub struct InferenceWindow {
    pub minutes: u32,
    pub requests: i64,
    pub requests_per_minute: f64,
    pub errors: i64,
    pub error_rate: f64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    /// Output tokens per second.
    pub tokens_per_second: f64,
    pub latency_ms: super::LatencySummary,
    /// Streams only: from a request's arrival to the first bytes of its answer.
    pub ttft_ms: super::LatencySummary,
}

impl From<live::InferenceStats> for InferenceStats {
    fn from(s: live::InferenceStats) -> Self {
        InferenceStats {
            windows: s
                .windows
                .into_iter()
                .map(|w| InferenceWindow {
                    minutes: w.minutes,
                    requests: w.requests,
                    requests_per_minute: w.requests_per_minute,
                    errors: w.errors,
                    error_rate: w.error_rate,
                    tokens_input: w.tokens_input,
                    tokens_output: w.tokens_output,
                    tokens_per_second: w.tokens_per_second,
                    latency_ms: w.latency_ms.into(),
                    ttft_ms: w.ttft_ms.into(),
                })
                .collect(),
            active_streams: s.active_streams,
            engine: s.engine.map(|e| EngineLoad {
                running: e.running,
                waiting: e.waiting,
                kv_cache_usage: e.kv_cache_usage,
            }),
        }
    }
}

#[derive(Object)]
pub struct LogPage {
    /// Newest first.
    pub items: Vec<LogEntry>,
    /// Pass as `cursor` for the next (older) page; null when there is no more. A page may
    /// hold fewer entries than `limit` (even none) while more remain.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Object)]
pub struct LogEntry {
    pub timestamp: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    pub service: String,
    pub message: String,
    /// The entry's other fields (target, request id, path, …).
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

impl From<logs::LogPage> for LogPage {
    fn from(p: logs::LogPage) -> Self {
        LogPage {
            items: p
                .items
                .into_iter()
                .map(|e| LogEntry {
                    timestamp: e.timestamp,
                    level: e.level,
                    service: e.service,
                    message: e.message,
                    fields: e.fields.into_iter().collect(),
                })
                .collect(),
            next_cursor: p.next_cursor,
        }
    }
}
