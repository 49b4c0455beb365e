//! `GET /vault/health`: no key needed, so monitors and load balancers can call it.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use vault_core::Vault;

use super::Tag;

pub struct HealthApi;

#[derive(Object)]
pub struct HealthResponse {
    /// `ok`; `degraded` when the inference engine does not answer; `unavailable` when
    /// Vault cannot keep its records (database or audit trail) and serves no inference.
    pub status: String,
    pub version: String,
    pub inference: InferenceHealth,
    /// The database file is the one opened and can be written.
    pub database: Check,
    /// The audit trail can take rows (its disk has room, the database takes writes).
    pub audit: Check,
    pub gpu: GpuHealth,
}

#[derive(Object)]
pub struct InferenceHealth {
    pub reachable: bool,
}

#[derive(Object)]
pub struct Check {
    pub ok: bool,
    /// Why not, when not.
    #[oai(nullable)]
    pub reason: Option<String>,
}

#[derive(Object)]
pub struct GpuHealth {
    /// Whether NVML found at least one GPU.
    pub available: bool,
    pub count: u32,
}

#[derive(ApiResponse)]
pub enum HealthAnswer {
    /// Ready to serve (`ok`, or `degraded` while the inference engine is down).
    #[oai(status = 200)]
    Ready(Json<HealthResponse>),
    /// Not ready: Vault cannot keep its records.
    #[oai(status = 503)]
    Unavailable(Json<HealthResponse>),
}

impl From<vault_core::app::Check> for Check {
    fn from(c: vault_core::app::Check) -> Self {
        Check { ok: c.ok, reason: c.reason }
    }
}

#[OpenApi(prefix_path = "/vault", tag = "Tag::Health")]
impl HealthApi {
    /// Health of the gateway, its records and its upstream
    #[oai(path = "/health", method = "get")]
    async fn health(&self, vault: Data<&Arc<Vault>>) -> HealthAnswer {
        let health = vault.health().await;
        let ready = health.is_ready();
        let body = Json(HealthResponse {
            status: health.status.to_string(),
            version: health.version.to_string(),
            inference: InferenceHealth { reachable: health.inference.reachable },
            database: health.database.into(),
            audit: health.audit.into(),
            gpu: GpuHealth { available: health.gpu.available, count: health.gpu.count },
        });
        if ready { HealthAnswer::Ready(body) } else { HealthAnswer::Unavailable(body) }
    }
}
