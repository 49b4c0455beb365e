//! The routes. Each handler parses, calls one core function, and maps the result.

mod health;
mod inference;

use poem_openapi::Tags;

pub use health::HealthApi;
pub use inference::InferenceApi;

#[derive(Tags)]
pub enum Tag {
    /// OpenAI-compatible inference, proxied to the engine.
    Inference,
    /// Liveness and readiness.
    Health,
}

/// Every route of the API, as one type for `OpenApiService`.
pub type Api = (InferenceApi, HealthApi);

pub fn api() -> Api {
    (InferenceApi, HealthApi)
}
