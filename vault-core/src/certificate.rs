//! The box's certificate as operators change it: made here or uploaded, through the setup
//! wizard or the admin API, and recorded in the activity feed.

use crate::config::Config;
use crate::error::{Result, VaultError};
use crate::settings;
use crate::storage::Db;
use crate::tls::{CertificateInfo, TlsStore};

/// Where the `tls` step's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Made here: for the box's host name, `localhost` and its configured address.
    SelfSigned,
    /// Uploaded: a PEM certificate chain (leaf first) and its private key.
    Pem { chain: String, key: String },
}

/// The `mode` of a certificate request.
pub const TLS_MODES: &[&str] = &["self_signed", "pem"];

impl TlsSource {
    /// The source a request names: `mode` and, for `pem`, both PEM texts.
    pub fn from_request(mode: &str, certificate: Option<String>, private_key: Option<String>) -> Result<TlsSource> {
        let mode = crate::validate::one_of("mode", mode, TLS_MODES)?;
        match (mode.as_str(), certificate, private_key) {
            ("self_signed", None, None) => Ok(TlsSource::SelfSigned),
            ("self_signed", ..) => Err(VaultError::invalid_field(
                "certificate: not used with mode self_signed (use mode pem to upload a certificate)",
            )),
            (_, None, _) => Err(VaultError::invalid_field("certificate: required with mode pem")),
            (_, Some(_), None) => Err(VaultError::invalid_field("private_key: required with mode pem")),
            (_, Some(chain), Some(key)) => Ok(TlsSource::Pem { chain, key }),
        }
    }
}

/// Installs a certificate (see [`TlsSource`]) for the box's host name as the network
/// settings have it. Nothing changes on disk unless the certificate is valid.
pub async fn install(config: &Config, db: &Db, source: TlsSource, actor: &str) -> Result<CertificateInfo> {
    let store = TlsStore::new(&config.tls_cert_dir);
    let info = match source {
        TlsSource::SelfSigned => {
            let network = settings::network(db).await?;
            let ips: Vec<std::net::IpAddr> = network.ip_address.iter().filter_map(|ip| ip.parse().ok()).collect();
            store.install_self_signed(&network.hostname, &ips)
        }
        TlsSource::Pem { chain, key } => store.install_pem(&chain, &key),
    }?;
    let kind = if info.self_signed { "self-signed" } else { "uploaded" };
    crate::activity::record(
        db,
        "config.tls",
        Some(actor),
        None,
        format!("Certificate installed ({kind}, {})", info.subject),
    )
    .await;
    Ok(info)
}

/// The installed certificate, if any.
pub fn current(config: &Config) -> Result<Option<CertificateInfo>> {
    TlsStore::new(&config.tls_cert_dir).info()
}
