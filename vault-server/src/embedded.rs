//! A whole gateway inside one process: the server on a free port, in front of a given
//! upstream or of the built-in fake vLLM. The demo, the Python package's `vault.Gateway`
//! and the embedding example all start Vault this way.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vault_core::config::{self, Config, Overrides};
use vault_core::{Vault, VaultError};

pub use fake_vllm::Options as FakeOptions;

/// What the gateway forwards inference to.
pub enum Upstream {
    /// A running vLLM (or anything that speaks its API) at this base URL.
    Url(String),
    /// A fake vLLM started in this process, stopped with the gateway.
    Fake(FakeOptions),
}

/// A gateway serving in the background of this process.
pub struct EmbeddedGateway {
    pub vault: Arc<Vault>,
    url: String,
    metrics_url: Option<String>,
    upstream_url: String,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    fake: Option<fake_vllm::RunningFake>,
}

impl EmbeddedGateway {
    /// Starts the upstream (when fake), opens the vault with `overrides` over the
    /// environment, and serves on the configured address (`VAULT_PORT=0` for a free port).
    pub async fn start(overrides: Overrides, upstream: Upstream) -> Result<EmbeddedGateway, VaultError> {
        Self::start_with(upstream, Config::load, overrides).await
    }

    /// Like [`start`](Self::start), but with `settings` alone: the environment is not read
    /// (for tests, which must not depend on the variables of whoever runs them).
    pub async fn start_isolated(settings: Overrides, upstream: Upstream) -> Result<EmbeddedGateway, VaultError> {
        Self::start_with(upstream, |s| Config::from_lookup(|name| s.get(name).cloned()), settings).await
    }

    async fn start_with(
        upstream: Upstream,
        load: impl Fn(&Overrides) -> Result<Config, VaultError>,
        mut overrides: Overrides,
    ) -> Result<EmbeddedGateway, VaultError> {
        let (upstream_url, fake) = match upstream {
            Upstream::Url(url) => (url, None),
            Upstream::Fake(mut options) => {
                // The fake serves what the gateway's model loads put in the configuration.
                if options.gpu_config.is_none() {
                    options.gpu_config = Some(load(&overrides)?.gpu_config);
                }
                let fake = fake_vllm::start(SocketAddr::from(([127, 0, 0, 1], 0)), options)
                    .await
                    .map_err(|e| VaultError::internal("starting the fake upstream", e))?;
                (fake.base_url(), Some(fake))
            }
        };
        overrides.insert(config::VLLM_BASE_URL, upstream_url.clone());
        let vault = Vault::open(load(&overrides)?).await?;
        let server = crate::Server::bind(vault.clone()).await?;
        let url = format!("http://{}", server.local_addr());
        let metrics_url = server.metrics_addr().map(|addr| format!("http://{addr}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(EmbeddedGateway { vault, url, metrics_url, upstream_url, stop, served, fake })
    }

    /// `http://<host>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://<host>:<port>` of the metrics port, when `VAULT_METRICS_ADDR` is set.
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics_url.as_deref()
    }

    /// The upstream it forwards to (the fake's URL when it runs the fake).
    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// Stops serving: in-flight requests finish and every audit row is stored first.
    pub async fn stop(self) -> Result<(), VaultError> {
        let _ = self.stop.send(());
        let served = self.served.await.map_err(|e| VaultError::internal("stopping the gateway", e))?;
        if let Some(fake) = self.fake {
            fake.stop().await;
        }
        served.map_err(|e| VaultError::internal("serving", e))
    }

    /// Asks it to stop without waiting; the runtime finishes the shutdown.
    pub fn stop_in_background(self) {
        let _ = self.stop.send(());
    }
}
