//! The one error type of Vault. Every failure a caller can see is a `VaultError`:
//! a kind (which decides the HTTP status, the CLI exit code and the Python exception),
//! a stable snake_case `code` clients can switch on, a human message, and optional details.

use std::borrow::Cow;

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
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::RateLimited => 429,
            ErrorKind::Upstream { status } => status,
            ErrorKind::UpstreamUnavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }
}

/// A failure with everything needed to report it in the error shape of the API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct VaultError {
    pub kind: ErrorKind,
    pub code: Cow<'static, str>,
    pub message: String,
    pub details: Option<Box<serde_json::Value>>,
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

impl VaultError {
    pub fn new(kind: ErrorKind, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        VaultError { kind, code: code.into(), message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn with_suggestion(self, suggestion: &str) -> Self {
        self.with_details(serde_json::json!({ "suggestion": suggestion }))
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, "invalid_api_key", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "insufficient_scope", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// An internal fault. The cause is logged here, where it happens, and the caller
    /// gets a generic sentence: internal details never reach a response.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %cause, "internal error");
        Self::new(ErrorKind::Internal, "internal_error", format!("Internal error while {context}."))
    }

    pub fn status(&self) -> u16 {
        self.kind.http_status()
    }

    /// The error shape of the API: `{"error": {"code", "message", "status", "details"}}`.
    pub fn to_body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "status": self.status(),
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
        let err = VaultError::new(ErrorKind::UpstreamUnavailable, "inference_unavailable", "down")
            .with_suggestion("start vLLM");
        let body = err.to_body();
        assert_eq!(body["error"]["code"], "inference_unavailable");
        assert_eq!(body["error"]["status"], 503);
        assert_eq!(body["error"]["message"], "down");
        assert_eq!(body["error"]["details"]["suggestion"], "start vLLM");
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
