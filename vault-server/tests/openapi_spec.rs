//! The committed OpenAPI document (`openapi/openapi.json`) must be what the code generates.

use std::path::PathBuf;

#[test]
fn committed_openapi_spec_matches_the_code() {
    let generated = format!("{}\n", vault_server::spec_json());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date. Regenerate it with:\n  \
         cargo run -p vault-server -- openapi > openapi/openapi.json"
    );
}

/// SPEC §3: every request needs a key except the health checks (liveness and readiness) and
/// the setup wizard (whose routes are gone once setup is complete).
#[test]
fn every_route_requires_a_key_but_health_and_the_wizard() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
            let open = path == "/vault/health" || path == "/vault/health/ready" || path.starts_with("/vault/setup/");
            assert_eq!(secured, !open, "{method} {path}");
        }
    }
}

#[test]
fn the_error_schema_lists_every_error_code() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    let listed = &spec["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let catalogue: Vec<&str> = vault_core::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, catalogue);
}

/// OpenAPI 3.0's `nullable` means nothing without a `type` beside it (linters and client
/// generators say so).
#[test]
fn every_nullable_schema_has_a_type() {
    fn check(value: &serde_json::Value, at: &str) {
        match value {
            serde_json::Value::Object(object) => {
                if object.get("nullable") == Some(&serde_json::Value::Bool(true)) {
                    assert!(object.contains_key("type"), "{at}: nullable without a type");
                }
                object.iter().for_each(|(k, v)| check(v, &format!("{at}/{k}")));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| check(v, at)),
            _ => {}
        }
    }
    check(&serde_json::from_str(&vault_server::spec_json()).unwrap(), "");
}

/// Generated clients name their methods after these: each operation has one, and no two the same.
#[test]
fn every_operation_has_its_own_operation_id() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(seen.insert(id.to_string()), "{method} {path}: operationId {id} is used twice");
        }
    }
    assert!(seen.contains("createChatCompletion") && seen.contains("listModels"), "OpenAI's names for /v1");
}

#[test]
fn every_optional_property_is_nullable_as_the_answers_send_null() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        for (property, definition) in schema["properties"].as_object().into_iter().flatten() {
            // A schema of any value (no type, no reference) takes null as it is.
            let any_value = ["type", "$ref", "allOf", "oneOf", "anyOf"].iter().all(|k| definition.get(k).is_none());
            if !required.contains(&property.as_str()) && !any_value {
                assert_eq!(definition["nullable"], true, "{name}.{property} may be null but is not nullable");
            }
        }
    }
}
