//! `GET /vault/health`: no key needed, so monitors and load balancers can call it.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use vault_core::Vault;

use super::Tag;

pub struct HealthApi;

#[derive(Object)]
pub struct HealthResponse {
    /// `ok` when the inference engine answers, `degraded` when it does not.
    pub status: String,
    pub version: String,
    pub inference: InferenceHealth,
    pub gpu: GpuHealth,
}

#[derive(Object)]
pub struct InferenceHealth {
    pub reachable: bool,
}

#[derive(Object)]
pub struct GpuHealth {
    /// Whether NVML found at least one GPU.
    pub available: bool,
    pub count: u32,
}

#[OpenApi(prefix_path = "/vault", tag = "Tag::Health")]
impl HealthApi {
    /// Health of the gateway and its upstream
    #[oai(path = "/health", method = "get")]
    async fn health(&self, vault: Data<&Arc<Vault>>) -> Json<HealthResponse> {
        let health = vault.health().await;
        Json(HealthResponse {
            status: health.status.to_string(),
            version: health.version.to_string(),
            inference: InferenceHealth { reachable: health.inference.reachable },
            gpu: GpuHealth { available: health.gpu.available, count: health.gpu.count },
        })
    }
}
