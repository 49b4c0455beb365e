//! The one error type of Vault. Every failure a caller can see is a `VaultError`:
//! a kind (which decides the HTTP status, the CLI exit code and the Python exception),
//! a stable snake_case `code` clients can switch on, a human message, and optional details.

/// What went wrong, in the terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was malformed or a value failed validation.
    Invalid,
    /// No key, a malformed key, an unknown, revoked or deactivated key.
    Unauthorized,
    /// A valid key without the scope the operation needs.
    Forbidden,
    /// The thing asked for does not exist (or belongs to someone else).
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// The request body exceeds the configured limit.
    PayloadTooLarge,
    /// The client stopped sending its request.
    RequestTimeout,
    /// The request's head (its line and header fields) is too large.
    HeadTooLarge,
    /// The body's content type is not one the route accepts.
    UnsupportedMediaType,
    /// Too many requests.
    RateLimited,
    /// The inference upstream answered with an error of its own; its status is kept.
    Upstream { status: u16 },
    /// The inference upstream could not be reached.
    UpstreamUnavailable,
    /// The inference upstream did not answer in time.
    UpstreamTimeout,
    /// Vault cannot serve this now but will again by itself (e.g. the audit trail cannot
    /// take rows: the disk is nearly full, or the database refuses writes).
    Unavailable,
    /// A fault inside Vault (database, I/O). The message never carries internal paths.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind. Exhaustive on purpose: a new kind must choose one.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::HeadTooLarge => 431,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::RateLimited => 429,
            ErrorKind::Upstream { status } => status,
            ErrorKind::UpstreamUnavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// Declares the catalogue: the enum, its `ALL` list and its names, from one table, so no
/// code can be left out of the list.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// Every error code Vault answers with: the stable snake_case identifiers clients
        /// switch on. One catalogue, so the spec and the README can list them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }
        }
    };
}

error_codes! {
    /// A field, parameter or body failed validation; the message names it.
    InvalidRequest => "invalid_request",
    /// The body is not valid JSON.
    InvalidJson => "invalid_json",
    /// A setting of the configuration is wrong; the message names the variable.
    InvalidConfig => "invalid_config",
    /// No key, a malformed key, or an unknown, revoked or deactivated one.
    InvalidApiKey => "invalid_api_key",
    /// A valid key without the scope the operation needs.
    InsufficientScope => "insufficient_scope",
    /// A browser page from an origin not in `VAULT_CORS_ORIGINS` tried to open a WebSocket,
    /// or a request to the keyless metrics port named a host other than the box itself.
    OriginNotAllowed => "origin_not_allowed",
    /// No such route.
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    PayloadTooLarge => "payload_too_large",
    /// The client stopped sending its request.
    RequestTimeout => "request_timeout",
    /// The request's line and header fields are too large.
    RequestHeadTooLarge => "request_head_too_large",
    UnsupportedMediaType => "unsupported_media_type",
    RateLimited => "rate_limited",
    UserNotFound => "user_not_found",
    UserInactive => "user_inactive",
    EmailTaken => "email_taken",
    KeyNotFound => "key_not_found",
    KeyAlreadyRevoked => "key_already_revoked",
    /// Revoking this key would leave no admin key to administer the box with.
    LastAdminKey => "last_admin_key",
    /// A key prefix shared by several active keys.
    AmbiguousPrefix => "ambiguous_prefix",
    /// Neither a key, a key prefix nor a key id.
    InvalidKeyReference => "invalid_key_reference",
    ConversationNotFound => "conversation_not_found",
    TrainingJobNotFound => "training_job_not_found",
    /// A state machine refused the transition.
    InvalidState => "invalid_state",
    ModelNotFound => "model_not_found",
    /// The model is loaded: unload it first.
    ModelLoaded => "model_loaded",
    /// A model of that id is in the models dir already.
    ModelExists => "model_exists",
    /// The disk of the models dir has too little room for it.
    InsufficientDiskSpace => "insufficient_disk_space",
    /// The model does not fit the free memory of the GPUs (`details` has the figures).
    InsufficientGpuMemory => "insufficient_gpu_memory",
    /// Another model load or unload is under way.
    OperationInProgress => "operation_in_progress",
    OperationNotFound => "operation_not_found",
    /// The audit trail's hash chain does not verify: a row was altered, deleted or inserted.
    AuditTampered => "audit_tampered",
    /// No managed service of that name.
    ServiceNotFound => "service_not_found",
    /// The inference upstream cannot be reached.
    InferenceUnavailable => "inference_unavailable",
    /// The inference upstream did not answer in time.
    InferenceTimeout => "inference_timeout",
    /// The inference engine was full for longer than a request may wait its turn
    /// (`VAULT_ADMISSION_MAX_WAIT`).
    InferenceBusy => "inference_busy",
    /// The inference upstream answered with an error or something unreadable.
    UpstreamError => "upstream_error",
    /// The inference upstream broke off a stream.
    UpstreamStreamError => "upstream_stream_error",
    /// The inference upstream answered with something that is not an answer: a redirect
    /// (never followed), or a body that is not JSON.
    UpstreamInvalid => "upstream_invalid",
    /// The gateway stopped while the answer was streaming (after its grace period).
    ServerShuttingDown => "server_shutting_down",
    /// The client left before its answer was complete (recorded, never sent).
    ClientDisconnected => "client_disconnected",
    /// The audit trail cannot take rows now, so nothing that must be audited is served.
    AuditUnavailable => "audit_unavailable",
    /// The first-boot wizard's admin was already created.
    AdminExists => "admin_exists",
    /// The first-boot wizard cannot complete: a required step is missing.
    SetupIncomplete => "setup_incomplete",
    /// A host command (hostnamectl, nmcli, …) failed.
    HostChangeFailed => "host_change_failed",
    /// An in-process gateway of the Python package is already running.
    GatewayRunning => "gateway_running",
    /// An in-process gateway of the Python package is not running.
    GatewayNotRunning => "gateway_not_running",
    InternalError => "internal_error",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ErrorCode::ALL
            .iter()
            .find(|c| c.as_str() == name)
            .copied()
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code `{name}`")))
    }
}

/// So a test can say `assert_eq!(err.code, "invalid_state")`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failure with everything needed to report it in the error shape of the API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct VaultError {
    pub kind: ErrorKind,
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Box<serde_json::Value>>,
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

impl VaultError {
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        VaultError { kind, code, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn with_suggestion(self, suggestion: &str) -> Self {
        self.with_details(serde_json::json!({ "suggestion": suggestion }))
    }

    /// A value that failed validation; `message` starts with the field it is about.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, ErrorCode::InvalidRequest, message)
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// A bad setting; `message` starts with the variable's name.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, ErrorCode::InvalidConfig, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, ErrorCode::InvalidApiKey, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, ErrorCode::InsufficientScope, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// An internal fault. The cause is logged here, where it happens, and the caller
    /// gets a generic sentence: internal details never reach a response.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %cause, "internal error");
        Self::new(ErrorKind::Internal, ErrorCode::InternalError, format!("Internal error while {context}."))
    }

    pub fn status(&self) -> u16 {
        self.kind.http_status()
    }

    /// OpenAI's name for the kind of error (`error.type`), which its SDKs read.
    pub fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::Unauthorized | ErrorKind::Upstream { status: 401 } => "authentication_error",
            ErrorKind::Forbidden | ErrorKind::Upstream { status: 403 } => "permission_error",
            ErrorKind::NotFound | ErrorKind::Upstream { status: 404 } => "not_found_error",
            ErrorKind::RateLimited | ErrorKind::Upstream { status: 429 } => "rate_limit_error",
            ErrorKind::Upstream { status } if status < 500 => "invalid_request_error",
            ErrorKind::Invalid
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::RequestTimeout
            | ErrorKind::HeadTooLarge
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Conflict => "invalid_request_error",
            ErrorKind::Upstream { .. }
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::Unavailable
            | ErrorKind::Internal => "server_error",
        }
    }

    /// The request field the error is about (OpenAI's `error.param`): the engine's, or the
    /// one a validation message starts with (`role: must be one of …`).
    pub fn param(&self) -> Option<String> {
        if let Some(param) = self.details.as_ref().and_then(|d| d.get("param")).and_then(|p| p.as_str()) {
            return Some(param.to_string());
        }
        if self.code != ErrorCode::InvalidRequest {
            return None;
        }
        let (name, _) = self.message.split_once(": ")?;
        let plain = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b));
        plain.then(|| name.to_string())
    }

    /// The error shape of the API: `{"error": {"code", "message", "status", "type", "param",
    /// "details"}}` — Vault's fields, and OpenAI's `type` and `param` for its clients.
    pub fn to_body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "status": self.status(),
            "type": self.openai_type(),
            "param": self.param(),
        });
        if let (Some(details), Some(map)) = (&self.details, error.as_object_mut()) {
            map.insert("details".into(), (**details).clone());
        }
        serde_json::json!({ "error": error })
    }
}

impl From<libsql::Error> for VaultError {
    fn from(err: libsql::Error) -> Self {
        VaultError::internal("accessing the database", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_api_shape() {
        let err = VaultError::new(ErrorKind::UpstreamUnavailable, ErrorCode::InferenceUnavailable, "down")
            .with_suggestion("start vLLM");
        let body = err.to_body();
        assert_eq!(body["error"]["code"], "inference_unavailable");
        assert_eq!(body["error"]["status"], 503);
        assert_eq!((body["error"]["type"].as_str(), body["error"]["param"].as_str()), (Some("server_error"), None));
        let invalid = VaultError::invalid_field("messages.0.role: must be one of user, assistant").to_body();
        assert_eq!(
            (invalid["error"]["type"].as_str(), invalid["error"]["param"].as_str()),
            (Some("invalid_request_error"), Some("messages.0.role"))
        );
        let sentence = VaultError::invalid_field("The body is not JSON: expected value").to_body();
        assert_eq!(sentence["error"]["param"], serde_json::Value::Null, "only a field name is a param");
        let key = VaultError::unauthorized("An API key is required.").to_body();
        assert_eq!(key["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["message"], "down");
        assert_eq!(body["error"]["details"]["suggestion"], "start vLLM");
    }

    #[test]
    fn the_catalogue_lists_every_code_once_in_snake_case() {
        let names: std::collections::HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn upstream_errors_keep_their_status() {
        assert_eq!(ErrorKind::Upstream { status: 422 }.http_status(), 422);
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = VaultError::internal("opening the database", "/secret/path/vault.db: permission denied");
        assert!(!err.message.contains("/secret"));
        assert_eq!(err.status(), 500);
    }
}
