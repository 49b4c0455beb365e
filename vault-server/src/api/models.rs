//! `/vault/models`: the models on disk, merged with the manifest and with what the engine
//! serves. Ids may contain `/` (`org/name`), as the edge keeps them in one path segment.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use vault_core::{Vault, models};

use super::{ApiResult, NoContent, Tag};
use crate::auth::{AdminKey, UserKey};
use crate::dto::{ModelDetail, ModelInventory, ModelSummary};

pub struct ModelsApi;

#[OpenApi(prefix_path = "/vault/models", tag = "Tag::Models")]
impl ModelsApi {
    /// List the models
    ///
    /// Every model folder of the models dir (`loaded`, `available`, or `incomplete` with the
    /// reason), and every model the engine serves from elsewhere.
    #[oai(path = "/", method = "get")]
    async fn list(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<ModelInventory>> {
        let items = models::list(&vault.inference, &vault.config.models_dir).await?;
        Ok(Json(ModelInventory { items: items.into_iter().map(ModelSummary::from).collect() }))
    }

    /// Get a model
    ///
    /// Size and files on disk, the facts of its `config.json`, its manifest entry, whether
    /// it is loaded, and the GPU memory the load check expects it to take.
    #[oai(path = "/:model_id", method = "get")]
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
    #[oai(path = "/:model_id", method = "delete")]
    async fn delete(&self, vault: Data<&Arc<Vault>>, key: AdminKey, model_id: Path<String>) -> ApiResult<NoContent> {
        let actor = key.0.account();
        models::delete(&vault.inference, &vault.config.models_dir, &model_id, &actor, &vault.db).await?;
        Ok(NoContent::Deleted)
    }
}
