//! The routes. Each handler parses, calls one core function, and maps the result.

mod admin;
mod conversations;
mod health;
pub(crate) mod inference;
mod metrics;
mod models;
mod setup;
mod system;
mod training;

use poem_openapi::{ApiResponse, Tags};

pub use admin::AdminApi;
pub use conversations::ConversationsApi;
pub use health::HealthApi;
pub use inference::InferenceApi;
pub use metrics::MetricsApi;
pub use models::ModelsApi;
pub use setup::SetupApi;
pub use system::SystemApi;
pub use training::TrainingApi;

use crate::error::ApiError;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Tags)]
pub enum Tag {
    /// OpenAI-compatible inference, proxied to the engine.
    Inference,
    /// Liveness and readiness.
    Health,
    /// Server-side conversations, private to their owner.
    Conversations,
    /// Training job records and their state machine.
    Training,
    /// Users, keys and configuration (admin keys only).
    Admin,
    /// Host metrics, health, managed services, usage insights and the activity feed.
    System,
    /// Models on disk and on the GPUs.
    Models,
    /// The first-boot wizard: no key needed until setup is complete, then gone.
    Setup,
}

#[derive(ApiResponse)]
pub enum NoContent {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// Every route of the API, as one type for `OpenApiService`.
pub type Api =
    (InferenceApi, HealthApi, ConversationsApi, TrainingApi, AdminApi, SystemApi, ModelsApi, MetricsApi, SetupApi);

pub fn api() -> Api {
    (InferenceApi, HealthApi, ConversationsApi, TrainingApi, AdminApi, SystemApi, ModelsApi, MetricsApi, SetupApi)
}
