//! The rules the OpenAPI document declares are the rules the server enforces: each declared
//! length, choice and bound is tried on the edge, read from the document the server serves.

use serde_json::{Value, json};
use vault_core::keys::Scope;
use vault_e2e::{TestApp, assert_error};

/// The schema of `property` in the request body of `method path`.
fn property<'a>(spec: &'a Value, method: &str, path: &str, property: &str) -> &'a Value {
    let body = &spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    let name = body["$ref"].as_str().and_then(|r| r.rsplit('/').next()).unwrap_or_default();
    let schema = &spec["components"]["schemas"][name]["properties"][property];
    assert!(schema.is_object(), "{method} {path}: no property {property}");
    schema
}

/// Sends `body` with `field` set to `value`; returns the status.
async fn status_with(
    app: &TestApp,
    key: &str,
    method: &str,
    path: &str,
    body: &Value,
    field: &str,
    value: Value,
) -> u16 {
    let mut body = body.clone();
    body[field] = value;
    app.send(&method.to_uppercase(), path, Some(key), Some(&body)).await.status().as_u16()
}

#[tokio::test]
async fn declared_lengths_choices_and_bounds_are_the_enforced_ones() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(Scope::Admin).await;
    let spec: Value =
        vault_e2e::client().get(format!("{}/openapi.json", app.url)).send().await.unwrap().json().await.unwrap();
    let created = app.send("POST", "/vault/conversations", Some(&admin), Some(&json!({}))).await;
    let conversation: Value = created.json().await.unwrap();
    let id = conversation["id"].as_str().unwrap().to_string();
    let messages = format!("/vault/conversations/{id}/messages");
    let renamed = format!("/vault/conversations/{id}");

    // (method, path in the document, path to call, a valid body, the text field to stretch)
    let texts: Vec<(&str, &str, &str, Value, &str)> = vec![
        ("post", "/vault/admin/users", "/vault/admin/users", json!({"email": "n@example.org"}), "name"),
        ("post", "/vault/admin/keys", "/vault/admin/keys", json!({}), "label"),
        ("post", "/vault/conversations", "/vault/conversations", json!({}), "title"),
        ("post", "/vault/conversations", "/vault/conversations", json!({}), "model_id"),
        ("put", "/vault/conversations/{id}", &renamed, json!({}), "title"),
        ("post", "/vault/conversations/{id}/messages", &messages, json!({"role": "user"}), "content"),
        ("post", "/vault/training/jobs", "/vault/training/jobs", json!({"model": "m", "dataset": "d"}), "name"),
        ("post", "/vault/training/jobs", "/vault/training/jobs", json!({"name": "n", "dataset": "d"}), "model"),
        ("post", "/vault/training/jobs", "/vault/training/jobs", json!({"name": "n", "model": "m"}), "dataset"),
    ];
    for (i, (method, documented, path, body, field)) in texts.into_iter().enumerate() {
        let max = property(&spec, method, documented, field)["maxLength"].as_u64().unwrap() as usize;
        // Distinct values, as a user's email must be.
        let body =
            if documented == "/vault/admin/users" { json!({"email": format!("n{i}@example.org")}) } else { body };
        let at_most = status_with(&app, &admin, method, path, &body, field, json!("x".repeat(max))).await;
        assert!((200..300).contains(&at_most), "{method} {documented} {field} of {max} characters: {at_most}");
        let over = status_with(&app, &admin, method, path, &body, field, json!("x".repeat(max + 1))).await;
        assert_eq!(over, 400, "{method} {documented} {field} of {} characters", max + 1);
    }

    // (method, path, a valid body, the field whose choices are declared)
    let choices: Vec<(&str, &str, Value, &str)> = vec![
        ("post", "/vault/admin/users", json!({"name": "n"}), "role"),
        ("post", "/vault/admin/keys", json!({"label": "l"}), "scope"),
        ("post", "/vault/conversations/{id}/messages", json!({"content": "hi"}), "role"),
    ];
    let mut emails = 0;
    for (method, documented, body, field) in choices {
        let path = documented.replace("{id}", &id);
        let declared = property(&spec, method, documented, field)["enum"].as_array().unwrap().clone();
        for value in declared.iter().chain([&json!("other")]) {
            let mut body = body.clone();
            if documented == "/vault/admin/users" {
                emails += 1;
                body["email"] = json!(format!("c{emails}@example.org"));
            }
            let status = status_with(&app, &admin, method, &path, &body, field, value.clone()).await;
            let expected = declared.contains(value);
            assert_eq!((200..300).contains(&status), expected, "{method} {documented} {field}={value}: {status}");
        }
    }

    // Declared query bounds and choices.
    for (path, parameter) in [("/vault/conversations", "limit"), ("/vault/activity", "limit")] {
        let schema = spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == parameter)
            .unwrap()["schema"]
            .clone();
        let bound = |name: &str| schema[name].as_f64().unwrap() as u64;
        let (min, max) = (bound("minimum"), bound("maximum"));
        for (value, allowed) in [(min - 1, false), (min, true), (max, true), (max + 1, false)] {
            let response = app.send("GET", &format!("{path}?{parameter}={value}"), Some(&admin), None).await;
            match allowed {
                true => assert_eq!(response.status(), 200, "{path}?{parameter}={value}"),
                false => drop(assert_error(response, 400, "invalid_request").await),
            }
        }
    }
    for (path, parameter) in [("/vault/insights", "range"), ("/vault/training/jobs", "status")] {
        let parameters = spec["paths"][path]["get"]["parameters"].as_array().unwrap();
        let declared = parameters.iter().find(|p| p["name"] == parameter).unwrap()["schema"]["enum"].clone();
        for value in declared.as_array().unwrap() {
            let response =
                app.send("GET", &format!("{path}?{parameter}={}", value.as_str().unwrap()), Some(&admin), None).await;
            assert_eq!(response.status(), 200, "{path}?{parameter}={value}");
        }
        let response = app.send("GET", &format!("{path}?{parameter}=other"), Some(&admin), None).await;
        assert_error(response, 400, "invalid_request").await;
    }
}
