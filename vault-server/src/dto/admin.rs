//! The JSON shapes of `/vault/admin/*`: users, keys and configuration.

use poem_openapi::Object;
use serde::Deserialize;
use vault_core::{keys, settings, users};

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
    #[oai(nullable)]
    pub role: Option<String>,
}

#[derive(Object, Deserialize)]
pub struct UpdateUser {
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub email: Option<String>,
    #[oai(nullable)]
    pub role: Option<String>,
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
    pub label: String,
    /// `user` (default) or `admin`.
    #[oai(nullable)]
    pub scope: Option<String>,
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
    pub hostname: String,
    /// `dhcp` or `static`.
    pub ip_mode: String,
    /// Required when `ip_mode` is `static`.
    #[oai(nullable)]
    pub ip_address: Option<String>,
    #[oai(nullable)]
    pub prefix_length: Option<u8>,
    #[oai(nullable)]
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
