//! Embedding Vault in another Rust program: open a vault, create a key, serve the
//! gateway on a port, stop on Ctrl-C.
//!
//!     cargo run -p vault-server --example embed_gateway -- [VLLM_BASE_URL]
//!
//! Without an upstream URL it starts the built-in fake vLLM, so it runs anywhere.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use vault_core::config::{self, Config};
use vault_core::keys::{self, Scope};
use vault_core::{Vault, VaultError};

#[tokio::main]
async fn main() -> Result<(), VaultError> {
    let fake = match std::env::args().nth(1) {
        Some(_) => None,
        None => Some(
            fake_vllm::start(SocketAddr::from(([127, 0, 0, 1], 0)), fake_vllm::Options::default())
                .await
                .map_err(|e| VaultError::internal("starting the fake upstream", e))?,
        ),
    };
    let upstream = std::env::args().nth(1).or_else(|| fake.as_ref().map(|f| f.base_url())).unwrap_or_default();

    // Settings come from the environment as for the server; these win over it.
    let mut overrides: config::Overrides = HashMap::new();
    overrides.insert(config::VAULT_PORT, "0".into());
    overrides.insert(config::VAULT_DATA_DIR, "./data/embedded".into());
    overrides.insert(config::VLLM_BASE_URL, upstream);
    let vault = Vault::open(Config::load(&overrides)?).await?;

    let key = keys::create(&vault.db, "embedded example", Scope::User, None, Some("example")).await?;
    let server = vault_server::Server::bind(vault.clone()).await?;
    let _ = writeln!(
        std::io::stdout(),
        "serving on http://{}\ntry: curl http://{}/v1/models -H 'Authorization: Bearer {}'",
        server.local_addr(),
        server.local_addr(),
        key.key
    );
    server.run(vault_server::shutdown_signal()).await.map_err(|e| VaultError::internal("serving", e))?;
    if let Some(fake) = fake {
        fake.stop().await;
    }
    Ok(())
}
