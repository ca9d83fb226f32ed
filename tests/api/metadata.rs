//! `POST /{entity-id}/metadata` (Blnk 1.8): shallow merges into ledgers, balances, identities
//! and transactions (with every row whose parent is the id), the keys the server owns, the
//! immutability of transaction rows in the database itself (migration 10), and balance
//! reconstruction (`BLNK_RUN_RECONCILIATION: "SOURCE"`), with a correct, a tampered and a
//! busy balance.

use crate::helpers::{
    assert_refusal as assert_error, spawn_app, spawn_with, test_settings, wait_for, Backend, Reply,
    TestApp,
};
use crate::on_both_backends;
use futures_util::future::join_all;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{json, Value};
use std::time::Duration;

const RECONCILE: &str = "BLNK_RUN_RECONCILIATION";
const RESULT: &str = "BLNK_RECONCILIATION_RESULT";

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string: {value}"))
        .to_owned()
}

/// `POST /{id}/metadata` with `{"meta_data": meta}`.
async fn merge(app: &TestApp, id: &str, meta: Value) -> Reply {
    app.post(&format!("/{id}/metadata"), json!({ "meta_data": meta }))
        .await
}

/// A merge that must succeed; returns the answered `meta_data`.
async fn merged(app: &TestApp, id: &str, meta: Value) -> Value {
    let reply = merge(app, id, meta).await;
    assert_eq!(reply.status, StatusCode::OK, "{id}: {}", reply.text);
    let object = reply.json.as_object().expect("an object");
    assert_eq!(object.len(), 1, "only meta_data: {}", reply.text);
    reply.json["meta_data"].clone()
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    reply.json
}

/// The rows whose `parent_transaction` is `parent`.
async fn children(app: &TestApp, parent: &str) -> Vec<Value> {
    let reply = app
        .post(
            "/transactions/filter",
            json!({
                "filters": [{ "field": "parent_transaction", "operator": "eq", "value": parent }],
                "limit": 100, "sort_by": "created_at", "sort_order": "asc",
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json.as_array().unwrap().clone()
}

/// A row without its `meta_data`, for comparing everything else.
fn without_meta(row: &Value) -> Value {
    let mut row = row.clone();
    row.as_object_mut().unwrap().remove("meta_data");
    row
}

/// Every transaction, by id.
async fn transactions_by_id(app: &TestApp) -> std::collections::BTreeMap<String, Value> {
    app.all_transactions()
        .await
        .into_iter()
        .map(|row| (text(&row["transaction_id"]), row))
        .collect()
}

/// Everything a metadata request could change: ledgers, balances, identities, transactions.
async fn everything(app: &TestApp) -> Value {
    let mut balances = app.all_balances().await;
    balances.sort_by_key(|b| text(&b["balance_id"]));
    json!({
        "ledgers": get_ok(app, "/ledgers?limit=1000").await,
        "balances": balances,
        "identities": get_ok(app, "/identities?limit=1000").await,
        "transactions": transactions_by_id(app).await,
    })
}

fn new_reference() -> String {
    format!("ref-{}", uuid::Uuid::new_v4())
}

/// A statement of this backend's dialect (the ids in it are the server's own).
async fn execute(db: &DatabaseConnection, sql: &str) -> Result<u64, sea_orm::DbErr> {
    db.execute_unprepared(sql).await.map(|r| r.rows_affected())
}

// ---------------------------------------------------------------------------------------
// Ledgers, balances and identities
// ---------------------------------------------------------------------------------------

async fn ledger_balance_and_identity_metadata_merge_shallowly_and_read_back(backend: Backend) {
    let app = spawn_app(backend).await;

    // Ledger: a shallow merge (a nested object is replaced whole, not merged).
    let created = app
        .post(
            "/ledgers",
            json!({ "name": "meta", "meta_data": { "region": "eu", "tier": { "level": 1, "since": 2020 } } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let ledger = text(&created.json["ledger_id"]);
    let answer = merged(
        &app,
        &ledger,
        json!({ "tier": { "level": 2 }, "owner": "ops", "tags": ["a", "ü"] }),
    )
    .await;
    let expected =
        json!({ "region": "eu", "tier": { "level": 2 }, "owner": "ops", "tags": ["a", "ü"] });
    assert_eq!(answer, expected);
    assert_eq!(
        get_ok(&app, &format!("/ledgers/{ledger}")).await["meta_data"],
        expected
    );
    // An empty update changes nothing; a null value is stored as null.
    assert_eq!(merged(&app, &ledger, json!({})).await, expected);
    let mut with_null = expected.clone();
    with_null["region"] = Value::Null;
    assert_eq!(
        merged(&app, &ledger, json!({ "region": null })).await,
        with_null
    );
    assert_eq!(
        get_ok(&app, &format!("/ledgers/{ledger}")).await["meta_data"],
        with_null
    );
    assert_eq!(
        get_ok(&app, &format!("/ledgers/{ledger}")).await["name"],
        "meta"
    );

    // A ledger without meta_data, and the General Ledger (no prefix).
    let bare = app.create_ledger("bare").await;
    assert_eq!(
        merged(&app, &bare, json!({ "a": 1 })).await,
        json!({ "a": 1 })
    );
    assert_eq!(
        merged(
            &app,
            "general_ledger_id",
            json!({ "purpose": "indicators" })
        )
        .await,
        json!({ "purpose": "indicators" })
    );
    let general = get_ok(&app, "/ledgers/general_ledger_id").await;
    assert_eq!(general["meta_data"], json!({ "purpose": "indicators" }));
    assert_eq!(general["name"], "General Ledger");

    // Balance: merged, amounts untouched.
    let created = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "meta_data": { "a": 1, "b": { "x": 1 } } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let balance = text(&created.json["balance_id"]);
    app.fund(&balance, "USD", 700).await;
    let before = app.balance(&balance).await;
    let answer = merged(&app, &balance, json!({ "b": "flat", "c": 3 })).await;
    assert_eq!(answer, json!({ "a": 1, "b": "flat", "c": 3 }));
    let after = app.balance(&balance).await;
    assert_eq!(after["meta_data"], answer);
    assert_eq!(without_meta(&after), without_meta(&before));
    // A reconciliation value other than "SOURCE" is an ordinary key.
    let answer = merged(&app, &balance, json!({ RECONCILE: "source" })).await;
    assert_eq!(answer[RECONCILE], "source");
    assert!(answer.get(RESULT).is_none(), "{answer}");
    assert_eq!(
        without_meta(&app.balance(&balance).await),
        without_meta(&before)
    );

    // Identity: merged; the tokenization marks are the server's and never taken.
    let identity = app.create_identity("Ada").await;
    let answer = merged(
        &app,
        &identity,
        json!({ "kyc": "done", "tokenized_fields": { "FirstName": true } }),
    )
    .await;
    assert_eq!(answer, json!({ "kyc": "done" }));
    let read = get_ok(&app, &format!("/identities/{identity}")).await;
    assert_eq!(read["meta_data"], json!({ "kyc": "done" }));
    assert_eq!(read["first_name"], "Ada");
    assert_eq!(
        get_ok(&app, &format!("/identities/{identity}/tokenized-fields")).await,
        json!({ "tokenized_fields": [] })
    );
    assert_eq!(
        merged(&app, &identity, json!({ "kyc": "again" })).await,
        json!({ "kyc": "again" })
    );
    app.assert_invariants().await;
}
on_both_backends!(ledger_balance_and_identity_metadata_merge_shallowly_and_read_back);

async fn tokenization_marks_survive_identity_metadata_updates(backend: Backend) {
    // Arrange: tokenization on, and an identity whose first name is tokenized.
    let mut settings = test_settings(backend).await;
    settings.tokenization_secret = Some(coffer::configuration::SecretString::from(
        "0123456789abcdef0123456789abcdef".to_owned(),
    ));
    let app = spawn_with(settings).await;
    let identity = app.create_identity("Grace").await;
    let tokenized = app
        .post(
            &format!("/identities/{identity}/tokenize/first_name"),
            json!({}),
        )
        .await;
    assert_eq!(tokenized.status, StatusCode::OK, "{}", tokenized.text);
    let marks = get_ok(&app, &format!("/identities/{identity}")).await["meta_data"]
        ["tokenized_fields"]
        .clone();
    assert!(marks.is_object(), "{marks}");

    // Act: a client tries to clear and to forge the marks.
    let cleared = merged(
        &app,
        &identity,
        json!({ "tokenized_fields": {}, "note": 1 }),
    )
    .await;
    let forged = merged(
        &app,
        &identity,
        json!({ "tokenized_fields": { "LastName": true } }),
    )
    .await;

    // Assert: the server's marks stay, the rest merges; detokenizing still works.
    assert_eq!(cleared["tokenized_fields"], marks);
    assert_eq!(cleared["note"], 1);
    assert_eq!(forged, cleared);
    let read = get_ok(&app, &format!("/identities/{identity}")).await;
    assert_eq!(read["meta_data"], cleared);
    assert_eq!(
        get_ok(&app, &format!("/identities/{identity}/tokenized-fields")).await,
        json!({ "tokenized_fields": ["FirstName"] })
    );
    assert_eq!(read["last_name"], "Test", "LastName was never tokenized");
    let plain = get_ok(
        &app,
        &format!("/identities/{identity}/detokenize/first_name"),
    )
    .await;
    assert_eq!(plain["value"], "Grace", "{plain}");
}
on_both_backends!(tokenization_marks_survive_identity_metadata_updates);

// ---------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------

async fn transaction_metadata_reaches_split_bulk_and_queued_children_in_one_go(backend: Backend) {
    // Arrange: a split (skip_queue), a bulk batch, a queued transfer and a plain transfer.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 4).await;
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    app.fund(a, "USD", 10_000).await;
    let split = app
        .post(
            "/transactions",
            json!({
                "precise_amount": 1_000, "currency": "USD", "reference": new_reference(),
                "description": "split", "source": a, "skip_queue": true,
                "meta_data": { "origin": "split" },
                "destinations": [
                    { "identifier": b, "distribution": "50%" },
                    { "identifier": c, "distribution": "left" },
                ],
            }),
        )
        .await;
    assert_eq!(split.status, StatusCode::CREATED, "{}", split.text);
    let split_id = text(&split.json["transaction_id"]);
    let bulk = app
        .post(
            "/transactions/bulk",
            json!({
                "transactions": [app.transfer(a, d, 100, true), app.transfer(a, b, 200, true)],
                "skip_queue": true,
            }),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
    let batch_id = text(&bulk.json["batch_id"]);
    assert!(batch_id.starts_with("bulk_"), "{batch_id}");
    let queued_body = app.transfer(a, d, 300, false);
    let queued = app.post("/transactions", queued_body.clone()).await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    let queued_id = text(&queued.json["transaction_id"]);
    let child = app.queued_outcome(&text(&queued_body["reference"])).await;
    assert_eq!(child["status"], "APPLIED", "{child}");
    let child_id = text(&child["transaction_id"]);
    assert_eq!(
        child["meta_data"]["QUEUED_PARENT_TRANSACTION"],
        queued_id.as_str()
    );
    let plain = app
        .post("/transactions", app.transfer(b, c, 10, true))
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.text);
    let plain_id = text(&plain.json["transaction_id"]);
    let split_legs = children(&app, &split_id).await;
    let bulk_legs = children(&app, &batch_id).await;
    assert_eq!(split_legs.len(), 2);
    assert_eq!(bulk_legs.len(), 2);
    let before = transactions_by_id(&app).await;
    let balances_before = app.all_balances().await;

    // Act: one merge per id; forged server keys ride along.
    let split_update = json!({ "invoice": "inv-1", "BLNK_GROUP_ID": "forged", "origin": "client" });
    let bulk_update = json!({ "batch": "b-1", "QUEUED_PARENT_TRANSACTION": "txn_forged" });
    let queued_update = json!({ "ticket": 7, "QUEUED_PARENT_TRANSACTION": "txn_forged" });
    let plain_update = json!({ "reviewed": true });
    let answers = [
        merged(&app, &split_id, split_update.clone()).await,
        merged(&app, &batch_id, bulk_update.clone()).await,
        merged(&app, &queued_id, queued_update.clone()).await,
        merged(&app, &plain_id, plain_update.clone()).await,
    ];

    // Assert: each answer is the request's own object (Blnk's).
    assert_eq!(
        answers,
        [split_update, bulk_update, queued_update, plain_update]
    );
    let after = transactions_by_id(&app).await;
    assert_eq!(after.len(), before.len(), "no row added or removed");
    let meta = |id: &str| after[id]["meta_data"].clone();
    let old_meta = |id: &str| before[id]["meta_data"].clone();
    for leg in &split_legs {
        let id = text(&leg["transaction_id"]);
        let m = meta(&id);
        assert_eq!(m["invoice"], "inv-1", "{m}");
        assert_eq!(m["origin"], "client", "client keys win: {m}");
        assert_eq!(
            m["BLNK_GROUP_ID"],
            split_id.as_str(),
            "server key kept: {m}"
        );
    }
    for leg in &bulk_legs {
        let id = text(&leg["transaction_id"]);
        let m = meta(&id);
        assert_eq!(m["batch"], "b-1", "{m}");
        assert_eq!(
            m.get("QUEUED_PARENT_TRANSACTION"),
            old_meta(&id).get("QUEUED_PARENT_TRANSACTION"),
            "{m}"
        );
        // The keys the leg had are kept (a shallow merge).
        for (key, value) in old_meta(&id).as_object().into_iter().flatten() {
            assert_eq!(&m[key], value, "{key} of {id}");
        }
    }
    for id in [&queued_id, &child_id] {
        let m = meta(id);
        assert_eq!(m["ticket"], 7, "{id}: {m}");
        assert_eq!(
            m["QUEUED_PARENT_TRANSACTION"],
            queued_id.as_str(),
            "{id}: {m}"
        );
    }
    assert_eq!(meta(&plain_id), json!({ "reviewed": true }));
    // Every row read back one by one, too.
    for id in [&queued_id, &child_id, &plain_id] {
        let row = get_ok(&app, &format!("/transactions/{id}")).await;
        assert_eq!(row["meta_data"], meta(id));
    }
    let touched: Vec<String> = split_legs
        .iter()
        .chain(&bulk_legs)
        .map(|r| text(&r["transaction_id"]))
        .chain([queued_id.clone(), child_id.clone(), plain_id.clone()])
        .collect();
    for (id, row) in &after {
        assert_eq!(
            without_meta(row),
            without_meta(&before[id]),
            "only meta_data changes: {id}"
        );
        if !touched.contains(id) {
            assert_eq!(row, &before[id], "an unrelated row is untouched: {id}");
        }
    }
    let mut balances_after = app.all_balances().await;
    let mut balances_before = balances_before;
    balances_after.sort_by_key(|b| text(&b["balance_id"]));
    balances_before.sort_by_key(|b| text(&b["balance_id"]));
    assert_eq!(balances_after, balances_before);
    app.assert_invariants().await;
}
on_both_backends!(transaction_metadata_reaches_split_bulk_and_queued_children_in_one_go);

async fn a_queued_split_parent_updates_its_queued_legs(backend: Backend) {
    // Arrange: a queued split: its legs are QUEUED rows under the split id, each with a
    // `_q` child under the leg.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    app.fund(&ids[0], "USD", 1_000).await;
    let reference = new_reference();
    let split = app
        .post(
            "/transactions",
            json!({
                "precise_amount": 600, "currency": "USD", "reference": reference,
                "description": "queued split", "source": ids[0],
                "destinations": [
                    { "identifier": ids[1], "distribution": "50%" },
                    { "identifier": ids[2], "distribution": "left" },
                ],
            }),
        )
        .await;
    assert_eq!(split.status, StatusCode::CREATED, "{}", split.text);
    let split_id = text(&split.json["transaction_id"]);
    let legs = children(&app, &split_id).await;
    assert_eq!(legs.len(), 2);
    for leg in &legs {
        let outcome = app.queued_outcome(&text(&leg["reference"])).await;
        assert_eq!(outcome["status"], "APPLIED", "{outcome}");
    }

    // Act
    let answer = merged(&app, &split_id, json!({ "batch": 9 })).await;

    // Assert: the legs (the split's children) take it; their own children do not (Blnk
    // merges into the id's row and its direct children).
    assert_eq!(answer, json!({ "batch": 9 }));
    for leg in children(&app, &split_id).await {
        assert_eq!(leg["meta_data"]["batch"], 9, "{leg}");
        assert_eq!(leg["status"], "QUEUED");
        let leg_id = text(&leg["transaction_id"]);
        for grandchild in children(&app, &leg_id).await {
            assert!(
                grandchild["meta_data"].get("batch").is_none(),
                "{grandchild}"
            );
        }
        // Merging the leg's id reaches its `_q` child.
        merged(&app, &leg_id, json!({ "leg": true })).await;
        for grandchild in children(&app, &leg_id).await {
            assert_eq!(grandchild["meta_data"]["leg"], true, "{grandchild}");
        }
    }
    app.assert_invariants().await;
}
on_both_backends!(a_queued_split_parent_updates_its_queued_legs);

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

async fn metadata_refusals_have_blnks_codes_and_change_nothing(backend: Backend) {
    // Arrange: one of each entity, and a 1 KiB body limit.
    let mut settings = test_settings(backend).await;
    settings.body_bytes_max = 1024;
    let app = spawn_with(settings).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 500).await;
    let identity = app.create_identity("Linus").await;
    let ledger = text(&app.balance(&ids[0]).await["ledger_id"]);
    merged(&app, &ledger, json!({ "kept": true })).await;
    let txn = text(&app.all_transactions().await[0]["transaction_id"]);
    let before = everything(&app).await;
    let uuid = || uuid::Uuid::new_v4().to_string();

    // Unknown ids of a valid kind: 404, the reconstruction request included.
    for id in [
        format!("ldg_{}", uuid()),
        format!("bln_{}", uuid()),
        format!("idt_{}", uuid()),
        format!("txn_{}", uuid()),
        format!("bulk_{}", uuid()),
        "ldg_nope".to_owned(),
    ] {
        let reply = merge(&app, &id, json!({ "a": 1 })).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "META_ENTITY_NOT_FOUND", &id);
    }
    let reply = merge(
        &app,
        &format!("bln_{}", uuid()),
        json!({ RECONCILE: "SOURCE" }),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::NOT_FOUND,
        "META_ENTITY_NOT_FOUND",
        "reconstruct unknown",
    );

    // Ids that are not an entity's.
    let long = format!("txn_{}", "x".repeat(300));
    for id in [
        "acc_x",
        "hello",
        "txn_",
        "bln_",
        "mon_1",
        "TXN_1",
        "txn_a%20b",
        "_x",
        long.as_str(),
    ] {
        let reply = merge(&app, id, json!({ "a": 1 })).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "META_INVALID_ENTITY_ID",
            id,
        );
    }

    // Bodies: missing or null meta_data is a validation error; anything that is not an
    // object, or not JSON, is malformed.
    for id in [ledger.as_str(), &ids[0], &identity, &txn] {
        let path = format!("/{id}/metadata");
        for body in ["{}", r#"{"meta_data": null}"#, "", r#"{"other": {"a": 1}}"#] {
            let reply = app.post_raw(&path, body).await;
            assert_error(
                &reply,
                StatusCode::BAD_REQUEST,
                "GEN_VALIDATION_ERROR",
                &format!("{id} {body:?}"),
            );
        }
        for body in [
            r#"{"meta_data": [1, 2]}"#,
            r#"{"meta_data": "text"}"#,
            r#"{"meta_data": 5}"#,
            r#"{"meta_data": true}"#,
            r#"{"meta_data": {"a": 1}"#,
            "{",
            "[]",
            "null",
            "not json",
            r#"{"meta_data": {"a": "\u0000"}}"#,
        ] {
            let reply = app.post_raw(&path, body).await;
            assert_error(
                &reply,
                StatusCode::BAD_REQUEST,
                "GEN_MALFORMED_REQUEST",
                &format!("{id} {body:?}"),
            );
        }
        let big = json!({ "meta_data": { "blob": "x".repeat(2_000) } });
        let reply = app.post(&path, big).await;
        assert_error(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "GEN_PAYLOAD_TOO_LARGE",
            &format!("{id} oversized"),
        );
    }
    // A reconstruction request with a bad body reconstructs nothing either.
    let reply = app
        .post_raw(
            &format!("/{}/metadata", ids[0]),
            r#"{"meta_data": ["BLNK_RUN_RECONCILIATION"]}"#,
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "GEN_MALFORMED_REQUEST",
        "reconstruct array",
    );

    // Nothing changed.
    assert_eq!(everything(&app).await, before);
    app.assert_invariants().await;
}
on_both_backends!(metadata_refusals_have_blnks_codes_and_change_nothing);

// ---------------------------------------------------------------------------------------
// Immutability in the database
// ---------------------------------------------------------------------------------------

async fn transaction_rows_refuse_every_change_but_meta_data_in_the_database(backend: Backend) {
    // Arrange: two applied transfers, and a connection of the test's own.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 1_000).await;
    let reply = app
        .post("/transactions", app.transfer(&ids[0], &ids[1], 100, true))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = text(&reply.json["transaction_id"]);
    let before = transactions_by_id(&app).await;
    let db = app.direct_db().await;
    let other = &ids[1];

    // Act + assert: every change of another column is refused, alone or with meta_data.
    let changes = [
        "precise_amount = '1'".to_owned(),
        "precise_amount = precise_amount".to_owned() + ", status = 'VOID'",
        "status = 'VOID'".to_owned(),
        "currency = 'EUR'".to_owned(),
        format!("source = '{other}'"),
        "destination = source".to_owned(),
        "reference = 'rewritten'".to_owned(),
        "description = 'rewritten'".to_owned(),
        "parent_transaction = 'txn_other'".to_owned(),
        "effective_date = NULL".to_owned(),
        "created_at = '2001-01-01T00:00:00+00:00'".to_owned(),
        "hash = 'x'".to_owned(),
        "allow_overdraft = NOT allow_overdraft".to_owned(),
        "transaction_id = 'txn_renamed'".to_owned(),
        "meta_data = NULL, precise_amount = '999'".to_owned(),
    ];
    for change in &changes {
        let result = execute(
            &db,
            &format!("UPDATE transactions SET {change} WHERE transaction_id = '{id}'"),
        )
        .await;
        let error = result.expect_err(&format!("UPDATE … SET {change} is refused"));
        assert!(
            error.to_string().contains("Only meta_data can be updated"),
            "{change}: {error}"
        );
    }
    let every_row = execute(&db, "UPDATE transactions SET description = 'all'").await;
    assert!(every_row.is_err(), "an UPDATE of every row is refused");
    for delete in [
        format!("DELETE FROM transactions WHERE transaction_id = '{id}'"),
        "DELETE FROM transactions".to_owned(),
    ] {
        let error = execute(&db, &delete).await.expect_err("DELETE is refused");
        assert!(error.to_string().contains("cannot be deleted"), "{error}");
    }
    assert_eq!(transactions_by_id(&app).await, before, "nothing changed");

    // Only meta_data: allowed.
    let changed = execute(
        &db,
        &format!(
            "UPDATE transactions SET meta_data = '{{\"audited\": true}}' \
             WHERE transaction_id = '{id}'"
        ),
    )
    .await
    .expect("an UPDATE of meta_data alone is allowed");
    assert_eq!(changed, 1);
    let after = transactions_by_id(&app).await;
    assert_eq!(after[&id]["meta_data"], json!({ "audited": true }));
    for (key, row) in &after {
        assert_eq!(without_meta(row), without_meta(&before[key]));
        if key != &id {
            assert_eq!(row, &before[key]);
        }
    }
    // The server's own merge still works on it (it changes meta_data only).
    merged(&app, &id, json!({ "second": 2 })).await;
    assert_eq!(
        get_ok(&app, &format!("/transactions/{id}")).await["meta_data"],
        json!({ "audited": true, "second": 2 })
    );
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(transaction_rows_refuse_every_change_but_meta_data_in_the_database);

// ---------------------------------------------------------------------------------------
// Balance reconstruction
// ---------------------------------------------------------------------------------------

/// Asks for a reconstruction (with `extra` keys); returns the answered `meta_data`.
async fn reconstruct(app: &TestApp, balance_id: &str, extra: Value) -> Value {
    let mut meta = extra;
    meta[RECONCILE] = json!("SOURCE");
    merged(app, balance_id, meta).await
}

/// The report's fields, every one a string.
fn report(meta: &Value) -> std::collections::BTreeMap<String, String> {
    let report = meta[RESULT].as_object().unwrap_or_else(|| panic!("{meta}"));
    let keys: Vec<&str> = report.keys().map(String::as_str).collect();
    let mut expected = vec![
        "executed_at",
        "previous_debit",
        "previous_credit",
        "previous_balance",
        "recalculated_debit",
        "recalculated_credit",
        "recalculated_balance",
        "difference",
    ];
    expected.sort_unstable();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{meta}");
    report.iter().map(|(k, v)| (k.clone(), text(v))).collect()
}

fn assert_report(meta: &Value, previous: [i64; 3], recalculated: [i64; 3]) {
    let r = report(meta);
    let [p_credit, p_debit, p_balance] = previous;
    let [r_credit, r_debit, r_balance] = recalculated;
    assert_eq!(r["previous_credit"], p_credit.to_string(), "{meta}");
    assert_eq!(r["previous_debit"], p_debit.to_string(), "{meta}");
    assert_eq!(r["previous_balance"], p_balance.to_string(), "{meta}");
    assert_eq!(r["recalculated_credit"], r_credit.to_string(), "{meta}");
    assert_eq!(r["recalculated_debit"], r_debit.to_string(), "{meta}");
    assert_eq!(r["recalculated_balance"], r_balance.to_string(), "{meta}");
    assert_eq!(
        r["difference"],
        (r_balance - p_balance).to_string(),
        "{meta}"
    );
    let executed = chrono::DateTime::parse_from_rfc3339(&r["executed_at"])
        .unwrap_or_else(|_| panic!("executed_at is a time: {meta}"));
    let age = chrono::Utc::now() - executed.with_timezone(&chrono::Utc);
    assert!(age.num_seconds().abs() < 60, "executed just now: {meta}");
    assert!(
        meta.get(RECONCILE).is_none(),
        "the request key is removed: {meta}"
    );
}

fn field(balance: &Value, name: &str) -> i64 {
    balance[name]
        .as_i64()
        .unwrap_or_else(|| panic!("{name}: {balance}"))
}

async fn reconstructing_a_correct_balance_reports_no_difference(backend: Backend) {
    // Arrange: credits, debits, a REJECTED queued row and an open hold on `a`.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let sent = app
        .post("/transactions", app.transfer(a, b, 300, true))
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
    let refused = app.transfer(a, b, 5_000, false);
    app.post("/transactions", refused.clone()).await;
    let outcome = app.queued_outcome(&text(&refused["reference"])).await;
    assert_eq!(outcome["status"], "REJECTED");
    let mut hold = app.transfer(a, b, 50, true);
    hold["inflight"] = json!(true);
    let held = app.post("/transactions", hold).await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.text);
    merged(&app, a, json!({ "owner": "ops" })).await;
    let before = app.balance(a).await;

    // Act
    let meta = reconstruct(&app, a, json!({ "note": "audit" })).await;

    // Assert: nothing to correct; the other keys merge as usual.
    assert_report(&meta, [1_000, 300, 700], [1_000, 300, 700]);
    assert_eq!(report(&meta)["difference"], "0");
    assert_eq!(meta["owner"], "ops");
    assert_eq!(meta["note"], "audit");
    let after = app.balance(a).await;
    assert_eq!(after["meta_data"], meta);
    assert_eq!(
        without_meta(&after),
        without_meta(&before),
        "amounts and version kept"
    );
    assert_eq!(field(&after, "inflight_debit_balance"), 50);
    // Again, on the other side of the transfers and on @World's balance.
    let meta_b = reconstruct(&app, b, json!({})).await;
    assert_report(&meta_b, [300, 0, 300], [300, 0, 300]);
    let world = app
        .get("/balances/indicator/@World/currency/USD")
        .await
        .json;
    let world_id = text(&world["balance_id"]);
    let meta_world = reconstruct(&app, &world_id, json!({})).await;
    assert_report(&meta_world, [0, 1_000, -1_000], [0, 1_000, -1_000]);
    // A second reconstruction replaces the report.
    let again = reconstruct(&app, a, json!({})).await;
    assert_report(&again, [1_000, 300, 700], [1_000, 300, 700]);
    assert_ne!(report(&again)["executed_at"], "", "{again}");
    assert_eq!(again["note"], "audit");
    app.assert_invariants().await;
}
on_both_backends!(reconstructing_a_correct_balance_reports_no_difference);

async fn reconstruction_restores_tampered_balances_and_the_server_then_uses_them(backend: Backend) {
    // Arrange: `rich` and `poor` hold 1000 each (their actors live), `sink` receives.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 4).await;
    let (rich, poor, sink, skewed) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    for id in [rich, poor, skewed] {
        app.fund(id, "USD", 1_000).await;
    }
    let db = app.direct_db().await;
    // Tampered behind the server's back: `rich` up to 5000, `poor` down to 0, and only the
    // `balance` column of `skewed`.
    execute(
        &db,
        &format!("UPDATE balances SET credit_balance = '5000', balance = '5000' WHERE balance_id = '{rich}'"),
    )
    .await
    .unwrap();
    execute(
        &db,
        &format!(
            "UPDATE balances SET credit_balance = '0', balance = '0' WHERE balance_id = '{poor}'"
        ),
    )
    .await
    .unwrap();
    execute(
        &db,
        &format!("UPDATE balances SET balance = '42' WHERE balance_id = '{skewed}'"),
    )
    .await
    .unwrap();
    assert_eq!(app.amount(rich).await, 5_000);
    assert_eq!(app.amount(poor).await, 0);
    assert_eq!(app.amount(skewed).await, 42);
    // The tampering is real: the database refuses what `poor` truly could pay.
    let refused = app
        .post("/transactions", app.transfer(poor, sink, 600, true))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "TXN_INSUFFICIENT_FUNDS",
        "poor, tampered",
    );
    let version_rich = field(&app.balance(rich).await, "version");

    // Act
    let meta_rich = reconstruct(&app, rich, json!({})).await;
    let meta_poor = reconstruct(&app, poor, json!({})).await;
    let meta_skewed = reconstruct(&app, skewed, json!({})).await;

    // Assert: the reports (previous = what the row held) and the restored rows.
    assert_report(&meta_rich, [5_000, 0, 5_000], [1_000, 0, 1_000]);
    assert_eq!(report(&meta_rich)["difference"], "-4000");
    assert_report(&meta_poor, [0, 0, 0], [1_000, 0, 1_000]);
    assert_eq!(report(&meta_poor)["difference"], "1000");
    assert_report(&meta_skewed, [1_000, 0, 42], [1_000, 0, 1_000]);
    assert_eq!(report(&meta_skewed)["difference"], "958");
    for id in [rich, poor, skewed] {
        let balance = app.balance(id).await;
        assert_eq!(field(&balance, "credit_balance"), 1_000, "{balance}");
        assert_eq!(field(&balance, "debit_balance"), 0, "{balance}");
        assert_eq!(field(&balance, "balance"), 1_000, "{balance}");
    }
    assert_eq!(
        field(&app.balance(rich).await, "version"),
        version_rich + 1,
        "the version moves with the amounts"
    );
    app.assert_invariants().await;

    // The server decides by the restored amounts: `rich` cannot pay 3000 any more, `poor`
    // can pay 600, on both paths.
    let too_much = app
        .post("/transactions", app.transfer(rich, sink, 3_000, true))
        .await;
    assert_error(
        &too_much,
        StatusCode::BAD_REQUEST,
        "TXN_INSUFFICIENT_FUNDS",
        "rich, restored",
    );
    let queued = app.transfer(rich, sink, 3_000, false);
    app.post("/transactions", queued.clone()).await;
    let outcome = app.queued_outcome(&text(&queued["reference"])).await;
    assert_eq!(outcome["status"], "REJECTED", "{outcome}");
    let paid = app
        .post("/transactions", app.transfer(poor, sink, 600, true))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let queued = app.transfer(poor, sink, 400, false);
    app.post("/transactions", queued.clone()).await;
    let outcome = app.queued_outcome(&text(&queued["reference"])).await;
    assert_eq!(outcome["status"], "APPLIED", "{outcome}");
    let paid = app
        .post("/transactions", app.transfer(rich, sink, 1_000, true))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    assert_eq!(app.amount(rich).await, 0);
    assert_eq!(app.amount(poor).await, 0);
    assert_eq!(app.amount(sink).await, 2_000);
    // Reconstructing again finds nothing to correct.
    for id in [rich, poor, sink, skewed] {
        let meta = reconstruct(&app, id, json!({})).await;
        assert_eq!(report(&meta)["difference"], "0", "{id}: {meta}");
    }
    db.close().await.ok();
    app.assert_invariants().await;
}
on_both_backends!(reconstruction_restores_tampered_balances_and_the_server_then_uses_them);

async fn reconstruction_while_transfers_are_in_flight_keeps_the_invariants(backend: Backend) {
    // Arrange: `a` funded; transfers from it on both paths, run together with
    // reconstructions of `a` and `b`.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    app.fund(a, "USD", 100_000).await;
    let mut queued_references = Vec::new();
    let mut bodies = Vec::new();
    for index in 0..60 {
        let skip_queue = index % 2 == 0;
        let destination = if index % 3 == 0 { c } else { b };
        let body = app.transfer(a, destination, 10 + index, skip_queue);
        if !skip_queue {
            queued_references.push(text(&body["reference"]));
        }
        bodies.push(body);
    }
    let transfers = join_all(bodies.into_iter().map(|body| {
        let app = &app;
        async move { app.post("/transactions", body).await }
    }));
    let reconstructions = join_all((0..12).map(|index| {
        let app = &app;
        let id = if index % 2 == 0 { a } else { b };
        async move { merge(app, id, json!({ RECONCILE: "SOURCE", "round": index })).await }
    }));

    // Act
    let (sent, rebuilt) = futures_util::join!(transfers, reconstructions);

    // Assert: every request answered well; afterwards the invariants hold and there is
    // nothing left to correct.
    for reply in sent {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    for reply in rebuilt {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        report(&reply.json["meta_data"]);
    }
    for reference in &queued_references {
        let outcome = app.queued_outcome(reference).await;
        assert_eq!(outcome["status"], "APPLIED", "{outcome}");
    }
    let expected: i64 = (0..60).map(|i| 10 + i).sum();
    wait_for(
        Duration::from_secs(30),
        "every transfer to be applied",
        || async { (app.amount(a).await == 100_000 - expected).then_some(()) },
    )
    .await;
    app.assert_invariants().await;
    for id in [a, b, c] {
        let meta = reconstruct(&app, id, json!({})).await;
        assert_eq!(report(&meta)["difference"], "0", "{id}: {meta}");
    }
    // The actors still decide right: `a` can pay exactly what is left, not a unit more.
    let left = app.amount(a).await;
    let over = app
        .post("/transactions", app.transfer(a, b, left + 1, true))
        .await;
    assert_error(
        &over,
        StatusCode::BAD_REQUEST,
        "TXN_INSUFFICIENT_FUNDS",
        "one over",
    );
    let all = app
        .post("/transactions", app.transfer(a, b, left, true))
        .await;
    assert_eq!(all.status, StatusCode::CREATED, "{}", all.text);
    assert_eq!(app.amount(a).await, 0);
    app.assert_invariants().await;
}
on_both_backends!(reconstruction_while_transfers_are_in_flight_keeps_the_invariants);
