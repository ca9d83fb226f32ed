//! Transactions on both paths: `skip_queue` (applied in the request) and the default queued
//! path (a QUEUED row, then the worker's `<ref>_q` child, APPLIED or REJECTED).

use crate::helpers::{assert_error, spawn_app, wait_for, Backend, Reply, TestApp};
use crate::on_both_backends;
use coffer_actors::domain::{Amount, Precision, TransactionRecord};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const BIG: &str = "1234567890123456789012345678901234567890";
const BIG_TWICE: &str = "2469135780246913578024691357802469135780";

/// [`assert_error`], and the message says `words`.
fn assert_error_saying(reply: &Reply, status: StatusCode, code: &str, words: &str) {
    assert_error(reply, status, code);
    let message = reply.json["error"].as_str().unwrap();
    assert!(message.contains(words), "{words:?} not in {}", reply.text);
}

fn new_reference() -> String {
    format!("ref-{}", uuid::Uuid::new_v4())
}

/// A USD transfer body.
fn transfer(source: &str, destination: &str, amount: i64, skip_queue: bool) -> Value {
    json!({
        "precise_amount": amount, "currency": "USD", "reference": new_reference(),
        "description": "transfer", "source": source, "destination": destination,
        "skip_queue": skip_queue,
    })
}

fn reference_of(body: &Value) -> String {
    body["reference"].as_str().unwrap().to_owned()
}

/// `(balance, credit_balance, debit_balance)`.
async fn money(app: &TestApp, balance_id: &str) -> (i64, i64, i64) {
    let balance = app.balance(balance_id).await;
    let field = |name: &str| {
        balance[name]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} is a small integer: {balance}"))
    };
    (
        field("balance"),
        field("credit_balance"),
        field("debit_balance"),
    )
}

async fn world(app: &TestApp, currency: &str) -> Value {
    let reply = app
        .get(&format!("/balances/indicator/@World/currency/{currency}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

async fn world_id(app: &TestApp, currency: &str) -> String {
    world(app, currency).await["balance_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Posts a transaction and, on the queued path, waits for the worker's outcome. Returns the
/// 201 reply and the row that decided the money (the reply itself when skipping the queue).
async fn record(app: &TestApp, body: Value) -> (Reply, Value) {
    let reply = app.post("/transactions", body.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    if body["skip_queue"] == true {
        let row = reply.json.clone();
        return (reply, row);
    }
    let outcome = app.queued_outcome(&reference_of(&body)).await;
    (reply, outcome)
}

async fn transaction_count(app: &TestApp) -> usize {
    app.all_transactions().await.len()
}

fn is_hex_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

async fn a_skipped_queue_transfer_is_applied_in_the_request(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let world = world_id(&app, "USD").await;
    assert_eq!(money(&app, &world).await, (-1_000, 0, 1_000));
    assert_eq!(money(&app, a).await, (1_000, 1_000, 0));
    let body = transfer(a, b, 250, true);

    // Act
    let created = app.post("/transactions", body.clone()).await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let row = &created.json;
    let id = row["transaction_id"].as_str().unwrap();
    assert!(id.starts_with("txn_"), "{id}");
    assert_eq!(row["status"], "APPLIED");
    assert_eq!(row["precise_amount"], json!(250));
    assert_eq!(row["amount"], json!(250));
    assert_eq!(row["precision"], json!(1));
    assert_eq!(row["source"], a.as_str());
    assert_eq!(row["destination"], b.as_str());
    assert_eq!(row["reference"], body["reference"]);
    assert_eq!(row["currency"], "USD");
    assert_eq!(row["description"], "transfer");
    assert_eq!(row["parent_transaction"], "");
    assert_eq!(row["skip_queue"], true);
    assert_eq!(row["allow_overdraft"], false);
    assert!(is_hex_sha256(row["hash"].as_str().unwrap()), "{}", row);
    assert_eq!(money(&app, a).await, (750, 1_000, 250));
    assert_eq!(money(&app, b).await, (250, 250, 0));
    assert_eq!(money(&app, &world).await, (-1_000, 0, 1_000));
    // What the 201 said is what is stored.
    let fetched = app.get(&format!("/transactions/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
    assert_eq!(fetched.json, created.json);
    app.assert_invariants().await;
}
on_both_backends!(a_skipped_queue_transfer_is_applied_in_the_request);

async fn text_with_array_syntax_is_stored_exactly(backend: Backend) {
    // Arrange: the group commit sends text columns to PostgreSQL inside array literals, so
    // quotes, backslashes, commas, braces, the word NULL and non-ASCII must all survive.
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("odd text").await;
    let (a, b) = (
        app.create_balance(&ledger, "USD").await,
        app.create_balance(&ledger, "USD").await,
    );
    app.fund(&a, "USD", 100).await;
    let odd = r#"a "quoted", {braced} \back\slash NULL ünï 💸"#;
    let reference = format!("{odd} {}", uuid::Uuid::new_v4());
    let meta_data = json!({"note": odd, "nested": {"list": [odd, "NULL", "}{"]}});
    for skip_queue in [true, false] {
        let reference = format!("{reference}-{skip_queue}");
        let body = json!({
            "precise_amount": 7, "currency": "USD", "reference": reference,
            "description": odd, "source": a, "destination": b,
            "skip_queue": skip_queue, "meta_data": meta_data,
        });

        // Act
        let created = app.post("/transactions", body).await;

        // Assert
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = created.json["transaction_id"].as_str().unwrap();
        let fetched = app.get(&format!("/transactions/{id}")).await;
        assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
        assert_eq!(fetched.json["reference"], reference.as_str());
        assert_eq!(fetched.json["description"], odd);
        assert_eq!(fetched.json["meta_data"]["note"], odd);
        assert_eq!(fetched.json["meta_data"]["nested"], meta_data["nested"]);
        let by_reference = app
            .get(&format!(
                "/transactions/reference/{}",
                path_escape(&reference)
            ))
            .await;
        assert_eq!(by_reference.status, StatusCode::OK, "{}", by_reference.text);
        assert_eq!(by_reference.json["transaction_id"], id);
        if !skip_queue {
            let applied = app.queued_outcome(&path_escape(&reference)).await;
            assert_eq!(applied["status"], "APPLIED", "{applied}");
        }
    }
    app.assert_invariants().await;
}
on_both_backends!(text_with_array_syntax_is_stored_exactly);

/// Percent-encodes everything but ASCII letters and digits (a path segment).
fn path_escape(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

async fn a_queued_transfer_is_stored_queued_then_applied_by_a_worker(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let body = transfer(a, b, 400, false);
    let reference = reference_of(&body);

    // Act
    let queued = app.post("/transactions", body).await;
    let child = app.queued_outcome(&reference).await;

    // Assert
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    let queued_id = queued.json["transaction_id"].as_str().unwrap().to_owned();
    assert!(queued_id.starts_with("txn_"));
    assert_eq!(queued.json["status"], "QUEUED");
    assert_eq!(queued.json["skip_queue"], false);
    assert_eq!(
        queued.json["meta_data"]["QUEUED_PARENT_TRANSACTION"],
        queued_id.as_str()
    );
    assert_eq!(queued.json["precise_amount"], json!(400));
    assert!(is_hex_sha256(queued.json["hash"].as_str().unwrap()));

    assert_eq!(child["status"], "APPLIED", "{child}");
    assert_eq!(child["parent_transaction"], queued_id.as_str());
    assert_eq!(child["reference"], format!("{reference}_q"));
    assert_ne!(child["transaction_id"], queued_id.as_str());
    assert_eq!(child["precise_amount"], json!(400));
    assert_eq!(child["source"], a.as_str());
    assert_eq!(child["destination"], b.as_str());
    assert!(is_hex_sha256(child["hash"].as_str().unwrap()));
    assert_ne!(child["hash"], queued.json["hash"]);
    assert_eq!(money(&app, a).await, (600, 1_000, 400));
    assert_eq!(money(&app, b).await, (400, 400, 0));

    // The QUEUED row was durable when the 201 came, and is never changed.
    let stored = app.get(&format!("/transactions/{queued_id}")).await;
    assert_eq!(stored.json, queued.json);
    let by_reference = app
        .get(&format!("/transactions/reference/{reference}"))
        .await;
    assert_eq!(by_reference.json["status"], "QUEUED");
    // SDK users find the outcome by parent_transaction.
    let children = app
        .post(
            "/transactions/filter",
            json!({ "filters": [{ "field": "parent_transaction", "operator": "eq", "value": queued_id }] }),
        )
        .await;
    assert_eq!(children.status, StatusCode::OK, "{}", children.text);
    assert_eq!(children.json, json!([child]));
    app.assert_invariants().await;
    // The worker runs in this process: it took the row the commit had just stored from the
    // handoff instead of reading it back.
    let metrics = app.get("/metrics").await.text;
    for line in [
        "coffer_queue_rows_loaded_total{from=\"handoff\"} 1\n",
        "coffer_queue_rows_loaded_total{from=\"database\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}
on_both_backends!(a_queued_transfer_is_stored_queued_then_applied_by_a_worker);

async fn world_balances_are_created_per_currency_in_the_general_ledger(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Multi-currency").await;
    let usd = app.create_balance(&ledger, "USD").await;
    let eur = app.create_balance(&ledger, "EUR").await;

    // Act
    app.fund(&usd, "USD", 700).await;
    app.fund(&eur, "EUR", 300).await;
    app.fund(&usd, "USD", 5).await;

    // Assert
    let world_usd = world(&app, "USD").await;
    let world_eur = world(&app, "EUR").await;
    assert_ne!(world_usd["balance_id"], world_eur["balance_id"]);
    for (world, currency) in [(&world_usd, "USD"), (&world_eur, "EUR")] {
        assert_eq!(world["ledger_id"], "general_ledger_id");
        assert_eq!(world["indicator"], "@World");
        assert_eq!(world["currency"], currency);
    }
    assert_eq!(world_usd["balance"], json!(-705));
    assert_eq!(world_usd["debit_balance"], json!(705));
    assert_eq!(world_eur["balance"], json!(-300));
    assert_eq!(money(&app, &usd).await, (705, 705, 0));
    assert_eq!(money(&app, &eur).await, (300, 300, 0));
    let worlds = app
        .get("/balances?indicator_eq=@World&ledger_id_eq=general_ledger_id")
        .await;
    assert_eq!(worlds.json.as_array().unwrap().len(), 2, "{}", worlds.text);
    app.assert_invariants().await;
}
on_both_backends!(world_balances_are_created_per_currency_in_the_general_ledger);

async fn insufficient_funds_are_refused_when_skipping_the_queue_and_rejected_when_queued(
    backend: Backend,
) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let rows_before = transaction_count(&app).await;
    let too_much_now = transfer(a, b, 101, true);
    let too_much_later = transfer(a, b, 101, false);

    // Act
    let refused = app.post("/transactions", too_much_now.clone()).await;
    let after_refusal = (money(&app, a).await, money(&app, b).await);
    let rows_after_refusal = transaction_count(&app).await;
    let (queued, rejected) = record(&app, too_much_later).await;
    let after_rejection = (money(&app, a).await, money(&app, b).await);
    let (_, all_of_it) = record(&app, transfer(a, b, 100, true)).await;

    // Assert
    assert_error_saying(
        &refused,
        StatusCode::BAD_REQUEST,
        "TXN_INSUFFICIENT_FUNDS",
        "insufficient funds",
    );
    assert_eq!(after_refusal, ((100, 100, 0), (0, 0, 0)));
    assert_eq!(rows_after_refusal, rows_before);
    let missing = app
        .get(&format!(
            "/transactions/reference/{}",
            reference_of(&too_much_now)
        ))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");

    assert_eq!(queued.json["status"], "QUEUED");
    assert_eq!(rejected["status"], "REJECTED", "{rejected}");
    assert_eq!(
        rejected["parent_transaction"],
        queued.json["transaction_id"]
    );
    let reason = rejected["meta_data"]["blnk_rejection_reason"]
        .as_str()
        .expect("a rejection reason");
    assert!(reason.contains("insufficient funds"), "{reason}");
    assert_eq!(after_rejection, ((100, 100, 0), (0, 0, 0)));

    assert_eq!(all_of_it["status"], "APPLIED");
    assert_eq!(money(&app, a).await, (0, 100, 100));
    assert_eq!(money(&app, b).await, (100, 100, 0));
    app.assert_invariants().await;
}
on_both_backends!(insufficient_funds_are_refused_when_skipping_the_queue_and_rejected_when_queued);

async fn allow_overdraft_without_a_limit_is_unlimited(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);

    // Act
    let mut now = transfer(a, b, 1_000_000_000, true);
    now["allow_overdraft"] = json!(true);
    let (applied_now, _) = record(&app, now).await;
    let after_now = money(&app, a).await;
    let mut later = transfer(a, b, 2_000_000_000, false);
    later["allow_overdraft"] = json!(true);
    let (_, applied_later) = record(&app, later).await;

    // Assert
    assert_eq!(applied_now.json["status"], "APPLIED");
    assert_eq!(applied_now.json["allow_overdraft"], true);
    assert_eq!(after_now, (-1_000_000_000, 0, 1_000_000_000));
    assert_eq!(applied_later["status"], "APPLIED", "{applied_later}");
    assert_eq!(money(&app, a).await, (-3_000_000_000, 0, 3_000_000_000));
    assert_eq!(money(&app, b).await, (3_000_000_000, 3_000_000_000, 0));
    app.assert_invariants().await;
}
on_both_backends!(allow_overdraft_without_a_limit_is_unlimited);

async fn overdraft_limit_caps_how_far_below_zero_a_balance_may_go(backend: Backend) {
    // Arrange: precision 100, limit 5 major units = 500 minor units below zero.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let limited = |amount: i64, allow_overdraft: bool, limit: i64, skip_queue: bool| {
        let mut body = transfer(a, b, amount, skip_queue);
        body["precision"] = json!(100);
        body["overdraft_limit"] = json!(limit);
        body["allow_overdraft"] = json!(allow_overdraft);
        body
    };

    // Act + Assert: down to exactly −500 without allow_overdraft.
    let (to_the_floor, _) = record(&app, limited(600, false, 5, true)).await;
    assert_eq!(to_the_floor.json["overdraft_limit"], json!(5));
    assert_eq!(money(&app, a).await, (-500, 100, 600));

    // One more minor unit is refused, with or without allow_overdraft.
    for allow_overdraft in [false, true] {
        let refused = app
            .post("/transactions", limited(1, allow_overdraft, 5, true))
            .await;
        assert_error_saying(
            &refused,
            StatusCode::BAD_REQUEST,
            "TXN_INSUFFICIENT_FUNDS",
            "overdraft limit",
        );
    }
    let (_, rejected) = record(&app, limited(1, true, 5, false)).await;
    assert_eq!(rejected["status"], "REJECTED", "{rejected}");
    assert!(rejected["meta_data"]["blnk_rejection_reason"]
        .as_str()
        .unwrap()
        .contains("overdraft limit"));
    assert_eq!(money(&app, a).await, (-500, 100, 600));

    // A larger limit lets it go further, on both paths.
    let (_, applied) = record(&app, limited(1, true, 10, false)).await;
    assert_eq!(applied["status"], "APPLIED", "{applied}");
    let (applied, _) = record(&app, limited(499, false, 10, true)).await;
    assert_eq!(applied.json["status"], "APPLIED");
    assert_eq!(money(&app, a).await, (-1_000, 100, 1_100));
    let refused = app.post("/transactions", limited(1, false, 10, true)).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "TXN_INSUFFICIENT_FUNDS");
    assert_eq!(money(&app, a).await, (-1_000, 100, 1_100));
    assert_eq!(money(&app, b).await, (1_100, 1_100, 0));
    app.assert_invariants().await;
}
on_both_backends!(overdraft_limit_caps_how_far_below_zero_a_balance_may_go);

async fn major_amounts_are_scaled_by_precision_and_rounded_half_away_from_zero(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 1).await;
    let a = &ids[0];
    let major = |amount: f64, precision: i64, skip_queue: bool| {
        json!({
            "amount": amount, "precision": precision, "currency": "USD",
            "reference": new_reference(), "description": "major units",
            "source": "@World", "destination": a, "allow_overdraft": true,
            "skip_queue": skip_queue,
        })
    };

    // Act
    let (cents, _) = record(&app, major(12.345, 100, true)).await;
    let (half_cent, _) = record(&app, major(0.005, 100, true)).await;
    let (_, queued_child) = record(&app, major(2.5, 1, false)).await;
    let (whole, _) = record(&app, major(7.0, 1000, true)).await;

    // Assert
    assert_eq!(cents.json["precise_amount"], json!(1235));
    assert_eq!(cents.json["precision"], json!(100));
    assert!(cents.text.contains("\"amount\":12.35,"), "{}", cents.text);
    assert_eq!(cents.json["amount_string"], "12.35");
    assert_eq!(half_cent.json["precise_amount"], json!(1));
    assert!(
        half_cent.text.contains("\"amount\":0.01,"),
        "{}",
        half_cent.text
    );
    assert_eq!(queued_child["precise_amount"], json!(3));
    assert_eq!(queued_child["amount"], json!(3));
    assert_eq!(whole.json["precise_amount"], json!(7000));
    assert!(whole.text.contains("\"amount\":7,"), "{}", whole.text);
    assert_eq!(money(&app, a).await, (1235 + 1 + 3 + 7000, 8239, 0));
    app.assert_invariants().await;
}
on_both_backends!(major_amounts_are_scaled_by_precision_and_rounded_half_away_from_zero);

async fn a_balance_with_a_precision_refuses_other_precisions_on_both_paths(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Cents").await;
    let created = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "precision": 100 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let cents = created.json["balance_id"].as_str().unwrap().to_owned();
    let plain = app.create_balance(&ledger, "USD").await;
    let with_precision = |source: &str, destination: &str, precision: i64, skip_queue: bool| {
        json!({
            "amount": 10, "precision": precision, "currency": "USD",
            "reference": new_reference(), "description": "precision",
            "source": source, "destination": destination, "allow_overdraft": true,
            "skip_queue": skip_queue,
        })
    };
    let (funded, _) = record(&app, with_precision("@World", &cents, 100, true)).await;
    assert_eq!(funded.json["precise_amount"], json!(1000));
    let rows_before = transaction_count(&app).await;

    // Act
    let mut refusals = Vec::new();
    // First use of a balance with a precision (its actor starts from its row) and later uses
    // (the registry holds the precision of live balances): both refuse.
    let cold = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "precision": 100 }),
        )
        .await;
    let cold = cold.json["balance_id"].as_str().unwrap().to_owned();
    let body = with_precision("@World", &cold, 1000, true);
    refusals.push((
        app.post("/transactions", body.clone()).await,
        reference_of(&body),
    ));
    for skip_queue in [true, false] {
        for (source, destination) in [("@World", cents.as_str()), (cents.as_str(), plain.as_str())]
        {
            let body = with_precision(source, destination, 1000, skip_queue);
            let reply = app.post("/transactions", body.clone()).await;
            refusals.push((reply, reference_of(&body)));
        }
    }
    let (_, accepted) = record(&app, with_precision(&cents, &plain, 100, false)).await;

    // Assert
    for (reply, reference) in &refusals {
        assert_error_saying(
            reply,
            StatusCode::BAD_REQUEST,
            "TXN_VALIDATION_ERROR",
            "precision",
        );
        let stored = app
            .get(&format!("/transactions/reference/{reference}"))
            .await;
        assert_eq!(stored.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(accepted["status"], "APPLIED", "{accepted}");
    assert_eq!(transaction_count(&app).await, rows_before + 2);
    assert_eq!(money(&app, &cents).await, (0, 1000, 1000));
    assert_eq!(money(&app, &plain).await, (1000, 1000, 0));
    app.assert_invariants().await;
}
on_both_backends!(a_balance_with_a_precision_refuses_other_precisions_on_both_paths);

/// A queued request creates its new `@indicator` balances in the commit that stores it. An
/// indicator this server has not used yet but the database holds (made through
/// `POST /balances` here, or by another server) is found in that commit: the request is
/// written against that balance (its hash covering it), and that balance's precision holds.
async fn a_queued_transfer_uses_the_indicator_balance_the_database_already_has(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let created = app
        .post(
            "/balances",
            json!({ "ledger_id": "general_ledger_id", "indicator": "@Fees", "currency": "USD",
                    "precision": 100 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let fees = created.json["balance_id"].as_str().unwrap().to_owned();
    let fee = |precision: i64| {
        json!({
            "amount": 10, "precision": precision, "currency": "USD",
            "reference": new_reference(), "description": "fee",
            "source": "@Payer", "destination": "@Fees", "allow_overdraft": true,
        })
    };
    let (wrong, right) = (fee(1000), fee(100));

    // Act
    let refused = app.post("/transactions", wrong.clone()).await;
    let (accepted, outcome) = record(&app, right.clone()).await;

    // Assert
    assert_error_saying(
        &refused,
        StatusCode::BAD_REQUEST,
        "TXN_VALIDATION_ERROR",
        "precision",
    );
    let not_stored = app
        .get(&format!("/transactions/reference/{}", reference_of(&wrong)))
        .await;
    assert_eq!(not_stored.status, StatusCode::NOT_FOUND);
    let payer = app.get("/balances/indicator/@Payer/currency/USD").await;
    assert_eq!(payer.status, StatusCode::OK, "{}", payer.text);
    let payer = payer.json["balance_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted.json["status"], "QUEUED");
    assert_eq!(accepted.json["source"], payer.as_str());
    assert_eq!(accepted.json["destination"], fees.as_str());
    let precision = Precision::parse(Some("100")).unwrap();
    let major = precision.to_major(Amount::parse_minor("1000").unwrap().as_bigint());
    let hash = TransactionRecord::content_hash(&major, &reference_of(&right), "USD", &payer, &fees);
    assert_eq!(accepted.json["hash"], hash.as_str());
    assert_eq!(outcome["status"], "APPLIED", "{outcome}");
    assert_eq!(outcome["destination"], fees.as_str());
    assert_eq!(money(&app, &fees).await, (1000, 1000, 0));
    assert_eq!(money(&app, &payer).await, (-1000, 0, 1000));
    app.assert_invariants().await;
}
on_both_backends!(a_queued_transfer_uses_the_indicator_balance_the_database_already_has);

/// New indicators that a queued request names more than once (two legs of a split, several
/// items of a bulk) are one balance each, created with the request.
async fn new_indicators_named_twice_in_one_queued_request_are_one_balance(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let split = json!({
        "precise_amount": 1_000, "currency": "USD", "reference": new_reference(),
        "description": "split", "source": "@Pool", "allow_overdraft": true,
        "destinations": [
            { "identifier": "@Leg", "distribution": "60%" },
            { "identifier": "@Leg", "distribution": "left" },
        ],
    });
    let item = || {
        json!({ "precise_amount": 5, "currency": "USD", "reference": new_reference(),
                "description": "bulk", "source": "@BulkSource",
                "destination": "@BulkDestination", "allow_overdraft": true })
    };

    // Act
    let split = app.post("/transactions", split).await;
    let bulk = app
        .post(
            "/transactions/bulk",
            json!({ "transactions": [item(), item(), item()] }),
        )
        .await;

    // Assert
    assert_eq!(split.status, StatusCode::CREATED, "{}", split.text);
    assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
    for (indicator, expected) in [
        ("@Pool", -1_000),
        ("@Leg", 1_000),
        ("@BulkSource", -15),
        ("@BulkDestination", 15),
    ] {
        let path = format!("/balances/indicator/{indicator}/currency/USD");
        wait_for(Duration::from_secs(30), indicator, || async {
            let reply = app.get(&path).await;
            (reply.status == StatusCode::OK && reply.json["balance"] == json!(expected))
                .then_some(())
        })
        .await;
    }
    assert_eq!(app.all_balances().await.len(), 4);
    app.assert_invariants().await;
}
on_both_backends!(new_indicators_named_twice_in_one_queued_request_are_one_balance);

async fn forty_digit_amounts_round_trip_exactly(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let a = app.balances("USD", 1).await.remove(0);
    let raw_body = |reference: &str, skip_queue: bool| {
        format!(
            r#"{{"precise_amount":{BIG},"currency":"USD","reference":"{reference}",
                "description":"big","source":"@World","destination":"{a}",
                "allow_overdraft":true,"skip_queue":{skip_queue}}}"#
        )
    };
    let (now_reference, later_reference) = (new_reference(), new_reference());

    // Act
    let now = app
        .post_raw("/transactions", &raw_body(&now_reference, true))
        .await;
    let later = app
        .post_raw("/transactions", &raw_body(&later_reference, false))
        .await;
    let child_path = format!("/transactions/reference/{later_reference}_q");
    let child = wait_for(Duration::from_secs(30), "the big child row", || async {
        let reply = app.get(&child_path).await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    let major = app
        .post(
            "/transactions",
            json!({ "amount": 12.5, "precision": 100, "currency": "USD",
                    "reference": new_reference(), "description": "small",
                    "source": "@World", "destination": a, "allow_overdraft": true,
                    "skip_queue": true }),
        )
        .await;
    let big_major = app
        .post_raw(
            "/transactions",
            &format!(
                r#"{{"amount":12345678901234567890123456789012345678.91,"precision":100,
                    "currency":"EUR","reference":"{}","description":"big major",
                    "source":"@World","destination":"@Vault","allow_overdraft":true,
                    "skip_queue":true}}"#,
                new_reference()
            ),
        )
        .await;
    let balance = app.get(&format!("/balances/{a}")).await;
    let world = app.get("/balances/indicator/@World/currency/USD").await;
    let fetched = app
        .get(&format!("/transactions/reference/{now_reference}"))
        .await;

    // Assert
    assert_eq!(now.status, StatusCode::CREATED, "{}", now.text);
    let exact = format!("\"precise_amount\":{BIG},");
    assert!(now.text.contains(&exact), "{}", now.text);
    assert!(
        now.text.contains(&format!("\"amount\":{BIG},")),
        "{}",
        now.text
    );
    assert!(fetched.text.contains(&exact), "{}", fetched.text);
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
    assert!(later.text.contains(&exact), "{}", later.text);
    assert!(
        child.text.contains("\"status\":\"APPLIED\""),
        "{}",
        child.text
    );
    assert!(child.text.contains(&exact), "{}", child.text);
    assert_eq!(major.status, StatusCode::CREATED, "{}", major.text);
    // 2 × BIG + 1250, exactly.
    let total = add_small(BIG_TWICE, 1250);
    assert_eq!(total, "2469135780246913578024691357802469137030");
    assert!(
        balance.text.contains(&format!("\"balance\":{total},")),
        "{}",
        balance.text
    );
    assert!(
        balance
            .text
            .contains(&format!("\"credit_balance\":{total},")),
        "{}",
        balance.text
    );
    assert!(
        balance.text.contains("\"debit_balance\":0,"),
        "{}",
        balance.text
    );
    assert!(
        world.text.contains(&format!("\"balance\":-{total},")),
        "{}",
        world.text
    );
    assert!(
        world.text.contains(&format!("\"debit_balance\":{total},")),
        "{}",
        world.text
    );
    assert_eq!(big_major.status, StatusCode::CREATED, "{}", big_major.text);
    assert!(
        big_major
            .text
            .contains("\"precise_amount\":1234567890123456789012345678901234567891,"),
        "{}",
        big_major.text
    );
    assert!(
        big_major
            .text
            .contains("\"amount\":12345678901234567890123456789012345678.91,"),
        "{}",
        big_major.text
    );
    let vault = app.get("/balances/indicator/@Vault/currency/EUR").await;
    assert!(
        vault
            .text
            .contains("\"balance\":1234567890123456789012345678901234567891,"),
        "{}",
        vault.text
    );
}
on_both_backends!(forty_digit_amounts_round_trip_exactly);

/// Adds a small number to a decimal string (enough for the big-number test).
fn add_small(digits: &str, small: u32) -> String {
    let mut out: Vec<u8> = digits.bytes().rev().map(|b| b - b'0').collect();
    let mut carry = small;
    for digit in out.iter_mut() {
        let sum = u32::from(*digit) + carry;
        *digit = (sum % 10) as u8;
        carry = sum / 10;
    }
    while carry > 0 {
        out.push((carry % 10) as u8);
        carry /= 10;
    }
    out.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

async fn a_reused_reference_is_409_on_both_paths_and_changes_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let applied = transfer(a, b, 10, true);
    let queued = transfer(a, b, 20, false);
    record(&app, applied.clone()).await;
    record(&app, queued.clone()).await;
    let balances_before = (money(&app, a).await, money(&app, b).await);
    let rows_before = transaction_count(&app).await;

    // Act: every combination of first path and second path.
    let mut replies = Vec::new();
    for original in [&applied, &queued] {
        for skip_queue in [true, false] {
            let mut again = transfer(b, a, 1, skip_queue);
            again["reference"] = original["reference"].clone();
            replies.push(app.post("/transactions", again).await);
        }
    }
    // The worker's derived reference is taken as well.
    let mut derived = transfer(b, a, 1, true);
    derived["reference"] = json!(format!("{}_q", reference_of(&queued)));
    replies.push(app.post("/transactions", derived).await);

    // Assert
    assert_eq!(balances_before, ((970, 1_000, 30), (30, 30, 0)));
    for reply in &replies {
        assert_error_saying(
            reply,
            StatusCode::CONFLICT,
            "TXN_DUPLICATE_REFERENCE",
            "has already been used",
        );
    }
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(
        (money(&app, a).await, money(&app, b).await),
        balances_before
    );
    app.assert_invariants().await;
}
on_both_backends!(a_reused_reference_is_409_on_both_paths_and_changes_nothing);

async fn retrying_a_transfer_that_emptied_its_source_is_409_not_insufficient_funds(
    backend: Backend,
) {
    // Arrange: the first attempt moved everything the source had.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let body = transfer(a, b, 100, true);
    let (first, _) = record(&app, body.clone()).await;
    let rows_before = transaction_count(&app).await;

    // Act: the client retries the same request (say, after a timeout).
    let retry = app.post("/transactions", body.clone()).await;
    let mut queued_retry = body;
    queued_retry["skip_queue"] = json!(false);
    let queued_retry = app.post("/transactions", queued_retry).await;

    // Assert
    assert_eq!(first.json["status"], "APPLIED");
    assert_error(&retry, StatusCode::CONFLICT, "TXN_DUPLICATE_REFERENCE");
    assert_error(
        &queued_retry,
        StatusCode::CONFLICT,
        "TXN_DUPLICATE_REFERENCE",
    );
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(money(&app, a).await, (0, 100, 100));
    assert_eq!(money(&app, b).await, (100, 100, 0));
    app.assert_invariants().await;
}
on_both_backends!(retrying_a_transfer_that_emptied_its_source_is_409_not_insufficient_funds);

async fn twenty_concurrent_requests_with_one_reference_move_money_once(backend: Backend) {
    for skip_queue in [true, false] {
        // Arrange
        let app = spawn_app(backend).await;
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        // Enough for all twenty: only the reference may refuse them.
        app.fund(a, "USD", 2_000).await;
        let body = transfer(a, b, 100, skip_queue);
        let reference = reference_of(&body);

        // Act
        let replies = futures_util::future::join_all(
            (0..20).map(|_| app.post("/transactions", body.clone())),
        )
        .await;

        // Assert
        let created: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .collect();
        assert_eq!(created.len(), 1, "skip_queue={skip_queue}");
        for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
            assert_error(reply, StatusCode::CONFLICT, "TXN_DUPLICATE_REFERENCE");
        }
        if !skip_queue {
            let child = app.queued_outcome(&reference).await;
            assert_eq!(child["status"], "APPLIED");
        }
        let with_reference = app
            .get(&format!("/transactions?reference_eq={reference}"))
            .await;
        assert_eq!(with_reference.json.as_array().unwrap().len(), 1);
        assert_eq!(money(&app, a).await, (1_900, 2_000, 100));
        assert_eq!(money(&app, b).await, (100, 100, 0));
        app.assert_invariants().await;
    }
}
on_both_backends!(twenty_concurrent_requests_with_one_reference_move_money_once);

async fn a_transfer_to_its_own_source_is_refused(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let a = app.balances("USD", 1).await.remove(0);
    app.fund(&a, "USD", 100).await;
    let world = world_id(&app, "USD").await;
    let rows_before = transaction_count(&app).await;

    // Act
    let mut replies = Vec::new();
    for skip_queue in [true, false] {
        for (source, destination) in [
            (a.as_str(), a.as_str()),
            ("@World", "@World"),
            (world.as_str(), "@World"),
        ] {
            let mut body = transfer(source, destination, 10, skip_queue);
            body["allow_overdraft"] = json!(true);
            replies.push(app.post("/transactions", body).await);
        }
    }

    // Assert
    for reply in &replies {
        assert_error_saying(
            reply,
            StatusCode::BAD_REQUEST,
            "TXN_VALIDATION_ERROR",
            "source and destination cannot be the same balance",
        );
    }
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(money(&app, &a).await, (100, 100, 0));
}
on_both_backends!(a_transfer_to_its_own_source_is_refused);

async fn unknown_balances_are_404_synchronously_on_both_paths(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let a = app.balances("USD", 1).await.remove(0);
    app.fund(&a, "USD", 100).await;
    let rows_before = transaction_count(&app).await;

    // Act
    let mut replies = Vec::new();
    for skip_queue in [true, false] {
        replies.push(
            app.post("/transactions", transfer("bln_missing", &a, 10, skip_queue))
                .await,
        );
        replies.push(
            app.post("/transactions", transfer(&a, "bln_missing", 10, skip_queue))
                .await,
        );
    }

    // Assert
    for reply in &replies {
        assert_error(reply, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
    }
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(money(&app, &a).await, (100, 100, 0));
}
on_both_backends!(unknown_balances_are_404_synchronously_on_both_paths);

async fn transactions_are_read_by_id_and_by_reference(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let mut with_slash = transfer(a, b, 10, true);
    with_slash["reference"] = json!("order/42");
    let (created, _) = record(&app, with_slash).await;
    let (plain, _) = record(&app, transfer(a, b, 5, true)).await;
    let id = created.json["transaction_id"].as_str().unwrap();

    // Act
    let by_id = app.get(&format!("/transactions/{id}")).await;
    let by_reference = app
        .get(&format!(
            "/transactions/reference/{}",
            plain.json["reference"].as_str().unwrap()
        ))
        .await;
    let by_encoded_reference = app.get("/transactions/reference/order%2F42").await;
    let unknown_id = app.get("/transactions/txn_missing").await;
    let unknown_reference = app.get("/transactions/reference/nope").await;

    // Assert
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.text);
    assert_eq!(by_id.json, created.json);
    assert_eq!(by_reference.json, plain.json);
    assert_eq!(
        by_encoded_reference.status,
        StatusCode::OK,
        "{}",
        by_encoded_reference.text
    );
    assert_eq!(by_encoded_reference.json, created.json);
    assert_error(&unknown_id, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
    assert_error(&unknown_reference, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
}
on_both_backends!(transactions_are_read_by_id_and_by_reference);

fn references(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let rows = match &reply.json {
        Value::Array(rows) => rows,
        other => other["data"].as_array().expect("data array"),
    };
    rows.iter()
        .map(|row| row["reference"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

async fn transactions_are_listed_filtered_sorted_and_paged(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let mut fund_a = transfer("@World", a, 1_000, true);
    fund_a["allow_overdraft"] = json!(true);
    let mut fund_c = transfer("@World", c, 500, true);
    fund_c["allow_overdraft"] = json!(true);
    let t1 = transfer(a, b, 100, true);
    let t2 = transfer(a, b, 200, false);
    let t3 = transfer(c, a, 50, true);
    let rejected = transfer(b, c, 10_000, false);
    let mut queued_ids = Vec::new();
    for body in [&fund_a, &fund_c, &t1, &t2, &t3, &rejected] {
        let (reply, _) = record(&app, body.clone()).await;
        if body["skip_queue"] == false {
            queued_ids.push(reply.json["transaction_id"].as_str().unwrap().to_owned());
        }
    }
    let reference = |body: &Value| reference_of(body);
    let t3_created_at = app
        .get(&format!("/transactions/reference/{}", reference(&t3)))
        .await
        .json["created_at"]
        .as_str()
        .unwrap()
        .to_owned();

    // Act
    let everything = app.get("/transactions?limit=100").await;
    let page_one = app.get("/transactions?limit=3&offset=0").await;
    let page_two = app.get("/transactions?limit=3&offset=3").await;
    let page_three = app.get("/transactions?limit=3&offset=6").await;
    let applied = app.get("/transactions?status_eq=APPLIED").await;
    let queued = app.get("/transactions?status_eq=QUEUED").await;
    let refused = app.get("/transactions?status_eq=REJECTED").await;
    let touching_b = app.get(&format!("/transactions?balance_id_eq={b}")).await;
    let since_t3 = app
        .get(&format!("/transactions?created_at_gte={t3_created_at}"))
        .await;
    let children_of_t2 = app
        .post(
            "/transactions/filter",
            json!({ "filters": [{ "field": "parent_transaction", "operator": "eq",
                                  "value": queued_ids[0] }] }),
        )
        .await;
    let applied_counted = app
        .post(
            "/transactions/filter",
            json!({ "filters": [{ "field": "status", "operator": "eq", "value": "APPLIED" }],
                    "include_count": true, "sort_by": "precise_amount", "sort_order": "asc",
                    "limit": 2, "offset": 2 }),
        )
        .await;
    let largest_first = app
        .post(
            "/transactions/filter",
            json!({ "filters": [{ "field": "status", "operator": "eq", "value": "APPLIED" }],
                    "sort_by": "precise_amount", "sort_order": "desc" }),
        )
        .await;
    let bad_sort = app
        .post("/transactions/filter", json!({ "sort_by": "colour" }))
        .await;
    let bad_filter = app.get("/transactions?balance_id_gt=x").await;

    // Assert
    let q = |body: &Value| format!("{}_q", reference(body));
    let all = sorted(references(&everything));
    let expected_all = sorted(vec![
        reference(&fund_a),
        reference(&fund_c),
        reference(&t1),
        reference(&t2),
        q(&t2),
        reference(&t3),
        reference(&rejected),
        q(&rejected),
    ]);
    assert_eq!(all, expected_all);
    let paged = [
        references(&page_one),
        references(&page_two),
        references(&page_three),
    ];
    assert_eq!(
        paged.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 2]
    );
    assert_eq!(sorted(paged.concat()), expected_all);
    assert_eq!(
        sorted(references(&applied)),
        sorted(vec![
            reference(&fund_a),
            reference(&fund_c),
            reference(&t1),
            q(&t2),
            reference(&t3)
        ])
    );
    assert_eq!(
        sorted(references(&queued)),
        sorted(vec![reference(&t2), reference(&rejected)])
    );
    assert_eq!(references(&refused), vec![q(&rejected)]);
    assert_eq!(
        sorted(references(&touching_b)),
        sorted(vec![
            reference(&t1),
            reference(&t2),
            q(&t2),
            reference(&rejected),
            q(&rejected)
        ])
    );
    assert_eq!(
        sorted(references(&since_t3)),
        sorted(vec![reference(&t3), reference(&rejected), q(&rejected)])
    );
    assert_eq!(references(&children_of_t2), vec![q(&t2)]);
    assert_eq!(applied_counted.json["total_count"], json!(5));
    let amounts: Vec<i64> = applied_counted.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["precise_amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![200, 500]);
    let amounts: Vec<i64> = largest_first
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["precise_amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![1_000, 500, 200, 100, 50]);
    assert_error(&bad_sort, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_error(&bad_filter, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    app.assert_invariants().await;
}
on_both_backends!(transactions_are_listed_filtered_sorted_and_paged);

async fn effective_date_is_kept_and_every_row_has_a_hash(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let dated = |skip_queue: bool| {
        let mut body = transfer(a, b, 10, skip_queue);
        body["effective_date"] = json!("2024-01-02T03:04:05Z");
        body["meta_data"] = json!({ "invoice": "inv-1" });
        body
    };

    // Act
    let (now, _) = record(&app, dated(true)).await;
    let (queued, child) = record(&app, dated(false)).await;
    let (undated, _) = record(&app, transfer(a, b, 10, true)).await;

    // Assert
    for row in [&now.json, &queued.json, &child] {
        assert_eq!(row["effective_date"], "2024-01-02T03:04:05Z", "{row}");
        assert_eq!(row["meta_data"]["invoice"], "inv-1", "{row}");
        assert!(is_hex_sha256(row["hash"].as_str().unwrap()), "{row}");
    }
    let fetched = app
        .get(&format!(
            "/transactions/{}",
            now.json["transaction_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(fetched.json["effective_date"], "2024-01-02T03:04:05Z");
    // Without one, the effective date is the creation time.
    assert_eq!(undated.json["effective_date"], undated.json["created_at"]);
    assert!(is_hex_sha256(undated.json["hash"].as_str().unwrap()));
    assert_eq!(money(&app, a).await, (70, 100, 30));
    app.assert_invariants().await;
}
on_both_backends!(effective_date_is_kept_and_every_row_has_a_hash);
