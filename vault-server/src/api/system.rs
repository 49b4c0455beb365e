//! `/vault/system/*`, `/vault/insights`, `/vault/activity`: what the dashboards read.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::insights::Range;
use vault_core::{Vault, VaultError, activity, gpu, health, logs, services};

use super::{ApiResult, Tag};
use crate::auth::{AdminKey, UserKey};
use crate::declared::{Limit, LogLevels, LogServices, OneOf, Ranges, ServiceNames};
use crate::dto::{
    ActivityFeed, ActivityItem, GpuReport, InferenceStats, Insights, LogPage, Resources, RestartRequested, Service,
    ServiceList, SystemHealth,
};

pub struct SystemApi;

#[derive(ApiResponse)]
pub enum HealthReport {
    /// Serving: `ok`, or `degraded` while some part is not well.
    #[oai(status = 200)]
    Ready(Json<SystemHealth>),
    /// `down`: Vault cannot keep its records, so it serves nothing.
    #[oai(status = 503)]
    Down(Json<SystemHealth>),
}

#[derive(ApiResponse)]
pub enum RestartAccepted {
    /// The restart was queued on the host (or, in a dry run, recorded).
    #[oai(status = 202)]
    Accepted(Json<RestartRequested>),
}

#[OpenApi(prefix_path = "/vault", tag = "Tag::System")]
impl SystemApi {
    /// CPU, memory, disk and network usage
    #[oai(path = "/system/resources", method = "get", operation_id = "getSystemResources")]
    async fn resources(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<Resources>> {
        Ok(Json(vault.monitor.resources().await?.into()))
    }

    /// Per-GPU metrics
    ///
    /// `{"gpus": [], "available": false}` on a box without NVML.
    #[oai(path = "/system/gpu", method = "get", operation_id = "getGpuStatus")]
    async fn gpu(&self, _key: UserKey) -> ApiResult<Json<GpuReport>> {
        let report = tokio::task::spawn_blocking(gpu::report)
            .await
            .map_err(|e| VaultError::internal("reading GPU metrics", e))?;
        Ok(Json(report.into()))
    }

    /// Expanded health
    ///
    /// Every part the appliance needs, each with a status and a reason: database, audit
    /// trail, inference engine, the data directory's disk, the certificate, GPUs and the
    /// managed services. Answers 503 when the overall status is `down`, so it can serve
    /// as a readiness probe.
    #[oai(path = "/system/health", method = "get", operation_id = "getSystemHealth")]
    async fn health(&self, vault: Data<&Arc<Vault>>, key: UserKey) -> ApiResult<HealthReport> {
        let report = health::report(&vault, key.0.require_admin().is_ok()).await;
        let ready = report.is_ready();
        let body = Json(report.into());
        Ok(if ready { HealthReport::Ready(body) } else { HealthReport::Down(body) })
    }

    /// Inference statistics
    ///
    /// Requests per minute, error rate, tokens per second, latency and time to first token
    /// (p50/p95/p99) over the last 5 and 60 minutes, for every gateway on this database.
    #[oai(path = "/system/inference", method = "get", operation_id = "getInferenceStats")]
    async fn inference(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<Json<InferenceStats>> {
        Ok(Json(vault.inference_stats().await?.into()))
    }

    /// Managed services
    ///
    /// The services the appliance manages, with systemd's view of each (`unknown` in a dry
    /// run, where systemd is not asked).
    #[oai(path = "/system/services", method = "get", operation_id = "listServices")]
    async fn services(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<ServiceList>> {
        let items = services::list(&vault.controller).await?.into_iter().map(Service::from).collect();
        Ok(Json(ServiceList { items }))
    }

    /// Restart a managed service
    ///
    /// Only a service of the list, named exactly. The restart is queued on the host and not
    /// waited for (the service may be this gateway); it is recorded with who asked.
    #[oai(path = "/system/services/:name/restart", method = "post", operation_id = "restartService")]
    async fn restart_service(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        name: Path<OneOf<ServiceNames>>,
    ) -> ApiResult<RestartAccepted> {
        let requested = services::restart(&vault.db, &vault.controller, name.as_str(), &key.0.account()).await?;
        Ok(RestartAccepted::Accepted(Json(requested.into())))
    }

    /// Logs
    ///
    /// This gateway's own log (its JSON log file, rotated files included), or a managed
    /// service's systemd journal, newest first, a page at a time: pass `next_cursor` back as
    /// `cursor`. Filtered by level (that level and the more severe), time and text.
    #[oai(path = "/system/logs", method = "get", operation_id = "getLogs")]
    #[allow(clippy::too_many_arguments)]
    async fn logs(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// [default: `vault`]
        service: Query<Option<OneOf<LogServices>>>,
        /// This level and the more severe ones [default: all].
        level: Query<Option<OneOf<LogLevels>>>,
        /// RFC 3339, inclusive.
        since: Query<Option<String>>,
        /// RFC 3339, exclusive.
        until: Query<Option<String>>,
        /// Entries whose line contains this, ignoring case.
        text: Query<Option<String>>,
        /// [default: 100]
        limit: Query<Option<Limit<{ logs::PAGES.max }>>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<LogPage>> {
        let query = logs::LogQuery {
            service: service.0.map(String::from),
            level: level.0.map(String::from),
            since: since.0,
            until: until.0,
            text: text.0,
        };
        Ok(Json(vault.logs(&query, limit.0.map(|l| l.0), cursor.0).await?.into()))
    }

    /// Usage insights
    ///
    /// Inference requests and tokens over time, active users, per-model usage, average and
    /// p95 latency. An admin key sees everyone's usage; a user key sees its own.
    #[oai(path = "/insights", method = "get", operation_id = "getInsights")]
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
    #[oai(path = "/activity", method = "get", operation_id = "getActivity")]
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
