//! `GET /openapi.json` documents exactly the routes the server has (`route_table()`), each
//! with its path parameters, a 2xx and the shared error responses; and regressions found by
//! fuzzing the API against that document (scripts/fuzz-api.sh).

use crate::helpers::{spawn_app, Backend};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The `{name}` segments of a pattern (actix and OpenAPI write them alike).
fn path_parameters(pattern: &str) -> BTreeSet<String> {
    pattern
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

fn documented_path_parameters(operation: &Value) -> BTreeSet<String> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "path")
        .map(|p| {
            assert_eq!(p["required"], true, "a path parameter is required: {p}");
            p["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn the_openapi_document_covers_exactly_the_route_table() {
    let app = spawn_app(Backend::Sqlite).await;

    let reply = app.get("/openapi.json").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let document = reply.json;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let name = format!("{} {path}", method.to_uppercase());
            assert_eq!(
                documented_path_parameters(operation),
                path_parameters(path),
                "{name}: path parameters"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{name}: no 2xx response"
            );
            for status in ["400", "413", "429", "500"] {
                assert!(responses.contains_key(status), "{name}: no {status}");
            }
            assert!(documented.insert((method.to_uppercase(), path.clone())));
        }
    }
    let routes: BTreeSet<(String, String)> = coffer::routes::route_table()
        .into_iter()
        .map(|(method, pattern)| (method.to_string(), pattern.to_owned()))
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "undocumented routes: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    assert!(routes.contains(&("GET".into(), "/openapi.json".into())));
}

#[actix_web::test]
async fn the_key_checks_are_documented_on_every_path_but_the_open_ones() {
    let app = spawn_app(Backend::Sqlite).await;

    let document = app.get("/openapi.json").await.json;

    let error = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        error["required"],
        serde_json::json!(["error", "error_detail"])
    );
    for (path, item) in document["paths"].as_object().unwrap() {
        let open = ["/", "/health", "/openapi.json"].contains(&path.as_str());
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            for status in ["401", "403"] {
                assert_eq!(
                    operation["responses"].get(status).is_some(),
                    !open,
                    "{method} {path}: {status}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn every_link_names_an_operation_and_its_parameter() {
    let app = spawn_app(Backend::Sqlite).await;

    let document = app.get("/openapi.json").await.json;

    let mut operations = std::collections::BTreeMap::new();
    for item in document["paths"].as_object().unwrap().values() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.insert(operation["operationId"].as_str().unwrap(), operation);
            }
        }
    }
    let mut links = 0;
    for operation in operations.values() {
        let Some(found) = operation["responses"]["201"]["links"].as_object() else {
            continue;
        };
        for (name, link) in found {
            links += 1;
            let target = operations[link["operationId"].as_str().unwrap()];
            for parameter in link["parameters"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                let (place, name) = parameter.split_once('.').unwrap();
                assert!(
                    target["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["in"] == place && p["name"] == name),
                    "{name}: {parameter}"
                );
            }
            for key in link["requestBody"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                let body = target["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap();
                let properties = &document["components"]["schemas"][body]["properties"];
                assert!(properties.get(key).is_some(), "{name}: {body} has no {key}");
            }
        }
    }
    assert!(links > 20, "{links} links");
}

/// Found by the fuzzer: the age went through `Utc::now() - age`, which panics past chrono's
/// range (and an age past `chrono::Duration`'s own range became zero: recover everything).
#[actix_web::test]
async fn a_recovery_threshold_older_than_any_stored_time_recovers_nothing() {
    let app = spawn_app(Backend::Sqlite).await;

    for threshold in ["99999999999h", "999999999999999h"] {
        let reply = app
            .post_raw(&format!("/transactions/recover?threshold={threshold}"), "")
            .await;

        assert_eq!(reply.status, StatusCode::OK, "{threshold}: {}", reply.text);
        assert_eq!(reply.json["recovered"], 0, "{}", reply.text);
    }
}
