//! The OpenAPI document: what poem-openapi derives from the operations, completed with what
//! it cannot say (bodies that refuse unknown fields, the edge's redirect, the open routes,
//! real examples) and put in the shape linters and client generators expect. Checked by
//! `redocly lint` in the test command.

use poem_openapi::OpenApiService;
use serde_json::{Map, Value, json};

use crate::api::{Api, api};

pub fn openapi_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(api(), "Vault", env!("CARGO_PKG_VERSION"))
        .description(
            "The gateway of an on-premises AI appliance: an OpenAI-compatible API with per-user keys \
             and an audit trail of every request. Every error answers `{\"error\": {\"code\", \"message\", \
             \"status\", \"type\", \"param\", \"details\"}}`.",
        )
        .license(poem_openapi::LicenseObject::new("Apache-2.0").url("https://www.apache.org/licenses/LICENSE-2.0"))
}

/// Request bodies that refuse fields they do not know (a mistyped wizard field must not be
/// ignored). The framework refuses them but does not say so in the document.
const CLOSED_BODIES: &[&str] = &[
    "SetupAdmin",
    "SetupModel",
    "CertificateRequest",
    "ConfigUpdate",
    "NetworkPatch",
    "SystemPatch",
    "InferencePatch",
    "ImportModel",
    "RateLimits",
];

/// What a client would really send, shown by `/docs` and generated clients instead of
/// placeholders made from the types (`"model": "string"`, `"n": 0`).
fn examples() -> [(&'static str, Value); 9] {
    [
        (
            "ChatCompletionRequest",
            json!({
                "model": "qwen2.5-32b-awq",
                "messages": [
                    {"role": "system", "content": "You answer in one sentence."},
                    {"role": "user", "content": "What is a reverse proxy?"}
                ],
                "max_tokens": 128,
                "temperature": 0.7
            }),
        ),
        (
            "CompletionRequest",
            json!({"model": "qwen2.5-32b-awq", "prompt": "The capital of France is", "max_tokens": 16}),
        ),
        ("EmbeddingRequest", json!({"model": "qwen2.5-32b-awq", "input": ["first passage", "second passage"]})),
        ("CreateConversation", json!({"title": "Contract review"})),
        ("AddMessage", json!({"role": "user", "content": "Summarise clause 4."})),
        ("CreateUser", json!({"name": "Anna Meyer", "email": "anna.meyer@clinic.example", "role": "user"})),
        ("CreateApiKey", json!({"label": "laptop", "scope": "user"})),
        ("ImportModel", json!({"path": "/media/usb/Qwen2.5-7B-Instruct"})),
        ("SetupAdmin", json!({"name": "Practice Admin", "email": "admin@clinic.example"})),
    ]
}

/// The OpenAPI document the code describes (committed under `openapi/`, served at
/// `/openapi.json`).
pub fn spec_json() -> String {
    let spec = openapi_service().spec();
    let Ok(mut document) = serde_json::from_str::<Value>(&spec) else {
        return spec;
    };
    // Relative: the server that serves the document (and `/docs`) is the one to call.
    document["servers"] = json!([{"url": "/", "description": "This gateway"}]);
    let schemas = &mut document["components"]["schemas"];
    for name in CLOSED_BODIES {
        if let Some(schema) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    for (name, example) in examples() {
        if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert("example".into(), example);
        }
    }
    let types = schema_types(schemas);
    type_nullables(&mut document, &types);
    // Answered by the edge for every route, so the framework does not list it.
    let redirect = json!({
        "description": "Plain HTTP to a box that is set up and has a certificate: the same URL in HTTPS, in `Location`.",
        "headers": {"Location": {"schema": {"type": "string"}}},
    });
    for methods in document["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        for operation in methods.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            let Some(operation) = operation.as_object_mut() else { continue };
            // A route without a key says so, rather than leaving it to a default.
            operation.entry("security").or_insert_with(|| json!([]));
            if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                responses.insert("308".into(), redirect.clone());
            }
        }
    }
    serde_json::to_string_pretty(&document).unwrap_or(spec)
}

/// The `type` of each named schema.
fn schema_types(schemas: &Value) -> Map<String, Value> {
    let named = schemas.as_object().into_iter().flatten();
    named.filter_map(|(name, schema)| Some((name.clone(), schema.get("type")?.clone()))).collect()
}

/// OpenAPI 3.0's `nullable` means something only beside a `type`. The framework writes it
/// without one in two places: a nullable reference (`allOf: [$ref, {nullable}]`), which
/// gets the referenced schema's type; and a schema of any value, which takes null anyway.
fn type_nullables(value: &mut Value, types: &Map<String, Value>) {
    match value {
        Value::Object(object) => {
            if object.get("nullable") == Some(&Value::Bool(true)) && !object.contains_key("type") {
                match object.get_mut("allOf").and_then(Value::as_array_mut) {
                    Some(parts) => {
                        parts.retain(|part| part.get("$ref").is_some());
                        let referenced = parts.iter().find_map(|part| {
                            let name = part["$ref"].as_str()?.strip_prefix("#/components/schemas/")?;
                            types.get(name).cloned()
                        });
                        object.insert("type".into(), referenced.unwrap_or_else(|| "object".into()));
                    }
                    None => {
                        object.remove("nullable");
                    }
                }
            }
            object.values_mut().for_each(|v| type_nullables(v, types));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| type_nullables(v, types)),
        _ => {}
    }
}
