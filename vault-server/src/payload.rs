//! Request bodies: JSON forwarded to the upstream byte for byte ([`ForwardedJson`]) or
//! parsed with errors that name their field ([`JsonBody`]), both read within the size limit.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use poem::{Request, RequestBody};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use vault_core::{ErrorCode, ErrorKind, VaultError};

use crate::error::ApiError;

/// `application/json`, with or without parameters such as a charset.
pub fn is_json(content_type: &str) -> bool {
    const JSON: &str = "application/json";
    content_type.get(..JSON.len()).is_some_and(|start| start.eq_ignore_ascii_case(JSON))
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

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(ForwardedJson { bytes: read_limited(body, pause_limit(request)).await?, _schema: PhantomData })
    }
}

/// Reads a request body, refusing one over [`MAX_BODY_BYTES`] as it streams in (a
/// chunked body has no length to check up front), and one that pauses longer than the
/// header timeout (`VAULT_HEADER_TIMEOUT`) between two pieces (408).
pub async fn read_limited(body: &mut RequestBody, pause: Option<Duration>) -> Result<Bytes, ApiError> {
    let taken = body.take().map_err(|e| ApiError(VaultError::invalid_field(format!("body: {e}"))))?;
    let mut stream = taken.into_bytes_stream();
    let mut collected = bytes::BytesMut::new();
    loop {
        let next = match pause {
            Some(pause) => tokio::time::timeout(pause, stream.next()).await.map_err(|_| {
                ApiError(VaultError::new(
                    ErrorKind::RequestTimeout,
                    ErrorCode::RequestTimeout,
                    "The request body stopped arriving.",
                ))
            })?,
            None => stream.next().await,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError(VaultError::invalid_field(format!("body: {e}"))))?;
        if collected.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError(VaultError::new(
                ErrorKind::PayloadTooLarge,
                ErrorCode::PayloadTooLarge,
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            )));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

/// The longest pause inside a body: the header timeout (`VAULT_HEADER_TIMEOUT`).
fn pause_limit(request: &Request) -> Option<Duration> {
    request.data::<std::sync::Arc<vault_core::Vault>>().map(|v| v.config.header_timeout)
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

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = read_limited(body, pause_limit(request)).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: Type + serde::de::DeserializeOwned + Send);

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also fill a struct from an array (`[null, null]`); a body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'[') {
        return Err(ApiError(VaultError::invalid_field("body: must be a JSON object")));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (code, field) = if inner.is_syntax() || inner.is_eof() {
            (ErrorCode::InvalidJson, "body".to_string())
        } else if path == "." {
            (ErrorCode::InvalidRequest, "body".to_string())
        } else {
            (ErrorCode::InvalidRequest, path)
        };
        ApiError(VaultError::invalid(code, format!("{field}: {inner}")))
    })?;
    deserializer.end().map_err(|e| ApiError(VaultError::invalid(ErrorCode::InvalidJson, format!("body: {e}"))))?;
    Ok(value)
}
