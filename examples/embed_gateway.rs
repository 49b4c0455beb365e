//! Embedding Vault in another Rust program: start a gateway in this process, create a
//! key, serve until Ctrl-C.
//!
//!     cargo run -p vault-server --features demo --example embed_gateway -- [VLLM_BASE_URL]
//!
//! Without an upstream URL it starts the built-in fake vLLM, so it runs anywhere.

use std::collections::HashMap;
use std::io::Write;

use vault_core::VaultError;
use vault_core::config::{self, Overrides};
use vault_core::keys::{self, Scope};
use vault_server::embedded::{EmbeddedGateway, FakeOptions, Upstream};

#[tokio::main]
async fn main() -> Result<(), VaultError> {
    let upstream = match std::env::args().nth(1) {
        Some(url) => Upstream::Url(url),
        None => Upstream::Fake(FakeOptions::default()),
    };
    // Settings come from the environment as for the server; these win over it.
    let mut overrides: Overrides = HashMap::new();
    overrides.insert(config::VAULT_PORT, "0".into());
    overrides.insert(config::VAULT_DATA_DIR, "./data/embedded".into());
    let gateway = EmbeddedGateway::start(overrides, upstream).await?;

    let key = keys::create(&gateway.vault.db, "embedded example", Scope::User, None, Some("example")).await?;
    let url = gateway.url();
    let _ = writeln!(
        std::io::stdout(),
        "serving on {url} (upstream {})\ntry: curl {url}/v1/models -H 'Authorization: Bearer {}'",
        gateway.upstream_url(),
        key.key
    );
    vault_server::shutdown_signal().await;
    gateway.stop().await
}
