//! `/vault/models`: the models on disk, merged with the manifest and with what the engine
//! serves. Ids may contain `/` (`org/name`), as the edge keeps them in one path segment.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::Vault;
use vault_core::models::{self, import, operations};

use super::{ApiResult, NoContent, Tag};
use crate::auth::{AdminKey, UserKey};
use crate::dto::{ActiveModels, ImportModel, ModelDetail, ModelInventory, ModelOperation, ModelSummary};
use crate::payload::JsonBody;

pub struct ModelsApi;

#[derive(ApiResponse)]
pub enum OperationStarted {
    /// Started: follow it with `GET /vault/models/operations/{id}`.
    #[oai(status = 202)]
    Accepted(Json<ModelOperation>),
}

#[OpenApi(prefix_path = "/vault/models", tag = "Tag::Models")]
impl ModelsApi {
    /// List the models
    ///
    /// Every model folder of the models dir (`loaded`, `available`, or `incomplete` with the
    /// reason), and every model the engine serves from elsewhere.
    #[oai(path = "/", method = "get", operation_id = "listLocalModels")]
    async fn list(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<ModelInventory>> {
        let items = models::list(&vault.inference, &vault.config.models_dir).await?;
        Ok(Json(ModelInventory { items: items.into_iter().map(ModelSummary::from).collect() }))
    }

    /// Loaded models and GPU memory
    ///
    /// The models the engine serves, with the GPUs Vault's model configuration placed them
    /// on, and each GPU's memory (NVML; `available: false` without it).
    #[oai(path = "/active", method = "get", operation_id = "listActiveModels")]
    async fn active(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<ActiveModels>> {
        Ok(Json(operations::active(&vault).await?.into()))
    }

    /// Import a model
    ///
    /// From a folder under one of the import roots (`VAULT_IMPORT_ROOTS`, e.g. a mounted USB
    /// disk). Checked first (no link in it or out of the roots, `config.json` parses, weights
    /// present and whole, room on the disk), then copied in the background: follow the
    /// operation for bytes copied. The model appears only once complete.
    #[oai(path = "/import", method = "post", operation_id = "importModel")]
    async fn import(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<ImportModel>,
    ) -> ApiResult<OperationStarted> {
        let started = import::import(&vault, &body.path, body.id.as_deref(), &key.0.account()).await?;
        Ok(OperationStarted::Accepted(Json(started.into())))
    }

    /// Follow a model load, unload or import
    #[oai(path = "/operations/:operation_id", method = "get", operation_id = "getModelOperation")]
    async fn operation(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        operation_id: Path<String>,
    ) -> ApiResult<Json<ModelOperation>> {
        Ok(Json(vault.operations.get(&operation_id)?.into()))
    }

    /// Load a model
    ///
    /// Checks that it is complete, not loaded, and fits the freest GPU (weights × 1.2
    /// against its free memory: 409 `insufficient_gpu_memory` with both figures otherwise),
    /// writes the inference service's model configuration (`VAULT_GPU_CONFIG`) and restarts
    /// the service through the system controller. One load or unload at a time.
    #[oai(path = "/:model_id/load", method = "post", operation_id = "loadModel")]
    async fn load(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        model_id: Path<String>,
    ) -> ApiResult<OperationStarted> {
        let started = operations::load(&vault, &model_id, &key.0.account()).await?;
        Ok(OperationStarted::Accepted(Json(started.into())))
    }

    /// Unload a model
    ///
    /// Only one Vault loaded (in its model configuration); restarts the inference service.
    #[oai(path = "/:model_id/unload", method = "post", operation_id = "unloadModel")]
    async fn unload(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        model_id: Path<String>,
    ) -> ApiResult<OperationStarted> {
        let started = operations::unload(&vault, &model_id, &key.0.account()).await?;
        Ok(OperationStarted::Accepted(Json(started.into())))
    }

    /// Get a model
    ///
    /// Size and files on disk, the facts of its `config.json`, its manifest entry, whether
    /// it is loaded, and the GPU memory the load check expects it to take.
    #[oai(path = "/:model_id", method = "get", operation_id = "getLocalModel")]
    async fn get(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: UserKey,
        model_id: Path<String>,
    ) -> ApiResult<Json<ModelDetail>> {
        Ok(Json(models::detail(&vault.inference, &vault.config.models_dir, &model_id).await?.into()))
    }

    /// Delete a model
    ///
    /// Removes its folder and everything in it (symbolic links inside are removed, never
    /// followed; a link in a model's place is no model: 404). Refused with 409
    /// `model_loaded` while the engine serves it.
    #[oai(path = "/:model_id", method = "delete", operation_id = "deleteLocalModel")]
    async fn delete(&self, vault: Data<&Arc<Vault>>, key: AdminKey, model_id: Path<String>) -> ApiResult<NoContent> {
        let actor = key.0.account();
        let busy = |model: &str| vault.operations.busy_with(model);
        models::delete(&vault.inference, &vault.config, &model_id, &actor, &vault.db, &busy).await?;
        Ok(NoContent::Deleted)
    }
}
