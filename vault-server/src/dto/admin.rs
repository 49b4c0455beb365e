//! The JSON shapes of `/vault/admin/*`: users, keys and configuration.

use poem_openapi::Object;
use serde::Deserialize;
use vault_core::{audit, keys, settings, users};

use crate::declared::{IpModes, OneOf, Roles, Scopes};

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
    #[oai(validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub name: String,
    #[oai(validator(max_length = 254, pattern = "^[^@\\s]+@[^.\\s][^\\s]*$"))]
    pub email: String,
    /// [default: `user`]
    #[oai(nullable)]
    pub role: Option<OneOf<Roles>>,
}

#[derive(Object, Deserialize)]
pub struct UpdateUser {
    #[oai(nullable, validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub name: Option<String>,
    #[oai(nullable, validator(max_length = 254, pattern = "^[^@\\s]+@[^.\\s][^\\s]*$"))]
    pub email: Option<String>,
    #[oai(nullable)]
    pub role: Option<OneOf<Roles>>,
    #[oai(nullable)]
    pub is_active: Option<bool>,
}

impl From<users::User> for User {
    fn from(u: users::User) -> Self {
        User {
            id: u.id,
            name: u.name,
            email: u.email,
            role: u.role.as_str().into(),
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
    #[oai(nullable)]
    pub user_id: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    #[oai(nullable)]
    pub last_used_at: Option<String>,
    #[oai(nullable)]
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
    #[oai(nullable)]
    pub user_id: Option<String>,
    pub created_at: String,
}

#[derive(Object, Deserialize)]
pub struct CreateApiKey {
    /// Who or what the key is for.
    #[oai(validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub label: String,
    /// [default: `user`]
    #[oai(nullable)]
    pub scope: Option<OneOf<Scopes>>,
    /// The user the key acts for.
    #[oai(nullable)]
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
    #[oai(validator(
        max_length = 253,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    ))]
    pub hostname: String,
    pub ip_mode: OneOf<IpModes>,
    /// Required when `ip_mode` is `static`.
    #[oai(nullable)]
    pub ip_address: Option<String>,
    /// Required when `ip_mode` is `static`: up to 32 for IPv4, 128 for IPv6.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "128")))]
    pub prefix_length: Option<u8>,
    #[oai(nullable)]
    pub gateway: Option<String>,
    /// IP addresses.
    #[oai(validator(max_items = 8))]
    pub dns_servers: Vec<String>,
}

#[derive(Object, Deserialize)]
pub struct SystemSettings {
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub timezone: String,
    /// A language tag, e.g. `en` or `de-CH`.
    #[oai(validator(pattern = "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"))]
    pub language: String,
    #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
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
            ip_mode: n.ip_mode.into(),
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
            ip_mode: n.ip_mode.into(),
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

/// The installed certificate, if any.
#[derive(Object)]
pub struct TlsStatus {
    /// Whether a certificate is installed.
    pub installed: bool,
    #[oai(nullable)]
    pub certificate: Option<super::CertificateInfo>,
}

impl From<Option<vault_core::tls::CertificateInfo>> for TlsStatus {
    fn from(info: Option<vault_core::tls::CertificateInfo>) -> Self {
        TlsStatus { installed: info.is_some(), certificate: info.map(Into::into) }
    }
}

#[derive(Object)]
pub struct InferenceSettings {
    pub vllm_base_url: String,
    /// The model chosen in the setup wizard.
    #[oai(nullable)]
    pub default_model: Option<String>,
    pub upstream_timeout_seconds: f64,
    pub stream_idle_timeout_seconds: f64,
    pub max_upstream_body_mb: u64,
}

/// The whole configuration: never a secret.
#[derive(Object)]
pub struct ConfigOverview {
    pub network: NetworkConfig,
    pub system: SystemSettings,
    pub tls: TlsStatus,
    pub inference: InferenceSettings,
    /// The setup wizard: `pending`, `in_progress` or `complete`.
    pub setup: String,
}

impl From<settings::Overview> for ConfigOverview {
    fn from(o: settings::Overview) -> Self {
        let i = o.inference;
        ConfigOverview {
            network: o.network.into(),
            system: o.system.into(),
            tls: o.tls.into(),
            inference: InferenceSettings {
                vllm_base_url: i.vllm_base_url,
                default_model: i.default_model,
                upstream_timeout_seconds: i.upstream_timeout_seconds,
                stream_idle_timeout_seconds: i.stream_idle_timeout_seconds,
                max_upstream_body_mb: i.max_upstream_body_mb,
            },
            setup: o.setup,
        }
    }
}

/// Changes to the network settings; absent fields stay as they are.
#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct NetworkPatch {
    #[oai(nullable, validator(max_length = 253))]
    pub hostname: Option<String>,
    #[oai(nullable)]
    pub ip_mode: Option<OneOf<IpModes>>,
    #[oai(nullable)]
    pub ip_address: Option<String>,
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "128")))]
    pub prefix_length: Option<u8>,
    #[oai(nullable)]
    pub gateway: Option<String>,
    #[oai(nullable, validator(max_items = 8))]
    pub dns_servers: Option<Vec<String>>,
}

/// Changes to the system settings; absent fields stay as they are.
#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SystemPatch {
    #[oai(nullable)]
    pub timezone: Option<String>,
    #[oai(nullable)]
    pub language: Option<String>,
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "3650")))]
    pub audit_retention_days: Option<u32>,
}

#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct InferencePatch {
    /// An `id` from the model manifest.
    #[oai(nullable)]
    pub default_model: Option<String>,
}

/// A partial change: only the sections and fields given change.
#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    #[oai(nullable)]
    pub network: Option<NetworkPatch>,
    #[oai(nullable)]
    pub system: Option<SystemPatch>,
    #[oai(nullable)]
    pub inference: Option<InferencePatch>,
}

impl From<ConfigUpdate> for settings::ConfigPatch {
    fn from(u: ConfigUpdate) -> Self {
        settings::ConfigPatch {
            network: u.network.map(|n| settings::NetworkPatch {
                hostname: n.hostname,
                ip_mode: n.ip_mode.map(Into::into),
                ip_address: n.ip_address,
                prefix_length: n.prefix_length,
                gateway: n.gateway,
                dns_servers: n.dns_servers,
            }),
            system: u.system.map(|s| settings::SystemPatch {
                timezone: s.timezone,
                language: s.language,
                audit_retention_days: s.audit_retention_days,
            }),
            default_model: u.inference.and_then(|i| i.default_model),
        }
    }
}

/// What a configuration change did.
#[derive(Object)]
pub struct ConfigChanged {
    pub config: ConfigOverview,
    /// The fields whose value changed, as `section.field`.
    pub changed: Vec<String>,
    /// Changes that take effect only after a restart (none of these settings needs one).
    pub restart_required: Vec<String>,
    /// What to know, such as a certificate that no longer covers the host name.
    pub warnings: Vec<String>,
    /// The host commands run (or, in dry-run mode, that would have been run).
    pub commands: Vec<Vec<String>>,
    pub dry_run: bool,
}

impl From<settings::ConfigChanged> for ConfigChanged {
    fn from(c: settings::ConfigChanged) -> Self {
        ConfigChanged {
            config: c.config.into(),
            changed: c.changed,
            restart_required: c.restart_required,
            warnings: c.warnings,
            commands: c.commands,
            dry_run: c.dry_run,
        }
    }
}

/// One audit row: one request (or, with `repeat_count` > 1, a flood of refused ones).
#[derive(Object)]
pub struct AuditEntry {
    pub id: i64,
    pub timestamp: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    #[oai(nullable)]
    pub key_prefix: Option<String>,
    #[oai(nullable)]
    pub user_id: Option<String>,
    #[oai(nullable)]
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    #[oai(nullable)]
    pub tokens_input: Option<u64>,
    #[oai(nullable)]
    pub tokens_output: Option<u64>,
    /// Whether the answer was delivered whole.
    pub completed: bool,
    #[oai(nullable)]
    pub error_code: Option<String>,
    pub repeat_count: u32,
    /// Milliseconds the request waited its turn while the engine was full (`null`: it did
    /// not wait).
    #[oai(nullable)]
    pub queued_ms: Option<u64>,
}

impl From<vault_core::audit::AuditEntry> for AuditEntry {
    fn from(e: vault_core::audit::AuditEntry) -> Self {
        AuditEntry {
            id: e.id,
            timestamp: e.timestamp,
            request_id: e.request_id,
            method: e.method,
            path: e.path,
            key_prefix: e.key_prefix,
            user_id: e.user_id,
            model: e.model,
            status: e.status,
            latency_ms: e.latency_ms,
            tokens_input: e.tokens_input,
            tokens_output: e.tokens_output,
            completed: e.completed,
            error_code: e.error_code,
            repeat_count: e.repeat_count,
            queued_ms: e.queued_ms,
        }
    }
}

#[derive(Object)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// Inference requests (`/v1/*`) of a period of whole hours.
#[derive(Object)]
pub struct AuditStats {
    /// Start of the first hour covered.
    pub from: String,
    /// End of the last hour covered (exclusive).
    pub to: String,
    pub totals: AuditStatsTotals,
    pub latency_ms: LatencySummary,
    /// Busiest first.
    pub accounts: Vec<AccountUsage>,
    /// Busiest first.
    pub models: Vec<super::ModelUsage>,
    /// Failed requests by status and error code, commonest first.
    pub errors: Vec<ErrorCount>,
}

#[derive(Object)]
pub struct AuditStatsTotals {
    pub requests: i64,
    pub errors: i64,
    /// `errors / requests`; 0 when there were none.
    pub error_rate: f64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

/// Milliseconds; percentiles are estimates from a histogram (at most 19% high). Null when
/// there was nothing to measure.
#[derive(Object)]
pub struct LatencySummary {
    #[oai(nullable)]
    pub avg: Option<f64>,
    #[oai(nullable)]
    pub p50: Option<f64>,
    #[oai(nullable)]
    pub p95: Option<f64>,
    #[oai(nullable)]
    pub p99: Option<f64>,
}

impl From<audit::stats::LatencySummary> for LatencySummary {
    fn from(l: audit::stats::LatencySummary) -> Self {
        LatencySummary { avg: l.avg, p50: l.p50, p95: l.p95, p99: l.p99 }
    }
}

#[derive(Object)]
pub struct AccountUsage {
    /// A user's id, or `key:<id>` for a key that belongs to no user.
    pub account: String,
    /// The user's name, when the account is a user.
    #[oai(nullable)]
    pub name: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
}

#[derive(Object)]
pub struct ErrorCount {
    pub status: u16,
    #[oai(nullable)]
    pub code: Option<String>,
    pub requests: i64,
    /// Share of all requests in the period.
    pub rate: f64,
}

impl From<audit::AuditStats> for AuditStats {
    fn from(s: audit::AuditStats) -> Self {
        let (t, l) = (s.totals, s.latency_ms);
        AuditStats {
            from: s.from,
            to: s.to,
            totals: AuditStatsTotals {
                requests: t.requests,
                errors: t.errors,
                error_rate: t.error_rate,
                tokens_input: t.tokens_input,
                tokens_output: t.tokens_output,
            },
            latency_ms: l.into(),
            accounts: s
                .accounts
                .into_iter()
                .map(|a| AccountUsage {
                    account: a.account,
                    name: a.name,
                    requests: a.requests,
                    errors: a.errors,
                    tokens_input: a.tokens_input,
                    tokens_output: a.tokens_output,
                })
                .collect(),
            models: s.models.into_iter().map(Into::into).collect(),
            errors: s
                .errors
                .into_iter()
                .map(|e| ErrorCount { status: e.status, code: e.code, requests: e.requests, rate: e.rate })
                .collect(),
        }
    }
}

/// Rate limits of a key or a user; `null`: none (a key then has the configured default).
/// Over a limit, inference requests answer 429 `rate_limited` with `Retry-After`. The weight
/// is a share, not a limit: while the engine is full, requests wait in one queue per user
/// (a key without a user has its own) taking turns, and a weight of 3 takes three turns to
/// everyone else's one.
#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub rpm: Option<u64>,
    /// Tokens per minute, prompt and completion.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub tpm: Option<u64>,
    /// Requests under way at once.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "100000")))]
    pub concurrency: Option<u64>,
    /// Turns taken in the queue while the engine is full (`null`: 1). A user's weight
    /// applies to all of their keys; a key's, only when the key has no user.
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "100")))]
    #[serde(default)]
    pub weight: Option<u64>,
}

impl From<vault_core::limits::LimitSet> for RateLimits {
    fn from(l: vault_core::limits::LimitSet) -> Self {
        RateLimits { rpm: l.rpm, tpm: l.tpm, concurrency: l.concurrency, weight: l.weight }
    }
}

impl From<RateLimits> for vault_core::limits::LimitSet {
    fn from(l: RateLimits) -> Self {
        vault_core::limits::LimitSet { rpm: l.rpm, tpm: l.tpm, concurrency: l.concurrency, weight: l.weight }
    }
}

#[derive(Object)]
pub struct KeyLimits {
    pub key_id: i64,
    /// The key's own limits.
    pub limits: RateLimits,
    /// What its requests are held to: its own limits, else the configured defaults (its
    /// user's limits apply too, the stricter first).
    pub effective: RateLimits,
}

impl From<vault_core::limits::KeyLimits> for KeyLimits {
    fn from(k: vault_core::limits::KeyLimits) -> Self {
        KeyLimits { key_id: k.key_id, limits: k.limits.into(), effective: k.effective.into() }
    }
}

#[derive(Object)]
pub struct UserLimits {
    pub user_id: String,
    /// Shared by all of the user's keys.
    pub limits: RateLimits,
}

impl From<vault_core::limits::UserLimits> for UserLimits {
    fn from(u: vault_core::limits::UserLimits) -> Self {
        UserLimits { user_id: u.user_id, limits: u.limits.into() }
    }
}

/// What a check of the audit log's hash chain found.
#[derive(Object)]
pub struct AuditVerification {
    /// Whether every row and signed checkpoint fits the chain.
    pub intact: bool,
    pub rows_checked: u64,
    pub checkpoints_checked: u64,
    /// The first row that does not fit.
    #[oai(nullable)]
    pub problem: Option<AuditProblem>,
}

#[derive(Object)]
pub struct AuditProblem {
    pub row_id: i64,
    /// `altered`, `deleted`, `inserted` or `checkpoint` (one not signed by this box).
    pub kind: String,
    pub message: String,
}

impl From<audit::chain::Verification> for AuditVerification {
    fn from(v: audit::chain::Verification) -> Self {
        AuditVerification {
            intact: v.intact,
            rows_checked: v.rows_checked,
            checkpoints_checked: v.checkpoints_checked,
            problem: v.problem.map(|p| AuditProblem { row_id: p.row_id, kind: p.kind.into(), message: p.message }),
        }
    }
}
