//! `vault-cli models list|show|import|delete`: the model folders of the models dir, as the server
//! shows them (loaded status from the engine at `VLLM_BASE_URL`); `models launch`: the
//! engine itself, started from the model configuration.

use clap::Subcommand;
use vault_core::VaultError;
use vault_core::config::Config;
use vault_core::inference::Inference;
use vault_core::models::{self, import, launch};
use vault_core::storage::Db;

use crate::output::{Progress, Unit, print_json, print_text, table};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List the model folders (loaded, available, or incomplete with the reason).
    List,
    /// Show one model: files, size, config.json facts, GPU memory estimate.
    Show {
        /// The model's id: its folder's name, or `org/name`.
        id: String,
    },
    /// Import a model folder from under an import root (VAULT_IMPORT_ROOTS, e.g. a USB disk):
    /// checked first, copied with progress on stderr, in place only once complete.
    Import {
        /// The folder: an absolute path under an import root.
        path: String,
        /// The id to import it as [default: the folder's name].
        #[arg(long)]
        id: Option<String>,
    },
    /// Start the inference engine from the model configuration (VAULT_GPU_CONFIG): one vLLM
    /// server per loaded model, on its GPUs, on ports from --port up, and the upstreams file
    /// (VAULT_UPSTREAMS, else <data dir>/upstreams.json) that tells the gateway which serves
    /// what. Runs until a server ends or it is stopped (SIGTERM/Ctrl-C, passed on to each):
    /// the appliance's `vllm` unit runs it.
    Launch {
        /// vLLM's command.
        #[arg(long, default_value = "vllm")]
        vllm: String,
        /// The first model's port; the next model gets the next port.
        #[arg(long, default_value_t = 8001)]
        port: u16,
        /// Print the servers that would start and the upstreams file, and start nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a model's folder (refused while the engine serves it).
    Delete {
        /// The model's id.
        id: String,
        /// Confirm: the folder and all its files are removed.
        #[arg(long)]
        yes: bool,
    },
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `models launch`: needs no database, so the engine starts before the gateway ever made one.
pub async fn launch(config: &Config, vllm: &str, port: u16, dry_run: bool, json: bool) -> Result<(), VaultError> {
    // Listening before anything starts: a stop at any moment is passed on, never lost.
    let stop = StopSignals::listen()?;
    let plan = launch::plan_for(config, vllm, port)?;
    let file = launch::upstreams_file(config);
    if dry_run {
        if json {
            return print_json(&serde_json::json!({"plan": plan, "upstreams_file": file}));
        }
        let mut text = plan.engines.iter().map(|e| e.display()).collect::<Vec<_>>().join("\n");
        if plan.engines.is_empty() {
            text = "No model is loaded: no server would start.".into();
        }
        return print_text(&format!("{text}\nUpstreams file: {}", file.display()));
    }
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stop.cancel_on_signal(stopping.clone()));
    launch::run(&plan, &file, stopping).await?;
    if plan.engines.is_empty() {
        return print_text("No model is loaded: nothing to serve. Load one with POST /vault/models/{id}/load.");
    }
    Ok(())
}

/// SIGTERM (a service manager stopping the unit) and SIGINT (Ctrl-C), caught from the moment
/// they are made.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> Result<StopSignals, VaultError> {
        use tokio::signal::unix::{SignalKind, signal};
        let fail = |e: std::io::Error| VaultError::internal("listening for stop signals", e);
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(fail)?,
            interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
        })
    }

    async fn cancel_on_signal(mut self, stopping: tokio_util::sync::CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        stopping.cancel();
    }
}

pub async fn run(command: &ModelsCommand, config: &Config, db: &Db, json: bool) -> Result<(), VaultError> {
    let inference = Inference::for_tools(config)?;
    let dir = &config.models_dir;
    match command {
        ModelsCommand::List => {
            let listed = models::list(&inference, dir).await?;
            if json {
                return print_json(&listed);
            }
            if listed.is_empty() {
                return print_text(&format!("No models in {}.", dir.display()));
            }
            let header = ["ID", "STATUS", "SIZE", "NAME"].map(String::from).to_vec();
            let rows = listed.iter().map(|m| {
                let status = match &m.reason {
                    Some(reason) => format!("{} ({reason})", m.status.as_str()),
                    None => m.status.as_str().to_string(),
                };
                vec![m.id.clone(), status, gib(m.size_bytes), m.name.clone().unwrap_or_else(|| "-".into())]
            });
            print_text(&table(&std::iter::once(header).chain(rows).collect::<Vec<_>>()))
        }
        ModelsCommand::Show { id } => {
            let model = models::detail(&inference, dir, id).await?;
            if json {
                return print_json(&model);
            }
            let c = &model.config;
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            let mut text = format!(
                "{}  ({})\n\nArchitecture:   {}\nContext:        {}\nDtype:          {}\nQuantization:   {}\n\
                 Parameters:     {}\nSize on disk:   {}\nGPU memory:     {} (estimate)\n\nFiles:",
                model.summary.id,
                model.summary.status.as_str(),
                or_dash(c.architecture.clone()),
                or_dash(c.context_length.map(|n| n.to_string())),
                or_dash(c.dtype.clone()),
                or_dash(c.quantization.clone()),
                or_dash(c.parameters.map(|n| n.to_string())),
                gib(model.summary.size_bytes),
                gib(model.vram_estimate_bytes),
            );
            for file in &model.files {
                text.push_str(&format!("\n  {:>12}  {}", file.size_bytes, file.name));
            }
            print_text(&text)
        }
        ModelsCommand::Import { path, id } => {
            let started = std::time::Instant::now();
            let mut progress: Option<Progress> = None;
            let imported = import::import_now(config, path, id.as_deref(), &mut |done, total| {
                progress.get_or_insert_with(|| Progress::new(total, Unit::Bytes)).show(done);
            })?;
            if let Some(progress) = &progress {
                progress.finish();
            }
            let detail = models::detail(&inference, dir, &imported).await?;
            let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            if json {
                return print_json(
                    &serde_json::json!({"id": imported, "size_bytes": detail.summary.size_bytes, "seconds": seconds}),
                );
            }
            print_text(&format!("Imported {imported} ({}) in {seconds} s.", gib(detail.summary.size_bytes)))
        }
        ModelsCommand::Launch { vllm, port, dry_run } => launch(config, vllm, *port, *dry_run, json).await,
        ModelsCommand::Delete { id, yes } => {
            if !yes {
                return Err(VaultError::invalid_field(format!(
                    "yes: delete removes the folder of {id} and every file in it; run it again with --yes"
                )));
            }
            // A running server's loads and imports are its own; the model configuration
            // and the engine still say whether the model is in use.
            models::delete(&inference, config, id, "cli", db, &|_| false).await?;
            if json {
                return print_json(&serde_json::json!({"deleted": id}));
            }
            print_text(&format!("Deleted the model {id}."))
        }
    }
}
