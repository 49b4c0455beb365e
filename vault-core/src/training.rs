//! Training jobs: records and their state machine (no training runs here yet).
//!
//! ```text
//! queued ──start──▶ running ──pause──▶ paused
//!   │                │  ▲                │
//!   │                │  └────resume──────┘
//!   │                ├──complete──▶ completed
//!   │                └──fail──────▶ failed
//!   └──cancel (from queued, running or paused)──▶ cancelled
//! ```
//! A transition that is not an arrow answers 409 `invalid_state`; only a job in a
//! terminal state may be deleted.

use crate::activity;
use crate::error::{ErrorCode, Result, VaultError};
pub use crate::model::training::{JobStatus, TrainingJob};
use crate::storage::{self, Db};
use crate::validate;

/// What can happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    Start,
    Pause,
    Resume,
    Complete,
    Fail,
    Cancel,
}

impl JobEvent {
    pub const ALL: [JobEvent; 6] =
        [JobEvent::Start, JobEvent::Pause, JobEvent::Resume, JobEvent::Complete, JobEvent::Fail, JobEvent::Cancel];

    fn verb(self) -> &'static str {
        match self {
            JobEvent::Start => "start",
            JobEvent::Pause => "pause",
            JobEvent::Resume => "resume",
            JobEvent::Complete => "complete",
            JobEvent::Fail => "fail",
            JobEvent::Cancel => "cancel",
        }
    }
}

/// The state machine: where `event` takes a job in `status`, if anywhere.
pub fn next_status(status: JobStatus, event: JobEvent) -> Option<JobStatus> {
    use JobEvent as E;
    use JobStatus as S;
    match (status, event) {
        (S::Queued, E::Start) => Some(S::Running),
        (S::Running, E::Pause) => Some(S::Paused),
        (S::Paused, E::Resume) => Some(S::Running),
        (S::Running, E::Complete) => Some(S::Completed),
        (S::Running, E::Fail) => Some(S::Failed),
        (S::Queued | S::Running | S::Paused, E::Cancel) => Some(S::Cancelled),
        _ => None,
    }
}

/// What a new job is made of.
pub struct NewJob<'a> {
    pub name: &'a str,
    pub model: &'a str,
    pub dataset: &'a str,
    pub config: Option<serde_json::Value>,
}

const MAX_CONFIG_BYTES: usize = 64 * 1024;

fn not_found(id: &str) -> VaultError {
    VaultError::not_found(ErrorCode::TrainingJobNotFound, format!("No training job with id {id}."))
}

pub async fn create(db: &Db, job: NewJob<'_>, actor: Option<&str>) -> Result<TrainingJob> {
    let config = job.config.unwrap_or_else(|| serde_json::json!({}));
    if !config.is_object() {
        return Err(VaultError::invalid_field("config: must be a JSON object"));
    }
    if config.to_string().len() > MAX_CONFIG_BYTES {
        return Err(VaultError::invalid_field(format!("config: at most {MAX_CONFIG_BYTES} bytes")));
    }
    let now = crate::time::now_rfc3339();
    let record = TrainingJob {
        id: crate::secrets::new_id(),
        name: validate::text("name", job.name, 200)?,
        status: JobStatus::Queued,
        model: validate::text("model", job.model, 256)?,
        dataset: validate::text("dataset", job.dataset, 1024)?,
        config,
        metrics: serde_json::json!({}),
        progress: 0.0,
        error: None,
        created_by: actor.map(String::from),
        created_at: now.clone(),
        updated_at: now,
        started_at: None,
        completed_at: None,
    };
    storage::training::insert(&db.connect().await?, &record).await?;
    activity::record(
        db,
        "training.created",
        actor,
        Some(&record.id),
        format!("Training job \"{}\" queued", record.name),
    )
    .await;
    Ok(record)
}

/// Jobs, newest first; with `status`, only those in it.
pub async fn list(db: &Db, status: Option<JobStatus>) -> Result<Vec<TrainingJob>> {
    storage::training::list(&db.connect().await?, status).await
}

pub async fn get(db: &Db, id: &str) -> Result<TrainingJob> {
    storage::training::get(&db.connect().await?, id).await?.ok_or_else(|| not_found(id))
}

/// Applies `event` to a job, or answers 409 `invalid_state` naming the current state.
pub async fn apply(db: &Db, id: &str, event: JobEvent, actor: Option<&str>) -> Result<TrainingJob> {
    let conn = db.connect().await?;
    let mut job = storage::training::get(&conn, id).await?.ok_or_else(|| not_found(id))?;
    let current = job.status;
    let Some(next) = next_status(current, event) else {
        return Err(VaultError::conflict(
            ErrorCode::InvalidState,
            format!("Cannot {} a training job that is {}.", event.verb(), current.as_str()),
        )
        .with_details(serde_json::json!({"status": current.as_str()})));
    };
    let now = crate::time::now_rfc3339();
    job.status = next;
    job.updated_at = now.clone();
    if next == JobStatus::Running && job.started_at.is_none() {
        job.started_at = Some(now.clone());
    }
    if next == JobStatus::Completed {
        job.progress = 1.0;
    }
    if next.is_terminal() {
        job.completed_at = Some(now);
    }
    if !storage::training::update_if_status(&conn, &job, current).await? {
        return Err(VaultError::conflict(ErrorCode::InvalidState, "The training job changed state meanwhile; retry."));
    }
    activity::record(
        db,
        &format!("training.{}", next.as_str()),
        actor,
        Some(id),
        format!("Training job \"{}\" {}", job.name, next.as_str()),
    )
    .await;
    Ok(job)
}

/// Deletes a job record; only a finished (completed, failed or cancelled) job may go.
pub async fn delete(db: &Db, id: &str, actor: Option<&str>) -> Result<()> {
    let conn = db.connect().await?;
    let job = storage::training::get(&conn, id).await?.ok_or_else(|| not_found(id))?;
    if !job.status.is_terminal() || !storage::training::delete_if_status(&conn, id, job.status).await? {
        return Err(VaultError::conflict(
            ErrorCode::InvalidState,
            format!("Cannot delete a training job that is {}; cancel it first.", job.status.as_str()),
        ));
    }
    activity::record(db, "training.deleted", actor, Some(id), format!("Training job \"{}\" deleted", job.name)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_the_documented_arrows() {
        use JobEvent as E;
        use JobStatus as S;
        let legal = [
            (S::Queued, E::Start, S::Running),
            (S::Queued, E::Cancel, S::Cancelled),
            (S::Running, E::Pause, S::Paused),
            (S::Running, E::Complete, S::Completed),
            (S::Running, E::Fail, S::Failed),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Paused, E::Resume, S::Running),
            (S::Paused, E::Cancel, S::Cancelled),
        ];
        for status in JobStatus::ALL {
            for event in JobEvent::ALL {
                let expected = legal.iter().find(|(s, e, _)| *s == status && *e == event).map(|(_, _, to)| *to);
                assert_eq!(next_status(status, event), expected, "{status:?} + {event:?}");
            }
        }
    }

    #[tokio::test]
    async fn jobs_move_through_states_and_refuse_illegal_moves() {
        let (_dir, db) = storage::test_db().await;
        let job = create(&db, NewJob { name: "ft", model: "m", dataset: "d.jsonl", config: None }, Some("admin"))
            .await
            .unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        let err = apply(&db, &job.id, JobEvent::Pause, None).await.unwrap_err();
        assert_eq!((err.status(), err.code), (409, ErrorCode::InvalidState));
        assert_eq!(delete(&db, &job.id, None).await.unwrap_err().code, "invalid_state");
        let running = apply(&db, &job.id, JobEvent::Start, None).await.unwrap();
        assert!(running.started_at.is_some());
        apply(&db, &job.id, JobEvent::Pause, None).await.unwrap();
        apply(&db, &job.id, JobEvent::Resume, None).await.unwrap();
        let done = apply(&db, &job.id, JobEvent::Complete, None).await.unwrap();
        assert_eq!((done.status, done.progress), (JobStatus::Completed, 1.0));
        assert!(done.completed_at.is_some());
        assert_eq!(apply(&db, &job.id, JobEvent::Cancel, None).await.unwrap_err().status(), 409);
        delete(&db, &job.id, None).await.unwrap();
        assert_eq!(get(&db, &job.id).await.unwrap_err().status(), 404);
    }

    #[tokio::test]
    async fn bad_jobs_are_refused() {
        let (_dir, db) = storage::test_db().await;
        let bad_config = NewJob { name: "a", model: "m", dataset: "d", config: Some(serde_json::json!([1])) };
        assert!(create(&db, bad_config, None).await.unwrap_err().message.starts_with("config"));
        let no_name = NewJob { name: " ", model: "m", dataset: "d", config: None };
        assert!(create(&db, no_name, None).await.unwrap_err().message.starts_with("name"));
        assert!("sleeping".parse::<JobStatus>().unwrap_err().message.starts_with("status"));
    }
}
