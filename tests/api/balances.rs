//! Balances: creation, reading (with the ledger and the queued totals), lists, filters and
//! General Ledger indicator balances.

use crate::helpers::{assert_error, spawn_app, Backend, Reply, TestApp};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

const MONEY_FIELDS: [&str; 6] = [
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
];

fn ids_of(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let rows = reply.json.as_array().expect("a JSON array");
    rows.iter()
        .map(|row| row["balance_id"].as_str().unwrap().to_owned())
        .collect()
}

fn as_set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

/// A queued transfer body (the default path) with a given reference.
fn queued_transfer(source: &str, destination: &str, amount: i64, reference: &str) -> Value {
    json!({
        "precise_amount": amount, "currency": "USD", "reference": reference,
        "description": "queued transfer", "source": source, "destination": destination,
    })
}

async fn balance_count(app: &TestApp) -> usize {
    app.all_balances().await.len()
}

async fn a_created_balance_starts_at_zero_with_blnk_defaults(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let identity = app.create_identity("Ada").await;

    // Act
    let plain = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD" }),
        )
        .await;
    let detailed = app
        .post(
            "/balances",
            json!({
                "ledger_id": ledger, "currency": "EUR", "precision": 100,
                "identity_id": identity, "allocation_strategy": "lifo",
                "meta_data": { "customer": "c1" },
            }),
        )
        .await;

    // Assert
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.text);
    let id = plain.json["balance_id"].as_str().unwrap();
    assert!(id.starts_with("bln_"), "{id}");
    uuid::Uuid::parse_str(&id[4..]).expect("a uuid after the prefix");
    for field in MONEY_FIELDS {
        assert_eq!(plain.json[field], json!(0), "{field} of {}", plain.text);
    }
    assert_eq!(plain.json["ledger_id"], ledger.as_str());
    assert_eq!(plain.json["currency"], "USD");
    assert_eq!(plain.json["identity_id"], "");
    assert_eq!(plain.json["allocation_strategy"], "FIFO");
    assert_eq!(plain.json["track_fund_lineage"], false);
    assert!(plain.json["created_at"].is_string());
    assert!(plain.json.get("precision").is_none(), "{}", plain.text);
    assert!(plain.json.get("ledger").is_none(), "{}", plain.text);
    assert!(plain.json.get("queued_debit_balance").is_none());

    assert_eq!(detailed.status, StatusCode::CREATED, "{}", detailed.text);
    assert_eq!(detailed.json["precision"], json!(100));
    assert_eq!(detailed.json["identity_id"], identity.as_str());
    assert_eq!(detailed.json["allocation_strategy"], "LIFO");
    assert_eq!(detailed.json["meta_data"], json!({ "customer": "c1" }));

    // What GET serves is what POST answered.
    let fetched = app.get(&format!("/balances/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
    assert_eq!(fetched.json, plain.json);
    let detailed_id = detailed.json["balance_id"].as_str().unwrap();
    let fetched = app.get(&format!("/balances/{detailed_id}")).await;
    assert_eq!(fetched.json, detailed.json);
    assert_eq!(fetched.json["precision"], json!(100));
}
on_both_backends!(a_created_balance_starts_at_zero_with_blnk_defaults);

async fn an_unknown_balance_is_404(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;

    // Act
    let missing = app.get("/balances/bln_does_not_exist").await;
    let missing_indicator = app.get("/balances/indicator/@Nobody/currency/USD").await;

    // Assert
    assert_error(&missing, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
    assert_error(&missing_indicator, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
}
on_both_backends!(an_unknown_balance_is_404);

async fn include_ledger_embeds_the_balances_ledger(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Wallets").await;
    let id = app.create_balance(&ledger, "USD").await;

    // Act
    let with_ledger = app.get(&format!("/balances/{id}?include=ledger")).await;
    let without = app.get(&format!("/balances/{id}")).await;

    // Assert
    assert_eq!(with_ledger.status, StatusCode::OK, "{}", with_ledger.text);
    assert_eq!(with_ledger.json["ledger"]["ledger_id"], ledger.as_str());
    assert_eq!(with_ledger.json["ledger"]["name"], "Wallets");
    assert!(with_ledger.json["ledger"]["created_at"].is_string());
    assert!(without.json.get("ledger").is_none(), "{}", without.text);
}
on_both_backends!(include_ledger_embeds_the_balances_ledger);

async fn with_queued_adds_the_queued_totals_which_drain_to_zero(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    let (source, destination) = (&ids[0], &ids[1]);
    app.fund(source, "USD", 1_000).await;
    let reference = format!("queued-{}", uuid::Uuid::new_v4());

    // Act
    let queued = app
        .post(
            "/transactions",
            queued_transfer(source, destination, 300, &reference),
        )
        .await;
    let early = app
        .get(&format!("/balances/{source}?with_queued=true"))
        .await;
    app.queued_outcome(&reference).await;
    let late_source = app
        .get(&format!("/balances/{source}?with_queued=true"))
        .await;
    let late_destination = app
        .get(&format!("/balances/{destination}?with_queued=true"))
        .await;
    let plain = app.get(&format!("/balances/{source}")).await;

    // Assert
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    assert_eq!(early.status, StatusCode::OK, "{}", early.text);
    // The worker may already have applied it: the totals are 300 or 0.
    let early_debit = early.json["queued_debit_balance"]
        .as_i64()
        .expect("an integer queued_debit_balance");
    assert!(early_debit == 300 || early_debit == 0, "{}", early.text);
    assert!(
        early.json["queued_credit_balance"].is_i64(),
        "{}",
        early.text
    );
    for reply in [&late_source, &late_destination] {
        assert_eq!(
            reply.json["queued_debit_balance"],
            json!(0),
            "{}",
            reply.text
        );
        assert_eq!(
            reply.json["queued_credit_balance"],
            json!(0),
            "{}",
            reply.text
        );
    }
    assert_eq!(late_source.json["balance"], json!(700));
    assert_eq!(late_destination.json["balance"], json!(300));
    assert!(plain.json.get("queued_debit_balance").is_none());
    assert!(plain.json.get("queued_credit_balance").is_none());
}
on_both_backends!(with_queued_adds_the_queued_totals_which_drain_to_zero);

async fn balances_are_listed_in_pages(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let created = app.balances("USD", 5).await;

    // Act
    let everything = app.get("/balances?limit=100").await;
    let first = app.get("/balances?limit=2&offset=0").await;
    let second = app.get("/balances?limit=2&offset=2").await;
    let third = app.get("/balances?limit=2&offset=4").await;
    let beyond = app.get("/balances?limit=2&offset=10").await;
    let default_page = app.get("/balances").await;

    // Assert
    assert_eq!(as_set(&ids_of(&everything)), as_set(&created));
    let (first, second, third) = (ids_of(&first), ids_of(&second), ids_of(&third));
    assert_eq!((first.len(), second.len(), third.len()), (2, 2, 1));
    let paged: Vec<String> = [first, second, third].concat();
    assert_eq!(as_set(&paged).len(), 5, "pages do not overlap");
    assert_eq!(as_set(&paged), as_set(&created));
    assert!(ids_of(&beyond).is_empty());
    assert_eq!(ids_of(&default_page).len(), 5);
}
on_both_backends!(balances_are_listed_in_pages);

async fn balances_are_filtered_by_query_parameters(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Filters").await;
    let other_ledger = app.create_ledger("Other").await;
    let mut usd = Vec::new();
    for (amount, customer) in [(100, "c1"), (300, "c2"), (200, "c1")] {
        let reply = app
            .post(
                "/balances",
                json!({ "ledger_id": ledger, "currency": "USD", "meta_data": { "customer": customer } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let id = reply.json["balance_id"].as_str().unwrap().to_owned();
        app.fund(&id, "USD", amount).await;
        usd.push(id);
    }
    let eur = app.create_balance(&ledger, "EUR").await;
    let elsewhere = app.create_balance(&other_ledger, "USD").await;

    // Act
    let by_currency = app.get("/balances?currency_eq=EUR").await;
    let by_ledger = app.get(&format!("/balances?ledger_id_eq={ledger}")).await;
    let rich = app
        .get(&format!("/balances?ledger_id_eq={ledger}&balance_gt=150"))
        .await;
    let by_meta = app.get("/balances?meta_data.customer_eq=c1").await;
    let by_meta_and_amount = app
        .get("/balances?meta_data.customer_eq=c1&balance_gte=200")
        .await;
    let bad_field = app.get("/balances?colour_eq=red").await;
    let bad_number = app.get("/balances?balance_gt=lots").await;

    // Assert
    assert_eq!(ids_of(&by_currency), vec![eur.clone()]);
    let mut in_ledger = usd.clone();
    in_ledger.push(eur);
    assert_eq!(as_set(&ids_of(&by_ledger)), as_set(&in_ledger));
    assert!(!ids_of(&by_ledger).contains(&elsewhere));
    assert_eq!(
        as_set(&ids_of(&rich)),
        as_set(&[usd[1].clone(), usd[2].clone()])
    );
    assert_eq!(
        as_set(&ids_of(&by_meta)),
        as_set(&[usd[0].clone(), usd[2].clone()])
    );
    assert_eq!(ids_of(&by_meta_and_amount), vec![usd[2].clone()]);
    assert_error(&bad_field, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_error(&bad_number, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
}
on_both_backends!(balances_are_filtered_by_query_parameters);

async fn the_filter_endpoint_counts_sorts_and_pages(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Sorted").await;
    let mut ids = Vec::new();
    for amount in [100, 300, 200, 400] {
        let id = app.create_balance(&ledger, "USD").await;
        app.fund(&id, "USD", amount).await;
        ids.push(id);
    }
    let in_ledger = json!([{ "field": "ledger_id", "operator": "eq", "value": ledger }]);

    // Act
    let counted = app
        .post(
            "/balances/filter",
            json!({ "filters": in_ledger, "include_count": true, "sort_by": "balance",
                    "sort_order": "desc", "limit": 2 }),
        )
        .await;
    let second_page = app
        .post(
            "/balances/filter",
            json!({ "filters": in_ledger, "sort_by": "balance", "sort_order": "desc",
                    "limit": 2, "offset": 2 }),
        )
        .await;
    let ascending = app
        .post(
            "/balances/filter",
            json!({ "filters": in_ledger, "sort_by": "balance", "sort_order": "asc" }),
        )
        .await;
    let either = app
        .post(
            "/balances/filter",
            json!({ "filters": [
                        { "field": "balance", "operator": "eq", "value": 100 },
                        { "field": "balance", "operator": "eq", "value": 400 }],
                    "logical_operator": "or" }),
        )
        .await;
    let within = app
        .post(
            "/balances/filter",
            json!({ "filters": [{ "field": "balance", "operator": "between", "value": "150|350" }],
                    "include_count": true }),
        )
        .await;
    let bad_sort = app
        .post("/balances/filter", json!({ "sort_by": "colour" }))
        .await;
    let bad_order = app
        .post("/balances/filter", json!({ "sort_order": "sideways" }))
        .await;
    let bad_limit = app.post("/balances/filter", json!({ "limit": 0 })).await;

    // Assert
    assert_eq!(counted.status, StatusCode::OK, "{}", counted.text);
    assert_eq!(counted.json["total_count"], json!(4));
    let top: Vec<i64> = counted.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(top, vec![400, 300]);
    let next: Vec<i64> = second_page
        .json
        .as_array()
        .expect("a bare array without include_count")
        .iter()
        .map(|b| b["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(next, vec![200, 100]);
    let up: Vec<i64> = ascending
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(up, vec![100, 200, 300, 400]);
    assert_eq!(
        as_set(&ids_of(&either)),
        as_set(&[ids[0].clone(), ids[3].clone()])
    );
    assert_eq!(within.json["total_count"], json!(2), "{}", within.text);
    assert_error(&bad_sort, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_eq!(
        bad_order.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_order.text
    );
    assert_eq!(
        bad_limit.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_limit.text
    );
}
on_both_backends!(the_filter_endpoint_counts_sorts_and_pages);

async fn indicator_balances_are_found_by_indicator_and_currency(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let id = app.balances("USD", 1).await.remove(0);
    app.fund(&id, "USD", 500).await;

    // Act
    let plain = app.get("/balances/indicator/@World/currency/USD").await;
    let encoded = app.get("/balances/indicator/%40World/currency/USD").await;
    let other_currency = app.get("/balances/indicator/@World/currency/EUR").await;

    // Assert
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
    assert_eq!(plain.json["indicator"], "@World");
    assert_eq!(plain.json["currency"], "USD");
    assert_eq!(plain.json["ledger_id"], "general_ledger_id");
    assert_eq!(plain.json["balance"], json!(-500));
    assert_eq!(plain.json["debit_balance"], json!(500));
    assert_eq!(plain.json["credit_balance"], json!(0));
    assert_eq!(encoded.status, StatusCode::OK, "{}", encoded.text);
    assert_eq!(encoded.json, plain.json);
    assert_error(&other_currency, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
}
on_both_backends!(indicator_balances_are_found_by_indicator_and_currency);

async fn a_general_ledger_indicator_balance_can_be_created_once_per_currency(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let fees = json!({ "ledger_id": "general_ledger_id", "indicator": "@Fees", "currency": "USD" });

    // Act
    let created = app.post("/balances", fees.clone()).await;
    let duplicate = app.post("/balances", fees).await;
    let other_currency = app
        .post(
            "/balances",
            json!({ "ledger_id": "general_ledger_id", "indicator": "@Fees", "currency": "EUR" }),
        )
        .await;
    let found = app.get("/balances/indicator/@Fees/currency/USD").await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["indicator"], "@Fees");
    assert_eq!(created.json["ledger_id"], "general_ledger_id");
    assert_error(&duplicate, StatusCode::CONFLICT, "GEN_CONFLICT");
    assert_eq!(
        other_currency.status,
        StatusCode::CREATED,
        "{}",
        other_currency.text
    );
    assert_eq!(found.json["balance_id"], created.json["balance_id"]);
    assert_eq!(balance_count(&app).await, 2);
}
on_both_backends!(a_general_ledger_indicator_balance_can_be_created_once_per_currency);

async fn an_explicit_indicator_balance_is_the_one_transactions_use(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let created = app
        .post(
            "/balances",
            json!({ "ledger_id": "general_ledger_id", "indicator": "@Fees", "currency": "USD" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let fees = created.json["balance_id"].as_str().unwrap().to_owned();
    let customer = app.balances("USD", 1).await.remove(0);
    app.fund(&customer, "USD", 100).await;

    // Act
    let charged = app
        .post(
            "/transactions",
            json!({ "precise_amount": 30, "currency": "USD", "reference": "fee-1",
                    "description": "fee", "source": customer, "destination": "@Fees",
                    "skip_queue": true }),
        )
        .await;
    let world_again = app
        .post(
            "/balances",
            json!({ "ledger_id": "general_ledger_id", "indicator": "@World", "currency": "USD" }),
        )
        .await;

    // Assert
    assert_eq!(charged.status, StatusCode::CREATED, "{}", charged.text);
    assert_eq!(charged.json["destination"], fees.as_str());
    assert_eq!(app.amount(&fees).await, 30);
    // @World USD was created by the funding; creating it explicitly now conflicts.
    assert_error(&world_again, StatusCode::CONFLICT, "GEN_CONFLICT");
    app.assert_invariants().await;
}
on_both_backends!(an_explicit_indicator_balance_is_the_one_transactions_use);

async fn concurrent_creations_of_one_indicator_balance_give_one_balance(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let body = json!({ "ledger_id": "general_ledger_id", "indicator": "@Race", "currency": "USD" });

    // Act
    let replies =
        futures_util::future::join_all((0..10).map(|_| app.post("/balances", body.clone()))).await;

    // Assert
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1);
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_error(reply, StatusCode::CONFLICT, "GEN_CONFLICT");
    }
    assert_eq!(balance_count(&app).await, 1);
}
on_both_backends!(concurrent_creations_of_one_indicator_balance_give_one_balance);

async fn invalid_balance_requests_are_400_and_create_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Strict").await;

    // Act
    let indicator_elsewhere = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "indicator": "@Fees", "currency": "USD" }),
        )
        .await;
    let bad_indicator = app
        .post(
            "/balances",
            json!({ "ledger_id": "general_ledger_id", "indicator": "Fees", "currency": "USD" }),
        )
        .await;
    let unknown_ledger = app
        .post(
            "/balances",
            json!({ "ledger_id": "ldg_missing", "currency": "USD" }),
        )
        .await;
    let no_currency = app.post("/balances", json!({ "ledger_id": ledger })).await;
    let nothing = app.post("/balances", json!({})).await;
    let bad_strategy = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "allocation_strategy": "RANDOM" }),
        )
        .await;
    let bad_meta = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "meta_data": "x" }),
        )
        .await;
    let bad_precision = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "precision": 1.5 }),
        )
        .await;

    // Assert
    assert_error(
        &indicator_elsewhere,
        StatusCode::BAD_REQUEST,
        "BAL_VALIDATION_ERROR",
    );
    assert_error(
        &bad_indicator,
        StatusCode::BAD_REQUEST,
        "BAL_VALIDATION_ERROR",
    );
    assert_error(
        &unknown_ledger,
        StatusCode::BAD_REQUEST,
        "BAL_VALIDATION_ERROR",
    );
    assert_error(
        &no_currency,
        StatusCode::BAD_REQUEST,
        "BAL_VALIDATION_ERROR",
    );
    assert!(
        no_currency.json["error_detail"]["message"]
            .as_str()
            .unwrap()
            .contains("currency"),
        "{}",
        no_currency.text
    );
    assert_error(&nothing, StatusCode::BAD_REQUEST, "BAL_VALIDATION_ERROR");
    let message = nothing.json["error"].as_str().unwrap();
    assert!(
        message.contains("ledger_id") && message.contains("currency"),
        "{message}"
    );
    assert_error(
        &bad_strategy,
        StatusCode::BAD_REQUEST,
        "BAL_VALIDATION_ERROR",
    );
    assert_error(&bad_meta, StatusCode::BAD_REQUEST, "GEN_MALFORMED_REQUEST");
    assert_eq!(
        bad_precision.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_precision.text
    );
    assert_eq!(balance_count(&app).await, 0);
}
on_both_backends!(invalid_balance_requests_are_400_and_create_nothing);

/// Two servers on one database first use the same `@indicator`s at the same moment: each
/// creates them in its own batch (applied now) or in the commit that stores its queued
/// requests, and both must end up with the one balance per indicator (the loser of the insert
/// race reads the winner's row and writes its requests against it) and apply every transfer.
async fn two_servers_first_using_one_indicator_share_its_balance(skip_queue: bool) {
    // Arrange
    let first =
        crate::helpers::spawn_with(crate::helpers::test_settings(Backend::Postgres).await).await;
    let mut settings = crate::helpers::test_settings(Backend::Postgres).await;
    settings.database_url = Some(first.database_url().to_owned());
    let second = crate::helpers::spawn_with(settings).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let transfer = |i: usize| {
        json!({
            "precise_amount": 1, "currency": "USD", "reference": format!("race-{run}-{i}"),
            "source": format!("@src-{run}-{}", i % 5), "destination": format!("@dst-{run}-{}", i % 5),
            "allow_overdraft": true, "skip_queue": skip_queue, "description": "race",
        })
    };

    // Act
    let replies = futures_util::future::join_all((0..100).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.post("/transactions", transfer(i))
    }))
    .await;
    if !skip_queue {
        for i in 0..100 {
            let outcome = first.queued_outcome(&format!("race-{run}-{i}")).await;
            assert_eq!(outcome["status"], "APPLIED", "{outcome}");
        }
    }

    // Assert
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    for side in ["source", "destination"] {
        let named: HashSet<&str> = replies
            .iter()
            .map(|r| r.json[side].as_str().unwrap())
            .collect();
        assert_eq!(
            named.len(),
            5,
            "one balance per indicator, whichever server created it"
        );
    }
    let stored = first.all_balances().await;
    assert_eq!(stored.len(), 10, "no balance besides the ten indicators'");
    first.assert_invariants().await;
}

#[actix_web::test]
async fn two_servers_first_using_one_indicator_share_its_balance_applied_now() {
    two_servers_first_using_one_indicator_share_its_balance(true).await;
}

#[actix_web::test]
async fn two_servers_first_using_one_indicator_share_its_balance_queued() {
    two_servers_first_using_one_indicator_share_its_balance(false).await;
}
