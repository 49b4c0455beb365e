//! Starting the inference engine from the model configuration (`VAULT_GPU_CONFIG`): one vLLM
//! server per model (vLLM serves one model per process), on the model's GPUs, each on a port
//! of its own from a first one up, and the upstreams file (`VAULT_UPSTREAMS`) that tells the
//! gateway which port serves which model. The appliance's `vllm` unit runs
//! `vault-cli models launch`; a model load or unload rewrites the configuration and restarts
//! the unit, and the gateway follows the upstreams file as it changes.
//!
//! The servers are supervised as one: when one ends, the others are stopped and the launch
//! ends with its status, so the service manager restarts the whole engine; a stop request
//! is passed on to each (SIGTERM, as vLLM expects).

use std::path::Path;
use std::process::ExitStatus;

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
            "--served-model-name".into(),
            model.id.clone(),
            "--host".into(),
            HOST.into(),
            "--port".into(),
            port.to_string(),
            "--gpu-memory-utilization".into(),
            model.gpu_memory_utilization.to_string(),
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
            env: vec![("CUDA_VISIBLE_DEVICES".into(), gpus)],
        });
        upstreams.push(UpstreamSpec {
            url: format!("http://{HOST}:{port}"),
            models: Some(vec![model.id.clone()]),
            weight: 1,
        });
    }
    Ok(LaunchPlan { engines, upstreams })
}

/// Writes the upstreams file the gateway follows, whole and in one step.
pub fn write_upstreams(path: &Path, upstreams: &[UpstreamSpec]) -> Result<()> {
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": upstreams }))
        .map_err(|e| VaultError::internal("writing the upstreams file", e))?;
    crate::models::gpu_config::write_whole(path, &text)
        .map_err(|e| VaultError::internal("writing the upstreams file", format!("{}: {e}", path.display())))
}

/// Starts every server of `plan` and waits: until one ends (the others are then stopped;
/// its status is returned), or until `stopping` (each is asked to stop, and given
/// `patience` before it is killed).
pub async fn supervise(
    plan: &LaunchPlan,
    stopping: CancellationToken,
    patience: std::time::Duration,
) -> Result<ExitStatus> {
    let mut children = Vec::new();
    for engine in &plan.engines {
        let child = tokio::process::Command::new(&engine.program)
            .args(&engine.args)
            .envs(engine.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VaultError::invalid_field(format!("vllm: cannot start `{}` ({e})", engine.program)))?;
        tracing::info!(model = %engine.model, port = engine.port, "inference server started");
        children.push(child);
    }
    let first_to_end = futures_util::future::select_all(children.iter_mut().map(|c| Box::pin(c.wait())));
    let status = tokio::select! {
        (ended, index, _) = first_to_end => {
            let status = ended.map_err(|e| VaultError::internal("waiting for the inference engine", e))?;
            tracing::warn!(model = %plan.engines[index].model, %status, "an inference server ended: stopping the others");
            Some(status)
        }
        _ = stopping.cancelled() => None,
    };
    for child in &children {
        terminate(child).await;
    }
    for child in &mut children {
        if tokio::time::timeout(patience, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    match status {
        Some(status) => Ok(status),
        None => Ok(std::os::unix::process::ExitStatusExt::from_raw(0)),
    }
}

/// Asks a server to stop with SIGTERM, as a service manager would: vLLM then stops the
/// worker processes it started (a SIGKILL would leave them behind). Sent with `kill(1)`,
/// as this workspace has no unsafe code to call kill(2) with.
async fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let sent = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if !sent.is_ok_and(|s| s.success()) {
            tracing::warn!(pid, "could not ask an inference server to stop: it is killed after the wait");
        }
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
            "CUDA_VISIBLE_DEVICES=0 vllm serve /data/models/qwen --served-model-name qwen --host 127.0.0.1 \
             --port 8001 --gpu-memory-utilization 0.9 --max-model-len 32768"
        );
        assert_eq!(plan.engines[1].env, [("CUDA_VISIBLE_DEVICES".to_string(), "1,2".to_string())]);
        assert!(plan.engines[1].args.ends_with(&["--tensor-parallel-size".to_string(), "2".to_string()]));
        assert_eq!(plan.upstreams[1].url, "http://127.0.0.1:8002");
        assert_eq!(plan.upstreams[1].models.as_deref(), Some(&["Org/big".to_string()][..]));
        assert!(super::plan(&config, "vllm", u16::MAX).is_err(), "no port past 65535");
        assert!(super::plan(&GpuConfig::default(), "vllm", 8001).unwrap().engines.is_empty());
    }

    #[tokio::test]
    async fn the_servers_run_as_one_and_stop_together() {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().display().to_string();
        // A stand-in for vLLM: notes its model's port, then serves until stopped; the one
        // on port 8002 fails after a moment.
        let program = dir.path().join("fake-vllm.sh");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\nport=$8\necho \"$CUDA_VISIBLE_DEVICES $*\" > {marks}/started-$port\n\
                 trap 'echo stopped > {marks}/stopped-$port; exit 0' TERM\n\
                 if [ \"$port\" = 8002 ]; then sleep 0.3; exit 3; fi\nwhile :; do sleep 0.05; done\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let config = GpuConfig { models: vec![served("a", vec![0], None), served("b", vec![1], None)] };
        let both = plan(&config, program.to_str().unwrap(), 8001).unwrap();
        let status = supervise(&both, CancellationToken::new(), std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(3), "the launch ends as the server that ended");
        let started = std::fs::read_to_string(dir.path().join("started-8001")).unwrap();
        assert!(started.starts_with("0 serve /data/models/a --served-model-name a"), "{started}");
        assert!(dir.path().join("stopped-8001").exists(), "the other server was asked to stop");

        // A stop request reaches every server.
        let config = GpuConfig { models: vec![served("a", vec![0], None)] };
        let one = plan(&config, program.to_str().unwrap(), 8001).unwrap();
        std::fs::remove_file(dir.path().join("stopped-8001")).unwrap();
        let stopping = CancellationToken::new();
        let running = tokio::spawn({
            let stopping = stopping.clone();
            async move { supervise(&one, stopping, std::time::Duration::from_secs(5)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stopping.cancel();
        assert!(running.await.unwrap().unwrap().success());
        assert!(dir.path().join("stopped-8001").exists());
    }
}
