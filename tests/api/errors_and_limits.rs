//! Bad input: every refusal is a 4xx in Blnk's error shape, never a 5xx, and changes nothing.

use crate::helpers::{
    assert_refusal as assert_error, spawn_app, spawn_with, test_settings, Backend, Reply, TestApp,
};
use crate::on_both_backends;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Blnk's error shape: `{"error": "...", "error_detail": {"code", "message"}}`.
fn assert_error_shape(reply: &Reply, what: &str) {
    assert!(
        reply.json["error"].is_string(),
        "{what}: no error string in {}",
        reply.text
    );
    assert!(
        reply.json["error_detail"]["code"].is_string(),
        "{what}: no error_detail.code in {}",
        reply.text
    );
    assert!(
        reply.json["error_detail"]["message"].is_string(),
        "{what}: no error_detail.message in {}",
        reply.text
    );
}

/// Everything a client can read: balances, transactions and ledgers.
async fn snapshot(app: &TestApp) -> (Vec<Value>, Vec<Value>, Value) {
    let ledgers = app.get("/ledgers?limit=1000").await.json;
    (
        app.all_balances().await,
        app.all_transactions().await,
        ledgers,
    )
}

/// A ledger with two funded balances, one applied and one queued transfer.
async fn populated(backend: Backend) -> (TestApp, String, String) {
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (ids[0].clone(), ids[1].clone());
    app.fund(&a, "USD", 1_000).await;
    let reply = app
        .post("/transactions", app.transfer(&a, &b, 100, true))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let queued = app.transfer(&a, &b, 50, false);
    let reply = app.post("/transactions", queued.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    app.queued_outcome(queued["reference"].as_str().unwrap())
        .await;
    (app, a, b)
}

/// A valid transfer body with `changes` applied on top (`null` removes a field).
fn valid_with(source: &str, destination: &str, changes: Value, skip_queue: bool) -> Value {
    let mut body = json!({
        "amount": 10, "currency": "USD", "reference": format!("bad-{}", uuid::Uuid::new_v4()),
        "description": "bad input", "source": source, "destination": destination,
        "skip_queue": skip_queue,
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            body.as_object_mut().unwrap().remove(key);
        } else {
            body[key] = value.clone();
        }
    }
    body
}

async fn malformed_and_mistyped_bodies_are_400_and_change_nothing(backend: Backend) {
    // Arrange
    let (app, a, b) = populated(backend).await;
    let before = snapshot(&app).await;
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let raw_cases: Vec<(&str, String, &str)> = vec![
        ("/transactions", "{".into(), "GEN_MALFORMED_REQUEST"),
        ("/transactions", "not json".into(), "GEN_MALFORMED_REQUEST"),
        ("/transactions", "[]".into(), "GEN_MALFORMED_REQUEST"),
        ("/transactions", "null".into(), "GEN_MALFORMED_REQUEST"),
        ("/transactions", "\"text\"".into(), "GEN_MALFORMED_REQUEST"),
        (
            "/transactions",
            format!(r#"{{"amount": 1, "meta_data": {deep}}}"#),
            "GEN_MALFORMED_REQUEST",
        ),
        ("/transactions", "".into(), "TXN_VALIDATION_ERROR"),
        ("/transactions", "   ".into(), "TXN_VALIDATION_ERROR"),
        ("/balances", "{".into(), "GEN_MALFORMED_REQUEST"),
        (
            "/balances",
            r#"{"ledger_id": 5}"#.into(),
            "GEN_MALFORMED_REQUEST",
        ),
        ("/ledgers", "{".into(), "GEN_MALFORMED_REQUEST"),
        ("/transactions/filter", "{".into(), "GEN_MALFORMED_REQUEST"),
        (
            "/transactions/filter",
            r#"{"filters": "status"}"#.into(),
            "GEN_MALFORMED_REQUEST",
        ),
        ("/balances/filter", "[1]".into(), "GEN_MALFORMED_REQUEST"),
    ];
    let typed_cases: Vec<(Value, &str)> = vec![
        (json!({ "amount": "abc" }), "TXN_INVALID_AMOUNT"),
        (json!({ "amount": true }), "TXN_INVALID_AMOUNT"),
        (json!({ "allow_overdraft": "yes" }), "GEN_MALFORMED_REQUEST"),
        (json!({ "skip_queue": "no" }), "GEN_MALFORMED_REQUEST"),
        (json!({ "meta_data": [1] }), "GEN_MALFORMED_REQUEST"),
        (json!({ "meta_data": "note" }), "GEN_MALFORMED_REQUEST"),
        (json!({ "currency": 5 }), "GEN_MALFORMED_REQUEST"),
        (json!({ "source": { "id": 1 } }), "GEN_MALFORMED_REQUEST"),
        (
            json!({ "effective_date": "yesterday" }),
            "TXN_VALIDATION_ERROR",
        ),
        (json!({ "overdraft_limit": "lots" }), "TXN_INVALID_AMOUNT"),
        (json!({ "overdraft_limit": -5 }), "TXN_INVALID_AMOUNT"),
        (
            json!({ "reference": "r".repeat(2_000) }),
            "TXN_VALIDATION_ERROR",
        ),
        (
            json!({ "currency": "C".repeat(100) }),
            "TXN_VALIDATION_ERROR",
        ),
        (
            json!({ "scheduled_for": "tomorrow" }),
            "TXN_VALIDATION_ERROR",
        ),
        (
            json!({ "destinations": [{ "identifier": "@x", "distribution": "150%" }] }),
            "TXN_INVALID_DISTRIBUTION",
        ),
    ];

    // Act
    let mut replies: Vec<(String, Reply, &str)> = Vec::new();
    for (path, body, code) in &raw_cases {
        let reply = app.post_raw(path, body).await;
        let what = format!("POST {path} {:.40}", body);
        replies.push((what, reply, code));
    }
    for skip_queue in [true, false] {
        for (changes, code) in &typed_cases {
            let body = valid_with(&a, &b, changes.clone(), skip_queue);
            let reply = app.post("/transactions", body).await;
            let what = format!("{changes:.60} skip_queue={skip_queue}");
            replies.push((what, reply, code));
        }
    }

    // Assert
    for (what, reply, code) in &replies {
        assert_error(reply, StatusCode::BAD_REQUEST, code, what);
    }
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(malformed_and_mistyped_bodies_are_400_and_change_nothing);

async fn missing_required_fields_are_listed_in_the_message(backend: Backend) {
    // Arrange
    let (app, a, b) = populated(backend).await;
    let before = snapshot(&app).await;

    // Act
    let empty = app.post_raw("/transactions", "").await;
    let only_amount = app.post("/transactions", json!({ "amount": 10 })).await;
    let no_description = app
        .post(
            "/transactions",
            valid_with(&a, &b, json!({ "description": null }), false),
        )
        .await;
    let blank_reference = app
        .post(
            "/transactions",
            valid_with(&a, &b, json!({ "reference": "  " }), true),
        )
        .await;

    // Assert
    for reply in [&empty, &only_amount] {
        assert_error(
            reply,
            StatusCode::BAD_REQUEST,
            "TXN_VALIDATION_ERROR",
            "missing",
        );
        let message = reply.json["error_detail"]["message"].as_str().unwrap();
        for field in [
            "currency",
            "description",
            "reference",
            "source",
            "destination",
        ] {
            assert!(
                message.contains(&format!("{field}: cannot be blank")),
                "{field} in {message}"
            );
        }
        assert_eq!(reply.json["error"], reply.json["error_detail"]["message"]);
    }
    assert_error(
        &no_description,
        StatusCode::BAD_REQUEST,
        "TXN_VALIDATION_ERROR",
        "no description",
    );
    assert_eq!(
        no_description.json["error"],
        "description: cannot be blank."
    );
    assert_error(
        &blank_reference,
        StatusCode::BAD_REQUEST,
        "TXN_VALIDATION_ERROR",
        "blank reference",
    );
    assert_eq!(blank_reference.json["error"], "reference: cannot be blank.");
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(missing_required_fields_are_listed_in_the_message);

async fn bad_amounts_and_precisions_are_refused_with_their_codes(backend: Backend) {
    // Arrange
    let (app, a, b) = populated(backend).await;
    let before = snapshot(&app).await;
    let no_amount = json!({ "amount": null });
    let with_amount = |extra: Value| {
        let mut changes = no_amount.clone();
        for (key, value) in extra.as_object().unwrap() {
            changes[key] = value.clone();
        }
        changes
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "amount": -5 }), "TXN_INVALID_AMOUNT"),
        (json!({ "amount": 0 }), "TXN_INVALID_AMOUNT"),
        (json!({ "amount": 0.0 }), "TXN_INVALID_AMOUNT"),
        (
            json!({ "amount": 0.001, "precision": 100 }),
            "TXN_INVALID_AMOUNT",
        ),
        (
            with_amount(json!({ "precise_amount": 0 })),
            "TXN_INVALID_AMOUNT",
        ),
        (
            with_amount(json!({ "precise_amount": -1 })),
            "TXN_INVALID_AMOUNT",
        ),
        (
            with_amount(json!({ "precise_amount": 1.5 })),
            "TXN_INVALID_AMOUNT",
        ),
        (
            with_amount(json!({ "precise_amount": "ten" })),
            "TXN_INVALID_AMOUNT",
        ),
        (json!({ "precise_amount": 10 }), "TXN_VALIDATION_ERROR"),
        (no_amount.clone(), "TXN_VALIDATION_ERROR"),
        (json!({ "precision": 1.5 }), "TXN_PRECISION_NOT_INTEGER"),
        (json!({ "precision": -100 }), "TXN_PRECISION_NOT_INTEGER"),
        (json!({ "precision": "cents" }), "TXN_PRECISION_NOT_INTEGER"),
        (json!({ "precision": 1e40 }), "TXN_PRECISION_NOT_INTEGER"),
    ];
    let raw_amounts = [
        r#""amount": 1e99999"#,
        r#""amount": 1e-99999"#,
        r#""amount": -1e99999"#,
        r#""precise_amount": 1e99999"#,
        r#""precise_amount": 99999999999999999999999999999999999999999999999999999999999999999"#,
        r#""amount": 1e60, "precision": 1e30"#,
    ];

    // Act
    let mut replies: Vec<(String, Reply, &str)> = Vec::new();
    for skip_queue in [true, false] {
        for (changes, code) in &cases {
            let body = valid_with(&a, &b, changes.clone(), skip_queue);
            let reply = app.post("/transactions", body).await;
            replies.push((format!("{changes} skip_queue={skip_queue}"), reply, code));
        }
        for amount in raw_amounts {
            let body = format!(
                r#"{{{amount}, "currency": "USD", "reference": "{}", "description": "huge",
                    "source": "{a}", "destination": "{b}", "skip_queue": {skip_queue}}}"#,
                uuid::Uuid::new_v4()
            );
            let reply = app.post_raw("/transactions", &body).await;
            replies.push((
                format!("{amount} skip_queue={skip_queue}"),
                reply,
                "TXN_INVALID_AMOUNT",
            ));
        }
    }

    // Assert
    for (what, reply, code) in &replies {
        assert_error(reply, StatusCode::BAD_REQUEST, code, what);
    }
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(bad_amounts_and_precisions_are_refused_with_their_codes);

async fn bad_queries_and_filters_are_400(backend: Backend) {
    // Arrange
    let (app, _, _) = populated(backend).await;
    let before = snapshot(&app).await;
    let gets: Vec<(&str, &str)> = vec![
        ("/transactions?limit=abc", "GEN_BAD_REQUEST"),
        ("/transactions?limit=0", "GEN_BAD_REQUEST"),
        ("/transactions?limit=-1", "GEN_BAD_REQUEST"),
        ("/transactions?limit=1000000", "GEN_BAD_REQUEST"),
        ("/transactions?offset=x", "GEN_BAD_REQUEST"),
        ("/balances?limit=0", "GEN_BAD_REQUEST"),
        ("/transactions?created_at_gte=noon", "GEN_VALIDATION_ERROR"),
        ("/transactions?amount_gt=abc", "GEN_VALIDATION_ERROR"),
        ("/transactions?nope_eq=1", "GEN_VALIDATION_ERROR"),
        ("/transactions?balance_id_like=bln", "GEN_VALIDATION_ERROR"),
        (
            "/transactions?meta_data.bad-key_eq=1",
            "GEN_VALIDATION_ERROR",
        ),
        ("/balances?balance_gt=lots", "GEN_VALIDATION_ERROR"),
        ("/balances?balance_like=1", "GEN_VALIDATION_ERROR"),
        (
            "/balances?created_at_between=2024-01-01",
            "GEN_VALIDATION_ERROR",
        ),
    ];
    let filters: Vec<(Value, &str)> = vec![
        (
            json!({ "filters": [{ "field": "status", "operator": "regex", "value": "x" }] }),
            "GEN_VALIDATION_ERROR",
        ),
        (
            json!({ "filters": [{ "operator": "eq", "value": "x" }] }),
            "GEN_VALIDATION_ERROR",
        ),
        (
            json!({ "filters": [{ "field": "colour", "operator": "eq", "value": "x" }] }),
            "GEN_VALIDATION_ERROR",
        ),
        (json!({ "sort_by": "colour" }), "GEN_VALIDATION_ERROR"),
        (json!({ "sort_by": "meta_data.x" }), "GEN_VALIDATION_ERROR"),
        (
            json!({ "sort_by": "created_at; DROP TABLE transactions" }),
            "GEN_VALIDATION_ERROR",
        ),
        (json!({ "limit": 101 }), "GEN_BAD_REQUEST"),
        (json!({ "limit": 0 }), "GEN_BAD_REQUEST"),
        (json!({ "offset": -1 }), "GEN_BAD_REQUEST"),
        (json!({ "sort_order": "up" }), "GEN_BAD_REQUEST"),
        (json!({ "logical_operator": "xor" }), "GEN_BAD_REQUEST"),
    ];

    // Act
    let mut replies: Vec<(String, Reply, &str)> = Vec::new();
    for (path, code) in &gets {
        replies.push((format!("GET {path}"), app.get(path).await, code));
    }
    for (body, code) in &filters {
        for path in ["/transactions/filter", "/balances/filter"] {
            let reply = app.post(path, body.clone()).await;
            replies.push((format!("POST {path} {body}"), reply, code));
        }
    }

    // Assert
    for (what, reply, code) in &replies {
        assert_error(reply, StatusCode::BAD_REQUEST, code, what);
    }
    let quoted = app.get("/transactions?reference_eq=x'%20OR%20'1'='1").await;
    assert_eq!(quoted.status, StatusCode::OK, "{}", quoted.text);
    assert_eq!(quoted.json, json!([]));
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(bad_queries_and_filters_are_400);

async fn huge_filter_numbers_are_never_a_server_error(backend: Backend) {
    // Arrange
    let (app, _, _) = populated(backend).await;

    // Act
    let mut replies = Vec::new();
    for value in ["1e99999", "1e999999", "-1e999999", "1e99999999999999999999"] {
        let path = format!("/balances?balance_gt={value}");
        replies.push((path.clone(), app.get(&path).await));
        let path = format!("/transactions?amount_lt={value}");
        replies.push((path.clone(), app.get(&path).await));
    }

    // Assert
    for (path, reply) in &replies {
        assert!(
            reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST,
            "{path}: {} {}",
            reply.status,
            reply.text
        );
        if reply.status == StatusCode::BAD_REQUEST {
            assert_error_shape(reply, path);
        }
    }
}
on_both_backends!(huge_filter_numbers_are_never_a_server_error);

async fn a_body_over_the_limit_is_413_and_changes_nothing(backend: Backend) {
    // Arrange
    let mut settings = test_settings(backend).await;
    settings.body_bytes_max = 512;
    let app = spawn_with(settings).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 100).await;
    let before = snapshot(&app).await;
    let mut big_transfer = app.transfer(&ids[0], &ids[1], 10, true);
    big_transfer["meta_data"] = json!({ "note": "x".repeat(600) });
    let big_ledger = json!({ "name": "n".repeat(600) });

    // Act
    let replies = vec![
        ("transaction", app.post("/transactions", big_transfer).await),
        ("ledger", app.post("/ledgers", big_ledger.clone()).await),
        ("balance", app.post("/balances", big_ledger.clone()).await),
        (
            "filter",
            app.post("/transactions/filter", big_ledger.clone()).await,
        ),
        (
            "garbage",
            app.post_raw("/transactions", &"{".repeat(2_000)).await,
        ),
    ];
    let after = snapshot(&app).await;
    let small = app.post("/ledgers", json!({ "name": "fits" })).await;

    // Assert
    for (what, reply) in &replies {
        assert_error(
            reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "GEN_PAYLOAD_TOO_LARGE",
            what,
        );
    }
    assert_eq!(after, before);
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.text);
}
on_both_backends!(a_body_over_the_limit_is_413_and_changes_nothing);

async fn unknown_routes_are_json_404s(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let requests = [
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/transactions/a/b/c"),
        (Method::DELETE, "/ledgers"),
        (Method::PATCH, "/balances"),
        (Method::PUT, "/transactions"),
        (Method::GET, "/v1/transactions"),
    ];

    // Act
    let mut replies = Vec::new();
    for (method, path) in requests {
        let what = format!("{method} {path}");
        replies.push((what, app.request(method, path, None).await));
    }

    // Assert
    for (what, reply) in &replies {
        assert_error(reply, StatusCode::NOT_FOUND, "GEN_NOT_FOUND", what);
    }
    assert_eq!(app.get("/ledgers").await.json.as_array().unwrap().len(), 1);
}
on_both_backends!(unknown_routes_are_json_404s);
