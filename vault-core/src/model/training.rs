//! Training job records and the states a job can be in.

use serde::Serialize;

use crate::error::{Result, VaultError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl std::str::FromStr for JobStatus {
    type Err = VaultError;

    fn from_str(raw: &str) -> Result<JobStatus> {
        crate::validate::choice("status", raw, &JobStatus::ALL, JobStatus::as_str)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrainingJob {
    pub id: String,
    pub name: String,
    pub status: JobStatus,
    pub model: String,
    pub dataset: String,
    pub config: serde_json::Value,
    pub metrics: serde_json::Value,
    /// 0.0 to 1.0.
    pub progress: f64,
    pub error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}
