//! `GET /metrics`: the gateway's Prometheus metrics, for an admin key. (A scraper on the
//! box can read them without a key on `VAULT_METRICS_ADDR`; see the edge.)

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::PlainText;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::Vault;

use super::{ApiResult, Tag};
use crate::auth::AdminKey;

pub struct MetricsApi;

#[derive(ApiResponse)]
pub enum MetricsText {
    /// The metrics in the OpenMetrics text format.
    #[oai(status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")]
    Ok(PlainText<String>),
}

#[OpenApi(tag = "Tag::System")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// Requests by route template and status, the time spent in Vault apart from the
    /// upstream, upstream time to first byte and latency, tokens by model, active streams,
    /// the audit writer's queue and commits, and the key cache.
    #[oai(path = "/metrics", method = "get", operation_id = "getMetrics")]
    async fn metrics(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<MetricsText> {
        Ok(MetricsText::Ok(PlainText(vault.metrics_text())))
    }
}
