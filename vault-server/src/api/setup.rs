//! `/vault/setup/*`: the first-boot wizard. No key is needed while setup is pending; once it
//! is complete these routes no longer exist (the edge answers 404 for any path under
//! `/vault/setup`, before routing).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use vault_core::{Vault, setup};

use super::{ApiResult, Tag};
use crate::dto::{
    AppliedNetworkConfig, CertificateInfo, CertificateRequest, NetworkConfig, SetupAdmin, SetupAdminCreated,
    SetupModel, SetupModelChosen, SetupStatus, Verification,
};
use crate::payload::JsonBody;

pub struct SetupApi;

#[derive(ApiResponse)]
pub enum AdminCreated {
    /// The admin user and its key; `key.key` is shown this once.
    #[oai(status = 201)]
    Created(Json<SetupAdminCreated>),
}

#[OpenApi(prefix_path = "/vault/setup", tag = "Tag::Setup")]
impl SetupApi {
    /// Where the wizard stands
    ///
    /// Every step with its state (`pending`, `in_progress`, `complete`) and what it stored.
    #[oai(path = "/status", method = "get", operation_id = "getSetupStatus")]
    async fn status(&self, vault: Data<&Arc<Vault>>) -> ApiResult<Json<SetupStatus>> {
        Ok(Json(setup::status(&vault.config, &vault.db).await?.into()))
    }

    /// Configure the network
    ///
    /// Host name, addresses and DNS, applied through the system controller (a dry run
    /// unless `VAULT_SYSTEM_CONTROL=host`).
    #[oai(path = "/network", method = "post", operation_id = "setupNetwork")]
    async fn network(
        &self,
        vault: Data<&Arc<Vault>>,
        body: JsonBody<NetworkConfig>,
    ) -> ApiResult<Json<AppliedNetworkConfig>> {
        Ok(Json(setup::network(&vault, body.0.into()).await?.into()))
    }

    /// Create the admin
    ///
    /// The first admin user and an admin key for it. Exactly one call creates them; every
    /// later one answers 409 `admin_exists`.
    #[oai(path = "/admin", method = "post", operation_id = "setupAdmin")]
    async fn admin(&self, vault: Data<&Arc<Vault>>, body: JsonBody<SetupAdmin>) -> ApiResult<AdminCreated> {
        let created = setup::admin(&vault, &body.name, &body.email).await?;
        Ok(AdminCreated::Created(Json(created.into())))
    }

    /// Install the certificate
    ///
    /// Self-signed (made here) or an uploaded PEM chain and key, checked first: it parses,
    /// the key matches, it is valid now, the chain is in order. A bad upload changes nothing.
    #[oai(path = "/tls", method = "post", operation_id = "setupTls")]
    async fn tls(
        &self,
        vault: Data<&Arc<Vault>>,
        body: JsonBody<CertificateRequest>,
    ) -> ApiResult<Json<CertificateInfo>> {
        let request = body.0;
        let source = vault_core::certificate::TlsSource::from_request(
            request.mode.as_str(),
            request.certificate,
            request.private_key,
        )?;
        Ok(Json(setup::tls(&vault, source).await?.into()))
    }

    /// Choose the default model
    ///
    /// It must be an `id` of the model manifest.
    #[oai(path = "/model", method = "post", operation_id = "setupModel")]
    async fn model(&self, vault: Data<&Arc<Vault>>, body: JsonBody<SetupModel>) -> ApiResult<Json<SetupModelChosen>> {
        let entry = setup::model(&vault, &body.model_id).await?;
        Ok(Json(SetupModelChosen { model_id: body.0.model_id, manifest: entry.into() }))
    }

    /// Check the box
    ///
    /// Real checks, each with pass or fail and a reason: a database write and read, the
    /// inference service's models, GPUs through NVML, the certificate.
    #[oai(path = "/verify", method = "get", operation_id = "verifySetup")]
    async fn verify(&self, vault: Data<&Arc<Vault>>) -> ApiResult<Json<Verification>> {
        Ok(Json(setup::verify(&vault).await?.into()))
    }

    /// Finish setup
    ///
    /// Refused (409 `setup_incomplete`, naming what is missing) until an admin exists and
    /// a certificate is installed. Afterwards every `/vault/setup` route answers 404, also
    /// after a restart.
    #[oai(path = "/complete", method = "post", operation_id = "completeSetup")]
    async fn complete(&self, vault: Data<&Arc<Vault>>) -> ApiResult<Json<SetupStatus>> {
        Ok(Json(setup::complete(&vault).await?.into()))
    }
}
