//! `/vault/admin/*`: users, keys and configuration. Every route needs an admin key.

use std::sync::Arc;

use futures_util::StreamExt;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::audit::{self, AuditFilter};
use vault_core::keys::{self, Scope};
use vault_core::limits;
use vault_core::users::{self, Role, UserUpdate};
use vault_core::{Vault, certificate, settings};

use super::{ApiResult, Tag};
use crate::auth::AdminKey;
use crate::declared::{AuditExportFormats, Limit, OneOf};
use crate::download::{CsvOrJsonArray, Download};
use crate::dto::{
    ApiKey, ApiKeyList, AppliedNetworkConfig, AppliedSystemSettings, AuditEntry, AuditPage, AuditStats,
    AuditVerification, CertificateInfo, CertificateRequest, ConfigChanged, ConfigOverview, ConfigUpdate, CreateApiKey,
    CreateUser, CreatedApiKey, KeyLimits, NetworkConfig, RateLimits, SystemSettings, TlsStatus, UpdateUser, User,
    UserLimits, UserList,
};
use crate::payload::JsonBody;

pub struct AdminApi;

#[derive(ApiResponse)]
pub enum UserCreated {
    /// The new user.
    #[oai(status = 201)]
    Created(Json<User>),
}

#[derive(ApiResponse)]
pub enum KeyCreated {
    /// The new key; `key` is shown this once.
    #[oai(status = 201)]
    Created(Json<CreatedApiKey>),
}

#[OpenApi(prefix_path = "/vault/admin", tag = "Tag::Admin")]
impl AdminApi {
    /// List users
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
    async fn list_users(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<UserList>> {
        let items = users::list(&vault.db).await?.into_iter().map(User::from).collect();
        Ok(Json(UserList { items }))
    }

    /// Create a user
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create_user(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<CreateUser>,
    ) -> ApiResult<UserCreated> {
        let role: Role = body.role.as_ref().map(|r| r.as_str().parse()).transpose()?.unwrap_or_default();
        let user = users::create(&vault.db, &body.name, &body.email, role, Some(&key.0.account())).await?;
        Ok(UserCreated::Created(Json(user.into())))
    }

    /// Update a user
    ///
    /// Deactivating (`is_active: false`) stops all of the user's keys on their next request.
    #[oai(path = "/users/:id", method = "put", operation_id = "updateUser")]
    async fn update_user(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        id: Path<String>,
        body: JsonBody<UpdateUser>,
    ) -> ApiResult<Json<User>> {
        let body = body.0;
        let role = body.role.as_ref().map(|r| r.as_str().parse()).transpose()?;
        let changes = UserUpdate { name: body.name, email: body.email, role, is_active: body.is_active };
        Ok(Json(users::update(&vault.db, &id, changes, Some(&key.0.account())).await?.into()))
    }

    /// Deactivate a user
    ///
    /// A soft delete: the record stays; the user's keys stop working on the next request.
    #[oai(path = "/users/:id", method = "delete", operation_id = "deactivateUser")]
    async fn deactivate_user(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        id: Path<String>,
    ) -> ApiResult<Json<User>> {
        Ok(Json(users::deactivate(&vault.db, &id, Some(&key.0.account())).await?.into()))
    }

    /// List API keys
    ///
    /// Prefixes only: keys and their hashes are never shown.
    #[oai(path = "/keys", method = "get", operation_id = "listKeys")]
    async fn list_keys(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// Include revoked keys [default: true].
        include_revoked: Query<Option<bool>>,
    ) -> ApiResult<Json<ApiKeyList>> {
        let listed = keys::list(&vault.db, include_revoked.unwrap_or(true)).await?;
        Ok(Json(ApiKeyList { items: listed.into_iter().map(ApiKey::from).collect() }))
    }

    /// Create an API key
    #[oai(path = "/keys", method = "post", operation_id = "createKey")]
    async fn create_key(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<CreateApiKey>,
    ) -> ApiResult<KeyCreated> {
        let scope: Scope = body.scope.as_ref().map(|s| s.as_str().parse()).transpose()?.unwrap_or_default();
        let actor = key.0.account();
        let created = keys::create(&vault.db, &body.label, scope, body.user_id.as_deref(), Some(&actor)).await?;
        Ok(KeyCreated::Created(Json(created.into())))
    }

    /// Revoke an API key
    ///
    /// It stops working on the next request and stays listed as revoked.
    #[oai(path = "/keys/:id", method = "delete", operation_id = "revokeKey")]
    async fn revoke_key(&self, vault: Data<&Arc<Vault>>, key: AdminKey, id: Path<i64>) -> ApiResult<Json<ApiKey>> {
        Ok(Json(keys::revoke_by_id(&vault.db, id.0, Some(&key.0.account())).await?.into()))
    }

    /// Get a key's rate limits
    #[oai(path = "/keys/:id/limits", method = "get", operation_id = "getKeyLimits")]
    async fn get_key_limits(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        id: Path<i64>,
    ) -> ApiResult<Json<KeyLimits>> {
        Ok(Json(limits::for_key(&vault.db, id.0, vault.config.default_limits).await?.into()))
    }

    /// Set a key's rate limits
    ///
    /// Replaces them all (`null`: none of its own); they apply from the key's next request,
    /// on every gateway of the box.
    #[oai(path = "/keys/:id/limits", method = "put", operation_id = "setKeyLimits")]
    async fn set_key_limits(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        id: Path<i64>,
        body: JsonBody<RateLimits>,
    ) -> ApiResult<Json<KeyLimits>> {
        let (defaults, actor) = (vault.config.default_limits, key.0.account());
        Ok(Json(limits::set_for_key(&vault.db, id.0, body.0.into(), defaults, Some(&actor)).await?.into()))
    }

    /// Get a user's rate limits
    #[oai(path = "/users/:id/limits", method = "get", operation_id = "getUserLimits")]
    async fn get_user_limits(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        id: Path<String>,
    ) -> ApiResult<Json<UserLimits>> {
        Ok(Json(limits::for_user(&vault.db, &id).await?.into()))
    }

    /// Set a user's rate limits
    ///
    /// Shared by all of the user's keys (each key's own limits apply too: the stricter
    /// first). Replaces them all (`null`: none), from the next request.
    #[oai(path = "/users/:id/limits", method = "put", operation_id = "setUserLimits")]
    async fn set_user_limits(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        id: Path<String>,
        body: JsonBody<RateLimits>,
    ) -> ApiResult<Json<UserLimits>> {
        let actor = key.0.account();
        Ok(Json(limits::set_for_user(&vault.db, &id, body.0.into(), Some(&actor)).await?.into()))
    }

    /// Query the audit log
    ///
    /// Newest first, filtered by any of the conditions given, a page at a time: pass
    /// `next_cursor` back as `cursor` for the next page (stable while rows are written, and
    /// as fast for the last page as for the first).
    #[oai(path = "/audit", method = "get", operation_id = "queryAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// A user's id.
        user_id: Query<Option<String>>,
        /// A key's display prefix (`vault_sk_` + 4 characters).
        key_prefix: Query<Option<String>>,
        method: Query<Option<String>>,
        /// Rows whose path starts with this.
        path: Query<Option<String>>,
        status: Query<Option<u16>>,
        model: Query<Option<String>>,
        /// RFC 3339, inclusive.
        from: Query<Option<String>>,
        /// RFC 3339, exclusive.
        to: Query<Option<String>>,
        /// [default: 100]
        limit: Query<Option<Limit<{ vault_core::audit::query::PAGES.max }>>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<AuditPage>> {
        let filter = AuditFilter {
            user_id: user_id.0,
            key_prefix: key_prefix.0,
            method: method.0,
            path_prefix: path.0,
            status: status.0,
            model: model.0,
            since: from.0,
            until: to.0,
        };
        let page = audit::page(&vault.audit, &vault.db, &filter, limit.0.map(|l| l.0), cursor.0.as_deref()).await?;
        Ok(Json(AuditPage { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
    }

    /// Export the audit log
    ///
    /// Every row matching the filters, oldest first, as CSV (cells that a spreadsheet would
    /// run as a formula are defused) or as one JSON array; streamed, so memory stays constant
    /// however long the log.
    #[oai(path = "/audit/export", method = "get", operation_id = "exportAudit")]
    async fn audit_export(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// `csv` or `json`.
        format: Query<OneOf<AuditExportFormats>>,
        /// RFC 3339, inclusive.
        from: Query<Option<String>>,
        /// RFC 3339, exclusive.
        to: Query<Option<String>>,
    ) -> ApiResult<Download<CsvOrJsonArray<AuditEntry>>> {
        let format: audit::ExportFormat = format.0.as_str().parse()?;
        let pieces = audit::export_range(&vault.audit, vault.db.clone(), from.0, to.0, format).await?;
        let pieces = pieces.map(|piece| {
            piece.map_err(|err| {
                tracing::warn!(error = %err.message, "an audit export broke off");
                std::io::Error::other(err.message)
            })
        });
        Ok(Download::new(format.media_type(), &format.file_name(), poem::Body::from_bytes_stream(pieces)))
    }

    /// Audit statistics
    ///
    /// Inference requests of a period: totals and error rate, latency percentiles, usage
    /// per account and per model, failures by status and code. Read from hourly rollups,
    /// so the period is widened to whole UTC hours (`from` back to its hour's start, `to`
    /// on to its hour's end); the answer says which hours it covers.
    #[oai(path = "/audit/stats", method = "get", operation_id = "getAuditStats")]
    async fn audit_stats(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// RFC 3339 [default: 24 hours before `to`].
        from: Query<Option<String>>,
        /// RFC 3339 [default: now].
        to: Query<Option<String>>,
    ) -> ApiResult<Json<AuditStats>> {
        Ok(Json(vault.audit_stats(from.as_deref(), to.as_deref()).await?.into()))
    }

    /// Verify the audit log
    ///
    /// Walks the hash chain of the audit log and its checkpoints signed with the server
    /// secret, and names the first row that was altered, deleted or inserted
    /// (`intact: false`). Runs beside the requests being served.
    #[oai(path = "/audit/verify", method = "get", operation_id = "verifyAudit")]
    async fn audit_verify(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: AdminKey,
        /// Start at this row id, trusting the row before it [default: the chain's start].
        from: Query<Option<i64>>,
    ) -> ApiResult<Json<AuditVerification>> {
        Ok(Json(vault.verify_audit(from.0).await?.into()))
    }

    /// Get the whole configuration
    ///
    /// Network, system settings, the certificate, how the inference engine is reached, and
    /// where setup stands. Never a secret.
    #[oai(path = "/config", method = "get", operation_id = "getConfig")]
    async fn get_config(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<ConfigOverview>> {
        Ok(Json(settings::overview(&vault).await?.into()))
    }

    /// Change the configuration
    ///
    /// A partial update: only the sections and fields given change. Every field is checked
    /// first (a 400 names it as `section.field`), so a bad one changes nothing. Network and
    /// time zone changes go through the system controller.
    #[oai(path = "/config", method = "put", operation_id = "updateConfig")]
    async fn put_config(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<ConfigUpdate>,
    ) -> ApiResult<Json<ConfigChanged>> {
        Ok(Json(settings::update(&vault, body.0.into(), &key.0.account()).await?.into()))
    }

    /// Get the certificate
    ///
    /// Subject, issuer, names, validity and days left, SHA-256 fingerprint, self-signed.
    #[oai(path = "/config/tls", method = "get", operation_id = "getTlsStatus")]
    async fn get_tls(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<TlsStatus>> {
        Ok(Json(certificate::current(&vault.config)?.into()))
    }

    /// Install a certificate
    ///
    /// Self-signed (made here for the host name, `localhost` and the static address) or an
    /// uploaded PEM chain and unencrypted key, checked first: it parses, the key matches the
    /// leaf, it is valid now, the chain is in order. A bad upload changes nothing.
    #[oai(path = "/config/tls", method = "post", operation_id = "installCertificate")]
    async fn post_tls(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<CertificateRequest>,
    ) -> ApiResult<Json<CertificateInfo>> {
        let request = body.0;
        let source =
            certificate::TlsSource::from_request(request.mode.as_str(), request.certificate, request.private_key)?;
        let info = certificate::install(&vault.config, &vault.db, source, &key.0.account()).await?;
        Ok(Json(info.into()))
    }

    /// Get the network configuration
    #[oai(path = "/config/network", method = "get", operation_id = "getNetworkConfig")]
    async fn get_network(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<NetworkConfig>> {
        Ok(Json(settings::network(&vault.db).await?.into()))
    }

    /// Change the network configuration
    ///
    /// Applied through the system controller (a dry run unless `VAULT_SYSTEM_CONTROL=host`).
    #[oai(path = "/config/network", method = "put", operation_id = "updateNetworkConfig")]
    async fn put_network(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<NetworkConfig>,
    ) -> ApiResult<Json<AppliedNetworkConfig>> {
        let applied =
            settings::set_network(&vault.db, vault.controller.as_ref(), body.0.into(), Some(&key.0.account())).await?;
        Ok(Json(applied.into()))
    }

    /// Get the system settings
    #[oai(path = "/config/system", method = "get", operation_id = "getSystemConfig")]
    async fn get_system(&self, vault: Data<&Arc<Vault>>, _key: AdminKey) -> ApiResult<Json<SystemSettings>> {
        Ok(Json(settings::system(&vault.db).await?.into()))
    }

    /// Change the system settings
    #[oai(path = "/config/system", method = "put", operation_id = "updateSystemConfig")]
    async fn put_system(
        &self,
        vault: Data<&Arc<Vault>>,
        key: AdminKey,
        body: JsonBody<SystemSettings>,
    ) -> ApiResult<Json<AppliedSystemSettings>> {
        let applied =
            settings::set_system(&vault.db, vault.controller.as_ref(), body.0.into(), Some(&key.0.account())).await?;
        Ok(Json(applied.into()))
    }
}
