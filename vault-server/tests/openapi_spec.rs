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

#[test]
fn every_optional_property_is_nullable_as_the_answers_send_null() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        for (property, definition) in schema["properties"].as_object().into_iter().flatten() {
            if !required.contains(&property.as_str()) {
                assert_eq!(definition["nullable"], true, "{name}.{property} may be null but is not nullable");
            }
        }
    }
}
