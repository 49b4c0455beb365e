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
    /// Upstreams in rotation, of `upstreams` (1 of 1 with a single `VLLM_BASE_URL`).
    pub upstreams_up: u32,
    pub upstreams: u32,
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
    /// Ready (for `/vault/health`: records kept, the engine may be down, `degraded`; for
    /// `/vault/health/ready`: records kept and the engine answering).
    #[oai(status = 200)]
    Ready(Json<HealthResponse>),
    /// Not ready: Vault cannot keep its records (or, for `/vault/health/ready`, the engine
    /// does not answer).
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
    #[oai(path = "/health", method = "get", operation_id = "getHealth")]
    async fn health(&self, vault: Data<&Arc<Vault>>) -> HealthAnswer {
        let health = vault.health().await;
        let ready = health.is_ready();
        answer(health, ready)
    }

    /// Readiness for inference
    ///
    /// The same report, answering 503 until the database, the audit trail and the
    /// inference engine all answer: for a load balancer or orchestrator that should send
    /// inference only to a gateway that can serve it.
    #[oai(path = "/health/ready", method = "get", operation_id = "getReadiness")]
    async fn ready(&self, vault: Data<&Arc<Vault>>) -> HealthAnswer {
        let health = vault.health().await;
        let ready = health.serves_inference();
        answer(health, ready)
    }
}

/// The report, as a 200 when `ready`, else a 503.
fn answer(health: vault_core::app::Health, ready: bool) -> HealthAnswer {
    let body = Json(HealthResponse {
        status: health.status.to_string(),
        version: health.version.to_string(),
        inference: InferenceHealth {
            reachable: health.inference.reachable,
            upstreams_up: u32::try_from(health.inference.upstreams_up).unwrap_or(u32::MAX),
            upstreams: u32::try_from(health.inference.upstreams).unwrap_or(u32::MAX),
        },
        database: health.database.into(),
        audit: health.audit.into(),
        gpu: GpuHealth { available: health.gpu.available, count: health.gpu.count },
    });
    if ready { HealthAnswer::Ready(body) } else { HealthAnswer::Unavailable(body) }
}
