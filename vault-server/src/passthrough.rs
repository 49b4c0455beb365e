//! Upstream answers passed on without re-encoding them: JSON ([`UpstreamJson`]) and the
//! JSON-or-event-stream answer of the generation routes ([`Generation`]), each documented in
//! the spec by a schema type.

use std::marker::PhantomData;

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;

/// An upstream JSON answer passed on as is; `T` only documents it.
pub struct UpstreamJson<T> {
    response: Response,
    _schema: PhantomData<fn() -> T>,
}

impl<T> UpstreamJson<T> {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self::from_response(Response::builder().content_type("application/json").body(body.into()))
    }

    /// A JSON answer already framed.
    pub fn from_response(response: Response) -> Self {
        UpstreamJson { response, _schema: PhantomData }
    }
}

impl<T: Send> IntoResponse for UpstreamJson<T> {
    fn into_response(self) -> Response {
        self.response
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

/// One server-sent event, as the document describes an event stream's items: its `data`
/// is a chunk as JSON (the chunk's schema is among the components), `[DONE]` last.
fn event_schema() -> MetaSchemaRef {
    let mut data = MetaSchema::new("string");
    data.description = Some("A chunk of the answer as JSON; the last event is `[DONE]`.");
    let mut event = MetaSchema::new("object");
    event.required = vec!["data"];
    event.properties = vec![("data", MetaSchemaRef::Inline(Box::new(data)))];
    MetaSchemaRef::Inline(Box::new(event))
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
                    MetaMediaType { content_type: "text/event-stream", schema: event_schema() },
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
