//! Every error the server answers, in the one shape the README documents
//! (`{"error": {"code", "message", "status", "details"}}`) — the framework's own
//! (unknown route, wrong method, unreadable body, missing key) included.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object};
use vault_core::limits::RateStatus;
use vault_core::{ErrorCode, ErrorKind, VaultError};

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

/// Renders an error as a response in the API's shape.
pub fn error_response(err: &VaultError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response =
        Response::builder().status(status).content_type("application/json").body(err.to_body().to_string());
    // When to try again: soon after a rate limit, a little later when the engine is down or
    // slow (restarting, loading a model), later still when the audit trail cannot keep rows.
    let retry_after = match err.kind {
        ErrorKind::RateLimited | ErrorKind::Upstream { status: 429 } => Some("1"),
        ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamTimeout => Some("5"),
        ErrorKind::Unavailable => Some("10"),
        _ => None,
    };
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", poem::http::HeaderValue::from_static(seconds));
    }
    // A rate limit of Vault's own says exactly when, and where the limits stand.
    if let Some(details) = err.details.as_deref() {
        if let Some(wait) = details.get("retry_after_seconds").and_then(|v| v.as_f64()) {
            let headers = response.headers_mut();
            headers.insert("retry-after", poem::http::HeaderValue::from(wait.ceil().max(1.0) as u64));
            headers.insert("retry-after-ms", poem::http::HeaderValue::from((wait * 1000.0).ceil() as u64));
        }
        if let Some(Ok(rate)) = details.get("rate_limit").map(|v| serde_json::from_value::<RateStatus>(v.clone())) {
            rate.add_headers(response.headers_mut());
        }
    }
    // Kept on the response for the audit row.
    response.extensions_mut().insert(err.code);
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
    pub code: CodeName,
    /// A sentence for humans.
    pub message: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// OpenAI's kind of error, which its SDKs read: `invalid_request_error`,
    /// `authentication_error`, `permission_error`, `not_found_error`, `rate_limit_error` or
    /// `server_error`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The request field the error is about, when there is one.
    #[oai(nullable)]
    pub param: Option<String>,
    /// More about the error, such as a `suggestion`.
    #[oai(nullable)]
    pub details: Option<serde_json::Value>,
}

/// An error code in the spec: a string, one of the catalogue's.
pub struct CodeName(pub ErrorCode);

impl poem_openapi::types::Type for CodeName {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        let mut schema = poem_openapi::registry::MetaSchema::new("string");
        schema.enum_items = ErrorCode::ALL.iter().map(|c| c.as_str().into()).collect();
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl poem_openapi::types::ToJSON for CodeName {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.0.as_str().into())
    }
}

impl poem_openapi::types::ParseFromJSON for CodeName {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        let name = value.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
        ErrorCode::ALL
            .iter()
            .find(|c| c.as_str() == name)
            .map(|c| CodeName(*c))
            .ok_or_else(|| poem_openapi::types::ParseError::custom("not an error code"))
    }
}

/// The statuses any operation may answer with, documented once.
const DOCUMENTED: &[(u16, &str)] = &[
    (400, "The request is malformed; the message names the field."),
    (401, "No key, a malformed key, or an unknown, revoked or deactivated key."),
    (403, "The key lacks the scope this operation needs."),
    (404, "Not found."),
    (409, "The request conflicts with the current state (a state transition, a duplicate, the last admin key)."),
    (413, "The body is too large."),
    (415, "The body is not JSON."),
    (429, "Too many requests: the inference service is busy (wait `Retry-After` seconds)."),
    (500, "An internal error."),
    (502, "The inference service gave an answer that could not be used (a redirect, not JSON, too large)."),
    (503, "The inference service is not reachable, or Vault cannot keep its audit trail now."),
    (504, "The inference service did not answer in time."),
];

/// The statuses that come with a `Retry-After`: worth retrying, after that many seconds.
const RETRY_AFTER: &[u16] = &[429, 503, 504];

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
                    headers: RETRY_AFTER
                        .contains(status)
                        .then(|| MetaHeader {
                            name: "Retry-After".into(),
                            description: Some("Seconds to wait before retrying.".into()),
                            required: false,
                            deprecated: false,
                            schema: <u32 as poem_openapi::types::Type>::schema_ref(),
                        })
                        .into_iter()
                        .collect(),
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <ErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

/// The framework's reason for a parameter it could not parse, without the names of its
/// internal types: `failed to parse "integer_uint32": must be a whole number (occurred while
/// parsing "optional_integer_uint32")` is `must be a whole number`.
fn plain_reason(reason: &str) -> &str {
    let reason = reason.split(" (occurred while parsing").next().unwrap_or(reason);
    match reason.strip_prefix("failed to parse \"") {
        Some(rest) => rest.split_once("\": ").map_or(reason, |(_, why)| why),
        None => reason,
    }
}

/// The 401 of a request that brought no key.
pub fn missing_key() -> VaultError {
    VaultError::unauthorized("An API key is required.")
        .with_suggestion("Send `Authorization: Bearer vault_sk_…` with a key created by an admin.")
}

/// Turns whatever error reached the edge of the server into the API's error shape.
pub fn from_poem_error(err: poem::Error) -> VaultError {
    use poem_openapi::error::{AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError};
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.0.clone();
    }
    if err.is::<AuthorizationError>() {
        return missing_key();
    }
    if err.is::<ContentTypeError>() {
        return VaultError::new(ErrorKind::UnsupportedMediaType, ErrorCode::UnsupportedMediaType, err.to_string())
            .with_suggestion("Send the body as JSON with `Content-Type: application/json`.");
    }
    if let Some(param) = err.downcast_ref::<ParseParamError>() {
        return VaultError::invalid_field(format!("{}: {}", param.name, plain_reason(&param.reason)));
    }
    if err.is::<ParseRequestPayloadError>() {
        return VaultError::invalid_field(err.to_string());
    }
    let status = err.status();
    match status {
        StatusCode::NOT_FOUND => VaultError::not_found(ErrorCode::NotFound, "There is no such route."),
        StatusCode::METHOD_NOT_ALLOWED => VaultError::new(
            ErrorKind::MethodNotAllowed,
            ErrorCode::MethodNotAllowed,
            "This route does not accept this method.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            VaultError::new(ErrorKind::PayloadTooLarge, ErrorCode::PayloadTooLarge, "The request body is too large.")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            VaultError::new(ErrorKind::UnsupportedMediaType, ErrorCode::UnsupportedMediaType, err.to_string())
        }
        s if s.is_client_error() => VaultError::invalid_field(err.to_string()),
        _ => VaultError::internal("serving a request", err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_errors_name_the_parameter_not_the_framework_types() {
        let reason = r#"failed to parse "integer_uint32": must be a whole number (occurred while parsing "optional_integer_uint32")"#;
        assert_eq!(plain_reason(reason), "must be a whole number");
        assert_eq!(plain_reason("Type \"string\" expects an input value."), "Type \"string\" expects an input value.");
        let parse = poem_openapi::error::ParseParamError { name: "limit", reason: reason.into() };
        let err = from_poem_error(parse.into());
        assert_eq!((err.message.as_str(), err.status()), ("limit: must be a whole number", 400));
    }
}
