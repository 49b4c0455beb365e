//! The JSON shapes of `/vault/training/jobs`.

use poem_openapi::Object;
use serde::Deserialize;
use vault_core::training;

#[derive(Object)]
pub struct TrainingJob {
    pub id: String,
    pub name: String,
    /// `queued`, `running`, `paused`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub model: String,
    pub dataset: String,
    pub config: serde_json::Value,
    pub metrics: serde_json::Value,
    /// 0.0 to 1.0.
    pub progress: f64,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub completed_at: Option<String>,
}

#[derive(Object)]
pub struct TrainingJobList {
    pub items: Vec<TrainingJob>,
}

#[derive(Object, Deserialize)]
pub struct CreateTrainingJob {
    #[oai(validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub name: String,
    /// The base model.
    #[oai(validator(max_length = 256, pattern = "[^\\s\\u0085]"))]
    pub model: String,
    /// Where the training data is.
    #[oai(validator(max_length = 1024, pattern = "[^\\s\\u0085]"))]
    pub dataset: String,
    /// Hyperparameters, as a JSON object (up to 64 KiB).
    #[oai(nullable)]
    pub config: Option<serde_json::Value>,
}

impl From<training::TrainingJob> for TrainingJob {
    fn from(j: training::TrainingJob) -> Self {
        TrainingJob {
            id: j.id,
            name: j.name,
            status: j.status.as_str().into(),
            model: j.model,
            dataset: j.dataset,
            config: j.config,
            metrics: j.metrics,
            progress: j.progress,
            error: j.error,
            created_by: j.created_by,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
        }
    }
}
