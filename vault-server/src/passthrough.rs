//! JSON that Vault passes along without re-encoding it — request bodies forwarded to the
//! upstream byte for byte, and upstream answers — documented in the spec by a schema type.

use std::marker::PhantomData;

use bytes::Bytes;
use futures_util::StreamExt;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, impl_apirequest_for_payload};
use vault_core::{ErrorKind, VaultError};

use crate::error::ApiError;

/// `application/json`, with or without parameters such as a charset.
fn is_json(content_type: &str) -> bool {
    content_type.to_ascii_lowercase().starts_with("application/json")
}

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A JSON request body kept as the client sent it; `T` only documents it.
pub struct ForwardedJson<T> {
    pub bytes: Bytes,
    _schema: PhantomData<fn() -> T>,
}

impl<T: Type> Payload for ForwardedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        is_json(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> ParsePayload for ForwardedJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(ForwardedJson { bytes: read_limited(body).await?, _schema: PhantomData })
    }
}

/// Reads a request body, refusing one over [`MAX_BODY_BYTES`] as it streams in (a
/// chunked body has no length to check up front).
pub async fn read_limited(body: &mut RequestBody) -> Result<Bytes, ApiError> {
    let taken = body.take().map_err(|e| ApiError(VaultError::invalid("invalid_request", format!("body: {e}"))))?;
    let mut stream = taken.into_bytes_stream();
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError(VaultError::invalid("invalid_request", format!("body: {e}"))))?;
        if collected.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError(VaultError::new(
                ErrorKind::PayloadTooLarge,
                "payload_too_large",
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            )));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

impl_apirequest_for_payload!(ForwardedJson<T>, T: Type);

/// A JSON request body parsed into `T`. Unlike the framework's own JSON payload, an
/// error names the field it is about (`email: invalid type: …`, `body: missing field …`).
pub struct JsonBody<T>(pub T);

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        is_json(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + serde::de::DeserializeOwned + Send> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = read_limited(body).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: Type + serde::de::DeserializeOwned + Send);

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (code, field) = if inner.is_syntax() || inner.is_eof() {
            ("invalid_json", "body".to_string())
        } else if path == "." {
            ("invalid_request", "body".to_string())
        } else {
            ("invalid_request", path)
        };
        ApiError(VaultError::invalid(code, format!("{field}: {inner}")))
    })?;
    deserializer.end().map_err(|e| ApiError(VaultError::invalid("invalid_json", format!("body: {e}"))))?;
    Ok(value)
}

/// An upstream JSON answer passed on as is; `T` only documents it.
pub struct UpstreamJson<T> {
    body: Bytes,
    _schema: PhantomData<fn() -> T>,
}

impl<T> UpstreamJson<T> {
    pub fn new(body: impl Into<Bytes>) -> Self {
        UpstreamJson { body: body.into(), _schema: PhantomData }
    }
}

impl<T: Send> IntoResponse for UpstreamJson<T> {
    fn into_response(self) -> Response {
        Response::builder().content_type("application/json").body(self.body)
    }
}

impl<T: Type + Send> ApiResponse for UpstreamJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The upstream's answer.",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType { content_type: "application/json", schema: T::schema_ref() }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// The answer of a generation route: JSON, or an event stream when the request asked for
/// `"stream": true`. `T` documents the JSON form, `C` one streamed chunk.
pub struct Generation<T, C> {
    response: Response,
    _schema: PhantomData<fn() -> (T, C)>,
}

impl<T, C> Generation<T, C> {
    pub fn new(response: Response) -> Self {
        Generation { response, _schema: PhantomData }
    }
}

impl<T: Send, C: Send> IntoResponse for Generation<T, C> {
    fn into_response(self) -> Response {
        self.response
    }
}

impl<T: Type + Send, C: Type + Send> ApiResponse for Generation<T, C> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The completion; with `stream: true`, server-sent events of chunks \
                              (`data: {chunk}`), ending with `data: [DONE]`, or with a final \
                              `data: {\"error\": …}` event if the upstream fails mid-answer.",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType { content_type: "application/json", schema: T::schema_ref() },
                    MetaMediaType { content_type: "text/event-stream", schema: C::schema_ref() },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
        C::register(registry);
    }
}
