//! Every error the server answers, in the one shape of SPEC §4 — the framework's own
//! (unknown route, wrong method, unreadable body, missing key) included.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object};
use vault_core::{ErrorKind, VaultError};

/// A core error on its way out of a handler.
#[derive(Debug)]
pub struct ApiError(pub VaultError);

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        ApiError(err)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ApiError {}

/// The error code of a response, kept for the audit row.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

/// Renders an error as a response in the API's shape.
pub fn error_response(err: &VaultError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response =
        Response::builder().status(status).content_type("application/json").body(err.to_body().to_string());
    if err.kind == ErrorKind::RateLimited {
        response.headers_mut().insert("retry-after", poem::http::HeaderValue::from_static("1"));
    }
    response.extensions_mut().insert(ErrorCode(err.code.to_string()));
    response
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn as_response(&self) -> Response {
        error_response(&self.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// The body of every error response.
#[derive(Object)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Object)]
pub struct ErrorDetail {
    /// A stable snake_case identifier clients can switch on.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// More about the error, such as a `suggestion`.
    pub details: Option<serde_json::Value>,
}

/// The statuses any operation may answer with, documented once.
const DOCUMENTED: &[(u16, &str)] = &[
    (400, "The request is malformed; the message names the field."),
    (401, "No key, a malformed key, or an unknown, revoked or deactivated key."),
    (403, "The key lacks the scope this operation needs."),
    (404, "Not found."),
    (413, "The body is too large."),
    (415, "The body is not JSON."),
    (500, "An internal error."),
    (503, "The inference service is not reachable."),
    (504, "The inference service did not answer in time."),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: DOCUMENTED
                .iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(*status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json",
                        schema: <ErrorBody as poem_openapi::types::Type>::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <ErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

/// Turns whatever error reached the edge of the server into the API's error shape.
pub fn from_poem_error(err: poem::Error) -> VaultError {
    use poem_openapi::error::{AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError};
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.0.clone();
    }
    if err.is::<AuthorizationError>() {
        return VaultError::unauthorized("An API key is required.")
            .with_suggestion("Send `Authorization: Bearer vault_sk_…` with a key created by an admin.");
    }
    if err.is::<ContentTypeError>() {
        return VaultError::new(ErrorKind::UnsupportedMediaType, "unsupported_media_type", err.to_string())
            .with_suggestion("Send the body as JSON with `Content-Type: application/json`.");
    }
    if err.is::<ParseRequestPayloadError>() || err.is::<ParseParamError>() {
        return VaultError::invalid("invalid_request", err.to_string());
    }
    let status = err.status();
    match status {
        StatusCode::NOT_FOUND => VaultError::not_found("not_found", "There is no such route."),
        StatusCode::METHOD_NOT_ALLOWED => VaultError::new(
            ErrorKind::MethodNotAllowed,
            "method_not_allowed",
            "This route does not accept this method.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            VaultError::new(ErrorKind::PayloadTooLarge, "payload_too_large", "The request body is too large.")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            VaultError::new(ErrorKind::UnsupportedMediaType, "unsupported_media_type", err.to_string())
        }
        s if s.is_client_error() => VaultError::invalid("invalid_request", err.to_string()),
        _ => VaultError::internal("serving a request", err),
    }
}
