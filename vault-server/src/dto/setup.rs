use poem_openapi::Object;
use serde::Deserialize;
use vault_core::setup;

use super::{CreatedApiKey, User};
use crate::declared::{OneOf, TlsModes};

/// A step of the wizard as it was left.
#[derive(Object)]
pub struct SetupStep {
    /// `network`, `admin`, `tls` or `model`.
    pub name: String,
    /// `pending`, `in_progress` or `complete`.
    pub state: String,
    #[oai(nullable)]
    pub updated_at: Option<String>,
    /// What the step stored (never a secret).
    #[oai(nullable)]
    pub summary: Option<serde_json::Value>,
}

#[derive(Object)]
pub struct SetupStatus {
    /// `pending`, `in_progress` or `complete`.
    pub status: String,
    pub flag_file: bool,
    pub steps: Vec<SetupStep>,
}

impl From<setup::SetupStatus> for SetupStatus {
    fn from(s: setup::SetupStatus) -> Self {
        let state = |state: setup::StepState| match state {
            setup::StepState::Pending => "pending",
            setup::StepState::InProgress => "in_progress",
            setup::StepState::Complete => "complete",
        };
        SetupStatus {
            status: s.status,
            flag_file: s.flag_file,
            steps: s
                .steps
                .into_iter()
                .map(|step| SetupStep {
                    name: step.name.as_str().into(),
                    state: state(step.state).into(),
                    updated_at: step.updated_at,
                    summary: step.summary,
                })
                .collect(),
        }
    }
}

#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SetupAdmin {
    #[oai(validator(max_length = 200, pattern = "[^\\s\\u0085]"))]
    pub name: String,
    #[oai(validator(max_length = 254, pattern = "^[^@\\s]+@[^.\\s][^\\s]*$"))]
    pub email: String,
}

/// The admin the wizard created, and its key, shown this once.
#[derive(Object)]
pub struct SetupAdminCreated {
    pub user: User,
    pub key: CreatedApiKey,
}

impl From<setup::AdminCreated> for SetupAdminCreated {
    fn from(created: setup::AdminCreated) -> Self {
        SetupAdminCreated { user: created.user.into(), key: created.key.into() }
    }
}

#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SetupModel {
    /// An `id` from the model manifest.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub model_id: String,
}

#[derive(Object)]
pub struct SetupModelChosen {
    pub model_id: String,
    /// The manifest's entry for it.
    pub manifest: serde_json::Value,
}

#[derive(Object)]
pub struct VerifyCheck {
    /// `database`, `inference`, `gpu` or `tls`.
    pub name: String,
    pub ok: bool,
    /// What was found, or why it failed.
    pub reason: String,
}

#[derive(Object)]
pub struct Verification {
    /// Whether every check passed.
    pub ok: bool,
    pub checks: Vec<VerifyCheck>,
}

impl From<setup::Verification> for Verification {
    fn from(v: setup::Verification) -> Self {
        Verification {
            ok: v.ok,
            checks: v
                .checks
                .into_iter()
                .map(|c| VerifyCheck { name: c.name.into(), ok: c.ok, reason: c.reason })
                .collect(),
        }
    }
}

/// A certificate for the box: made here, or uploaded.
#[derive(Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// `self_signed`: made for the box's host name, `localhost` and its address
    /// (ECDSA P-256, 825 days); `pem`: `certificate` and `private_key` uploaded.
    pub mode: OneOf<TlsModes>,
    /// PEM certificate chain, leaf first (mode `pem`).
    #[oai(nullable, validator(max_length = 1048576))]
    pub certificate: Option<String>,
    /// PEM private key, unencrypted (mode `pem`).
    #[oai(nullable, validator(max_length = 1048576))]
    pub private_key: Option<String>,
}

/// What the installed certificate says.
#[derive(Object)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// Host names and addresses it is made out to.
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Negative once it has expired.
    pub days_left: i64,
    /// SHA-256 of the leaf certificate, hex pairs joined by `:`.
    pub fingerprint_sha256: String,
    pub self_signed: bool,
}

impl From<vault_core::tls::CertificateInfo> for CertificateInfo {
    fn from(c: vault_core::tls::CertificateInfo) -> Self {
        CertificateInfo {
            subject: c.subject,
            issuer: c.issuer,
            sans: c.sans,
            not_before: c.not_before,
            not_after: c.not_after,
            days_left: c.days_left,
            fingerprint_sha256: c.fingerprint_sha256,
            self_signed: c.self_signed,
        }
    }
}
