//! A file the client saves: a streamed body with its content type and a file name
//! (`Content-Disposition: attachment`), documented in the spec by its possible formats.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;

/// The formats a download may come in, as the spec shows them.
pub trait FileFormats: Send {
    fn media_types() -> Vec<MetaMediaType>;
    fn register(registry: &mut Registry);
}

fn text(content_type: &'static str) -> MetaMediaType {
    MetaMediaType {
        content_type,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary"))),
    }
}

/// CSV text, or a JSON array of `T`.
pub struct CsvOrJsonArray<T>(PhantomData<fn() -> T>);

impl<T: Type> FileFormats for CsvOrJsonArray<T> {
    fn media_types() -> Vec<MetaMediaType> {
        vec![
            text("text/csv; charset=utf-8"),
            MetaMediaType { content_type: "application/json", schema: Vec::<T>::schema_ref() },
        ]
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Markdown text, or `T` as JSON.
pub struct MarkdownOrJson<T>(PhantomData<fn() -> T>);

impl<T: Type> FileFormats for MarkdownOrJson<T> {
    fn media_types() -> Vec<MetaMediaType> {
        vec![
            text("text/markdown; charset=utf-8"),
            MetaMediaType { content_type: "application/json", schema: T::schema_ref() },
        ]
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

pub struct Download<F> {
    response: Response,
    _formats: PhantomData<fn() -> F>,
}

impl<F> Download<F> {
    pub fn new(content_type: &'static str, filename: &str, body: impl Into<poem::Body>) -> Download<F> {
        let response = Response::builder()
            .content_type(content_type)
            .header("content-disposition", format!("attachment; filename=\"{filename}\""))
            .body(body);
        Download { response, _formats: PhantomData }
    }
}

impl<F: Send> IntoResponse for Download<F> {
    fn into_response(self) -> Response {
        self.response
    }
}

impl<F: FileFormats> ApiResponse for Download<F> {
    fn meta() -> MetaResponses {
        let disposition = MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The file.",
                status: Some(200),
                status_range: None,
                content: F::media_types(),
                headers: vec![MetaHeader {
                    name: "content-disposition".into(),
                    description: Some("`attachment; filename=\"…\"`".into()),
                    required: true,
                    deprecated: false,
                    schema: disposition,
                }],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        F::register(registry);
    }
}
