//! Network configuration and system settings: validated, stored in `system_config`, and
//! applied to the host through the `SystemController`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::activity;
use crate::controller::{HostChange, SystemController};
use crate::error::{Result, VaultError};
use crate::storage::{self, Db};
use crate::validate;

/// How the box gets its address.
pub const IP_MODES: &[&str] = &["dhcp", "static"];

const NETWORK_KEY: &str = "network";
const SYSTEM_KEY: &str = "system";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkConfig {
    pub hostname: String,
    /// `dhcp` or `static`.
    pub ip_mode: String,
    pub ip_address: Option<String>,
    pub prefix_length: Option<u8>,
    pub gateway: Option<String>,
    pub dns_servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SystemSettings {
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// A language tag, e.g. `en` or `de-CH`.
    pub language: String,
    /// How long audit rows are kept.
    pub audit_retention_days: u32,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            hostname: "vault".into(),
            ip_mode: "dhcp".into(),
            ip_address: None,
            prefix_length: None,
            gateway: None,
            dns_servers: Vec::new(),
        }
    }
}

impl Default for SystemSettings {
    fn default() -> Self {
        SystemSettings { timezone: "UTC".into(), language: "en".into(), audit_retention_days: 365 }
    }
}

fn invalid(message: String) -> VaultError {
    VaultError::invalid_field(message)
}

/// RFC 1123: labels of 1–63 letters, digits and hyphens, not starting or ending with a
/// hyphen; 253 characters in all.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An IANA zone name that exists in the system's zone database (when it has one).
pub fn is_valid_timezone(zone: &str) -> bool {
    let shaped = !zone.is_empty()
        && zone.len() <= 64
        && !zone.starts_with('/')
        && zone.split('/').all(|part| {
            !part.is_empty() && part != ".." && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
        });
    if !shaped {
        return false;
    }
    let database = std::path::Path::new("/usr/share/zoneinfo");
    zone == "UTC" || !database.is_dir() || database.join(zone).is_file()
}

fn parse_ip(field: &str, raw: &str) -> Result<IpAddr> {
    raw.trim().parse().map_err(|_| invalid(format!("{field}: `{raw}` is not an IP address")))
}

impl NetworkConfig {
    pub(crate) fn validated(mut self) -> Result<NetworkConfig> {
        self.hostname = self.hostname.trim().to_ascii_lowercase();
        if !is_valid_hostname(&self.hostname) {
            return Err(invalid(
                "hostname: must be an RFC 1123 host name (letters, digits, hyphens; labels up to 63 characters)".into(),
            ));
        }
        validate::one_of("ip_mode", &self.ip_mode, IP_MODES)?;
        match self.ip_mode.as_str() {
            "dhcp" => {
                self.ip_address = None;
                self.prefix_length = None;
                self.gateway = None;
            }
            _ => {
                let ip = self
                    .ip_address
                    .as_deref()
                    .ok_or_else(|| invalid("ip_address: required when ip_mode is static".into()))?;
                let ip = parse_ip("ip_address", ip)?;
                let max_prefix = if ip.is_ipv4() { 32 } else { 128 };
                match self.prefix_length {
                    Some(p) if (1..=max_prefix).contains(&p) => {}
                    _ => return Err(invalid(format!("prefix_length: required, 1 to {max_prefix}"))),
                }
                if let Some(gateway) = &self.gateway {
                    parse_ip("gateway", gateway)?;
                }
            }
        }
        if self.dns_servers.len() > 8 {
            return Err(invalid("dns_servers: at most 8".into()));
        }
        for server in &self.dns_servers {
            parse_ip("dns_servers", server)?;
        }
        Ok(self)
    }
}

impl SystemSettings {
    fn validated(self) -> Result<SystemSettings> {
        if !is_valid_timezone(&self.timezone) {
            return Err(invalid(format!("timezone: `{}` is not a known time zone name", self.timezone)));
        }
        let language_ok = {
            let mut parts = self.language.split('-');
            let primary = parts.next().unwrap_or("");
            (2..=3).contains(&primary.len())
                && primary.bytes().all(|b| b.is_ascii_lowercase())
                && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        };
        if !language_ok {
            return Err(invalid("language: must be a language tag such as en or de-CH".into()));
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            return Err(invalid("audit_retention_days: must be between 1 and 3650".into()));
        }
        Ok(self)
    }
}

async fn load<T: serde::de::DeserializeOwned + Default>(db: &Db, key: &str) -> Result<T> {
    match storage::settings::get(&db.connect().await?, key).await? {
        Some(raw) => serde_json::from_str(&raw).map_err(|e| VaultError::internal("reading settings", e)),
        None => Ok(T::default()),
    }
}

async fn store<T: Serialize>(db: &Db, key: &str, value: &T) -> Result<()> {
    let raw = serde_json::to_string(value).map_err(|e| VaultError::internal("writing settings", e))?;
    storage::settings::put(&db.connect().await?, key, &raw, &crate::time::now_rfc3339()).await
}

/// What a settings change did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied<T> {
    #[serde(flatten)]
    pub settings: T,
    /// The host commands run (or, in dry-run mode, that would have been run).
    pub commands: Vec<Vec<String>>,
    pub dry_run: bool,
}

pub async fn network(db: &Db) -> Result<NetworkConfig> {
    load(db, NETWORK_KEY).await
}

pub async fn set_network(
    db: &Db,
    controller: &dyn SystemController,
    config: NetworkConfig,
    actor: Option<&str>,
) -> Result<Applied<NetworkConfig>> {
    let config = config.validated()?;
    let previous = network(db).await?;
    let mut changes = Vec::new();
    if config.hostname != previous.hostname {
        changes.push(HostChange::Hostname(config.hostname.clone()));
    }
    let static_ip = config.ip_address.clone().zip(config.prefix_length);
    if (config.ip_mode.as_str(), &config.ip_address, config.prefix_length, &config.gateway)
        != (previous.ip_mode.as_str(), &previous.ip_address, previous.prefix_length, &previous.gateway)
    {
        changes.push(HostChange::Address { static_ip, gateway: config.gateway.clone() });
    }
    if config.dns_servers != previous.dns_servers {
        changes.push(HostChange::Dns(config.dns_servers.clone()));
    }
    let commands = changes.iter().map(|c| controller.apply(c)).collect::<Result<Vec<_>>>()?;
    store(db, NETWORK_KEY, &config).await?;
    activity::record(db, "config.network", actor, None, format!("Network configuration updated ({})", config.hostname))
        .await;
    Ok(Applied { settings: config, commands, dry_run: controller.is_dry_run() })
}

pub async fn system(db: &Db) -> Result<SystemSettings> {
    load(db, SYSTEM_KEY).await
}

pub async fn set_system(
    db: &Db,
    controller: &dyn SystemController,
    settings: SystemSettings,
    actor: Option<&str>,
) -> Result<Applied<SystemSettings>> {
    let settings = settings.validated()?;
    let previous = system(db).await?;
    let mut commands = Vec::new();
    if settings.timezone != previous.timezone {
        commands.push(controller.apply(&HostChange::Timezone(settings.timezone.clone()))?);
    }
    store(db, SYSTEM_KEY, &settings).await?;
    activity::record(db, "config.system", actor, None, "System settings updated".into()).await;
    Ok(Applied { settings, commands, dry_run: controller.is_dry_run() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::DryRunController;

    #[test]
    fn hostnames_follow_rfc_1123() {
        for good in ["vault", "vault-1", "a.b.c", "x1", &"a".repeat(63)] {
            assert!(is_valid_hostname(good), "{good}");
        }
        for bad in ["", "-vault", "vault-", "va ult", "vault_1", "a..b", &"a".repeat(64), "ümlaut"] {
            assert!(!is_valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn time_zones_must_be_names_not_paths() {
        assert!(is_valid_timezone("UTC"));
        assert!(!is_valid_timezone("../../etc/passwd"));
        assert!(!is_valid_timezone("/etc/localtime"));
        assert!(!is_valid_timezone("Mars/Olympus_Mons"));
    }

    #[tokio::test]
    async fn network_changes_are_validated_stored_and_applied_in_dry_run() {
        let (_dir, db) = storage::test_db().await;
        let dry = DryRunController::default();
        assert_eq!(network(&db).await.unwrap(), NetworkConfig::default());
        let wanted = NetworkConfig {
            hostname: "Vault-Cube".into(),
            ip_mode: "static".into(),
            ip_address: Some("192.168.1.20".into()),
            prefix_length: Some(24),
            gateway: Some("192.168.1.1".into()),
            dns_servers: vec!["1.1.1.1".into()],
        };
        let applied = set_network(&db, &dry, wanted, None).await.unwrap();
        assert!(applied.dry_run);
        assert_eq!(applied.settings.hostname, "vault-cube");
        assert_eq!(applied.commands.len(), 3);
        assert_eq!(network(&db).await.unwrap().ip_address.as_deref(), Some("192.168.1.20"));

        let bad = NetworkConfig { dns_servers: vec!["dns.example".into()], ..NetworkConfig::default() };
        assert!(set_network(&db, &dry, bad, None).await.unwrap_err().message.starts_with("dns_servers"));
        let bad = NetworkConfig { ip_mode: "static".into(), ..NetworkConfig::default() };
        assert!(set_network(&db, &dry, bad, None).await.unwrap_err().message.starts_with("ip_address"));
        assert_eq!(network(&db).await.unwrap().hostname, "vault-cube", "a refused change stores nothing");
    }

    #[tokio::test]
    async fn system_settings_are_validated() {
        let (_dir, db) = storage::test_db().await;
        let dry = DryRunController::default();
        let bad = SystemSettings { timezone: "Nowhere/Land".into(), ..SystemSettings::default() };
        assert!(set_system(&db, &dry, bad, None).await.unwrap_err().message.starts_with("timezone"));
        let bad = SystemSettings { language: "English".into(), ..SystemSettings::default() };
        assert!(set_system(&db, &dry, bad, None).await.unwrap_err().message.starts_with("language"));
        let bad = SystemSettings { audit_retention_days: 0, ..SystemSettings::default() };
        assert!(set_system(&db, &dry, bad, None).await.is_err());
        let ok = SystemSettings { language: "de-CH".into(), ..SystemSettings::default() };
        assert!(set_system(&db, &dry, ok, None).await.unwrap().commands.is_empty());
        assert_eq!(system(&db).await.unwrap().language, "de-CH");
    }
}

/// How the gateway reaches the inference engine (from its start-up configuration, except the
/// default model, which the setup wizard stores).
#[derive(Debug, Clone, Serialize)]
pub struct InferenceSettings {
    pub vllm_base_url: String,
    pub default_model: Option<String>,
    pub upstream_timeout_seconds: f64,
    pub stream_idle_timeout_seconds: f64,
    pub max_upstream_body_mb: u64,
}

/// The whole configuration an admin sees: never a secret, never a file path.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub network: NetworkConfig,
    pub system: SystemSettings,
    pub tls: Option<crate::tls::CertificateInfo>,
    pub inference: InferenceSettings,
    /// `pending`, `in_progress` or `complete`.
    pub setup: String,
}

pub async fn overview(vault: &crate::Vault) -> Result<Overview> {
    let config = &vault.config;
    let conn = vault.db.connect().await?;
    let default_model = crate::storage::settings::get(&conn, crate::setup::DEFAULT_MODEL_KEY).await?;
    Ok(Overview {
        network: network(&vault.db).await?,
        system: system(&vault.db).await?,
        // A certificate that cannot be read shows as none here (GET /vault/admin/config/tls
        // says why), so the rest of the configuration stays readable.
        tls: crate::certificate::current(config).ok().flatten(),
        inference: InferenceSettings {
            vllm_base_url: config.vllm_base_url.clone(),
            default_model,
            upstream_timeout_seconds: config.upstream_timeout.as_secs_f64(),
            stream_idle_timeout_seconds: config.stream_idle_timeout.as_secs_f64(),
            max_upstream_body_mb: config.max_upstream_body as u64 / (1024 * 1024),
        },
        setup: crate::setup::status(config, &vault.db).await?.status,
    })
}

/// Changes to the network settings; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct NetworkPatch {
    pub hostname: Option<String>,
    pub ip_mode: Option<String>,
    pub ip_address: Option<String>,
    pub prefix_length: Option<u8>,
    pub gateway: Option<String>,
    pub dns_servers: Option<Vec<String>>,
}

/// Changes to the system settings; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct SystemPatch {
    pub timezone: Option<String>,
    pub language: Option<String>,
    pub audit_retention_days: Option<u32>,
}

/// A partial change to the configuration (`PUT /vault/admin/config`).
#[derive(Debug, Clone, Default)]
pub struct ConfigPatch {
    pub network: Option<NetworkPatch>,
    pub system: Option<SystemPatch>,
    pub default_model: Option<String>,
}

/// What a configuration change did.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigChanged {
    pub config: Overview,
    /// The fields whose value changed, as `section.field`.
    pub changed: Vec<String>,
    /// Changes that take effect only after a restart (none of the settings this changes
    /// needs one today: each takes effect at once).
    pub restart_required: Vec<String>,
    /// What an operator should know, such as a certificate that no longer covers the host name.
    pub warnings: Vec<String>,
    /// The host commands run (or, in dry-run mode, that would have been run).
    pub commands: Vec<Vec<String>>,
    pub dry_run: bool,
}

/// Prefixes a field error with its section (`network.hostname: …`).
fn in_section(section: &str) -> impl Fn(VaultError) -> VaultError + '_ {
    move |mut err| {
        if err.kind == crate::error::ErrorKind::Invalid {
            err.message = format!("{section}.{}", err.message);
        }
        err
    }
}

/// Applies a partial change: every section is validated (errors name `section.field`)
/// before anything is applied, so a bad field changes nothing.
pub async fn update(vault: &crate::Vault, patch: ConfigPatch, actor: &str) -> Result<ConfigChanged> {
    let db = &vault.db;
    let (old_network, old_system) = (network(db).await?, system(db).await?);
    let new_network = patch.network.map(|p| {
        let mut n = old_network.clone();
        if let Some(v) = p.hostname {
            n.hostname = v;
        }
        if let Some(v) = p.ip_mode {
            n.ip_mode = v;
        }
        if let Some(v) = p.ip_address {
            n.ip_address = Some(v);
        }
        if let Some(v) = p.prefix_length {
            n.prefix_length = Some(v);
        }
        if let Some(v) = p.gateway {
            n.gateway = Some(v);
        }
        if let Some(v) = p.dns_servers {
            n.dns_servers = v;
        }
        n
    });
    let new_system = patch.system.map(|p| SystemSettings {
        timezone: p.timezone.unwrap_or_else(|| old_system.timezone.clone()),
        language: p.language.unwrap_or_else(|| old_system.language.clone()),
        audit_retention_days: p.audit_retention_days.unwrap_or(old_system.audit_retention_days),
    });
    let new_network = new_network.map(NetworkConfig::validated).transpose().map_err(in_section("network"))?;
    let new_system = new_system.map(SystemSettings::validated).transpose().map_err(in_section("system"))?;
    if let Some(model) = &patch.default_model {
        let manifest = vault.inference.manifest().load()?;
        if manifest.entry(model).is_none() {
            return Err(VaultError::invalid_field(format!(
                "inference.default_model: `{model}` is not in the model manifest"
            )));
        }
    }

    let mut changed = Vec::new();
    let mut commands = Vec::new();
    let mut warnings = Vec::new();
    if let Some(config) = new_network {
        changed.extend(changed_fields("network", &old_network, &config));
        let applied = set_network(db, vault.controller.as_ref(), config, Some(actor)).await?;
        if let Ok(Some(certificate)) = crate::certificate::current(&vault.config)
            && !crate::tls::covers_host(&certificate, &applied.settings.hostname)
        {
            warnings.push(format!(
                "tls: the installed certificate does not cover {}; install a new one (POST /vault/admin/config/tls)",
                applied.settings.hostname
            ));
        }
        commands.extend(applied.commands);
    }
    if let Some(settings) = new_system {
        changed.extend(changed_fields("system", &old_system, &settings));
        commands.extend(set_system(db, vault.controller.as_ref(), settings, Some(actor)).await?.commands);
    }
    if let Some(model) = &patch.default_model {
        let conn = db.connect().await?;
        let previous = storage::settings::get(&conn, crate::setup::DEFAULT_MODEL_KEY).await?;
        if previous.as_deref() != Some(model.as_str()) {
            changed.push("inference.default_model".into());
        }
        storage::settings::put(&conn, crate::setup::DEFAULT_MODEL_KEY, model, &crate::time::now_rfc3339()).await?;
    }
    Ok(ConfigChanged {
        config: overview(vault).await?,
        changed,
        restart_required: Vec::new(),
        warnings,
        commands,
        dry_run: vault.controller.is_dry_run(),
    })
}

/// `section.field` for each field whose value differs.
fn changed_fields<T: Serialize>(section: &str, old: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, _)| format!("{section}.{k}")).collect()
}
