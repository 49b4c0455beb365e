//! A file the client saves: a streamed body with its content type and a file name
//! (`Content-Disposition: attachment`), documented in the spec as CSV text or as a JSON
//! array of `T`.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;

pub struct Download<T> {
    response: Response,
    _rows: PhantomData<fn() -> T>,
}

impl<T> Download<T> {
    pub fn new(content_type: &'static str, filename: &str, body: poem::Body) -> Download<T> {
        let response = Response::builder()
            .content_type(content_type)
            .header("content-disposition", format!("attachment; filename=\"{filename}\""))
            .body(body);
        Download { response, _rows: PhantomData }
    }
}

impl<T: Send> IntoResponse for Download<T> {
    fn into_response(self) -> Response {
        self.response
    }
}

impl<T: Type + Send> ApiResponse for Download<T> {
    fn meta() -> MetaResponses {
        let csv = MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary")));
        let disposition = MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The file, streamed.",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType { content_type: "text/csv; charset=utf-8", schema: csv },
                    MetaMediaType { content_type: "application/json", schema: Vec::<T>::schema_ref() },
                ],
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
        T::register(registry);
    }
}
