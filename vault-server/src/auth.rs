//! Who may call what. A handler that takes `UserKey` or `AdminKey` cannot be reached
//! without one: the requirement is in its signature and in the generated spec.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use vault_core::audit::RequestAudit;
use vault_core::keys::Principal;
use vault_core::{Vault, VaultError};

use crate::error::ApiError;

/// Any valid key (`user` or `admin` scope).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "vault_sk_…", checker = "check_any_scope")]
pub struct UserKey(pub Principal);

/// A valid key with the `admin` scope.
#[derive(SecurityScheme)]
#[oai(rename = "AdminKey", ty = "bearer", bearer_format = "vault_sk_…", checker = "check_admin_scope")]
pub struct AdminKey(pub Principal);

async fn check_any_scope(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    authenticate(req, &bearer.token).await
}

async fn check_admin_scope(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let principal = authenticate(req, &bearer.token).await?;
    principal.require_admin().map_err(ApiError)?;
    Ok(principal)
}

async fn authenticate(req: &Request, token: &str) -> poem::Result<Principal> {
    let missing = || ApiError(VaultError::internal("checking a key", "the request state is missing"));
    let vault = req.data::<Arc<Vault>>().ok_or_else(missing)?;
    let audit = req.extensions().get::<Arc<RequestAudit>>().ok_or_else(missing)?;
    Ok(vault.authenticate(token, audit).await.map_err(ApiError)?)
}
