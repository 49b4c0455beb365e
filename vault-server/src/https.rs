//! HTTPS with the box's certificate (`cert.pem` and `key.pem` in `VAULT_TLS_CERT_DIR`). The
//! files are looked at for each new connection (one `stat` each) and read again when they
//! changed, so a certificate installed by the wizard, the admin API or by hand is used from
//! the next connection on, without a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use vault_core::tls::TlsStore;

/// The first byte of a TLS connection (a handshake record).
pub const TLS_HANDSHAKE: u8 = 22;

pub struct Certificates {
    store: TlsStore,
    state: Mutex<State>,
    /// Whether a usable certificate was there when last looked at, and when that was.
    usable: Mutex<(bool, Option<Instant>)>,
}

/// The pair last looked at (its stamp, `None` when there was none) and the acceptor in use.
#[derive(Default)]
struct State {
    stamp: Option<Stamp>,
    acceptor: Option<TlsAcceptor>,
}

/// How long [`Certificates::is_usable`] trusts what it saw.
const USABLE_RECHECK: Duration = Duration::from_secs(1);

/// What changes when either file is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    cert: (SystemTime, u64),
    key: (SystemTime, u64),
}

impl Certificates {
    pub fn new(store: TlsStore) -> Certificates {
        Certificates { store, state: Mutex::new(State::default()), usable: Mutex::new((false, None)) }
    }

    /// The acceptor for the installed certificate; `None` when none is installed. A pair
    /// that cannot be used is logged once, and the one used before (if any) stays in use.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        let stamp = self.stamp();
        let mut state = self.state.lock().ok()?;
        if stamp == state.stamp {
            return state.acceptor.clone();
        }
        match &stamp {
            None => state.acceptor = None,
            Some(_) => match self.load() {
                Ok(config) => {
                    state.acceptor = Some(TlsAcceptor::from(Arc::new(config)));
                    tracing::info!("serving HTTPS with the installed certificate");
                }
                Err(why) => {
                    tracing::warn!(error = %why, "the installed certificate cannot be used; keeping the previous one");
                }
            },
        }
        state.stamp = stamp;
        state.acceptor.clone()
    }

    /// Whether HTTPS can be served now, looked at no more than once a second.
    pub fn is_usable(&self) -> bool {
        let Ok(mut usable) = self.usable.lock() else { return false };
        if usable.1.is_none_or(|at| at.elapsed() >= USABLE_RECHECK) {
            *usable = (self.acceptor().is_some(), Some(Instant::now()));
        }
        usable.0
    }

    fn stamp(&self) -> Option<Stamp> {
        let of = |path: std::path::PathBuf| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Some(Stamp { cert: of(self.store.cert_path())?, key: of(self.store.key_path())? })
    }

    fn load(&self) -> Result<ServerConfig, String> {
        let (chain, key) = self.store.load_pem().map_err(|e| e.message)?.ok_or("no certificate is installed")?;
        server_config(&chain, &key)
    }
}

fn server_config(chain: &str, key: &str) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert.pem: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("key.pem: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
