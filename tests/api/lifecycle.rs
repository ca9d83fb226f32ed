//! The transaction lifecycle beyond one transfer, on both paths (`skip_queue` and the
//! default queued path): inflight holds with commits and voids (one, partial, in bulk, by
//! date, raced), refunds, splits over several sources or destinations, bulk requests,
//! scheduled transactions, dry runs and the manual recovery endpoint.

use crate::helpers::{assert_error, spawn_app, spawn_with, test_settings, Backend, Reply, TestApp};
use crate::on_both_backends;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a test waits for queued work, expiries and schedules.
const WAIT: Duration = Duration::from_secs(10);

fn new_reference() -> String {
    format!("ref-{}", uuid::Uuid::new_v4())
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string: {value}"))
        .to_owned()
}

fn id_of(row: &Value) -> String {
    text(&row["transaction_id"])
}

/// A USD transfer body in minor units.
fn transfer(source: &str, destination: &str, amount: i64, skip_queue: bool) -> Value {
    json!({
        "precise_amount": amount, "currency": "USD", "reference": new_reference(),
        "description": "transfer", "source": source, "destination": destination,
        "skip_queue": skip_queue,
    })
}

fn hold_body(source: &str, destination: &str, amount: i64, skip_queue: bool) -> Value {
    let mut body = transfer(source, destination, amount, skip_queue);
    body["inflight"] = json!(true);
    body
}

/// Every amount of a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Amounts {
    balance: i64,
    credit: i64,
    debit: i64,
    inflight_balance: i64,
    inflight_credit: i64,
    inflight_debit: i64,
}

impl Amounts {
    /// From the four stored sides; the two balances follow.
    fn new(credit: i64, debit: i64, inflight_credit: i64, inflight_debit: i64) -> Self {
        Self {
            balance: credit - debit,
            credit,
            debit,
            inflight_balance: inflight_credit - inflight_debit,
            inflight_credit,
            inflight_debit,
        }
    }
}

async fn amounts(app: &TestApp, balance_id: &str) -> Amounts {
    let balance = app.balance(balance_id).await;
    let field = |name: &str| {
        balance[name]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} is a small integer: {balance}"))
    };
    Amounts {
        balance: field("balance"),
        credit: field("credit_balance"),
        debit: field("debit_balance"),
        inflight_balance: field("inflight_balance"),
        inflight_credit: field("inflight_credit_balance"),
        inflight_debit: field("inflight_debit_balance"),
    }
}

/// Polls until the balance has exactly these amounts.
async fn wait_amounts(app: &TestApp, balance_id: &str, expected: Amounts) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = amounts(app, balance_id).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{balance_id}: expected {expected:?}, still {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the balance's amounts satisfy `done`; returns them.
async fn wait_until(app: &TestApp, balance_id: &str, done: impl Fn(&Amounts) -> bool) -> Amounts {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = amounts(app, balance_id).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{balance_id}: still {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a transaction by reference until it exists.
async fn wait_reference(app: &TestApp, reference: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = app
            .get(&format!("/transactions/reference/{reference}"))
            .await;
        if reply.status == StatusCode::OK {
            return reply.json;
        }
        assert!(Instant::now() < deadline, "no transaction {reference}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_transaction(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/transactions/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

async fn by_reference(app: &TestApp, reference: &str) -> Reply {
    app.get(&format!("/transactions/reference/{reference}"))
        .await
}

/// The rows whose `parent_transaction` is `parent`, oldest first.
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

/// Posts a transaction (201); on the queued path waits for the worker's `<ref>_q` row.
/// Returns the 201 reply and the row that moved the money.
async fn record(app: &TestApp, body: Value) -> (Reply, Value) {
    let reply = app.post("/transactions", body.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    if body["skip_queue"] == true {
        let row = reply.json.clone();
        return (reply, row);
    }
    let outcome = app.queued_outcome(&text(&body["reference"])).await;
    (reply, outcome)
}

/// Opens a hold; returns the 201 reply and the INFLIGHT row (the `_q` child when queued).
async fn open_hold(
    app: &TestApp,
    source: &str,
    destination: &str,
    amount: i64,
    skip_queue: bool,
) -> (Reply, Value) {
    let (created, hold) = record(app, hold_body(source, destination, amount, skip_queue)).await;
    assert_eq!(hold["status"], "INFLIGHT", "{hold}");
    assert_eq!(hold["inflight"], true, "{hold}");
    (created, hold)
}

async fn act(app: &TestApp, id: &str, body: Value) -> Reply {
    app.put(&format!("/transactions/inflight/{id}"), body).await
}

async fn transaction_count(app: &TestApp) -> usize {
    app.all_transactions().await.len()
}

/// Everything a write could change: every balance (all fields) and every transaction.
async fn snapshot(app: &TestApp) -> (Vec<Value>, usize) {
    let mut balances = app.all_balances().await;
    balances.sort_by_key(|b| text(&b["balance_id"]));
    (balances, transaction_count(app).await)
}

/// `assert_invariants`, plus the inflight side: every balance's inflight credit and debit
/// equal the replay of its holds minus their commits and voids, and Σ inflight = 0.
async fn assert_all_invariants(app: &TestApp) {
    app.assert_invariants().await;
    let rows = app.all_transactions().await;
    let holds: HashMap<String, &Value> = rows
        .iter()
        .filter(|r| r["status"] == "INFLIGHT")
        .map(|r| (id_of(r), r))
        .collect();
    let mut replay: HashMap<String, (i64, i64)> = HashMap::new();
    let mut add = |row: &Value, sign: i64| {
        let amount = row["precise_amount"].as_i64().unwrap() * sign;
        replay.entry(text(&row["source"])).or_default().1 += amount;
        replay.entry(text(&row["destination"])).or_default().0 += amount;
    };
    for hold in holds.values() {
        add(hold, 1);
    }
    for row in &rows {
        let ends_hold = matches!(row["status"].as_str(), Some("APPLIED" | "VOID"))
            && holds.contains_key(row["parent_transaction"].as_str().unwrap_or_default());
        if ends_hold {
            add(row, -1);
        }
    }
    let mut per_currency: HashMap<String, i64> = HashMap::new();
    for balance in app.all_balances().await {
        let id = text(&balance["balance_id"]);
        let (credit, debit) = replay.get(&id).copied().unwrap_or_default();
        let field = |name: &str| balance[name].as_i64().unwrap();
        assert_eq!(field("inflight_credit_balance"), credit, "{balance}");
        assert_eq!(field("inflight_debit_balance"), debit, "{balance}");
        assert_eq!(field("inflight_balance"), credit - debit, "{balance}");
        *per_currency.entry(text(&balance["currency"])).or_default() += field("inflight_balance");
    }
    for (currency, sum) in per_currency {
        assert_eq!(sum, 0, "sum of {currency} inflight balances is zero");
    }
}

fn in_seconds(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A server that looks for due work (expiries, auto-commits, schedules) every 100 ms.
async fn spawn_fast_due(backend: Backend) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.due_check_ms = 100;
    spawn_with(settings).await
}

// ---------------------------------------------------------------------------------------
// Inflight holds
// ---------------------------------------------------------------------------------------

async fn an_inflight_hold_reserves_funds_until_a_full_commit_moves_them(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 3).await;
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        app.fund(a, "USD", 1_000).await;

        // Act
        let (created, hold) = open_hold(&app, a, b, 700, skip_queue).await;

        // Assert: the hold.
        let hold_id = id_of(&hold);
        if skip_queue {
            assert_eq!(created.json["status"], "INFLIGHT", "{}", created.text);
            assert_eq!(hold_id, id_of(&created.json));
            assert_eq!(hold["parent_transaction"], "");
        } else {
            assert_eq!(created.json["status"], "QUEUED", "{}", created.text);
            assert_eq!(created.json["inflight"], true, "{}", created.text);
            assert_eq!(hold["parent_transaction"], id_of(&created.json).as_str());
            assert_eq!(
                hold["reference"],
                format!("{}_q", text(&created.json["reference"]))
            );
        }
        assert_eq!(hold["precise_amount"], json!(700));
        assert_eq!(hold["source"], a.as_str());
        assert_eq!(hold["destination"], b.as_str());
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 0, 0, 700));
        assert_eq!(amounts(&app, b).await, Amounts::new(0, 0, 700, 0));

        // Only 300 is available: what fits without the hold does not fit with it.
        let too_much = app.post("/transactions", transfer(a, c, 301, true)).await;
        assert_error(&too_much, StatusCode::BAD_REQUEST, "TXN_INSUFFICIENT_FUNDS");
        let second_hold = app.post("/transactions", hold_body(a, c, 301, true)).await;
        assert_error(
            &second_hold,
            StatusCode::BAD_REQUEST,
            "TXN_INSUFFICIENT_FUNDS",
        );
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 0, 0, 700));

        // Commit all of it, by the id the client got (the QUEUED parent when queued).
        let committed = act(
            &app,
            &id_of(&created.json),
            json!({ "status": "commit", "skip_queue": skip_queue }),
        )
        .await;
        assert_eq!(committed.status, StatusCode::OK, "{}", committed.text);
        if skip_queue {
            assert_eq!(committed.json["status"], "APPLIED", "{}", committed.text);
            assert_eq!(committed.json["parent_transaction"], hold_id.as_str());
            assert_eq!(committed.json["precise_amount"], json!(700));
            assert_eq!(committed.json["source"], a.as_str());
            assert_eq!(committed.json["destination"], b.as_str());
            assert_eq!(committed.json["inflight"], false);
            assert_ne!(id_of(&committed.json), hold_id);
        } else {
            assert_eq!(committed.json["queued"], true, "{}", committed.text);
            assert_eq!(committed.json["transaction_id"], hold_id.as_str());
            assert_eq!(committed.json["status"], "INFLIGHT");
        }
        wait_amounts(&app, a, Amounts::new(1_000, 700, 0, 0)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(700, 0, 0, 0));
        let commits = children(&app, &hold_id).await;
        assert_eq!(commits.len(), 1, "{commits:?}");
        assert_eq!(commits[0]["status"], "APPLIED");
        assert_eq!(commits[0]["precise_amount"], json!(700));
        assert_eq!(get_transaction(&app, &hold_id).await["status"], "INFLIGHT");

        // The remaining 300 is available again.
        record(&app, transfer(a, c, 300, true)).await;
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 1_000, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(an_inflight_hold_reserves_funds_until_a_full_commit_moves_them);

async fn partial_commits_by_precise_amount_and_amount_run_until_nothing_remains(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: a hold of 10.00 at precision 100.
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 5_000).await;
        let mut body = hold_body(a, b, 0, skip_queue);
        body.as_object_mut().unwrap().remove("precise_amount");
        body["amount"] = json!(10);
        body["precision"] = json!(100);
        let (created, hold) = record(&app, body).await;
        assert_eq!(hold["precise_amount"], json!(1_000), "{hold}");
        let target = id_of(&created.json);
        let commits = [
            (json!({ "status": "commit", "precise_amount": 300 }), 300),
            (json!({ "status": "commit", "amount": 2.5 }), 250),
            (json!({ "status": "COMMIT", "precise_amount": "400" }), 400),
            (json!({ "status": "commit", "amount": 0 }), 50),
        ];
        let mut committed = 0;

        // Act + Assert: each commit moves its part, the hold keeps the rest.
        for (mut request, part) in commits {
            request["skip_queue"] = json!(skip_queue);
            let reply = act(&app, &target, request.clone()).await;
            assert_eq!(reply.status, StatusCode::OK, "{request}: {}", reply.text);
            if skip_queue {
                assert_eq!(reply.json["status"], "APPLIED");
                assert_eq!(reply.json["precise_amount"], json!(part), "{}", reply.text);
                assert_eq!(reply.json["precision"], json!(100));
                assert_eq!(reply.json["parent_transaction"], id_of(&hold).as_str());
            } else {
                assert_eq!(reply.json["queued"], true);
            }
            committed += part;
            wait_amounts(
                &app,
                a,
                Amounts::new(5_000, committed, 0, 1_000 - committed),
            )
            .await;
            assert_eq!(
                amounts(&app, b).await,
                Amounts::new(committed, 0, 1_000 - committed, 0)
            );
        }
        let parts: Vec<Value> = children(&app, &id_of(&hold))
            .await
            .iter()
            .map(|c| c["precise_amount"].clone())
            .collect();
        assert_eq!(parts, vec![json!(300), json!(250), json!(400), json!(50)]);

        // Nothing remains: commit and void are both refused as already committed.
        for status in ["commit", "void"] {
            let again = act(
                &app,
                &target,
                json!({ "status": status, "skip_queue": skip_queue }),
            )
            .await;
            assert_error(&again, StatusCode::CONFLICT, "TXN_ALREADY_COMMITTED");
        }
        assert_eq!(amounts(&app, a).await, Amounts::new(5_000, 1_000, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(partial_commits_by_precise_amount_and_amount_run_until_nothing_remains);

async fn a_void_returns_the_remainder_and_a_voided_hold_refuses_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: a hold of 1000, 400 of it committed.
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 1_000).await;
        let (created, hold) = open_hold(&app, a, b, 1_000, skip_queue).await;
        let hold_id = id_of(&hold);
        let commit = act(
            &app,
            &hold_id,
            json!({ "status": "commit", "precise_amount": 400, "skip_queue": skip_queue }),
        )
        .await;
        assert_eq!(commit.status, StatusCode::OK, "{}", commit.text);
        wait_amounts(&app, a, Amounts::new(1_000, 400, 0, 600)).await;

        // Act
        let voided = act(
            &app,
            &id_of(&created.json),
            json!({ "status": "void", "skip_queue": skip_queue }),
        )
        .await;

        // Assert
        assert_eq!(voided.status, StatusCode::OK, "{}", voided.text);
        if skip_queue {
            assert_eq!(voided.json["status"], "VOID", "{}", voided.text);
            assert_eq!(voided.json["precise_amount"], json!(600));
            assert_eq!(voided.json["parent_transaction"], hold_id.as_str());
        } else {
            assert_eq!(voided.json["queued"], true, "{}", voided.text);
        }
        wait_amounts(&app, a, Amounts::new(1_000, 400, 0, 0)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(400, 0, 0, 0));
        let rows = children(&app, &hold_id).await;
        let statuses: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r["status"].as_str().unwrap(),
                    r["precise_amount"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(statuses, vec![("APPLIED", 400), ("VOID", 600)]);
        for status in ["void", "commit"] {
            let again = act(
                &app,
                &hold_id,
                json!({ "status": status, "skip_queue": skip_queue }),
            )
            .await;
            assert_error(&again, StatusCode::CONFLICT, "TXN_ALREADY_VOIDED");
        }
        // The released 600 can be spent.
        record(&app, transfer(a, b, 600, true)).await;
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 1_000, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(a_void_returns_the_remainder_and_a_voided_hold_refuses_everything);

async fn inflight_actions_are_refused_with_blnks_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 1_000).await;
        let (_, hold) = open_hold(&app, a, b, 100, skip_queue).await;
        let hold_id = id_of(&hold);
        let (plain, _) = record(&app, transfer(a, b, 10, true)).await;
        let rows_before = transaction_count(&app).await;
        let with = |mut body: Value| {
            body["skip_queue"] = json!(skip_queue);
            body
        };

        // Act
        let over_precise = act(
            &app,
            &hold_id,
            with(json!({ "status": "commit", "precise_amount": 101 })),
        )
        .await;
        let over_major = act(
            &app,
            &hold_id,
            with(json!({ "status": "commit", "amount": 101 })),
        )
        .await;
        let zero = act(
            &app,
            &hold_id,
            with(json!({ "status": "commit", "precise_amount": 0 })),
        )
        .await;
        let bad_status = act(&app, &hold_id, with(json!({ "status": "settle" }))).await;
        let no_status = act(&app, &hold_id, with(json!({}))).await;
        let not_inflight = act(
            &app,
            &id_of(&plain.json),
            with(json!({ "status": "commit" })),
        )
        .await;
        let unknown = act(
            &app,
            "txn_00000000-0000-4000-8000-000000000000",
            with(json!({ "status": "void" })),
        )
        .await;

        // Assert
        assert_error(
            &over_precise,
            StatusCode::BAD_REQUEST,
            "TXN_COMMIT_AMOUNT_EXCEEDED",
        );
        assert!(
            text(&over_precise.json["error"]).contains("cannot commit more than"),
            "{}",
            over_precise.text
        );
        assert_error(
            &over_major,
            StatusCode::BAD_REQUEST,
            "TXN_COMMIT_AMOUNT_EXCEEDED",
        );
        assert_error(&zero, StatusCode::BAD_REQUEST, "TXN_INVALID_AMOUNT");
        assert_error(
            &bad_status,
            StatusCode::BAD_REQUEST,
            "TXN_INVALID_STATUS_ACTION",
        );
        assert_error(
            &no_status,
            StatusCode::BAD_REQUEST,
            "TXN_INVALID_STATUS_ACTION",
        );
        assert_error(&not_inflight, StatusCode::BAD_REQUEST, "TXN_NOT_INFLIGHT");
        assert_error(&unknown, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
        // Nothing was written, nothing moved, and the hold is still whole.
        assert_eq!(transaction_count(&app).await, rows_before);
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 10, 0, 100));
        let all = act(&app, &hold_id, with(json!({ "status": "commit" }))).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.text);
        wait_amounts(&app, a, Amounts::new(1_000, 110, 0, 0)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(110, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(inflight_actions_are_refused_with_blnks_codes);

async fn queued_actions_racing_on_one_hold_are_409_or_applied_in_order_never_exceeding_it(
    backend: Backend,
) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let (_, hold) = open_hold(&app, a, b, 100, false).await;
    let hold_id = id_of(&hold);

    // Act: ten queued commits of 30 at once, then one queued void once none is pending.
    let replies = join_all((0..10).map(|_| {
        act(
            &app,
            &hold_id,
            json!({ "status": "commit", "precise_amount": 30 }),
        )
    }))
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = amounts(&app, a).await;
        assert!(now.debit <= 100 && now.debit % 30 == 0, "{now:?}");
        assert_eq!(now.debit + now.inflight_debit, 100, "{now:?}");
        let void = act(&app, &hold_id, json!({ "status": "void" })).await;
        if void.status == StatusCode::OK {
            break;
        }
        assert_error(&void, StatusCode::CONFLICT, "GEN_CONFLICT");
        assert!(
            Instant::now() < deadline,
            "the queued commits never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    let accepted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
        // Queued behind another action, or (once 90 is committed) more than remains.
        let code = reply.json["error_detail"]["code"].as_str();
        match code {
            Some("GEN_CONFLICT") => {
                assert_eq!(reply.status, StatusCode::CONFLICT);
                assert!(text(&reply.json["error"]).contains("already queued"));
            }
            Some("TXN_COMMIT_AMOUNT_EXCEEDED") => {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST)
            }
            _ => panic!("{}", reply.text),
        }
    }
    assert!(accepted >= 1);
    let a_now = wait_until(&app, a, |m| m.inflight_debit == 0).await;
    let committed = a_now.debit;
    assert_eq!(amounts(&app, b).await, Amounts::new(committed, 0, 0, 0));
    assert_eq!(a_now, Amounts::new(100, committed, 0, 0));
    assert!(
        committed % 30 == 0 && (30..=90).contains(&committed),
        "{committed}"
    );
    assert!(committed / 30 <= accepted as i64, "{committed} {accepted}");
    let rows = children(&app, &hold_id).await;
    assert_eq!(rows.len() as i64, committed / 30 + 1, "{rows:?}");
    assert_eq!(rows.last().unwrap()["status"], "VOID");
    assert_eq!(
        rows.last().unwrap()["precise_amount"],
        json!(100 - committed)
    );
    assert_all_invariants(&app).await;
}
on_both_backends!(queued_actions_racing_on_one_hold_are_409_or_applied_in_order_never_exceeding_it);

async fn twenty_concurrent_commits_of_ten_on_a_hold_of_a_hundred_apply_exactly_ten(
    backend: Backend,
) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let (_, hold) = open_hold(&app, a, b, 100, true).await;
    let hold_id = id_of(&hold);

    // Act
    let replies = join_all((0..20).map(|_| {
        act(
            &app,
            &hold_id,
            json!({ "status": "commit", "precise_amount": 10, "skip_queue": true }),
        )
    }))
    .await;

    // Assert
    let ok: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 10);
    for reply in &ok {
        assert_eq!(reply.json["status"], "APPLIED");
        assert_eq!(reply.json["precise_amount"], json!(10));
    }
    for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_error(reply, StatusCode::CONFLICT, "TXN_ALREADY_COMMITTED");
    }
    assert_eq!(amounts(&app, a).await, Amounts::new(100, 100, 0, 0));
    assert_eq!(amounts(&app, b).await, Amounts::new(100, 0, 0, 0));
    assert_eq!(children(&app, &hold_id).await.len(), 10);
    assert_all_invariants(&app).await;
}
on_both_backends!(twenty_concurrent_commits_of_ten_on_a_hold_of_a_hundred_apply_exactly_ten);

async fn concurrent_commits_and_voids_never_move_more_than_the_hold(backend: Backend) {
    let app = spawn_app(backend).await;
    for round in 0..3 {
        // Arrange
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 100).await;
        let (_, hold) = open_hold(&app, a, b, 100, true).await;
        let hold_id = id_of(&hold);

        // Act: commits of 30 and voids interleaved, all at once.
        let replies = join_all((0..10).map(|i| {
            let body = if (i + round) % 2 == 0 {
                json!({ "status": "commit", "precise_amount": 30, "skip_queue": true })
            } else {
                json!({ "status": "void", "skip_queue": true })
            };
            act(&app, &hold_id, body)
        }))
        .await;

        // Assert: exactly one void, which returned whatever the commits left.
        let ok: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect();
        let voids: Vec<&&Reply> = ok.iter().filter(|r| r.json["status"] == "VOID").collect();
        let commits = ok.len() - voids.len();
        assert_eq!(
            voids.len(),
            1,
            "{:?}",
            ok.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        let committed = 30 * commits as i64;
        assert!(committed <= 90, "{committed}");
        assert_eq!(voids[0].json["precise_amount"], json!(100 - committed));
        for reply in replies.iter().filter(|r| r.status != StatusCode::OK) {
            let code = reply.json["error_detail"]["code"].as_str();
            let expected = match code {
                Some("TXN_ALREADY_VOIDED") => StatusCode::CONFLICT,
                Some("TXN_COMMIT_AMOUNT_EXCEEDED") => StatusCode::BAD_REQUEST,
                _ => panic!("{}", reply.text),
            };
            assert_eq!(reply.status, expected, "{}", reply.text);
        }
        assert_eq!(amounts(&app, a).await, Amounts::new(100, committed, 0, 0));
        assert_eq!(amounts(&app, b).await, Amounts::new(committed, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(concurrent_commits_and_voids_never_move_more_than_the_hold);

async fn a_split_or_bulk_parent_commits_or_voids_every_hold_under_it(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: a split hold (60% to b, the rest to c) and a bulk of two holds.
        let ids = app.balances("USD", 4).await;
        let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
        app.fund(a, "USD", 10_000).await;
        let split = json!({
            "precise_amount": 1_000, "currency": "USD", "reference": new_reference(),
            "description": "split hold", "source": a, "inflight": true,
            "skip_queue": skip_queue,
            "destinations": [
                { "identifier": b, "distribution": "60%" },
                { "identifier": c, "distribution": "left" },
            ],
        });
        let created = app.post("/transactions", split.clone()).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let split_id = id_of(&created.json);
        let bulk = app
            .post(
                "/transactions/bulk",
                json!({
                    "transactions": [transfer(a, d, 200, false), transfer(a, d, 300, false)],
                    "inflight": true, "skip_queue": skip_queue,
                }),
            )
            .await;
        assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
        assert_eq!(bulk.json["status"], "inflight");
        let batch_id = text(&bulk.json["batch_id"]);
        wait_amounts(&app, a, Amounts::new(10_000, 0, 0, 1_500)).await;
        wait_amounts(&app, d, Amounts::new(0, 0, 500, 0)).await;

        // Act: skipping the queue, commit the split and void the bulk; queued, the reverse.
        let (to_commit, to_void) = if skip_queue {
            (&split_id, &batch_id)
        } else {
            (&batch_id, &split_id)
        };
        let committed = act(
            &app,
            to_commit,
            json!({ "status": "commit", "skip_queue": skip_queue }),
        )
        .await;
        let voided = act(
            &app,
            to_void,
            json!({ "status": "void", "skip_queue": skip_queue }),
        )
        .await;

        // Assert
        assert_eq!(committed.status, StatusCode::OK, "{}", committed.text);
        assert_eq!(voided.status, StatusCode::OK, "{}", voided.text);
        if skip_queue {
            assert_eq!(committed.json["status"], "APPLIED");
            assert_eq!(voided.json["status"], "VOID");
        } else {
            assert_eq!(committed.json["queued"], true);
            assert_eq!(voided.json["queued"], true);
        }
        let (split_moved, bulk_moved) = if skip_queue { (1, 0) } else { (0, 1) };
        wait_amounts(
            &app,
            a,
            Amounts::new(10_000, 1_000 * split_moved + 500 * bulk_moved, 0, 0),
        )
        .await;
        wait_amounts(&app, b, Amounts::new(600 * split_moved, 0, 0, 0)).await;
        wait_amounts(&app, c, Amounts::new(400 * split_moved, 0, 0, 0)).await;
        wait_amounts(&app, d, Amounts::new(500 * bulk_moved, 0, 0, 0)).await;
        for (id, code) in [
            (to_commit, "TXN_ALREADY_COMMITTED"),
            (to_void, "TXN_ALREADY_VOIDED"),
        ] {
            let again = act(
                &app,
                id,
                json!({ "status": "commit", "skip_queue": skip_queue }),
            )
            .await;
            assert_error(&again, StatusCode::CONFLICT, code);
        }
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(a_split_or_bulk_parent_commits_or_voids_every_hold_under_it);

async fn an_expiry_date_voids_and_a_commit_date_commits_automatically(backend: Backend) {
    // Arrange: four holds, due in two seconds.
    let app = spawn_fast_due(backend).await;
    let ids = app.balances("USD", 5).await;
    let (a, expiring, committing) = (&ids[0], &ids[1..3], &ids[3..5]);
    app.fund(a, "USD", 1_000).await;
    let mut holds = Vec::new();
    for (index, skip_queue) in [true, false].into_iter().enumerate() {
        let mut expires = hold_body(a, &expiring[index], 100, skip_queue);
        expires["inflight_expiry_date"] = json!(in_seconds(2));
        let mut commits = hold_body(a, &committing[index], 200, skip_queue);
        commits["inflight_commit_date"] = json!(in_seconds(2));
        let (_, expiring_hold) = record(&app, expires).await;
        let (_, committing_hold) = record(&app, commits).await;
        holds.push((expiring_hold, committing_hold));
    }

    // Assert: held now ...
    assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 0, 0, 600));
    for (expiring_hold, committing_hold) in &holds {
        assert_eq!(expiring_hold["status"], "INFLIGHT");
        assert_ne!(
            expiring_hold["inflight_expiry_date"],
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(committing_hold["status"], "INFLIGHT");
        assert_ne!(
            committing_hold["inflight_commit_date"],
            "0001-01-01T00:00:00Z"
        );
    }

    // ... then voided and committed without a request.
    wait_amounts(&app, a, Amounts::new(1_000, 400, 0, 0)).await;
    for (voided, committed) in expiring.iter().zip(committing) {
        assert_eq!(amounts(&app, voided).await, Amounts::new(0, 0, 0, 0));
        assert_eq!(amounts(&app, committed).await, Amounts::new(200, 0, 0, 0));
    }
    for (expiring_hold, committing_hold) in &holds {
        let void = children(&app, &id_of(expiring_hold)).await;
        assert_eq!(void.len(), 1, "{void:?}");
        assert_eq!(void[0]["status"], "VOID");
        assert_eq!(void[0]["precise_amount"], json!(100));
        let commit = children(&app, &id_of(committing_hold)).await;
        assert_eq!(commit.len(), 1, "{commit:?}");
        assert_eq!(commit[0]["status"], "APPLIED");
        assert_eq!(commit[0]["precise_amount"], json!(200));
        let late = act(&app, &id_of(expiring_hold), json!({ "status": "commit" })).await;
        assert_error(&late, StatusCode::CONFLICT, "TXN_ALREADY_VOIDED");
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(an_expiry_date_voids_and_a_commit_date_commits_automatically);

async fn bulk_commit_and_bulk_void_answer_per_item_results(backend: Backend) {
    // Arrange: three holds and an ordinary transfer.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let mut holds = Vec::new();
    for _ in 0..3 {
        holds.push(id_of(&open_hold(&app, a, b, 100, true).await.1));
    }
    let (plain, _) = record(&app, transfer(a, b, 10, true)).await;
    let plain = id_of(&plain.json);
    let unknown = "txn_00000000-0000-4000-8000-000000000000";

    // Act
    let commit = app
        .post(
            "/transactions/inflight/bulk/commit",
            json!({
                "transactions": [
                    { "transaction_id": holds[0] },
                    { "transaction_id": holds[1], "precise_amount": 40 },
                    { "transaction_id": unknown },
                    { "transaction_id": holds[2], "precise_amount": 101 },
                ],
                "skip_queue": true,
            }),
        )
        .await;
    let void = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": [holds[1], holds[0], plain], "skip_queue": true }),
        )
        .await;
    let queued_void = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": [holds[2]] }),
        )
        .await;
    wait_amounts(&app, a, Amounts::new(1_000, 150, 0, 0)).await;
    let void_again = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": [holds[2], holds[1]], "skip_queue": true }),
        )
        .await;

    // Assert
    assert_eq!(commit.status, StatusCode::OK, "{}", commit.text);
    assert_eq!(commit.json["succeeded"], json!(2), "{}", commit.text);
    assert_eq!(commit.json["failed"], json!(2));
    let results = commit.json["results"].as_array().unwrap();
    let summary: Vec<(String, &str, Option<&str>)> = results
        .iter()
        .map(|r| {
            (
                text(&r["transaction_id"]),
                r["status"].as_str().unwrap(),
                r["code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (holds[0].clone(), "succeeded", None),
            (holds[1].clone(), "succeeded", None),
            (unknown.to_owned(), "failed", Some("NOT_FOUND")),
            (holds[2].clone(), "failed", Some("INVALID_AMOUNT")),
        ]
    );
    assert!(results[2]["message"].is_string());

    assert_eq!(void.status, StatusCode::OK, "{}", void.text);
    let codes: Vec<(&str, Option<&str>)> = void.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["code"].as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("succeeded", None),
            ("failed", Some("ALREADY_COMMITTED")),
            ("failed", Some("NOT_INFLIGHT")),
        ]
    );
    assert_eq!(void.json["succeeded"], json!(1));
    assert_eq!(void.json["failed"], json!(2));

    assert_eq!(queued_void.status, StatusCode::OK, "{}", queued_void.text);
    assert_eq!(
        queued_void.json["results"][0],
        json!({ "transaction_id": holds[2], "status": "queued", "code": "QUEUED" })
    );
    let codes: Vec<Option<&str>> = void_again.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str())
        .collect();
    assert_eq!(codes, vec![Some("ALREADY_VOIDED"), Some("ALREADY_VOIDED")]);
    assert_eq!(void_again.json["succeeded"], json!(0));
    assert_eq!(amounts(&app, b).await, Amounts::new(150, 0, 0, 0));
    assert_all_invariants(&app).await;
}
on_both_backends!(bulk_commit_and_bulk_void_answer_per_item_results);

async fn bulk_inflight_actions_take_one_to_a_hundred_ids(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids: Vec<String> = (0..101).map(|i| format!("txn_{i}")).collect();
    let items: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "transaction_id": id }))
        .collect();

    // Act
    let too_many_voids = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": ids }),
        )
        .await;
    let too_many_commits = app
        .post(
            "/transactions/inflight/bulk/commit",
            json!({ "transactions": items }),
        )
        .await;
    let no_voids = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": [] }),
        )
        .await;
    let hundred = app
        .post(
            "/transactions/inflight/bulk/void",
            json!({ "transaction_ids": ids[..100] }),
        )
        .await;

    // Assert
    assert_error(
        &too_many_voids,
        StatusCode::BAD_REQUEST,
        "TXN_BULK_LIMIT_EXCEEDED",
    );
    assert_error(
        &too_many_commits,
        StatusCode::BAD_REQUEST,
        "TXN_BULK_LIMIT_EXCEEDED",
    );
    assert_error(&no_voids, StatusCode::BAD_REQUEST, "TXN_BULK_EMPTY");
    assert_eq!(hundred.status, StatusCode::OK, "{}", hundred.text);
    assert_eq!(hundred.json["failed"], json!(100));
    assert!(hundred.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["code"] == "NOT_FOUND"));
}
on_both_backends!(bulk_inflight_actions_take_one_to_a_hundred_ids);

// ---------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------

async fn a_refund_reverses_a_transfer_once_on_both_paths(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let (first, _) = record(&app, transfer(a, b, 300, true)).await;
    let (second, _) = record(&app, transfer(a, b, 200, true)).await;
    let (first, second) = (id_of(&first.json), id_of(&second.json));

    // Act: a refund without a body (queued), and one skipping the queue.
    let queued = app
        .request(
            reqwest::Method::POST,
            &format!("/refund-transaction/{first}"),
            None,
        )
        .await;
    let applied = app
        .post(
            &format!("/refund-transaction/{second}"),
            json!({ "skip_queue": true }),
        )
        .await;

    // Assert
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    assert_eq!(queued.json["status"], "QUEUED");
    assert_eq!(queued.json["reference"], format!("{first}_refund"));
    assert_eq!(queued.json["parent_transaction"], first.as_str());
    assert_eq!(queued.json["source"], b.as_str());
    assert_eq!(queued.json["destination"], a.as_str());
    assert_eq!(queued.json["precise_amount"], json!(300));
    assert_eq!(queued.json["allow_overdraft"], true);
    assert_ne!(id_of(&queued.json), first);
    let child = app.queued_outcome(&format!("{first}_refund")).await;
    assert_eq!(child["status"], "APPLIED", "{child}");
    assert_eq!(child["parent_transaction"], id_of(&queued.json).as_str());

    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    assert_eq!(applied.json["status"], "APPLIED");
    assert_eq!(applied.json["reference"], format!("{second}_refund"));
    assert_eq!(applied.json["parent_transaction"], second.as_str());
    assert_eq!(applied.json["source"], b.as_str());
    assert_eq!(applied.json["destination"], a.as_str());
    assert_eq!(applied.json["precise_amount"], json!(200));
    assert_eq!(
        get_transaction(&app, &id_of(&applied.json)).await,
        applied.json
    );

    wait_amounts(&app, a, Amounts::new(1_500, 500, 0, 0)).await;
    assert_eq!(amounts(&app, b).await, Amounts::new(500, 500, 0, 0));

    // A second refund of either is a conflict, on both paths, and moves nothing.
    let rows_before = transaction_count(&app).await;
    for id in [&first, &second] {
        for body in [json!({}), json!({ "skip_queue": true })] {
            let again = app.post(&format!("/refund-transaction/{id}"), body).await;
            assert_error(&again, StatusCode::CONFLICT, "GEN_CONFLICT");
            assert!(
                text(&again.json["error"]).contains("already been refunded"),
                "{}",
                again.text
            );
        }
    }
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(amounts(&app, a).await, Amounts::new(1_500, 500, 0, 0));
    assert_all_invariants(&app).await;
}
on_both_backends!(a_refund_reverses_a_transfer_once_on_both_paths);

async fn ten_concurrent_refunds_of_one_transaction_give_exactly_one_201(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let (original, _) = record(&app, transfer(a, b, 400, true)).await;
    let original = id_of(&original.json);

    // Act: half of them queued, half skipping the queue.
    let path = format!("/refund-transaction/{original}");
    let replies =
        join_all((0..10).map(|i| app.post(&path, json!({ "skip_queue": i % 2 == 0 })))).await;

    // Assert
    let created: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_error(reply, StatusCode::CONFLICT, "GEN_CONFLICT");
    }
    if created[0].json["status"] == "QUEUED" {
        let child = app.queued_outcome(&format!("{original}_refund")).await;
        assert_eq!(child["status"], "APPLIED");
    }
    wait_amounts(&app, a, Amounts::new(1_400, 400, 0, 0)).await;
    assert_eq!(amounts(&app, b).await, Amounts::new(400, 400, 0, 0));
    let refunds = children(&app, &original).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_all_invariants(&app).await;
}
on_both_backends!(ten_concurrent_refunds_of_one_transaction_give_exactly_one_201);

async fn a_queued_parent_refunds_its_applied_child_and_unapplied_transactions_are_refused(
    backend: Backend,
) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let (queued, applied_child) = record(&app, transfer(a, b, 400, false)).await;
    let (rejected_parent, rejected) = record(&app, transfer(a, b, 5_000, false)).await;
    assert_eq!(rejected["status"], "REJECTED", "{rejected}");
    let mut later = transfer(a, b, 100, false);
    later["scheduled_for"] = json!(in_seconds(3_600));
    let scheduled = app.post("/transactions", later).await;
    assert_eq!(scheduled.status, StatusCode::CREATED, "{}", scheduled.text);
    assert_eq!(scheduled.json["status"], "SCHEDULED");

    // Act
    let refund = app
        .post(
            &format!("/refund-transaction/{}", id_of(&queued.json)),
            json!({ "skip_queue": true }),
        )
        .await;
    let refusals = [
        id_of(&rejected),
        id_of(&rejected_parent.json),
        id_of(&scheduled.json),
    ]
    .map(|id| {
        let app = &app;
        async move {
            app.post(
                &format!("/refund-transaction/{id}"),
                json!({ "skip_queue": true }),
            )
            .await
        }
    });
    let refusals = join_all(refusals).await;
    let unknown = app
        .post(
            "/refund-transaction/txn_00000000-0000-4000-8000-000000000000",
            json!({}),
        )
        .await;

    // Assert
    assert_eq!(refund.status, StatusCode::CREATED, "{}", refund.text);
    assert_eq!(
        refund.json["parent_transaction"],
        id_of(&applied_child).as_str()
    );
    assert_eq!(
        refund.json["reference"],
        format!("{}_refund", id_of(&applied_child))
    );
    assert_eq!(refund.json["source"], b.as_str());
    assert_eq!(refund.json["precise_amount"], json!(400));
    for reply in &refusals {
        assert_error(reply, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST");
        assert!(
            text(&reply.json["error"]).contains("cannot be refunded"),
            "{}",
            reply.text
        );
    }
    assert_error(&unknown, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
    assert_eq!(amounts(&app, a).await, Amounts::new(1_400, 400, 0, 0));
    assert_eq!(amounts(&app, b).await, Amounts::new(400, 400, 0, 0));
    assert_all_invariants(&app).await;
}
on_both_backends!(a_queued_parent_refunds_its_applied_child_and_unapplied_transactions_are_refused);

async fn a_refund_takes_a_description_and_merges_meta_data(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 100).await;
    let mut body = transfer(a, b, 100, true);
    body["meta_data"] = json!({ "order": "o-1", "channel": "web" });
    let (original, _) = record(&app, body).await;
    let original = id_of(&original.json);

    // Act
    let refund = app
        .post(
            &format!("/refund-transaction/{original}"),
            json!({
                "description": "returned goods", "skip_queue": true,
                "meta_data": { "reason": "damaged", "channel": "store" },
            }),
        )
        .await;

    // Assert
    assert_eq!(refund.status, StatusCode::CREATED, "{}", refund.text);
    assert_eq!(refund.json["description"], "returned goods");
    assert_eq!(
        refund.json["meta_data"],
        json!({ "order": "o-1", "channel": "store", "reason": "damaged" })
    );
    let original = get_transaction(&app, &original).await;
    assert_eq!(original["description"], "transfer");
    assert_eq!(
        original["meta_data"],
        json!({ "order": "o-1", "channel": "web" })
    );
    assert_eq!(amounts(&app, a).await, Amounts::new(200, 100, 0, 0));
    assert_eq!(amounts(&app, b).await, Amounts::new(100, 100, 0, 0));
    app.assert_invariants().await;
}
on_both_backends!(a_refund_takes_a_description_and_merges_meta_data);

async fn refunding_a_void_recreates_the_hold_in_its_original_direction(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: a hold of 500, 200 committed, 300 voided.
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 1_000).await;
        let (_, hold) = open_hold(&app, a, b, 500, true).await;
        let hold_id = id_of(&hold);
        let commit = act(
            &app,
            &hold_id,
            json!({ "status": "commit", "precise_amount": 200, "skip_queue": true }),
        )
        .await;
        assert_eq!(commit.status, StatusCode::OK, "{}", commit.text);
        let void = act(
            &app,
            &hold_id,
            json!({ "status": "void", "skip_queue": true }),
        )
        .await;
        assert_eq!(void.json["status"], "VOID", "{}", void.text);
        let void_id = id_of(&void.json);
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 200, 0, 0));

        // Act
        let refund = app
            .post(
                &format!("/refund-transaction/{void_id}"),
                json!({ "skip_queue": skip_queue }),
            )
            .await;

        // Assert: the 300 is held again, from a to b.
        assert_eq!(refund.status, StatusCode::CREATED, "{}", refund.text);
        assert_eq!(refund.json["reference"], format!("{void_id}_refund"));
        assert_eq!(refund.json["parent_transaction"], void_id.as_str());
        assert_eq!(refund.json["source"], a.as_str());
        assert_eq!(refund.json["destination"], b.as_str());
        assert_eq!(refund.json["precise_amount"], json!(300));
        assert_eq!(refund.json["inflight"], true);
        let new_hold = if skip_queue {
            assert_eq!(refund.json["status"], "INFLIGHT");
            refund.json.clone()
        } else {
            assert_eq!(refund.json["status"], "QUEUED");
            let child = app.queued_outcome(&format!("{void_id}_refund")).await;
            assert_eq!(child["status"], "INFLIGHT", "{child}");
            child
        };
        wait_amounts(&app, a, Amounts::new(1_000, 200, 0, 300)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(200, 0, 300, 0));
        let again = app
            .post(&format!("/refund-transaction/{void_id}"), json!({}))
            .await;
        assert_error(&again, StatusCode::CONFLICT, "GEN_CONFLICT");

        // The re-created hold commits like any other.
        let commit = act(
            &app,
            &id_of(&new_hold),
            json!({ "status": "commit", "skip_queue": true }),
        )
        .await;
        assert_eq!(commit.status, StatusCode::OK, "{}", commit.text);
        assert_eq!(amounts(&app, a).await, Amounts::new(1_000, 500, 0, 0));
        assert_eq!(amounts(&app, b).await, Amounts::new(500, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(refunding_a_void_recreates_the_hold_in_its_original_direction);

async fn refunding_a_split_parent_reverses_every_leg_once(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: 1000 split 40% to b, the rest to c.
        let ids = app.balances("USD", 3).await;
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        app.fund(a, "USD", 1_000).await;
        let body = split_body(
            "destinations",
            a,
            1_000,
            json!([
                { "identifier": b, "distribution": "40%" },
                { "identifier": c, "distribution": "left" },
            ]),
            skip_queue,
        );
        let reference = text(&body["reference"]);
        let created = app.post("/transactions", body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let split_id = id_of(&created.json);
        if !skip_queue {
            for leg in 1..=2 {
                let child = app.queued_outcome(&format!("{reference}_{leg}")).await;
                assert_eq!(child["status"], "APPLIED", "{child}");
            }
        }
        wait_amounts(&app, a, Amounts::new(1_000, 1_000, 0, 0)).await;

        // Act
        let refund = app
            .post(
                &format!("/refund-transaction/{split_id}"),
                json!({ "skip_queue": true }),
            )
            .await;
        let again = app
            .post(&format!("/refund-transaction/{split_id}"), json!({}))
            .await;

        // Assert
        assert_eq!(refund.status, StatusCode::CREATED, "{}", refund.text);
        assert_eq!(refund.json["status"], "APPLIED");
        assert_eq!(refund.json["destination"], a.as_str());
        assert!(text(&refund.json["reference"]).ends_with("_refund"));
        assert_error(&again, StatusCode::CONFLICT, "GEN_CONFLICT");
        assert_eq!(amounts(&app, a).await, Amounts::new(2_000, 1_000, 0, 0));
        assert_eq!(amounts(&app, b).await, Amounts::new(400, 400, 0, 0));
        assert_eq!(amounts(&app, c).await, Amounts::new(600, 600, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(refunding_a_split_parent_reverses_every_leg_once);

// ---------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------

/// A split body: `side` is `sources` or `destinations`, `other` the single balance.
fn split_body(side: &str, other: &str, amount: i64, legs: Value, skip_queue: bool) -> Value {
    let other_side = if side == "sources" {
        "destination"
    } else {
        "source"
    };
    json!({
        "precise_amount": amount, "precision": 100, "currency": "USD",
        "reference": new_reference(), "description": "split", other_side: other,
        side: legs, "skip_queue": skip_queue,
    })
}

async fn split_destinations_follow_blnks_allocation_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: 100.00 = fixed 10.00, 20%, precise 10.06, 33.33%, and what is left.
        let ids = app.balances("USD", 6).await;
        let (a, legs) = (&ids[0], &ids[1..]);
        app.fund(a, "USD", 20_000).await;
        let body = split_body(
            "destinations",
            a,
            10_000,
            json!([
                { "identifier": legs[0], "distribution": "10" },
                { "identifier": legs[1], "distribution": "20%" },
                { "identifier": legs[2], "distribution": "1%", "precise_distribution": "1006" },
                { "identifier": legs[3], "distribution": "33.33%", "narration": "ignored" },
                { "identifier": legs[4], "distribution": "left" },
            ]),
            skip_queue,
        );
        let reference = text(&body["reference"]);
        let expected = [1_000, 2_000, 1_006, 3_333, 2_661];

        // Act
        let created = app.post("/transactions", body).await;

        // Assert
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let split_id = id_of(&created.json);
        assert_eq!(created.json["precise_amount"], json!(10_000));
        let answered = created.json["destinations"].as_array().unwrap();
        assert_eq!(answered.len(), 5, "{}", created.text);
        for (index, leg) in answered.iter().enumerate() {
            assert_eq!(leg["identifier"], legs[index].as_str());
            let row = get_transaction(&app, &text(&leg["transaction_id"])).await;
            let (separator, status) = if skip_queue {
                ('-', "APPLIED")
            } else {
                ('_', "QUEUED")
            };
            assert_eq!(
                row["reference"],
                format!("{reference}{separator}{}", index + 1)
            );
            assert_eq!(row["status"], status);
            assert_eq!(row["parent_transaction"], split_id.as_str());
            assert_eq!(row["source"], a.as_str());
            assert_eq!(row["destination"], legs[index].as_str());
            assert_eq!(row["precise_amount"], json!(expected[index]), "{row}");
            if !skip_queue {
                let child = app.queued_outcome(&text(&row["reference"])).await;
                assert_eq!(child["status"], "APPLIED", "{child}");
                assert_eq!(child["precise_amount"], json!(expected[index]));
            }
        }
        // The request's own id is never a stored row.
        assert_error(
            &app.get(&format!("/transactions/{split_id}")).await,
            StatusCode::NOT_FOUND,
            "TXN_NOT_FOUND",
        );
        assert_eq!(amounts(&app, a).await, Amounts::new(20_000, 10_000, 0, 0));
        for (leg, amount) in legs.iter().zip(expected) {
            assert_eq!(amounts(&app, leg).await, Amounts::new(amount, 0, 0, 0));
        }
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(split_destinations_follow_blnks_allocation_rules);

async fn a_percentage_rounding_residue_goes_to_the_largest_percentage(backend: Backend) {
    // Arrange: 10.01 in thirds (333.63, 333.63, 333.73 cents).
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 4).await;
    let (a, legs) = (&ids[0], &ids[1..]);
    app.fund(a, "USD", 1_001).await;
    let body = split_body(
        "destinations",
        a,
        1_001,
        json!([
            { "identifier": legs[0], "distribution": "33.33%" },
            { "identifier": legs[1], "distribution": "33.34%" },
            { "identifier": legs[2], "distribution": "33.33%" },
        ]),
        true,
    );

    // Act
    let created = app.post("/transactions", body).await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let got: Vec<i64> = join_all(legs.iter().map(|leg| amounts(&app, leg)))
        .await
        .iter()
        .map(|m| m.balance)
        .collect();
    assert_eq!(got, vec![333, 335, 333]);
    assert_eq!(amounts(&app, a).await, Amounts::new(1_001, 1_001, 0, 0));
    app.assert_invariants().await;
}
on_both_backends!(a_percentage_rounding_residue_goes_to_the_largest_percentage);

async fn split_sources_draw_from_several_balances(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 4).await;
        let (x, y, z, to) = (&ids[0], &ids[1], &ids[2], &ids[3]);
        for id in [x, y, z] {
            app.fund(id, "USD", 1_000).await;
        }
        let body = split_body(
            "sources",
            to,
            1_000,
            json!([
                { "identifier": x, "distribution": "1.5" },
                { "identifier": y, "distribution": "30%" },
                { "identifier": z, "precise_distribution": "left" },
            ]),
            skip_queue,
        );
        let reference = text(&body["reference"]);

        // Act
        let created = app.post("/transactions", body).await;

        // Assert
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let sources = created.json["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 3);
        assert!(created.json.get("destinations").is_none());
        for (index, amount) in [(0, 150), (1, 300), (2, 550)] {
            let row = get_transaction(&app, &text(&sources[index]["transaction_id"])).await;
            assert_eq!(row["source"], ids[index].as_str());
            assert_eq!(row["destination"], to.as_str());
            assert_eq!(row["precise_amount"], json!(amount));
            if !skip_queue {
                let child = app
                    .queued_outcome(&format!("{reference}_{}", index + 1))
                    .await;
                assert_eq!(child["status"], "APPLIED", "{child}");
            }
            wait_amounts(&app, &ids[index], Amounts::new(1_000, amount, 0, 0)).await;
        }
        assert_eq!(amounts(&app, to).await, Amounts::new(1_000, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(split_sources_draw_from_several_balances);

async fn an_atomic_split_with_an_unfundable_leg_applies_nothing_on_both_paths(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange: a rich and a poor source, each to give half of 1000.
        let ids = app.balances("USD", 3).await;
        let (rich, poor, to) = (&ids[0], &ids[1], &ids[2]);
        app.fund(rich, "USD", 1_000).await;
        app.fund(poor, "USD", 100).await;
        let mut body = split_body(
            "sources",
            to,
            1_000,
            json!([
                { "identifier": rich, "distribution": "50%" },
                { "identifier": poor, "distribution": "left" },
            ]),
            skip_queue,
        );
        body["atomic"] = json!(true);
        let reference = text(&body["reference"]);

        // Act
        let reply = app.post("/transactions", body).await;

        // Assert
        if skip_queue {
            assert_error(&reply, StatusCode::BAD_REQUEST, "TXN_INSUFFICIENT_FUNDS");
            for leg in 1..=2 {
                let missing = by_reference(&app, &format!("{reference}-{leg}")).await;
                assert_error(&missing, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
            }
        } else {
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
            for leg in 1..=2 {
                let child = app.queued_outcome(&format!("{reference}_{leg}")).await;
                assert_eq!(child["status"], "REJECTED", "leg {leg}: {child}");
            }
        }
        assert_eq!(amounts(&app, rich).await, Amounts::new(1_000, 0, 0, 0));
        assert_eq!(amounts(&app, poor).await, Amounts::new(100, 0, 0, 0));
        assert_eq!(amounts(&app, to).await, Amounts::new(0, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(an_atomic_split_with_an_unfundable_leg_applies_nothing_on_both_paths);

async fn bad_distributions_are_refused_with_txn_invalid_distribution(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    app.fund(a, "USD", 10_000).await;
    let bad = [
        json!([{ "identifier": b, "distribution": "60%" }, { "identifier": c, "distribution": "50%" }]),
        json!([{ "identifier": b, "distribution": "left" }, { "identifier": c, "distribution": "left" }]),
        json!([{ "identifier": b, "distribution": "20" }, { "identifier": c, "distribution": "left" }]),
        json!([{ "identifier": b, "distribution": "50%" }, { "identifier": c, "distribution": "10%" }]),
        json!([{ "identifier": b, "distribution": "abc" }, { "identifier": c, "distribution": "left" }]),
        json!([{ "identifier": b, "distribution": "-5" }, { "identifier": c, "distribution": "left" }]),
        json!([{ "identifier": b, "precise_distribution": "1.5" }, { "identifier": c, "distribution": "left" }]),
    ];
    let rows_before = transaction_count(&app).await;

    for skip_queue in [true, false] {
        for legs in &bad {
            // Act
            let reply = app
                .post(
                    "/transactions",
                    split_body("destinations", a, 1_000, legs.clone(), skip_queue),
                )
                .await;

            // Assert
            assert_error(&reply, StatusCode::BAD_REQUEST, "TXN_INVALID_DISTRIBUTION");
        }
    }
    assert_eq!(transaction_count(&app).await, rows_before);
    assert_eq!(amounts(&app, a).await, Amounts::new(10_000, 0, 0, 0));
}
on_both_backends!(bad_distributions_are_refused_with_txn_invalid_distribution);

// ---------------------------------------------------------------------------------------
// Bulk
// ---------------------------------------------------------------------------------------

async fn a_bulk_request_records_its_items_under_one_batch_id(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 3).await;
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        app.fund(a, "USD", 1_000).await;
        let items = vec![
            transfer(a, b, 100, !skip_queue),
            transfer(a, c, 200, !skip_queue),
            transfer(a, b, 300, !skip_queue),
        ];

        // Act
        let reply = app
            .post(
                "/transactions/bulk",
                json!({ "transactions": items, "skip_queue": skip_queue }),
            )
            .await;

        // Assert
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let batch_id = text(&reply.json["batch_id"]);
        assert!(batch_id.starts_with("bulk_"), "{batch_id}");
        assert_eq!(reply.json["transaction_count"], json!(3));
        assert_eq!(reply.json["status"], "applied");
        let rows = children(&app, &batch_id).await;
        assert_eq!(rows.len(), 3, "{rows:?}");
        let mut by_sequence: Vec<&Value> = rows.iter().collect();
        by_sequence.sort_by_key(|r| r["meta_data"]["sequence"].as_i64());
        for (index, row) in by_sequence.iter().enumerate() {
            assert_eq!(row["meta_data"]["sequence"], json!(index + 1), "{row}");
            assert_eq!(row["reference"], items[index]["reference"]);
            assert_eq!(row["skip_queue"], skip_queue, "batch flag wins: {row}");
            if skip_queue {
                assert_eq!(row["status"], "APPLIED");
            } else {
                assert_eq!(row["status"], "QUEUED");
                let child = app.queued_outcome(&text(&row["reference"])).await;
                assert_eq!(child["status"], "APPLIED", "{child}");
            }
        }
        wait_amounts(&app, a, Amounts::new(1_000, 600, 0, 0)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(400, 0, 0, 0));
        assert_eq!(amounts(&app, c).await, Amounts::new(200, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(a_bulk_request_records_its_items_under_one_batch_id);

async fn an_atomic_bulk_with_an_unfundable_item_applies_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 3).await;
        let (rich, poor, to) = (&ids[0], &ids[1], &ids[2]);
        app.fund(rich, "USD", 1_000).await;
        app.fund(poor, "USD", 100).await;
        let items = vec![
            transfer(rich, to, 100, false),
            transfer(poor, to, 500, false),
            transfer(rich, to, 50, false),
        ];

        // Act
        let reply = app
            .post(
                "/transactions/bulk",
                json!({ "transactions": items, "atomic": true, "skip_queue": skip_queue }),
            )
            .await;

        // Assert
        if skip_queue {
            assert_error(&reply, StatusCode::BAD_REQUEST, "TXN_INSUFFICIENT_FUNDS");
            assert!(text(&reply.json["batch_id"]).starts_with("bulk_"));
            assert_eq!(reply.json["error_detail"]["details"]["index"], json!(1));
            assert!(children(&app, &text(&reply.json["batch_id"]))
                .await
                .is_empty());
        } else {
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
            for item in &items {
                let child = app.queued_outcome(&text(&item["reference"])).await;
                assert_eq!(child["status"], "REJECTED", "{child}");
            }
        }
        assert_eq!(amounts(&app, rich).await, Amounts::new(1_000, 0, 0, 0));
        assert_eq!(amounts(&app, poor).await, Amounts::new(100, 0, 0, 0));
        assert_eq!(amounts(&app, to).await, Amounts::new(0, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(an_atomic_bulk_with_an_unfundable_item_applies_nothing);

/// How a PostgreSQL batch first tries to write (see `store::commit::WriteOrder`).
#[derive(Clone, Copy)]
enum FirstWrite {
    /// Rows inserted first, then guarded balance updates.
    RowsFirst,
    /// One statement: rows and guarded balance updates (small batches).
    Guarded,
}

/// On PostgreSQL: how many group commits were rolled back and redone deciding first.
async fn assert_reorders(app: &TestApp, backend: Backend, count: u32) {
    if backend == Backend::Postgres {
        let metrics = app.get("/metrics").await;
        let line = format!("coffer_commit_reorders_total {count}\n");
        assert!(metrics.text.contains(&line), "{}", metrics.text);
    }
}

async fn a_non_atomic_bulk_stops_at_its_first_refused_item(backend: Backend) {
    non_atomic_bulk_stops_at_its_first_refused_item(backend, FirstWrite::RowsFirst).await;
}
on_both_backends!(a_non_atomic_bulk_stops_at_its_first_refused_item);

async fn a_small_non_atomic_bulk_stops_at_its_first_refused_item(backend: Backend) {
    non_atomic_bulk_stops_at_its_first_refused_item(backend, FirstWrite::Guarded).await;
}
on_both_backends!(a_small_non_atomic_bulk_stops_at_its_first_refused_item);

async fn non_atomic_bulk_stops_at_its_first_refused_item(backend: Backend, first: FirstWrite) {
    // Arrange: on PostgreSQL the batch first writes everything (a guard then fails), and
    // then again deciding item by item.
    let mut settings = test_settings(backend).await;
    if let FirstWrite::RowsFirst = first {
        settings.rows_first_items_min = 1;
    }
    let app = spawn_with(settings).await;
    let ids = app.balances("USD", 3).await;
    let (rich, poor, to) = (&ids[0], &ids[1], &ids[2]);
    app.fund(rich, "USD", 1_000).await;
    app.fund(poor, "USD", 100).await;
    let items = vec![
        transfer(rich, to, 100, true),
        transfer(poor, to, 500, true),
        transfer(rich, to, 50, true),
    ];

    // Act
    let reply = app
        .post(
            "/transactions/bulk",
            json!({ "transactions": items, "skip_queue": true }),
        )
        .await;

    // Assert
    assert_error(&reply, StatusCode::BAD_REQUEST, "TXN_INSUFFICIENT_FUNDS");
    let batch_id = text(&reply.json["batch_id"]);
    assert_eq!(reply.json["error_detail"]["details"]["index"], json!(1));
    assert!(
        text(&reply.json["error"]).contains("not rolled back"),
        "{}",
        reply.text
    );
    let rows = children(&app, &batch_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reference"], items[0]["reference"]);
    assert_eq!(rows[0]["status"], "APPLIED");
    for item in &items[1..] {
        let missing = by_reference(&app, &text(&item["reference"])).await;
        assert_error(&missing, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
    }
    assert_eq!(amounts(&app, rich).await, Amounts::new(1_000, 100, 0, 0));
    assert_eq!(amounts(&app, poor).await, Amounts::new(100, 0, 0, 0));
    assert_eq!(amounts(&app, to).await, Amounts::new(100, 0, 0, 0));
    assert_all_invariants(&app).await;
    // On PostgreSQL the group commit wrote all three rows and failed a balance's guard; the
    // refusal made it start over, deciding first, which is what the rows above show.
    assert_reorders(&app, backend, 1).await;
}

async fn a_large_bulk_reusing_a_stored_reference_stops_there(backend: Backend) {
    // Arrange: on PostgreSQL a large batch leaves its references to the unique index and
    // inserts first; the taken one fails that insert, and the batch is written again
    // checking its references first.
    let mut settings = test_settings(backend).await;
    settings.rows_first_items_min = 1;
    let app = spawn_with(settings).await;
    let ids = app.balances("USD", 2).await;
    let (from, to) = (&ids[0], &ids[1]);
    app.fund(from, "USD", 1_000).await;
    let taken = transfer(from, to, 10, false);
    let (reply, _) = record(&app, taken.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let items = vec![
        transfer(from, to, 100, true),
        transfer(from, to, 200, true),
        transfer(from, to, 300, true),
    ];
    let mut reusing = items.clone();
    reusing[1]["reference"] = taken["reference"].clone();
    let bulk = json!({ "transactions": reusing, "skip_queue": true });

    // Act
    let reply = app.post("/transactions/bulk", bulk.clone()).await;

    // Assert: the first item applied, the rest not, as with a small batch.
    assert_error(&reply, StatusCode::CONFLICT, "TXN_DUPLICATE_REFERENCE");
    assert_eq!(reply.json["error_detail"]["details"]["index"], json!(1));
    let rows = children(&app, &text(&reply.json["batch_id"])).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reference"], items[0]["reference"]);
    let missing = by_reference(&app, &text(&items[2]["reference"])).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "TXN_NOT_FOUND");
    assert_eq!(amounts(&app, from).await, Amounts::new(1_000, 110, 0, 0));
    assert_eq!(amounts(&app, to).await, Amounts::new(110, 0, 0, 0));
    assert_reorders(&app, backend, 1).await;

    // Act: the whole request again, every reference now taken.
    let again = app.post("/transactions/bulk", bulk).await;

    // Assert: refused at its first item, nothing moved.
    assert_error(&again, StatusCode::CONFLICT, "TXN_DUPLICATE_REFERENCE");
    assert_eq!(again.json["error_detail"]["details"]["index"], json!(0));
    assert_eq!(amounts(&app, from).await, Amounts::new(1_000, 110, 0, 0));
    assert_all_invariants(&app).await;
}
on_both_backends!(a_large_bulk_reusing_a_stored_reference_stops_there);

async fn a_bulk_over_many_balances_checks_every_ones_precision(backend: Backend) {
    // Arrange: ten balances of precision 100 (more than a request checks through actors);
    // the first five have live actors (funded), the last five have none yet.
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("precise").await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let body = json!({ "ledger_id": ledger, "currency": "USD", "precision": 100 });
        let reply = app.post("/balances", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        ids.push(text(&reply.json["balance_id"]));
    }
    for id in &ids[..5] {
        let mut funding = transfer("@World", id, 1_000, true);
        funding["precision"] = json!(100);
        funding["allow_overdraft"] = json!(true);
        let reply = app.post("/transactions", funding).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let items = |odd_one: Option<(usize, usize)>| -> Vec<Value> {
        let mut items: Vec<Value> = (0..5)
            .map(|i| {
                let mut item = transfer(&ids[i], &ids[5 + i], 100, true);
                item["precision"] = json!(100);
                item
            })
            .collect();
        if let Some((source, destination)) = odd_one {
            let mut item = transfer(&ids[source], &ids[destination], 100, true);
            item["precision"] = json!(1000);
            items.push(item);
        }
        items
    };

    // Act + Assert: a live balance refusing the precision, then a balance without an actor.
    for odd_one in [(0, 1), (6, 7)] {
        let body = json!({ "transactions": items(Some(odd_one)), "skip_queue": true });
        let reply = app.post("/transactions/bulk", body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "TXN_VALIDATION_ERROR");
        assert!(
            text(&reply.json["error"]).contains("precision"),
            "{}",
            reply.text
        );
        assert!(children(&app, &text(&reply.json["batch_id"]))
            .await
            .is_empty());
    }
    for id in &ids {
        let funded = if ids[..5].contains(id) { 1_000 } else { 0 };
        assert_eq!(amounts(&app, id).await, Amounts::new(funded, 0, 0, 0));
    }

    // The same request without the odd item applies.
    let body = json!({ "transactions": items(None), "skip_queue": true });
    let reply = app.post("/transactions/bulk", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    for i in 0..5 {
        assert_eq!(amounts(&app, &ids[i]).await, Amounts::new(1_000, 100, 0, 0));
        assert_eq!(amounts(&app, &ids[5 + i]).await, Amounts::new(100, 0, 0, 0));
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(a_bulk_over_many_balances_checks_every_ones_precision);

async fn a_run_async_bulk_answers_202_and_applies_in_the_background(backend: Backend) {
    let app = spawn_app(backend).await;
    for skip_queue in [true, false] {
        // Arrange
        let ids = app.balances("USD", 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        app.fund(a, "USD", 1_000).await;
        let items: Vec<Value> = (0..5).map(|_| transfer(a, b, 10, false)).collect();

        // Act
        let reply = app
            .post(
                "/transactions/bulk",
                json!({ "transactions": items, "run_async": true, "skip_queue": skip_queue }),
            )
            .await;

        // Assert
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        assert_eq!(reply.json["status"], "processing");
        assert_eq!(reply.json["message"], "Bulk transaction processing started");
        let batch_id = text(&reply.json["batch_id"]);
        assert!(batch_id.starts_with("bulk_"));
        wait_amounts(&app, a, Amounts::new(1_000, 50, 0, 0)).await;
        assert_eq!(amounts(&app, b).await, Amounts::new(50, 0, 0, 0));
        assert_eq!(children(&app, &batch_id).await.len(), 5);
    }
    assert_all_invariants(&app).await;
}
on_both_backends!(a_run_async_bulk_answers_202_and_applies_in_the_background);

async fn an_empty_or_invalid_bulk_is_refused_and_writes_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let mut invalid = transfer(a, b, 10, true);
    invalid.as_object_mut().unwrap().remove("description");
    let before = snapshot(&app).await;

    // Act
    let empty = app
        .post("/transactions/bulk", json!({ "transactions": [] }))
        .await;
    let missing = app.post("/transactions/bulk", json!({})).await;
    let bad_item = app
        .post(
            "/transactions/bulk",
            json!({
                "transactions": [transfer(a, b, 10, true), transfer(a, b, 10, true), invalid],
                "skip_queue": true,
            }),
        )
        .await;

    // Assert
    assert_error(&empty, StatusCode::BAD_REQUEST, "TXN_BULK_EMPTY");
    assert_error(&missing, StatusCode::BAD_REQUEST, "TXN_BULK_EMPTY");
    assert_error(&bad_item, StatusCode::BAD_REQUEST, "TXN_VALIDATION_ERROR");
    assert_eq!(
        bad_item.json["error_detail"]["details"]["index"],
        json!(2),
        "{}",
        bad_item.text
    );
    assert!(
        text(&bad_item.json["error"]).starts_with("transactions[2]"),
        "{}",
        bad_item.text
    );
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(an_empty_or_invalid_bulk_is_refused_and_writes_nothing);

// ---------------------------------------------------------------------------------------
// Scheduled transactions
// ---------------------------------------------------------------------------------------

async fn a_scheduled_transaction_moves_nothing_until_its_time(backend: Backend) {
    // Arrange
    let app = spawn_fast_due(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let mut bodies = Vec::new();
    for (skip_queue, amount) in [(false, 100), (true, 200)] {
        let mut body = transfer(a, b, amount, skip_queue);
        body["scheduled_for"] = json!(in_seconds(2));
        bodies.push(body);
    }

    // Act
    let mut scheduled = Vec::new();
    for body in &bodies {
        let reply = app.post("/transactions", body.clone()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        scheduled.push(reply);
    }
    let before_time = (amounts(&app, a).await, amounts(&app, b).await);
    let mut early_children = Vec::new();
    for body in &bodies {
        early_children.push(by_reference(&app, &format!("{}_q", text(&body["reference"]))).await);
    }

    // Assert
    for reply in &scheduled {
        assert_eq!(reply.json["status"], "SCHEDULED", "{}", reply.text);
        assert_ne!(reply.json["scheduled_for"], "0001-01-01T00:00:00Z");
        assert_eq!(
            reply.json["meta_data"]["QUEUED_PARENT_TRANSACTION"],
            reply.json["transaction_id"]
        );
    }
    assert_eq!(
        before_time,
        (Amounts::new(1_000, 0, 0, 0), Amounts::new(0, 0, 0, 0))
    );
    for reply in &early_children {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    }
    for (body, reply) in bodies.iter().zip(&scheduled) {
        let child = wait_reference(&app, &format!("{}_q", text(&body["reference"]))).await;
        assert_eq!(child["status"], "APPLIED", "{child}");
        assert_eq!(child["parent_transaction"], reply.json["transaction_id"]);
    }
    wait_amounts(&app, a, Amounts::new(1_000, 300, 0, 0)).await;
    assert_eq!(amounts(&app, b).await, Amounts::new(300, 0, 0, 0));
    let stored = get_transaction(&app, &id_of(&scheduled[0].json)).await;
    assert_eq!(stored["status"], "SCHEDULED");
    assert_all_invariants(&app).await;
}
on_both_backends!(a_scheduled_transaction_moves_nothing_until_its_time);

// ---------------------------------------------------------------------------------------
// Dry runs
// ---------------------------------------------------------------------------------------

fn preview_of<'a>(preview: &'a Value, balance_id: &str) -> &'a Value {
    preview["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["balance_id"] == balance_id)
        .unwrap_or_else(|| panic!("{balance_id} in {preview}"))
}

/// `(current, resulting)` of one field of a previewed balance, as the strings served.
fn change<'a>(preview: &'a Value, balance_id: &str, field: &str) -> (&'a str, &'a str) {
    let balance = preview_of(preview, balance_id);
    (
        balance[format!("current_{field}")].as_str().unwrap(),
        balance[format!("resulting_{field}")].as_str().unwrap(),
    )
}

async fn a_dry_run_create_previews_the_outcome_and_writes_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let dry = |mut body: Value| {
        body["dry_run"] = json!(true);
        body
    };
    let before = snapshot(&app).await;

    // Act
    let fits = app
        .post("/transactions", dry(transfer(a, b, 300, true)))
        .await;
    let queued_hold = app
        .post("/transactions", dry(hold_body(a, b, 300, false)))
        .await;
    let too_much = app
        .post("/transactions", dry(transfer(a, b, 5_000, true)))
        .await;
    let to_nowhere = app
        .post("/transactions", dry(transfer(a, "@Nowhere", 250, false)))
        .await;

    // Assert
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.text);
    let preview = &fits.json;
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["would_apply"], true);
    assert!(preview.get("rejection").is_none(), "{preview}");
    assert_eq!(preview["precise_amount"], "300");
    assert_eq!(preview["currency"], "USD");
    assert_eq!(preview_of(preview, a)["role"], "source");
    assert_eq!(preview_of(preview, b)["role"], "destination");
    assert_eq!(change(preview, a, "balance"), ("1000", "700"));
    assert_eq!(change(preview, a, "available"), ("1000", "700"));
    assert_eq!(change(preview, a, "debit_balance"), ("0", "300"));
    assert_eq!(change(preview, b, "balance"), ("0", "300"));
    assert_eq!(change(preview, b, "credit_balance"), ("0", "300"));

    assert_eq!(queued_hold.status, StatusCode::OK, "{}", queued_hold.text);
    let preview = &queued_hold.json;
    assert_eq!(preview["would_apply"], true);
    assert_eq!(change(preview, a, "balance"), ("1000", "1000"));
    assert_eq!(change(preview, a, "available"), ("1000", "700"));
    assert_eq!(change(preview, a, "inflight_debit_balance"), ("0", "300"));
    assert_eq!(change(preview, b, "inflight_credit_balance"), ("0", "300"));

    assert_eq!(too_much.status, StatusCode::OK, "{}", too_much.text);
    let preview = &too_much.json;
    assert_eq!(preview["would_apply"], false);
    assert_eq!(preview["rejection"]["code"], "TXN_INSUFFICIENT_FUNDS");
    assert_eq!(preview["rejection"]["reason"], "insufficient_funds");
    assert!(preview["rejection"]["message"].is_string());
    assert_eq!(change(preview, a, "balance"), ("1000", "1000"));

    assert_eq!(to_nowhere.status, StatusCode::OK, "{}", to_nowhere.text);
    let preview = &to_nowhere.json;
    assert_eq!(preview["would_apply"], true);
    let nowhere = preview["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["virtual"] == true)
        .unwrap_or_else(|| panic!("a virtual balance in {preview}"));
    assert_eq!(nowhere["role"], "destination");
    assert_eq!(nowhere["current_balance"], "0");
    assert_eq!(nowhere["resulting_balance"], "250");
    assert!(preview_of(preview, a).get("virtual").is_none());

    // Nothing was written, not even the @Nowhere balance.
    let missing = app.get("/balances/indicator/@Nowhere/currency/USD").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(a_dry_run_create_previews_the_outcome_and_writes_nothing);

async fn a_dry_run_split_previews_each_leg_under_its_own_balance(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    let (x, y, z) = (&ids[0], &ids[1], &ids[2]);
    for id in [x, y] {
        app.fund(id, "USD", 1_000).await;
    }
    let dry = |mut body: Value| {
        body["dry_run"] = json!(true);
        body
    };
    let before = snapshot(&app).await;

    // Act
    let from_two = app
        .post(
            "/transactions",
            dry(split_body(
                "sources",
                z,
                1_000,
                json!([
                    { "identifier": x, "distribution": "30%" },
                    { "identifier": y, "distribution": "left" },
                ]),
                true,
            )),
        )
        .await;
    let to_two = app
        .post(
            "/transactions",
            dry(split_body(
                "destinations",
                x,
                400,
                json!([
                    { "identifier": y, "distribution": "25%" },
                    { "identifier": z, "distribution": "left" },
                ]),
                true,
            )),
        )
        .await;
    let single = app
        .post("/transactions", dry(transfer(x, y, 10, true)))
        .await;

    // Assert
    assert_eq!(from_two.status, StatusCode::OK, "{}", from_two.text);
    assert_eq!(from_two.json["would_apply"], true);
    assert_eq!(
        from_two.json["legs"],
        json!([
            { "identifier": x, "role": "source", "precise_amount": "300", "amount": "3" },
            { "identifier": y, "role": "source", "precise_amount": "700", "amount": "7" },
        ])
    );
    assert_eq!(change(&from_two.json, x, "balance"), ("1000", "700"));
    assert_eq!(change(&from_two.json, y, "balance"), ("1000", "300"));
    assert_eq!(change(&from_two.json, z, "balance"), ("0", "1000"));
    assert_eq!(to_two.status, StatusCode::OK, "{}", to_two.text);
    assert_eq!(
        to_two.json["legs"],
        json!([
            { "identifier": y, "role": "destination", "precise_amount": "100", "amount": "1" },
            { "identifier": z, "role": "destination", "precise_amount": "300", "amount": "3" },
        ])
    );
    // A single transfer has no legs, only its two balances.
    assert_eq!(single.status, StatusCode::OK, "{}", single.text);
    assert!(single.json.get("legs").is_none(), "{}", single.text);
    assert_eq!(single.json["balances"].as_array().unwrap().len(), 2);
    assert_eq!(snapshot(&app).await, before);
}
on_both_backends!(a_dry_run_split_previews_each_leg_under_its_own_balance);

async fn dry_runs_of_refunds_bulks_and_inflight_actions_write_nothing(backend: Backend) {
    // Arrange: a transfer (refunded once for real), and an open hold.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 3).await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    app.fund(a, "USD", 1_000).await;
    let (paid, _) = record(&app, transfer(a, b, 300, true)).await;
    let paid = id_of(&paid.json);
    let (refunded, _) = record(&app, transfer(a, b, 100, true)).await;
    let refunded = id_of(&refunded.json);
    let real = app
        .post(
            &format!("/refund-transaction/{refunded}"),
            json!({ "skip_queue": true }),
        )
        .await;
    assert_eq!(real.status, StatusCode::CREATED, "{}", real.text);
    let (_, hold) = open_hold(&app, a, c, 500, true).await;
    let hold_id = id_of(&hold);
    let before = snapshot(&app).await;

    // Act
    let refund = app
        .post(
            &format!("/refund-transaction/{paid}"),
            json!({ "dry_run": true }),
        )
        .await;
    let refund_again = app
        .post(
            &format!("/refund-transaction/{refunded}"),
            json!({ "dry_run": true }),
        )
        .await;
    let bulk_fits = app
        .post(
            "/transactions/bulk",
            json!({
                "transactions": [transfer(a, b, 50, true), transfer(a, c, 60, true)],
                "atomic": true, "dry_run": true,
            }),
        )
        .await;
    let bulk_fails = app
        .post(
            "/transactions/bulk",
            json!({
                "transactions": [transfer(a, b, 50, true), transfer(a, c, 5_000, true)],
                "atomic": true, "dry_run": true,
            }),
        )
        .await;
    let commit = act(
        &app,
        &hold_id,
        json!({ "status": "commit", "precise_amount": 200, "dry_run": true }),
    )
    .await;
    let over_commit = act(
        &app,
        &hold_id,
        json!({ "status": "commit", "precise_amount": 501, "dry_run": true }),
    )
    .await;
    let void = act(
        &app,
        &hold_id,
        json!({ "status": "void", "dry_run": true, "skip_queue": true }),
    )
    .await;

    // Assert
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    assert_eq!(refund.json["would_apply"], true);
    assert_eq!(refund.json["reference"], format!("{paid}_refund"));
    assert_eq!(preview_of(&refund.json, b)["role"], "source");
    assert_eq!(change(&refund.json, b, "balance"), ("300", "0"));
    assert_eq!(change(&refund.json, a, "balance"), ("700", "1000"));

    assert_eq!(refund_again.status, StatusCode::OK, "{}", refund_again.text);
    assert_eq!(refund_again.json["would_apply"], false);
    assert_eq!(refund_again.json["rejection"]["code"], "GEN_CONFLICT");

    assert_eq!(bulk_fits.status, StatusCode::OK, "{}", bulk_fits.text);
    assert_eq!(bulk_fits.json["dry_run"], true);
    assert_eq!(bulk_fits.json["would_apply"], true);
    assert_eq!(
        change(&bulk_fits.json["cumulative"], a, "available"),
        ("200", "90")
    );
    assert_eq!(bulk_fails.status, StatusCode::OK, "{}", bulk_fails.text);
    assert_eq!(bulk_fails.json["would_apply"], false);
    assert_eq!(
        bulk_fails.json["cumulative"]["rejection"]["code"],
        "TXN_INSUFFICIENT_FUNDS"
    );
    // Per item: the second cannot be funded, so (atomic) the first would not apply either.
    let results = bulk_fails.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["would_apply"], false);
    assert_eq!(results[1]["would_apply"], false);
    assert_eq!(results[1]["rejection"]["code"], "TXN_INSUFFICIENT_FUNDS");
    let fitting = bulk_fits.json["results"].as_array().unwrap();
    assert!(fitting
        .iter()
        .all(|r| r["would_apply"] == true && r["rejection"].is_null()));

    assert_eq!(commit.status, StatusCode::OK, "{}", commit.text);
    assert_eq!(commit.json["would_apply"], true);
    assert_eq!(commit.json["operation"], "commit");
    assert_eq!(
        change(&commit.json, a, "inflight_debit_balance"),
        ("500", "300")
    );
    assert_eq!(change(&commit.json, a, "debit_balance"), ("400", "600"));
    assert_eq!(change(&commit.json, c, "credit_balance"), ("0", "200"));
    assert_eq!(over_commit.status, StatusCode::OK, "{}", over_commit.text);
    assert_eq!(over_commit.json["would_apply"], false);
    assert_eq!(
        over_commit.json["rejection"]["code"],
        "TXN_COMMIT_AMOUNT_EXCEEDED"
    );
    assert_eq!(void.status, StatusCode::OK, "{}", void.text);
    assert_eq!(void.json["operation"], "void");
    assert_eq!(
        change(&void.json, c, "inflight_credit_balance"),
        ("500", "0")
    );

    assert_eq!(snapshot(&app).await, before);
    assert!(by_reference(&app, &format!("{paid}_refund"))
        .await
        .status
        .is_client_error());
    assert_all_invariants(&app).await;
}
on_both_backends!(dry_runs_of_refunds_bulks_and_inflight_actions_write_nothing);

// ---------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------

async fn recover_answers_the_count_and_the_threshold_as_a_go_duration(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    record(&app, transfer(&ids[0], &ids[1], 1, false)).await;

    // Act
    let two_minutes = app
        .post("/transactions/recover?threshold=2m", json!({}))
        .await;
    let default = app
        .request(reqwest::Method::POST, "/transactions/recover", None)
        .await;
    let ninety = app
        .post("/transactions/recover?threshold=90s", json!({}))
        .await;
    let bad = app
        .post("/transactions/recover?threshold=soon", json!({}))
        .await;

    // Assert
    assert_eq!(two_minutes.status, StatusCode::OK, "{}", two_minutes.text);
    assert_eq!(
        two_minutes.json,
        json!({ "recovered": 0, "threshold": "2m0s" })
    );
    assert_eq!(default.status, StatusCode::OK, "{}", default.text);
    assert_eq!(default.json["threshold"], "2m0s");
    assert_eq!(ninety.json["threshold"], "1m30s", "{}", ninety.text);
    assert_error(&bad, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST");
}
on_both_backends!(recover_answers_the_count_and_the_threshold_as_a_go_duration);

/// A queued action on a bulk parent that finds one of its holds already busy is refused
/// whole: the holds it marked before are free again.
async fn a_refused_queued_action_on_a_parent_leaves_no_hold_marked(backend: Backend) {
    // Arrange: a bulk of two holds, and a queued void already waiting on the second.
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (a, b) = (&ids[0], &ids[1]);
    app.fund(a, "USD", 1_000).await;
    let bulk = app
        .post(
            "/transactions/bulk",
            json!({ "transactions": [transfer(a, b, 10, true), transfer(a, b, 20, true)],
                    "inflight": true, "skip_queue": true, "atomic": true }),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
    let batch_id = text(&bulk.json["batch_id"]);
    let holds = children(&app, &batch_id).await;
    assert_eq!(holds.len(), 2);
    let by_amount = |amount: i64| {
        holds
            .iter()
            .find(|h| h["precise_amount"] == amount)
            .map(|h| text(&h["transaction_id"]))
            .unwrap()
    };
    let (first, second) = (by_amount(10), by_amount(20));
    assert_eq!(
        act(&app, &second, json!({ "status": "void" })).await.status,
        StatusCode::OK
    );

    // Act: a queued commit of the whole batch is refused (the second hold is busy or voided).
    let refused = act(&app, &batch_id, json!({ "status": "commit" })).await;

    // Assert: refused, and the first hold takes a queued void of its own.
    assert!(refused.status == StatusCode::CONFLICT, "{}", refused.text);
    let void_first = act(&app, &first, json!({ "status": "void" })).await;
    assert_eq!(void_first.status, StatusCode::OK, "{}", void_first.text);
    wait_amounts(&app, a, Amounts::new(1_000, 0, 0, 0)).await;
    assert_all_invariants(&app).await;
}
on_both_backends!(a_refused_queued_action_on_a_parent_leaves_no_hold_marked);
