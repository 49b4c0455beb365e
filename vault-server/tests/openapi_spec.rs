//! The committed OpenAPI document (`openapi/openapi.json`) must be what the code generates.

use std::path::PathBuf;

fn committed_spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
}

#[test]
fn committed_openapi_spec_matches_the_code() {
    let generated = format!("{}\n", vault_server::spec_json());
    let path = committed_spec_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date. Regenerate it with:\n  \
         cargo run -p vault-server -- openapi > openapi/openapi.json\n\
         (or UPDATE_OPENAPI=1 cargo test -p vault-server --test openapi_spec)"
    );
}

#[test]
fn every_inference_route_requires_a_key_and_health_does_not() {
    let spec: serde_json::Value = serde_json::from_str(&vault_server::spec_json()).unwrap();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(secured, path != "/vault/health", "{method} {path}");
        }
    }
}
