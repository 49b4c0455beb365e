//! `/vault/training/jobs`: training job records and their state machine. Reading needs any
//! key; creating and changing jobs needs admin.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::Vault;
use vault_core::training::{self, JobEvent, NewJob};

use super::{ApiResult, NoContent, Tag};
use crate::auth::{AdminKey, UserKey};
use crate::declared::{JobStatuses, OneOf};
use crate::dto::{CreateTrainingJob, TrainingJob, TrainingJobList};
use crate::payload::JsonBody;

pub struct TrainingApi;

#[derive(ApiResponse)]
pub enum JobCreated {
    /// The queued job.
    #[oai(status = 201)]
    Created(Json<TrainingJob>),
}

async fn transition(vault: &Vault, key: &AdminKey, id: &str, event: JobEvent) -> ApiResult<Json<TrainingJob>> {
    Ok(Json(training::apply(&vault.db, id, event, Some(&key.0.account())).await?.into()))
}

#[OpenApi(prefix_path = "/vault/training/jobs", tag = "Tag::Training")]
impl TrainingApi {
    /// List training jobs
    #[oai(path = "/", method = "get", operation_id = "listTrainingJobs")]
    async fn list(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: UserKey,
        /// Only jobs in this state.
        status: Query<Option<OneOf<JobStatuses>>>,
    ) -> ApiResult<Json<TrainingJobList>> {
        let status = status.as_ref().map(|s| s.as_str().parse()).transpose()?;
        let jobs = training::list(&vault.db, status).await?;
        Ok(Json(TrainingJobList { items: jobs.into_iter().map(TrainingJob::from).collect() }))
    }

    /// Create a training job
    ///
    /// The job starts `queued`.
    #[oai(path = "/", method = "post", operation_id = "createTrainingJob")]
    async fn create(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<CreateTrainingJob>,
    ) -> ApiResult<JobCreated> {
        let body = body.0;
        let job = NewJob { name: &body.name, model: &body.model, dataset: &body.dataset, config: body.config };
        let created = training::create(&vault.db, job, Some(&key.0.account())).await?;
        Ok(JobCreated::Created(Json(created.into())))
    }

    /// Get a training job with its metrics
    #[oai(path = "/:id", method = "get", operation_id = "getTrainingJob")]
    async fn get(&self, vault: Data<&Arc<Vault>>, _key: UserKey, id: Path<String>) -> ApiResult<Json<TrainingJob>> {
        Ok(Json(training::get(&vault.db, &id).await?.into()))
    }

    /// Pause a running job
    ///
    /// 409 `invalid_state` unless the job is running.
    #[oai(path = "/:id/pause", method = "post", operation_id = "pauseTrainingJob")]
    async fn pause(&self, vault: Data<&Arc<Vault>>, key: AdminKey, id: Path<String>) -> ApiResult<Json<TrainingJob>> {
        transition(&vault, &key, &id, JobEvent::Pause).await
    }

    /// Resume a paused job
    ///
    /// 409 `invalid_state` unless the job is paused.
    #[oai(path = "/:id/resume", method = "post", operation_id = "resumeTrainingJob")]
    async fn resume(&self, vault: Data<&Arc<Vault>>, key: AdminKey, id: Path<String>) -> ApiResult<Json<TrainingJob>> {
        transition(&vault, &key, &id, JobEvent::Resume).await
    }

    /// Cancel a job
    ///
    /// 409 `invalid_state` when the job has already finished.
    #[oai(path = "/:id/cancel", method = "post", operation_id = "cancelTrainingJob")]
    async fn cancel(&self, vault: Data<&Arc<Vault>>, key: AdminKey, id: Path<String>) -> ApiResult<Json<TrainingJob>> {
        transition(&vault, &key, &id, JobEvent::Cancel).await
    }

    /// Delete a finished job's record
    ///
    /// 409 `invalid_state` unless the job is completed, failed or cancelled.
    #[oai(path = "/:id", method = "delete", operation_id = "deleteTrainingJob")]
    async fn delete(&self, vault: Data<&Arc<Vault>>, key: AdminKey, id: Path<String>) -> ApiResult<NoContent> {
        training::delete(&vault.db, &id, Some(&key.0.account())).await?;
        Ok(NoContent::Deleted)
    }
}
