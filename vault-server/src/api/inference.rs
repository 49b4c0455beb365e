//! `/v1/*`: the OpenAI-compatible routes.

use std::sync::Arc;

use futures_util::StreamExt;
use poem::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};
use poem::web::Data;
use poem::{Body, Request, RequestBody, Response, ResponseParts};
use poem_openapi::OpenApi;
use poem_openapi::auth::{Bearer, BearerAuthorization};
use poem_openapi::error::ContentTypeError;
use poem_openapi::param::Path;
use vault_core::audit::RequestAudit;
use vault_core::inference::{Answer, Route};
use vault_core::keys::Principal;
use vault_core::{Vault, VaultError};

use super::{ApiResult, Tag};
use crate::auth::UserKey;
use crate::error::ApiError;
use crate::passthrough::{Generation, UpstreamJson};
use crate::payload::{ForwardedJson, is_json, read_limited};
use crate::schemas::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion, CompletionRequest, EmbeddingList,
    EmbeddingRequest, ModelCard, ModelList,
};

/// Tells a proxy in front (nginx) to pass a stream on as it comes. Made once: a header
/// name given as text is built anew (and allocated) on every insert.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub struct InferenceApi;

#[OpenApi(prefix_path = "/v1", tag = "Tag::Inference")]
impl InferenceApi {
    /// Create a chat completion
    ///
    /// Forwarded to the engine as sent. With `"stream": true` the answer arrives as
    /// server-sent events, chunk by chunk.
    #[oai(path = "/chat/completions", method = "post", operation_id = "createChatCompletion")]
    async fn chat_completions(
        &self,
        vault: Data<&Arc<Vault>>,
        audit: Data<&Arc<RequestAudit>>,
        key: UserKey,
        body: ForwardedJson<ChatCompletionRequest>,
    ) -> ApiResult<Generation<ChatCompletion, ChatCompletionChunk>> {
        generate(&vault, &audit, &key.0, Route::ChatCompletions, body.bytes).await.map(Generation::new)
    }

    /// Create a text completion
    #[oai(path = "/completions", method = "post", operation_id = "createCompletion")]
    async fn completions(
        &self,
        vault: Data<&Arc<Vault>>,
        audit: Data<&Arc<RequestAudit>>,
        key: UserKey,
        body: ForwardedJson<CompletionRequest>,
    ) -> ApiResult<Generation<Completion, Completion>> {
        generate(&vault, &audit, &key.0, Route::Completions, body.bytes).await.map(Generation::new)
    }

    /// Create embeddings
    #[oai(path = "/embeddings", method = "post", operation_id = "createEmbedding")]
    async fn embeddings(
        &self,
        vault: Data<&Arc<Vault>>,
        audit: Data<&Arc<RequestAudit>>,
        key: UserKey,
        body: ForwardedJson<EmbeddingRequest>,
    ) -> ApiResult<UpstreamJson<EmbeddingList>> {
        generate(&vault, &audit, &key.0, Route::Embeddings, body.bytes).await.map(UpstreamJson::from_response)
    }

    /// List the served models
    #[oai(path = "/models", method = "get", operation_id = "listModels")]
    async fn list_models(&self, vault: Data<&Arc<Vault>>, _key: UserKey) -> ApiResult<UpstreamJson<ModelList>> {
        json_answer(&vault.inference.list_models().await?)
    }

    /// Get one served model
    ///
    /// The id may contain `/` (`Qwen/Qwen2.5-7B-Instruct`), written as is in the path.
    #[oai(path = "/models/:model_id", method = "get", operation_id = "retrieveModel")]
    async fn get_model(
        &self,
        vault: Data<&Arc<Vault>>,
        _key: UserKey,
        model_id: Path<String>,
    ) -> ApiResult<UpstreamJson<ModelCard>> {
        json_answer(&vault.inference.get_model(&model_id).await?)
    }
}

/// Proxies a generation request and frames its answer: JSON, or server-sent events, with
/// the rate limits' headers.
async fn generate(
    vault: &Vault,
    audit: &Arc<RequestAudit>,
    principal: &Principal,
    route: Route,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let served = vault.inference.serve(route, body, audit, principal).await?;
    // Room for the answer's own headers and, with limits, the six rate-limit headers: a
    // map that has to grow is rehashed.
    let mut headers = HeaderMap::with_capacity(if served.rate.is_some() { 12 } else { 4 });
    let body = match served.answer {
        Answer::Json(body) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Body::from(body)
        }
        Answer::Stream(_) if route == Route::Embeddings => {
            return Err(ApiError(VaultError::internal("creating embeddings", "the upstream answered with a stream")));
        }
        Answer::Stream(stream) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
            Body::from_bytes_stream(stream.map(Ok::<_, std::io::Error>))
        }
    };
    if let Some(rate) = served.rate {
        rate.add_headers(&mut headers);
    }
    let head =
        ResponseParts { status: StatusCode::OK, version: Version::HTTP_11, headers, extensions: Extensions::new() };
    Ok(Response::from_parts(head, body))
}

/// What a generation route needs from its request, taken from it at once: the future that
/// serves the route then holds no `Request`.
pub struct DirectRequest {
    bearer: poem::Result<Bearer>,
    content_type: poem::Result<()>,
    body: Body,
}

impl DirectRequest {
    pub fn take(mut req: Request) -> DirectRequest {
        let bearer = <Bearer as BearerAuthorization>::from_request(&req);
        let content_type = match req.content_type() {
            Some(content_type) if is_json(content_type) => Ok(()),
            Some(content_type) => Err(ContentTypeError::NotSupported { content_type: content_type.into() }.into()),
            None => Err(ContentTypeError::ExpectContentType.into()),
        };
        DirectRequest { bearer, content_type, body: req.take_body() }
    }
}

/// Serves a generation route straight from the edge, past the router and the operation
/// layers, which cost more than the rest of such a request. The checks are the operations'
/// own, in their order (key, content type, body), so the answers are the same; the
/// operations above document these routes.
pub async fn serve_direct(
    vault: &Vault,
    audit: &Arc<RequestAudit>,
    route: Route,
    request: DirectRequest,
) -> poem::Result<Response> {
    let DirectRequest { bearer, content_type, body } = request;
    let principal = vault.authenticate(&bearer?.token, audit).await.map_err(ApiError)?;
    content_type?;
    let bytes = read_limited(&mut RequestBody::new(body), Some(vault.config.header_timeout)).await?;
    Ok(generate(vault, audit, &principal, route, bytes).await?)
}

fn json_answer<T>(value: &serde_json::Value) -> ApiResult<UpstreamJson<T>> {
    serde_json::to_vec(value)
        .map(UpstreamJson::new)
        .map_err(|e| ApiError(VaultError::internal("encoding an answer", e)))
}
