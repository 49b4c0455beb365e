//! The JSON shapes of the workspace API, as the generated spec documents them, and their
//! conversions from vault-core's types. Validation happens in the core, not here.

use poem_openapi::Object;
use serde::Deserialize;
use vault_core::{activity, conversations, gpu, insights, keys, settings, system, training, users};

/// A page of conversations, most recently updated first.
#[derive(Object)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    /// All of the caller's conversations.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Object)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub model_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
}

#[derive(Object)]
pub struct ConversationWithMessages {
    pub id: String,
    pub title: String,
    pub model_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub message_count: u64,
    pub messages: Vec<Message>,
}

#[derive(Object)]
pub struct Message {
    pub id: String,
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub created_at: String,
}

#[derive(Object, Deserialize)]
pub struct CreateConversation {
    /// Up to 200 characters [default: "New conversation"].
    pub title: Option<String>,
    pub model_id: Option<String>,
}

#[derive(Object, Deserialize)]
pub struct RenameConversation {
    /// Up to 200 characters.
    pub title: String,
}

#[derive(Object, Deserialize)]
pub struct AddMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Up to 200,000 characters.
    pub content: String,
}

impl From<conversations::Conversation> for Conversation {
    fn from(c: conversations::Conversation) -> Self {
        Conversation {
            id: c.id,
            title: c.title,
            model_id: c.model_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            message_count: c.message_count,
        }
    }
}

impl From<conversations::Message> for Message {
    fn from(m: conversations::Message) -> Self {
        Message { id: m.id, role: m.role, content: m.content, created_at: m.created_at }
    }
}

impl From<conversations::ConversationWithMessages> for ConversationWithMessages {
    fn from(full: conversations::ConversationWithMessages) -> Self {
        let c = full.conversation;
        ConversationWithMessages {
            id: c.id,
            title: c.title,
            model_id: c.model_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            message_count: c.message_count,
            messages: full.messages.into_iter().map(Message::from).collect(),
        }
    }
}

impl From<conversations::ConversationPage> for ConversationPage {
    fn from(p: conversations::ConversationPage) -> Self {
        ConversationPage {
            items: p.items.into_iter().map(Conversation::from).collect(),
            total: p.total,
            limit: p.limit,
            offset: p.offset,
        }
    }
}

#[derive(Object)]
pub struct TrainingJob {
    pub id: String,
    pub name: String,
    /// `queued`, `running`, `paused`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub model: String,
    pub dataset: String,
    pub config: serde_json::Value,
    pub metrics: serde_json::Value,
    /// 0.0 to 1.0.
    pub progress: f64,
    pub error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

#[derive(Object)]
pub struct TrainingJobList {
    pub items: Vec<TrainingJob>,
}

#[derive(Object, Deserialize)]
pub struct CreateTrainingJob {
    pub name: String,
    /// The base model.
    pub model: String,
    /// Where the training data is.
    pub dataset: String,
    /// Hyperparameters, as a JSON object (up to 64 KiB).
    pub config: Option<serde_json::Value>,
}

impl From<training::TrainingJob> for TrainingJob {
    fn from(j: training::TrainingJob) -> Self {
        TrainingJob {
            id: j.id,
            name: j.name,
            status: j.status,
            model: j.model,
            dataset: j.dataset,
            config: j.config,
            metrics: j.metrics,
            progress: j.progress,
            error: j.error,
            created_by: j.created_by,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
        }
    }
}

#[derive(Object)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Object)]
pub struct UserList {
    pub items: Vec<User>,
}

#[derive(Object, Deserialize)]
pub struct CreateUser {
    pub name: String,
    pub email: String,
    /// `user` (default) or `admin`.
    pub role: Option<String>,
}

#[derive(Object, Deserialize)]
pub struct UpdateUser {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub is_active: Option<bool>,
}

impl From<users::User> for User {
    fn from(u: users::User) -> Self {
        User {
            id: u.id,
            name: u.name,
            email: u.email,
            role: u.role,
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A key as listed: never the key itself, nor its hash.
#[derive(Object)]
pub struct ApiKey {
    pub id: i64,
    /// `vault_sk_` and the first 4 characters.
    pub prefix: String,
    pub label: String,
    /// `user` or `admin`.
    pub scope: String,
    pub user_id: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Object)]
pub struct ApiKeyList {
    pub items: Vec<ApiKey>,
}

/// A new key. `key` is shown this once and never again.
#[derive(Object)]
pub struct CreatedApiKey {
    pub key: String,
    pub id: i64,
    pub prefix: String,
    pub label: String,
    pub scope: String,
    pub user_id: Option<String>,
    pub created_at: String,
}

#[derive(Object, Deserialize)]
pub struct CreateApiKey {
    /// Who or what the key is for.
    pub label: String,
    /// `user` (default) or `admin`.
    pub scope: Option<String>,
    /// The user the key acts for.
    pub user_id: Option<String>,
}

impl From<keys::ApiKeyInfo> for ApiKey {
    fn from(k: keys::ApiKeyInfo) -> Self {
        ApiKey {
            id: k.id,
            prefix: k.prefix,
            label: k.label,
            scope: k.scope.as_str().into(),
            user_id: k.user_id,
            is_active: k.is_active,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

impl From<keys::CreatedKey> for CreatedApiKey {
    fn from(k: keys::CreatedKey) -> Self {
        CreatedApiKey {
            key: k.key,
            id: k.info.id,
            prefix: k.info.prefix,
            label: k.info.label,
            scope: k.info.scope.as_str().into(),
            user_id: k.info.user_id,
            created_at: k.info.created_at,
        }
    }
}

#[derive(Object, Deserialize)]
pub struct NetworkConfig {
    /// An RFC 1123 host name.
    pub hostname: String,
    /// `dhcp` or `static`.
    pub ip_mode: String,
    /// Required when `ip_mode` is `static`.
    pub ip_address: Option<String>,
    pub prefix_length: Option<u8>,
    pub gateway: Option<String>,
    /// Up to 8 IP addresses.
    pub dns_servers: Vec<String>,
}

#[derive(Object, Deserialize)]
pub struct SystemSettings {
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// A language tag, e.g. `en` or `de-CH`.
    pub language: String,
    /// 1 to 3650.
    pub audit_retention_days: u32,
}

/// The result of a change to the host: the settings now in force, and the host commands
/// run — or, in dry-run mode, recorded but not run.
#[derive(Object)]
pub struct AppliedNetworkConfig {
    pub settings: NetworkConfig,
    pub commands: Vec<Vec<String>>,
    pub dry_run: bool,
}

#[derive(Object)]
pub struct AppliedSystemSettings {
    pub settings: SystemSettings,
    pub commands: Vec<Vec<String>>,
    pub dry_run: bool,
}

impl From<settings::NetworkConfig> for NetworkConfig {
    fn from(n: settings::NetworkConfig) -> Self {
        NetworkConfig {
            hostname: n.hostname,
            ip_mode: n.ip_mode,
            ip_address: n.ip_address,
            prefix_length: n.prefix_length,
            gateway: n.gateway,
            dns_servers: n.dns_servers,
        }
    }
}

impl From<NetworkConfig> for settings::NetworkConfig {
    fn from(n: NetworkConfig) -> Self {
        settings::NetworkConfig {
            hostname: n.hostname,
            ip_mode: n.ip_mode,
            ip_address: n.ip_address,
            prefix_length: n.prefix_length,
            gateway: n.gateway,
            dns_servers: n.dns_servers,
        }
    }
}

impl From<settings::SystemSettings> for SystemSettings {
    fn from(s: settings::SystemSettings) -> Self {
        SystemSettings { timezone: s.timezone, language: s.language, audit_retention_days: s.audit_retention_days }
    }
}

impl From<SystemSettings> for settings::SystemSettings {
    fn from(s: SystemSettings) -> Self {
        settings::SystemSettings {
            timezone: s.timezone,
            language: s.language,
            audit_retention_days: s.audit_retention_days,
        }
    }
}

impl From<settings::Applied<settings::NetworkConfig>> for AppliedNetworkConfig {
    fn from(a: settings::Applied<settings::NetworkConfig>) -> Self {
        AppliedNetworkConfig { settings: a.settings.into(), commands: a.commands, dry_run: a.dry_run }
    }
}

impl From<settings::Applied<settings::SystemSettings>> for AppliedSystemSettings {
    fn from(a: settings::Applied<settings::SystemSettings>) -> Self {
        AppliedSystemSettings { settings: a.settings.into(), commands: a.commands, dry_run: a.dry_run }
    }
}

#[derive(Object)]
pub struct Resources {
    pub cpu: CpuUsage,
    pub memory: MemoryUsage,
    pub disks: Vec<DiskUsage>,
    pub network: Vec<NetworkUsage>,
    pub uptime_seconds: Option<u64>,
    /// 1, 5 and 15 minute load averages.
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
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub pci_bus_id: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub utilization_gpu_percent: Option<u32>,
    pub utilization_memory_percent: Option<u32>,
    pub temperature_celsius: Option<u32>,
    pub power_draw_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    /// `P0` (fastest) to `P15`.
    pub performance_state: Option<String>,
    pub fan_speed_percent: Option<u32>,
    pub ecc_errors_corrected: Option<u64>,
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
    pub avg_latency_ms: Option<f64>,
    /// An estimate from a latency histogram (at most 19% high).
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
            models: i
                .models
                .into_iter()
                .map(|m| ModelUsage {
                    model: m.model,
                    requests: m.requests,
                    tokens_input: m.tokens_input,
                    tokens_output: m.tokens_output,
                })
                .collect(),
        }
    }
}

#[derive(Object)]
pub struct ActivityItem {
    pub timestamp: String,
    /// e.g. `key.created`, `user.deactivated`, `training.paused`.
    pub kind: String,
    /// The user id or key prefix that acted.
    pub actor: Option<String>,
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
