//! `fake-vllm --port 8001`: serves the fake until interrupted.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;

/// A stand-in for vLLM's OpenAI-compatible server, for tests and demos without a GPU.
///
/// Pick a failure per request with a `fake_mode` body field: slow:<ms>, hang,
/// error:<status>, cut:<n>, stream_error:<n>, delay:<ms>.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on start).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Delay between streamed tokens, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// A served model id (repeat for several; the first is the default).
    #[arg(long = "model")]
    models: Vec<String>,
    /// Also serve the models this Vault model configuration file (VAULT_GPU_CONFIG) lists,
    /// as it is at each request.
    #[arg(long)]
    gpu_config: Option<std::path::PathBuf>,
    /// Requests generated at once (vLLM's batch); more wait, and GET /metrics counts them.
    #[arg(long)]
    capacity: Option<usize>,
    /// Refuse /v1/* requests without this key, as `vllm serve --api-key` does.
    #[arg(long, env = "VLLM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let mut options = fake_vllm::Options {
        token_delay: Duration::from_millis(args.token_delay_ms),
        gpu_config: args.gpu_config,
        api_key: args.api_key,
        capacity: args.capacity,
        ..Default::default()
    };
    if !args.models.is_empty() {
        options.models = args.models;
    }
    let fake = fake_vllm::start(SocketAddr::new(args.host, args.port), options).await?;
    // Tests read this line to learn the port.
    writeln!(std::io::stdout(), "fake-vllm listening on {}", fake.base_url())?;
    std::io::stdout().flush()?;
    let _ = tokio::signal::ctrl_c().await;
    fake.stop().await;
    Ok(())
}
