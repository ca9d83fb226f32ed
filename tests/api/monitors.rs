//! Balance monitors (Blnk 1.4): create, read, list (all, and one balance's), replace and
//! delete, with exact thresholds (`precise_value = value × precision`), and every refusal
//! in Blnk's shape, storing nothing.

use crate::helpers::{
    assert_refusal as assert_error, spawn_app, spawn_with, test_settings, Backend, Reply, TestApp,
};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A validation refusal: 400 GEN_VALIDATION_ERROR with Blnk's legacy `errors` key.
fn assert_validation(reply: &Reply, what: &str) {
    assert_error(reply, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR", what);
    assert!(
        reply.json.get("errors").is_some(),
        "{what}: the legacy errors key: {}",
        reply.text
    );
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string: {value}"))
        .to_owned()
}

fn monitor_body(balance_id: &str, field: &str, operator: &str, value: Value) -> Value {
    json!({
        "balance_id": balance_id,
        "condition": { "field": field, "operator": operator, "value": value, "precision": 100 },
        "description": "watch it",
        "call_back_url": "https://hooks.example.com/monitor",
    })
}

/// The raw JSON text of `condition.<name>` (exact, for numbers beyond f64).
fn raw_condition(reply_text: &str, name: &str) -> String {
    let outer: HashMap<String, Box<RawValue>> =
        serde_json::from_str(reply_text).expect("a JSON object");
    let condition: HashMap<String, Box<RawValue>> =
        serde_json::from_str(outer["condition"].get()).expect("a condition object");
    condition[name].get().to_owned()
}

async fn create(app: &TestApp, body: Value) -> Reply {
    let reply = app.post("/balance-monitors", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply
}

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    assert!(
        !reply.text.contains("call_back_url") && !reply.text.contains("hooks.example.com"),
        "the callback is never served: {}",
        reply.text
    );
    reply.json.as_array().expect("an array").clone()
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows.iter().map(|r| text(&r["monitor_id"])).collect();
    ids.sort();
    ids
}

async fn monitors_are_created_read_listed_replaced_and_deleted(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);

    // Act: create
    let created = create(&app, monitor_body(a, "balance", ">", json!(12.34))).await;

    // Assert: Blnk's shape, an exact precise_value, no callback served.
    let monitor = created.json.clone();
    let id = text(&monitor["monitor_id"]);
    assert!(id.starts_with("mon_"), "{id}");
    assert_eq!(monitor["balance_id"], a.as_str());
    assert_eq!(monitor["description"], "watch it");
    assert_eq!(
        monitor["condition"],
        json!({ "value": 12.34, "precision": 100, "precise_value": 1234, "field": "balance", "operator": ">" })
    );
    assert_eq!(raw_condition(&created.text, "value"), "12.34");
    assert_eq!(raw_condition(&created.text, "precise_value"), "1234");
    let created_at = chrono::DateTime::parse_from_rfc3339(&text(&monitor["created_at"]))
        .expect("created_at is RFC 3339");
    assert!((chrono::Utc::now() - created_at.with_timezone(&chrono::Utc)).num_seconds() < 60);
    assert!(
        !created.text.contains("call_back_url") && !created.text.contains("hooks.example.com"),
        "{}",
        created.text
    );

    // Read it back, alone and in the lists.
    let fetched = app.get(&format!("/balance-monitors/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
    assert_eq!(fetched.json, monitor);
    assert!(!fetched.text.contains("call_back_url"), "{}", fetched.text);
    let second = create(&app, monitor_body(a, "debit_balance", "<=", json!(5))).await;
    let other = create(&app, monitor_body(b, "credit_balance", "!=", json!(1))).await;
    let (second_id, other_id) = (
        text(&second.json["monitor_id"]),
        text(&other.json["monitor_id"]),
    );
    let all = list(&app, "/balance-monitors").await;
    assert_eq!(
        ids_of(&all),
        ids_of(&[monitor.clone(), second.json.clone(), other.json.clone()])
    );
    let of_a = list(&app, &format!("/balance-monitors/balances/{a}")).await;
    assert_eq!(
        ids_of(&of_a),
        ids_of(&[monitor.clone(), second.json.clone()])
    );
    assert!(of_a.contains(&monitor), "{of_a:?}");
    let of_b = list(&app, &format!("/balance-monitors/balances/{b}")).await;
    assert_eq!(ids_of(&of_b), vec![other_id.clone()]);
    assert!(list(&app, "/balance-monitors/balances/bln_unknown")
        .await
        .is_empty());
    assert_eq!(
        list(&app, "/balance-monitors?limit=2&offset=0").await.len(),
        2
    );
    assert_eq!(
        list(&app, "/balance-monitors?limit=2&offset=2").await.len(),
        1
    );

    // Act: replace it (to the other balance, a new condition, no description).
    let replaced = app
        .put(
            &format!("/balance-monitors/{id}"),
            json!({
                "balance_id": b,
                "condition": { "field": "inflight_balance", "operator": "==", "value": 7.5, "precision": 1000 },
                "call_back_url": "http://other.example.com/x",
            }),
        )
        .await;

    // Assert
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        replaced.json,
        json!({ "message": "BalanceMonitor updated successfully" })
    );
    let fetched = app.get(&format!("/balance-monitors/{id}")).await.json;
    assert_eq!(fetched["monitor_id"], id.as_str());
    assert_eq!(fetched["balance_id"], b.as_str());
    assert_eq!(
        fetched["created_at"], monitor["created_at"],
        "created_at kept"
    );
    assert_eq!(
        fetched["condition"],
        json!({ "value": 7.5, "precision": 1000, "precise_value": 7500, "field": "inflight_balance", "operator": "=" })
    );
    assert!(fetched.get("description").is_none(), "{fetched}");
    assert_eq!(
        ids_of(&list(&app, &format!("/balance-monitors/balances/{a}")).await),
        vec![second_id.clone()]
    );
    assert_eq!(
        ids_of(&list(&app, &format!("/balance-monitors/balances/{b}")).await),
        ids_of(&[fetched.clone(), other.json.clone()])
    );

    // Act: delete it.
    let deleted = app.delete(&format!("/balance-monitors/{id}")).await;

    // Assert
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    assert_eq!(
        deleted.json,
        json!({ "message": "BalanceMonitor deleted successfully" })
    );
    let gone = app.get(&format!("/balance-monitors/{id}")).await;
    assert_error(
        &gone,
        StatusCode::NOT_FOUND,
        "BAL_MONITOR_NOT_FOUND",
        "get deleted",
    );
    let again = app.delete(&format!("/balance-monitors/{id}")).await;
    assert_error(
        &again,
        StatusCode::NOT_FOUND,
        "BAL_MONITOR_NOT_FOUND",
        "delete twice",
    );
    let put_gone = app
        .put(
            &format!("/balance-monitors/{id}"),
            monitor_body(a, "balance", ">", json!(1)),
        )
        .await;
    assert_error(
        &put_gone,
        StatusCode::NOT_FOUND,
        "BAL_MONITOR_NOT_FOUND",
        "replace deleted",
    );
    assert_eq!(
        ids_of(&list(&app, "/balance-monitors").await),
        ids_of(&[second.json.clone(), other.json.clone()])
    );
}
on_both_backends!(monitors_are_created_read_listed_replaced_and_deleted);

async fn precise_values_are_exact_for_any_size_and_sign(backend: Backend) {
    let app = spawn_app(backend).await;
    let balance = &app.balances("USD", 1).await[0];
    // (value as raw JSON, precision as raw JSON, expected raw value, expected precise_value)
    let cases = [
        ("12.34", "100", "12.34", "1234"),
        ("0.1", "1000", "0.1", "100"),
        ("1e3", "100", "1000", "100000"),
        ("12.340", "100", "12.34", "1234"),
        (
            "123456789012345678901234567890",
            "100",
            "123456789012345678901234567890",
            "12345678901234567890123456789000",
        ),
        (
            "123456789012345678901234567890.12",
            "100",
            "123456789012345678901234567890.12",
            "12345678901234567890123456789012",
        ),
        ("-5", "1", "-5", "-5"),
        ("-12.34", "100", "-12.34", "-1234"),
        ("1.005", "100", "1.005", "101"),
        ("-1.005", "100", "-1.005", "-101"),
        (
            "2.5",
            "1000000000000000000000000000000",
            "2.5",
            "2500000000000000000000000000000",
        ),
    ];
    for (value, precision, shown, precise) in cases {
        let body = format!(
            r#"{{"balance_id": "{balance}", "condition": {{"field": "balance", "operator": ">=", "value": {value}, "precision": {precision}}}}}"#
        );
        let reply = app.post_raw("/balance-monitors", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{value}: {}", reply.text);
        assert_eq!(raw_condition(&reply.text, "value"), shown, "{value}");
        assert_eq!(
            raw_condition(&reply.text, "precision"),
            precision,
            "{value}"
        );
        assert_eq!(
            raw_condition(&reply.text, "precise_value"),
            precise,
            "{value} × {precision}"
        );
        // Stored exactly: the same when read back.
        let id = text(&reply.json["monitor_id"]);
        let fetched = app.get(&format!("/balance-monitors/{id}")).await;
        assert_eq!(raw_condition(&fetched.text, "precise_value"), precise);
        assert_eq!(raw_condition(&fetched.text, "value"), shown);
    }
    // Every operator is stored as Blnk spells it (`==` as `=`).
    for (given, stored) in [
        (">", ">"),
        ("<", "<"),
        (">=", ">="),
        ("<=", "<="),
        ("=", "="),
        ("==", "="),
        ("!=", "!="),
    ] {
        let reply = create(
            &app,
            monitor_body(balance, "credit_balance", given, json!(1)),
        )
        .await;
        assert_eq!(reply.json["condition"]["operator"], stored, "{given}");
    }
    // Every field.
    for field in [
        "balance",
        "credit_balance",
        "debit_balance",
        "inflight_balance",
        "inflight_credit_balance",
        "inflight_debit_balance",
    ] {
        let reply = create(&app, monitor_body(balance, field, ">", json!(1))).await;
        assert_eq!(reply.json["condition"]["field"], field);
    }
    // A replacement recomputes the exact value.
    let first = create(&app, monitor_body(balance, "balance", ">", json!(1))).await;
    let id = text(&first.json["monitor_id"]);
    let body = format!(
        r#"{{"balance_id": "{balance}", "condition": {{"field": "balance", "operator": "<", "value": -98765432109876543210.5, "precision": 10}}}}"#
    );
    let replaced = app
        .request(
            reqwest::Method::PUT,
            &format!("/balance-monitors/{id}"),
            Some(body),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    let fetched = app.get(&format!("/balance-monitors/{id}")).await;
    assert_eq!(
        raw_condition(&fetched.text, "precise_value"),
        "-987654321098765432105"
    );
    assert_eq!(
        raw_condition(&fetched.text, "value"),
        "-98765432109876543210.5"
    );
}
on_both_backends!(precise_values_are_exact_for_any_size_and_sign);

async fn monitor_refusals_have_blnks_codes_and_store_nothing(backend: Backend) {
    // Arrange: one stored monitor, and a 1 KiB body limit.
    let mut settings = test_settings(backend).await;
    settings.body_bytes_max = 1024;
    let app = spawn_with(settings).await;
    let balance = app.balances("USD", 1).await.remove(0);
    let kept = create(&app, monitor_body(&balance, "balance", ">", json!(10))).await;
    let kept_id = text(&kept.json["monitor_id"]);
    let valid = monitor_body(&balance, "balance", ">", json!(10));
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = valid.clone();
        change(&mut body);
        body
    };

    // Validation: 400 GEN_VALIDATION_ERROR, on create and on replace.
    let invalid = [
        (
            "bad field",
            with(&|b| b["condition"]["field"] = json!("amount")),
        ),
        (
            "blank field",
            with(&|b| b["condition"]["field"] = json!("")),
        ),
        (
            "no field",
            with(&|b| {
                b["condition"].as_object_mut().unwrap().remove("field");
            }),
        ),
        (
            "bad operator",
            with(&|b| b["condition"]["operator"] = json!("~")),
        ),
        (
            "=> operator",
            with(&|b| b["condition"]["operator"] = json!("=>")),
        ),
        (
            "no operator",
            with(&|b| {
                b["condition"].as_object_mut().unwrap().remove("operator");
            }),
        ),
        ("zero value", with(&|b| b["condition"]["value"] = json!(0))),
        (
            "zero decimal value",
            with(&|b| b["condition"]["value"] = json!(0.0)),
        ),
        (
            "no value",
            with(&|b| {
                b["condition"].as_object_mut().unwrap().remove("value");
            }),
        ),
        (
            "null value",
            with(&|b| b["condition"]["value"] = Value::Null),
        ),
        (
            "word value",
            with(&|b| b["condition"]["value"] = json!("ten")),
        ),
        (
            "object value",
            with(&|b| b["condition"]["value"] = json!({ "a": 1 })),
        ),
        (
            "no precision",
            with(&|b| {
                b["condition"].as_object_mut().unwrap().remove("precision");
            }),
        ),
        (
            "zero precision",
            with(&|b| b["condition"]["precision"] = json!(0)),
        ),
        (
            "negative precision",
            with(&|b| b["condition"]["precision"] = json!(-100)),
        ),
        (
            "fractional precision",
            with(&|b| b["condition"]["precision"] = json!(1.5)),
        ),
        (
            "word precision",
            with(&|b| b["condition"]["precision"] = json!("abc")),
        ),
        (
            "huge precision",
            with(&|b| b["condition"]["precision"] = json!(1e60)),
        ),
        (
            "no condition",
            with(&|b| {
                b.as_object_mut().unwrap().remove("condition");
            }),
        ),
        (
            "no balance",
            with(&|b| {
                b.as_object_mut().unwrap().remove("balance_id");
            }),
        ),
        ("blank balance", with(&|b| b["balance_id"] = json!("  "))),
        (
            "ftp url",
            with(&|b| b["call_back_url"] = json!("ftp://example.com/x")),
        ),
        (
            "not a url",
            with(&|b| b["call_back_url"] = json!("not a url")),
        ),
        (
            "relative url",
            with(&|b| b["call_back_url"] = json!("/hook")),
        ),
    ];
    for (what, body) in &invalid {
        let reply = app.post("/balance-monitors", body.clone()).await;
        assert_validation(&reply, what);
        let reply = app
            .put(&format!("/balance-monitors/{kept_id}"), body.clone())
            .await;
        assert_validation(&reply, &format!("replace: {what}"));
    }

    // Wrong JSON types and bodies that are not JSON: 400 GEN_MALFORMED_REQUEST.
    let malformed = [
        r#"{"balance_id": 5, "condition": {"field": "balance", "operator": ">", "value": 1, "precision": 1}}"#,
        r#"{"balance_id": "x", "condition": {"field": 1, "operator": ">", "value": 1, "precision": 1}}"#,
        r#"{"balance_id": "x", "condition": {"field": "balance", "operator": [">"], "value": 1, "precision": 1}}"#,
        r#"{"balance_id": "x", "condition": "balance > 1"}"#,
        r#"{"balance_id": "x", "condition": {"field": "balance"}, "description": 5}"#,
        r#"{"balance_id": "x", "condition": {"field": "balance"}, "call_back_url": true}"#,
        r#"{"balance_id": "x", "condition": {"field": "balance", "operator": ">", "value": 1, "precision": 1}, "meta_data": [1]}"#,
        r#"{"balance_id": "#,
        "not json",
        "[]",
    ];
    for body in malformed {
        let reply = app.post_raw("/balance-monitors", body).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "GEN_MALFORMED_REQUEST",
            body,
        );
        let reply = app
            .request(
                reqwest::Method::PUT,
                &format!("/balance-monitors/{kept_id}"),
                Some(body.to_owned()),
            )
            .await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "GEN_MALFORMED_REQUEST",
            &format!("replace: {body}"),
        );
    }

    // Unknown balance: 404 BAL_NOT_FOUND; unknown monitor: 404 BAL_MONITOR_NOT_FOUND.
    let unknown = monitor_body("bln_unknown", "balance", ">", json!(1));
    let reply = app.post("/balance-monitors", unknown.clone()).await;
    assert_error(
        &reply,
        StatusCode::NOT_FOUND,
        "BAL_NOT_FOUND",
        "unknown balance",
    );
    let reply = app
        .put(&format!("/balance-monitors/{kept_id}"), unknown)
        .await;
    assert_error(
        &reply,
        StatusCode::NOT_FOUND,
        "BAL_NOT_FOUND",
        "replace onto an unknown balance",
    );
    for path in ["/balance-monitors/mon_unknown", "/balance-monitors/x"] {
        assert_error(
            &app.get(path).await,
            StatusCode::NOT_FOUND,
            "BAL_MONITOR_NOT_FOUND",
            path,
        );
        assert_error(
            &app.delete(path).await,
            StatusCode::NOT_FOUND,
            "BAL_MONITOR_NOT_FOUND",
            path,
        );
        assert_error(
            &app.put(path, valid.clone()).await,
            StatusCode::NOT_FOUND,
            "BAL_MONITOR_NOT_FOUND",
            path,
        );
    }
    // Bad paging of the lists.
    for path in [
        "/balance-monitors?limit=0",
        "/balance-monitors?limit=abc",
        "/balance-monitors?offset=-1",
        &format!("/balance-monitors/balances/{balance}?limit=abc"),
    ] {
        let reply = app.get(path).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.text);
        assert!(reply.json["error_detail"]["code"].is_string(), "{path}");
    }

    // Oversized bodies: 413.
    let mut big = valid.clone();
    big["description"] = json!("d".repeat(2_000));
    let reply = app.post("/balance-monitors", big.clone()).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "GEN_PAYLOAD_TOO_LARGE",
        "create oversized",
    );
    let reply = app.put(&format!("/balance-monitors/{kept_id}"), big).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "GEN_PAYLOAD_TOO_LARGE",
        "replace oversized",
    );

    // Nothing stored, nothing changed.
    let all = list(&app, "/balance-monitors").await;
    assert_eq!(all, vec![kept.json.clone()]);
    assert_eq!(
        app.get(&format!("/balance-monitors/{kept_id}")).await.json,
        kept.json
    );

    // A too long description, on a server without the small body limit.
    let roomy = spawn_app(backend).await;
    let balance = roomy.balances("USD", 1).await.remove(0);
    let mut long = monitor_body(&balance, "balance", ">", json!(1));
    long["description"] = json!("d".repeat(1_025));
    assert_validation(
        &roomy.post("/balance-monitors", long.clone()).await,
        "long description",
    );
    long["description"] = json!("d".repeat(1_024));
    create(&roomy, long).await;
    let mut long_url = monitor_body(&balance, "balance", ">", json!(1));
    long_url["call_back_url"] = json!(format!("https://example.com/{}", "p".repeat(2_100)));
    assert_validation(
        &roomy.post("/balance-monitors", long_url).await,
        "long callback",
    );
    assert_eq!(list(&roomy, "/balance-monitors").await.len(), 1);
}
on_both_backends!(monitor_refusals_have_blnks_codes_and_store_nothing);
