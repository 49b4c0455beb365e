//! `/vault/system/*`, `/vault/insights`, `/vault/activity`: what the dashboards read.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use vault_core::insights::Range;
use vault_core::{Vault, VaultError, activity, gpu};

use super::{ApiResult, Tag};
use crate::auth::UserKey;
use crate::declared::{Limit, OneOf, Ranges};
use crate::dto::{ActivityFeed, ActivityItem, GpuReport, Insights, Resources};

pub struct SystemApi;

#[OpenApi(prefix_path = "/vault", tag = "Tag::System")]
impl SystemApi {
    /// CPU, memory, disk and network usage
    #[oai(path = "/system/resources", method = "get")]
    async fn resources(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<Resources>> {
        Ok(Json(vault.monitor.resources().await?.into()))
    }

    /// Per-GPU metrics
    ///
    /// `{"gpus": [], "available": false}` on a box without NVML.
    #[oai(path = "/system/gpu", method = "get")]
    async fn gpu(&self, _key: UserKey) -> ApiResult<Json<GpuReport>> {
        let report = tokio::task::spawn_blocking(gpu::report)
            .await
            .map_err(|e| VaultError::internal("reading GPU metrics", e))?;
        Ok(Json(report.into()))
    }

    /// Usage insights
    ///
    /// Inference requests and tokens over time, active users, per-model usage, average and
    /// p95 latency. An admin key sees everyone's usage; a user key sees its own.
    #[oai(path = "/insights", method = "get")]
    async fn insights(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        /// [default: `7d`]
        range: Query<Option<OneOf<Ranges>>>,
    ) -> ApiResult<Json<Insights>> {
        let range: Range = range.as_ref().map(|r| r.as_str().parse()).transpose()?.unwrap_or_default();
        Ok(Json(vault.insights(range, &key.0).await?.into()))
    }

    /// Recent activity
    ///
    /// Keys, users, conversations and training jobs, newest first. An admin key sees
    /// everyone's; a user key sees its own.
    #[oai(path = "/activity", method = "get")]
    async fn activity(
        &self,
        vault: Data<&Arc<Vault>>,
        key: UserKey,
        /// [default: 20]
        limit: Query<Option<Limit<{ activity::PAGES.max }>>>,
    ) -> ApiResult<Json<ActivityFeed>> {
        let items = activity::visible_to(&vault.db, limit.0.map(|l| l.0), &key.0).await?;
        Ok(Json(ActivityFeed { items: items.into_iter().map(ActivityItem::from).collect() }))
    }
}
