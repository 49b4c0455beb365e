//! Starting the inference engine from the model configuration (`VAULT_GPU_CONFIG`): one vLLM
//! server per model (vLLM serves one model per process), on the model's GPUs, each on a port
//! of its own from a first one up, and the upstreams file (`VAULT_UPSTREAMS`) that tells the
//! gateway which port serves which model. The appliance's `vllm` unit runs
//! `vault-cli models launch`; a model load or unload rewrites the configuration and restarts
//! the unit, and the gateway follows the upstreams file as it changes.
//!
//! The servers are supervised as one: when one ends (whatever its status), the others are
//! stopped and the launch fails, so the service manager restarts the whole engine; a stop
//! request is passed on to each (SIGTERM, as vLLM expects).

use std::path::Path;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::gpu_config::GpuConfig;
use crate::error::{Result, VaultError};
use crate::inference::router::UpstreamSpec;

/// The address the servers listen on: the gateway beside them is their only client.
const HOST: &str = "127.0.0.1";

/// One vLLM server to start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineCommand {
    pub model: String,
    pub port: u16,
    pub program: String,
    pub args: Vec<String>,
    /// Added to the launcher's own environment (which passes `VLLM_API_KEY` on: vLLM reads
    /// it as its `--api-key`).
    pub env: Vec<(String, String)>,
}

impl EngineCommand {
    /// The command as a shell would read it, for the operator.
    pub fn display(&self) -> String {
        let env = self.env.iter().map(|(k, v)| format!("{k}={v} "));
        let args = self.args.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() });
        format!("{}{} {}", env.collect::<String>(), self.program, args.collect::<Vec<_>>().join(" "))
    }
}

/// What a launch starts, and the upstreams file it writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchPlan {
    pub engines: Vec<EngineCommand>,
    pub upstreams: Vec<UpstreamSpec>,
}

/// How long stopped servers have, together, before they are killed.
pub const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the launcher writes the upstreams file: `VAULT_UPSTREAMS`, else
/// `<data dir>/upstreams.json`.
pub fn upstreams_file(config: &crate::config::Config) -> std::path::PathBuf {
    config.upstreams_file.clone().unwrap_or_else(|| config.data_dir.join("upstreams.json"))
}

/// The servers for the models in `config`'s model configuration.
pub fn plan_for(config: &crate::config::Config, program: &str, first_port: u16) -> Result<LaunchPlan> {
    plan(&GpuConfig::read(&config.gpu_config)?, program, first_port)
}

/// Runs the engine of `plan`: writes the upstreams `file`, then supervises the servers until
/// `stopping`. A server ending by itself is an error whatever its status: the engine is not
/// whole, and failing makes the service manager start it again.
pub async fn run(plan: &LaunchPlan, file: &Path, stopping: CancellationToken) -> Result<()> {
    write_upstreams(file, &plan.upstreams)?;
    match supervise(plan, stopping, STOP_PATIENCE).await? {
        LaunchEnd::Stopped => Ok(()),
        LaunchEnd::ServerEnded { model, status } => Err(VaultError::new(
            crate::error::ErrorKind::UpstreamUnavailable,
            crate::error::ErrorCode::InferenceUnavailable,
            format!("The inference server of {model} ended ({status}); the others were stopped."),
        )),
    }
}

/// The servers for `config`: `program` (vLLM's `vllm`) serving each model on `first_port`
/// and up.
pub fn plan(config: &GpuConfig, program: &str, first_port: u16) -> Result<LaunchPlan> {
    let mut engines = Vec::new();
    let mut upstreams = Vec::new();
    for (i, model) in config.models.iter().enumerate() {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| first_port.checked_add(i))
            .ok_or_else(|| VaultError::invalid_field("port: too high for one port per model"))?;
        let mut args = vec![
            "serve".to_string(),
            model.path.clone(),
            // One argument: an id may start with `-`.
            format!("--served-model-name={}", model.id),
            "--host".into(),
            HOST.into(),
            "--port".into(),
            port.to_string(),
            "--gpu-memory-utilization".into(),
            share(config, model).to_string(),
        ];
        if let Some(length) = model.max_model_len {
            args.extend(["--max-model-len".into(), length.to_string()]);
        }
        if model.gpus.len() > 1 {
            args.extend(["--tensor-parallel-size".into(), model.gpus.len().to_string()]);
        }
        let gpus = model.gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        engines.push(EngineCommand {
            model: model.id.clone(),
            port,
            program: program.to_string(),
            args,
            // NVML's numbering, which the load check used: by bus, not fastest first.
            env: vec![("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()), ("CUDA_VISIBLE_DEVICES".into(), gpus)],
        });
        upstreams.push(UpstreamSpec {
            url: format!("http://{HOST}:{port}"),
            models: Some(vec![model.id.clone()]),
            weight: 1,
        });
    }
    Ok(LaunchPlan { engines, upstreams })
}

/// The most of a GPU's memory all servers on it may take together, as vLLM's own default.
const GPU_SHARE: f64 = 0.9;

/// `model`'s `--gpu-memory-utilization`: its own, unless the models sharing one of its GPUs
/// ask for more than [`GPU_SHARE`] together; then each gets its part of that, by its own
/// (vLLM takes the share of the GPU's whole memory, so two at 0.9 on one GPU could not start).
fn share(config: &GpuConfig, model: &super::gpu_config::ServedModel) -> f64 {
    let scale = model
        .gpus
        .iter()
        .map(|gpu| {
            let asked: f64 =
                config.models.iter().filter(|m| m.gpus.contains(gpu)).map(|m| m.gpu_memory_utilization).sum();
            if asked > GPU_SHARE { GPU_SHARE / asked } else { 1.0 }
        })
        .fold(1.0, f64::min);
    // Two decimals, rounded down: the sum stays within the share.
    (model.gpu_memory_utilization * scale * 100.0).floor() / 100.0
}

/// Writes the upstreams file the gateway follows, whole and in one step.
pub fn write_upstreams(path: &Path, upstreams: &[UpstreamSpec]) -> Result<()> {
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": upstreams }))
        .map_err(|e| VaultError::internal("writing the upstreams file", e))?;
    crate::models::gpu_config::write_whole(path, &text)
        .map_err(|e| VaultError::internal("writing the upstreams file", format!("{}: {e}", path.display())))
}

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchEnd {
    /// Stopped on request; every server was stopped.
    Stopped,
    /// A server ended by itself (with its status); the others were stopped.
    ServerEnded { model: String, status: String },
}

/// A server running, waited for on a thread of its own.
struct Running {
    group: nix::unistd::Pid,
    ended: tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>,
    done: bool,
}

/// Starts every server of `plan` and waits: until one ends (the others are then stopped),
/// or until `stopping` (each is asked to stop). Each server runs in a process group of its
/// own, which is asked to stop as a whole (SIGTERM: vLLM stops its engine and workers), then
/// killed as a whole once `patience` has passed for all of them.
///
/// The servers are started and waited for with `std::process` on blocking threads: tokio's
/// own process support would make every park of the gateway's runtime look for children
/// to reap, a cost on each request of every binary built with it.
pub async fn supervise(
    plan: &LaunchPlan,
    stopping: CancellationToken,
    patience: std::time::Duration,
) -> Result<LaunchEnd> {
    use std::os::unix::process::CommandExt;
    let mut running = Vec::new();
    let mut failed = None;
    for engine in &plan.engines {
        let spawned = std::process::Command::new(&engine.program)
            .args(&engine.args)
            .envs(engine.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Its own group: its workers are stopped with it, and a Ctrl-C at a terminal
            // reaches the launcher alone.
            .process_group(0)
            .spawn();
        match spawned {
            Ok(mut child) => {
                tracing::info!(model = %engine.model, port = engine.port, "inference server started");
                let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                let ended = tokio::task::spawn_blocking(move || child.wait());
                running.push(Running { group, ended, done: false });
            }
            Err(e) => {
                failed = Some(VaultError::invalid_field(format!("vllm: cannot start `{}` ({e})", engine.program)));
                break;
            }
        }
    }
    let end = match failed {
        Some(err) => Err(err),
        None if running.is_empty() => Ok(LaunchEnd::Stopped),
        None => {
            let first_to_end = futures_util::future::select_all(running.iter_mut().map(|r| &mut r.ended));
            tokio::select! {
                (ended, index, _) = first_to_end => {
                    running[index].done = true;
                    let model = plan.engines[index].model.clone();
                    let status = match ended {
                        Ok(Ok(status)) => status.to_string(),
                        Ok(Err(e)) => format!("unknown ({e})"),
                        Err(e) => format!("unknown ({e})"),
                    };
                    tracing::warn!(%model, %status, "an inference server ended: stopping the others");
                    Ok(LaunchEnd::ServerEnded { model, status })
                }
                _ = stopping.cancelled() => Ok(LaunchEnd::Stopped),
            }
        }
    };
    stop_all(&mut running, patience).await;
    end
}

/// Asks every server's group to stop, and kills the groups still there after `patience`.
async fn stop_all(running: &mut [Running], patience: std::time::Duration) {
    use nix::sys::signal::{Signal, killpg};
    for server in running.iter() {
        let _ = killpg(server.group, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + patience;
    for server in running.iter_mut().filter(|s| !s.done) {
        if tokio::time::timeout_at(deadline, &mut server.ended).await.is_ok() {
            server.done = true;
        }
    }
    // Whatever is left of each group (workers of a server that ended, or one that did not).
    for server in running.iter() {
        let _ = killpg(server.group, Signal::SIGKILL);
    }
    for server in running.iter_mut().filter(|s| !s.done) {
        tracing::warn!("an inference server did not stop in time: killed");
        let _ = (&mut server.ended).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gpu_config::ServedModel;

    fn served(id: &str, gpus: Vec<u32>, max_model_len: Option<u64>) -> ServedModel {
        ServedModel {
            id: id.into(),
            path: format!("/data/models/{id}"),
            gpus,
            gpu_memory_utilization: 0.9,
            max_model_len,
            estimate_bytes: 1,
        }
    }

    #[test]
    fn each_model_gets_a_server_on_its_gpus_and_a_port_of_its_own() {
        let config =
            GpuConfig { models: vec![served("qwen", vec![0], Some(32768)), served("Org/big", vec![1, 2], None)] };
        let plan = plan(&config, "vllm", 8001).unwrap();
        assert_eq!(plan.engines.len(), 2);
        assert_eq!(
            plan.engines[0].display(),
            "CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0 vllm serve /data/models/qwen \
             --served-model-name=qwen --host 127.0.0.1 --port 8001 --gpu-memory-utilization 0.9 --max-model-len 32768"
        );
        assert_eq!(plan.engines[1].env[1], ("CUDA_VISIBLE_DEVICES".to_string(), "1,2".to_string()));
        assert!(plan.engines[1].args.ends_with(&["--tensor-parallel-size".to_string(), "2".to_string()]));
        assert_eq!(plan.upstreams[1].url, "http://127.0.0.1:8002");
        assert_eq!(plan.upstreams[1].models.as_deref(), Some(&["Org/big".to_string()][..]));
        assert!(super::plan(&config, "vllm", u16::MAX).is_err(), "no port past 65535");
        assert!(super::plan(&GpuConfig::default(), "vllm", 8001).unwrap().engines.is_empty());
    }

    #[test]
    fn models_sharing_a_gpu_share_its_memory() {
        let mut small = served("small", vec![0], None);
        small.gpu_memory_utilization = 0.3;
        let config = GpuConfig { models: vec![served("a", vec![0, 1], None), small, served("c", vec![1], None)] };
        let shares: Vec<f64> = config.models.iter().map(|m| share(&config, m)).collect();
        // GPU 0: 0.9 + 0.3 asked → scaled by 0.75; GPU 1: 0.9 + 0.9 → by 0.5; `a` takes the
        // smaller of its GPUs' scales.
        assert_eq!(shares, [0.45, 0.22, 0.45]);
        let alone = GpuConfig { models: vec![served("a", vec![0], None)] };
        assert_eq!(share(&alone, &alone.models[0]), 0.9);
    }

    /// Writes an executable script from a child process, so that no descriptor of it is
    /// open here when it is run (a fork meanwhile would make it busy).
    fn script(path: &std::path::Path, body: &str) {
        let written = std::process::Command::new("sh")
            .args(["-c", &format!("cat > '{0}' <<'END'\n#!/bin/sh\n{body}\nEND\nchmod +x '{0}'", path.display())])
            .status()
            .unwrap();
        assert!(written.success());
    }

    async fn until_exists(path: std::path::PathBuf) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_servers_run_as_one_and_stop_together() {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().display().to_string();
        // A stand-in for vLLM: notes how it was started and that it is ready, then serves
        // until stopped; the one on port 8002 ends by itself once 8001 is ready.
        let program = dir.path().join("fake-vllm.sh");
        script(
            &program,
            &format!(
                "port=$7\ntrap 'echo stopped > {marks}/stopped-$port; exit 0' TERM\n\
                 echo \"$CUDA_VISIBLE_DEVICES $*\" > {marks}/started-$port\n\
                 if [ \"$port\" = 8002 ]; then while [ ! -e {marks}/started-8001 ]; do sleep 0.01; done; exit 3; fi\n\
                 while :; do sleep 0.01; done"
            ),
        );
        let config = GpuConfig { models: vec![served("a", vec![0], None), served("b", vec![1], None)] };
        let both = plan(&config, program.to_str().unwrap(), 8001).unwrap();
        let end = supervise(&both, CancellationToken::new(), std::time::Duration::from_secs(10)).await.unwrap();
        assert_eq!(end, LaunchEnd::ServerEnded { model: "b".into(), status: "exit status: 3".into() });
        let started = std::fs::read_to_string(dir.path().join("started-8001")).unwrap();
        assert!(started.starts_with("0 serve /data/models/a --served-model-name=a"), "{started}");
        assert!(dir.path().join("stopped-8001").exists(), "the other server was asked to stop");

        // A stop request reaches every server.
        let config = GpuConfig { models: vec![served("a", vec![0], None)] };
        let one = plan(&config, program.to_str().unwrap(), 8001).unwrap();
        for mark in ["started-8001", "stopped-8001"] {
            std::fs::remove_file(dir.path().join(mark)).unwrap();
        }
        let stopping = CancellationToken::new();
        let running = tokio::spawn({
            let stopping = stopping.clone();
            async move { supervise(&one, stopping, std::time::Duration::from_secs(10)).await }
        });
        until_exists(dir.path().join("started-8001")).await;
        stopping.cancel();
        assert_eq!(running.await.unwrap().unwrap(), LaunchEnd::Stopped);
        assert!(dir.path().join("stopped-8001").exists());
    }
}
