//! Accounts (Blnk 1.7): opened on a balance or on a new balance in a ledger, named after
//! their identity, read with `include`, listed and filtered; a taken number is a 409 that
//! leaves nothing behind; numbers may come from an account-number service (a real local
//! HTTP server here), whose failures are a clear 500 `ACC_GENERATION_FAILED` storing nothing.

use crate::helpers::{
    assert_error, field_values, spawn_app, spawn_with, test_settings, Backend, TestApp,
};
use crate::identities::{create, full_individual, identity, tokenizing_app};
use crate::on_both_backends;
use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A ledger, an identity (Ada Lovelace) and a USD balance of hers.
async fn owned_balance(app: &TestApp) -> (String, String, String) {
    let ledger = app.create_ledger("Customers").await;
    let identity = create(app, full_individual()).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let balance = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "identity_id": identity }),
        )
        .await;
    assert_eq!(balance.status, StatusCode::CREATED, "{}", balance.text);
    let balance = balance.json["balance_id"].as_str().unwrap().to_owned();
    (ledger, identity, balance)
}

async fn open(app: &TestApp, body: Value) -> Value {
    let reply = app.post("/accounts", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json
}

async fn all_accounts(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/accounts").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json.as_array().expect("a JSON array").clone()
}

/// Accounts and balances: what a refused request must leave as it was.
async fn stored(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    (all_accounts(app).await, app.all_balances().await)
}

async fn an_account_opened_on_a_balance_takes_its_ledger_currency_and_identity(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity, balance) = owned_balance(&app).await;
    let balances_before = app.all_balances().await.len();

    // Act
    let created = app
        .post(
            "/accounts",
            json!({
                "balance_id": balance, "number": "0123456789", "bank_name": "Blnk Bank",
                "meta_data": { "purpose": "salary" },
            }),
        )
        .await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["account_id"].as_str().unwrap();
    assert!(id.starts_with("acc_"), "{id}");
    uuid::Uuid::parse_str(&id[4..]).expect("a uuid after the prefix");
    let created_at = created.json["created_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(created_at).expect("an RFC 3339 time");
    assert_eq!(
        created.json,
        json!({
            "account_id": id, "name": "Ada Lovelace", "number": "0123456789",
            "bank_name": "Blnk Bank", "currency": "USD", "balance_id": balance,
            "identity_id": identity, "ledger_id": ledger,
            "ledger": null, "balance": null, "identity": null,
            "created_at": created_at, "meta_data": { "purpose": "salary" },
        })
    );
    let fetched = app.get(&format!("/accounts/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
    assert_eq!(fetched.json, created.json);
    assert_eq!(
        app.all_balances().await.len(),
        balances_before,
        "no balance created"
    );
}
on_both_backends!(an_account_opened_on_a_balance_takes_its_ledger_currency_and_identity);

async fn the_balances_identity_wins_and_an_organization_names_its_account(backend: Backend) {
    // Arrange: a balance of an organization; a request naming someone else.
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Merchants").await;
    let engines = create(
        &app,
        json!({ "identity_type": "organization", "organization_name": "Analytical Engines Ltd", "first_name": "Ignored" }),
    )
    .await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let someone_else = app.create_identity("Eve").await;
    let balance = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "EUR", "identity_id": engines }),
        )
        .await;
    let balance = balance.json["balance_id"].as_str().unwrap().to_owned();
    let unowned = app.create_balance(&ledger, "GBP").await;

    // Act
    let organization = open(
        &app,
        json!({ "balance_id": balance, "identity_id": someone_else, "number": "1" }),
    )
    .await;
    let borrowed = open(
        &app,
        json!({ "balance_id": unowned, "identity_id": someone_else, "number": "2" }),
    )
    .await;

    // Assert
    assert_eq!(organization["name"], "Analytical Engines Ltd");
    assert_eq!(
        organization["identity_id"],
        engines.as_str(),
        "the balance's"
    );
    assert_eq!(organization["currency"], "EUR");
    assert_eq!(organization["bank_name"], "");
    assert_eq!(organization["meta_data"], Value::Null);
    assert_eq!(borrowed["identity_id"], someone_else.as_str());
    assert_eq!(borrowed["name"], "Eve Test");
    assert_eq!(borrowed["currency"], "GBP");
    assert_eq!(
        app.balance(&unowned).await["identity_id"],
        "",
        "the balance itself is not relinked"
    );
}
on_both_backends!(the_balances_identity_wins_and_an_organization_names_its_account);

async fn an_account_opened_on_a_ledger_creates_a_balance_for_its_identity(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let identity = app.create_identity("Grace").await;
    let before: BTreeSet<String> = app
        .all_balances()
        .await
        .iter()
        .map(|b| b["balance_id"].as_str().unwrap().to_owned())
        .collect();

    // Act
    let account = open(
        &app,
        json!({ "ledger_id": ledger, "identity_id": identity, "currency": "NGN", "number": "4242" }),
    )
    .await;

    // Assert
    let balance_id = account["balance_id"].as_str().unwrap();
    assert!(balance_id.starts_with("bln_"), "{balance_id}");
    assert!(!before.contains(balance_id), "a new balance");
    assert_eq!(app.all_balances().await.len(), before.len() + 1);
    let balance = app.balance(balance_id).await;
    assert_eq!(balance["ledger_id"], ledger.as_str());
    assert_eq!(balance["currency"], "NGN");
    assert_eq!(balance["identity_id"], identity.as_str());
    assert_eq!(balance["balance"], 0);
    assert_eq!(balance["allocation_strategy"], "FIFO");
    assert_eq!(account["ledger_id"], ledger.as_str());
    assert_eq!(account["currency"], "NGN");
    assert_eq!(account["identity_id"], identity.as_str());
    assert_eq!(account["name"], "Grace Test");
    // The new balance belongs to the identity: it may not be deleted now.
    let refused = app.delete(&format!("/identities/{identity}")).await;
    assert_error(&refused, StatusCode::CONFLICT, "GEN_CONFLICT");
}
on_both_backends!(an_account_opened_on_a_ledger_creates_a_balance_for_its_identity);

async fn include_embeds_the_balance_identity_and_ledger(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity_id, balance) = owned_balance(&app).await;
    let account = open(&app, json!({ "balance_id": balance, "number": "77" })).await;
    let id = account["account_id"].as_str().unwrap();
    let expected_balance = app.balance(&balance).await;
    let expected_identity = identity(&app, &identity_id).await;
    let expected_ledger = app.get(&format!("/ledgers/{ledger}")).await.json;

    // Act
    let repeated = app
        .get(&format!(
            "/accounts/{id}?include=balance&include=identity&include=ledger"
        ))
        .await;
    let comma = app
        .get(&format!("/accounts/{id}?include=balance,identity,ledger"))
        .await;
    let only_ledger = app.get(&format!("/accounts/{id}?include=ledger")).await;
    let unknown = app.get(&format!("/accounts/{id}?include=nope")).await;

    // Assert
    for reply in [&repeated, &comma] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let mut expected = account.clone();
        expected["balance"] = expected_balance.clone();
        expected["identity"] = expected_identity.clone();
        expected["ledger"] = expected_ledger.clone();
        assert_eq!(reply.json, expected);
    }
    let mut expected = account.clone();
    expected["ledger"] = expected_ledger;
    assert_eq!(only_ledger.json, expected, "the others stay null");
    assert_eq!(unknown.status, StatusCode::OK, "{}", unknown.text);
    assert_eq!(unknown.json, account);
}
on_both_backends!(include_embeds_the_balance_identity_and_ledger);

async fn accounts_are_listed_whole_paged_and_filtered(backend: Backend) {
    // Arrange: 23 accounts (more than a page of 20), in two currencies and two identities.
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let ada = app.create_identity("Ada").await;
    let grace = app.create_identity("Grace").await;
    let mut all = BTreeSet::new();
    for i in 0..23 {
        let (identity, currency) = if i % 4 == 0 {
            (&grace, "EUR")
        } else {
            (&ada, "USD")
        };
        let account = open(
            &app,
            json!({ "ledger_id": ledger, "identity_id": identity, "currency": currency, "number": format!("N{i:03}") }),
        )
        .await;
        all.insert(account["account_id"].as_str().unwrap().to_owned());
    }

    // Act
    let whole = app.get("/accounts").await;
    let pages = [
        app.get("/accounts?limit=10").await,
        app.get("/accounts?limit=10&offset=10").await,
        app.get("/accounts?offset=20&limit=10").await,
    ];
    let euros = app.get("/accounts?currency_eq=EUR").await;
    let graces = app.get(&format!("/accounts?identity_id_eq={grace}")).await;
    let two_numbers = app.get("/accounts?number_in=N001,N002").await;
    let usd_filtered = app.get("/accounts?currency_eq=USD").await;
    let counted = app
        .post(
            "/accounts/filter",
            json!({
                "filters": [{ "field": "currency", "operator": "eq", "value": "USD" }],
                "include_count": true, "limit": 5, "sort_by": "number", "sort_order": "asc",
            }),
        )
        .await;
    let bare = app
        .post(
            "/accounts/filter",
            json!({ "filters": [{ "field": "number", "operator": "eq", "value": "N004" }] }),
        )
        .await;
    let bad_field = app.get("/accounts?nope_eq=1").await;
    let bad_filter = app
        .post(
            "/accounts/filter",
            json!({ "filters": [{ "field": "nope", "operator": "eq", "value": "x" }] }),
        )
        .await;

    // Assert
    assert_eq!(
        field_values(&whole, "account_id"),
        all,
        "no parameters: every account"
    );
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| field_values(p, "account_id").len())
        .collect();
    assert_eq!(sizes, [10, 10, 3]);
    let union: BTreeSet<String> = pages
        .iter()
        .flat_map(|p| field_values(p, "account_id"))
        .collect();
    assert_eq!(union, all);
    assert_eq!(field_values(&euros, "account_id").len(), 6);
    assert_eq!(
        field_values(&graces, "account_id"),
        field_values(&euros, "account_id")
    );
    assert_eq!(field_values(&two_numbers, "account_id").len(), 2);
    assert_eq!(
        field_values(&usd_filtered, "account_id").len(),
        17,
        "a filtered list is a page of 20"
    );
    assert_eq!(counted.status, StatusCode::OK, "{}", counted.text);
    assert_eq!(counted.json["total_count"], 17);
    let numbers: Vec<&str> = counted.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["N001", "N002", "N003", "N005", "N006"]);
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.text);
    assert_eq!(bare.json.as_array().unwrap().len(), 1, "{}", bare.text);
    assert_eq!(bare.json[0]["number"], "N004");
    assert_error(&bad_field, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_error(&bad_filter, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
}
on_both_backends!(accounts_are_listed_whole_paged_and_filtered);

async fn a_taken_number_is_409_and_leaves_no_balance_behind(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity, balance) = owned_balance(&app).await;
    let first = open(
        &app,
        json!({ "ledger_id": ledger, "identity_id": identity, "currency": "USD", "number": "9000" }),
    )
    .await;
    let before = stored(&app).await;

    // Act
    let on_ledger = app
        .post(
            "/accounts",
            json!({ "ledger_id": ledger, "identity_id": identity, "currency": "EUR", "number": "9000" }),
        )
        .await;
    let on_balance = app
        .post(
            "/accounts",
            json!({ "balance_id": balance, "number": " 9000 " }),
        )
        .await;

    // Assert
    for reply in [&on_ledger, &on_balance] {
        assert_error(reply, StatusCode::CONFLICT, "ACC_DUPLICATE");
        assert_eq!(
            reply.json["error"],
            "account with number '9000' already exists"
        );
    }
    assert_eq!(
        stored(&app).await,
        before,
        "no account and no balance were added"
    );
    assert_eq!(all_accounts(&app).await, vec![first]);
}
on_both_backends!(a_taken_number_is_409_and_leaves_no_balance_behind);

async fn concurrent_accounts_with_one_number_open_one_and_leave_no_balance_behind(
    backend: Backend,
) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity, _) = owned_balance(&app).await;
    let balances_before = app.all_balances().await.len();
    let body = json!({ "ledger_id": ledger, "identity_id": identity, "currency": "USD", "number": "7777" });

    // Act
    let replies =
        futures_util::future::join_all((0..8).map(|_| app.post("/accounts", body.clone()))).await;

    // Assert
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "one account per number");
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_error(reply, StatusCode::CONFLICT, "ACC_DUPLICATE");
    }
    let balances = app.all_balances().await;
    assert_eq!(
        balances.len(),
        balances_before + 1,
        "only the account's balance"
    );
    assert!(balances
        .iter()
        .any(|b| b["balance_id"] == created[0].json["balance_id"]));
    assert_eq!(all_accounts(&app).await, vec![created[0].json.clone()]);
}
on_both_backends!(concurrent_accounts_with_one_number_open_one_and_leave_no_balance_behind);

async fn bad_account_requests_are_400_and_store_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity, balance) = owned_balance(&app).await;
    let ledger2 = app.create_ledger("Other").await;
    let unowned = app.create_balance(&ledger2, "USD").await;
    let before = stored(&app).await;
    let required =
        |field: &str| format!("{field}: {field} is required when balance_id is not provided");
    let not_both =
        |field: &str| format!("{field}: either {field} or balance_id must be provided, not both");
    let validation: Vec<(&str, Value, String)> = vec![
        (
            "nothing",
            json!({ "number": "1" }),
            format!(
                "{}; {}; {}.",
                required("currency"),
                required("identity_id"),
                required("ledger_id")
            ),
        ),
        (
            "no identity",
            json!({ "ledger_id": ledger, "currency": "USD", "number": "1" }),
            format!("{}.", required("identity_id")),
        ),
        (
            "blank currency",
            json!({ "ledger_id": ledger, "identity_id": identity, "currency": "  ", "number": "1" }),
            format!("{}.", required("currency")),
        ),
        (
            "a ledger beside the balance",
            json!({ "balance_id": balance, "ledger_id": ledger, "number": "1" }),
            format!("{}.", not_both("ledger_id")),
        ),
        (
            "a currency and a ledger beside the balance",
            json!({ "balance_id": balance, "currency": "USD", "ledger_id": ledger, "number": "1" }),
            format!("{}; {}.", not_both("currency"), not_both("ledger_id")),
        ),
        (
            "a long number",
            json!({ "balance_id": balance, "number": "9".repeat(65) }),
            "number: longer than 64 characters.".to_owned(),
        ),
        (
            "a long bank name",
            json!({ "balance_id": balance, "number": "1", "bank_name": "b".repeat(257) }),
            "bank_name: longer than 256 characters.".to_owned(),
        ),
        (
            "a long currency",
            json!({ "ledger_id": ledger, "identity_id": identity, "currency": "C".repeat(65), "number": "1" }),
            "currency: longer than 64 characters.".to_owned(),
        ),
        (
            "a balance with no identity, none given",
            json!({ "balance_id": unowned, "number": "1" }),
            format!("identity_id: required, balance '{unowned}' has no identity."),
        ),
        (
            "no number, no generation",
            json!({ "balance_id": balance }),
            "number: cannot be blank (or turn on account_number_generation)".to_owned(),
        ),
        (
            "a blank number",
            json!({ "ledger_id": ledger, "identity_id": identity, "currency": "USD", "number": " " }),
            "number: cannot be blank (or turn on account_number_generation)".to_owned(),
        ),
    ];
    let malformed = [
        ("truncated", "{\"balance_id\":".to_owned()),
        ("an array", "[]".to_owned()),
        (
            "a numeric number",
            json!({ "balance_id": balance, "number": 12345 }).to_string(),
        ),
        (
            "a string meta_data",
            json!({ "balance_id": balance, "number": "1", "meta_data": "x" }).to_string(),
        ),
        (
            "an object ledger",
            json!({ "ledger_id": { "id": ledger }, "identity_id": identity, "currency": "USD", "number": "1" })
                .to_string(),
        ),
    ];

    for (what, body, message) in &validation {
        // Act
        let reply = app.post("/accounts", body.clone()).await;

        // Assert
        assert!(!reply.status.is_server_error(), "{what}: {}", reply.text);
        assert_error(&reply, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
        assert_eq!(reply.json["error"], message.as_str(), "{what}");
        assert_eq!(
            reply.json["errors"],
            message.as_str(),
            "{what}: Blnk's legacy key"
        );
    }
    for (what, body) in &malformed {
        let reply = app.post_raw("/accounts", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.text
        );
        assert_eq!(
            reply.json["error_detail"]["code"], "GEN_MALFORMED_REQUEST",
            "{what}: {}",
            reply.text
        );
    }
    assert_eq!(stored(&app).await, before, "nothing stored");
}
on_both_backends!(bad_account_requests_are_400_and_store_nothing);

async fn unknown_balances_ledgers_identities_and_accounts_are_404(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let (ledger, identity, _) = owned_balance(&app).await;
    let before = stored(&app).await;

    // Act
    let balance = app
        .post(
            "/accounts",
            json!({ "balance_id": "bln_nope", "number": "1" }),
        )
        .await;
    let ledger_reply = app
        .post(
            "/accounts",
            json!({ "ledger_id": "ldg_nope", "identity_id": identity, "currency": "USD", "number": "1" }),
        )
        .await;
    let identity_reply = app
        .post(
            "/accounts",
            json!({ "ledger_id": ledger, "identity_id": "idt_nope", "currency": "USD", "number": "1" }),
        )
        .await;
    let account = app.get("/accounts/acc_nope").await;
    let account_with_includes = app
        .get("/accounts/acc_nope?include=balance,identity,ledger")
        .await;

    // Assert
    assert_error(&balance, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
    assert_error(&ledger_reply, StatusCode::NOT_FOUND, "LGR_NOT_FOUND");
    assert_error(&identity_reply, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
    assert_error(&account, StatusCode::NOT_FOUND, "ACC_NOT_FOUND");
    assert_error(
        &account_with_includes,
        StatusCode::NOT_FOUND,
        "ACC_NOT_FOUND",
    );
    assert_eq!(stored(&app).await, before, "nothing stored");
}
on_both_backends!(unknown_balances_ledgers_identities_and_accounts_are_404);

async fn account_bodies_over_the_limit_are_413_and_store_nothing(backend: Backend) {
    // Arrange
    let mut settings = test_settings(backend).await;
    settings.body_bytes_max = 1024;
    let app = spawn_with(settings).await;
    let (_, _, balance) = owned_balance(&app).await;
    let before = stored(&app).await;

    // Act
    let create = app
        .post(
            "/accounts",
            json!({ "balance_id": balance, "number": "1", "meta_data": { "note": "x".repeat(1100) } }),
        )
        .await;
    let filter = app
        .post("/accounts/filter", json!({ "sort_by": "x".repeat(1100) }))
        .await;

    // Assert
    assert_error(
        &create,
        StatusCode::PAYLOAD_TOO_LARGE,
        "GEN_PAYLOAD_TOO_LARGE",
    );
    assert_error(
        &filter,
        StatusCode::PAYLOAD_TOO_LARGE,
        "GEN_PAYLOAD_TOO_LARGE",
    );
    assert_eq!(stored(&app).await, before);
}
on_both_backends!(account_bodies_over_the_limit_are_413_and_store_nothing);

async fn the_mocked_account_is_blnk_bank_with_twelve_digits(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;

    // Act
    let replies = [
        app.get("/mocked-account").await,
        app.get("/mocked-account").await,
    ];

    // Assert
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let object = reply.json.as_object().expect("an object");
        assert_eq!(object.len(), 2, "{}", reply.text);
        assert_eq!(reply.json["bank_name"], "Blnk Bank");
        let number = reply.json["account_number"]
            .as_str()
            .unwrap_or_else(|| panic!("a string number: {}", reply.text));
        assert_eq!(number.len(), 12, "{number}");
        assert!(number.chars().all(|c| c.is_ascii_digit()), "{number}");
    }
}
on_both_backends!(the_mocked_account_is_blnk_bank_with_twelve_digits);

async fn a_tokenized_identitys_account_is_named_by_its_display_tokens(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let id = create(&app, full_individual()).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = app
        .post_raw(&format!("/identities/{id}/tokenize/FirstName"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let token = identity(&app, &id).await["first_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let display = token
        .strip_prefix("FPT:")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(display, _)| display.to_owned())
        .expect("a format-preserving token");

    // Act
    let account = open(
        &app,
        json!({ "ledger_id": ledger, "identity_id": id, "currency": "USD", "number": "31" }),
    )
    .await;

    // Assert
    assert_eq!(account["name"], format!("{display} Lovelace"));
    let name = account["name"].as_str().unwrap();
    assert!(!name.contains("Ada") && !name.contains("FPT:"), "{name}");
}
on_both_backends!(a_tokenized_identitys_account_is_named_by_its_display_tokens);

/// A local account-number service: `/number` answers fresh numbers; the other routes fail
/// in one way each. Every request's `Authorization` header is kept.
struct NumberService {
    base: String,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

impl NumberService {
    async fn start() -> Self {
        let authorizations: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let kept = authorizations.clone();
        let next = Arc::new(AtomicU64::new(1));
        let server = actix_web::HttpServer::new(move || {
            let kept = kept.clone();
            let next = next.clone();
            actix_web::App::new().default_service(web::to(move |request: HttpRequest| {
                let kept = kept.clone();
                let next = next.clone();
                async move {
                    let authorization = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or_default().to_owned());
                    kept.lock().unwrap().push(authorization);
                    match request.path() {
                        "/number" => HttpResponse::Ok().json(json!({
                            "account_number": format!("{:010}", next.fetch_add(1, Ordering::SeqCst)),
                            "bank_name": "Stub Bank",
                        })),
                        "/slow" => {
                            actix_web::rt::time::sleep(Duration::from_secs(30)).await;
                            HttpResponse::Ok().json(json!({ "account_number": "1", "bank_name": "Slow" }))
                        }
                        "/error" => HttpResponse::InternalServerError()
                            .json(json!({ "error": "database on fire" })),
                        "/garbage" => HttpResponse::Ok()
                            .content_type("application/json")
                            .body("account_number=12345"),
                        "/no-number" => HttpResponse::Ok().json(json!({ "bank_name": "Stub Bank" })),
                        "/blank-number" => HttpResponse::Ok()
                            .json(json!({ "account_number": "  ", "bank_name": "Stub Bank" })),
                        "/long-number" => HttpResponse::Ok()
                            .json(json!({ "account_number": "9".repeat(65), "bank_name": "Stub Bank" })),
                        _ => HttpResponse::NotFound().finish(),
                    }
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("the stub binds");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Self {
            base: format!("http://127.0.0.1:{port}"),
            authorizations,
        }
    }

    fn calls(&self) -> Vec<Option<String>> {
        self.authorizations.lock().unwrap().clone()
    }
}

const AUTHORIZATION: &str = "Bearer stub-token-5150";

/// A server generating account numbers from `url`.
async fn generating_app(backend: Backend, url: &str, timeout_secs: u64) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.account_number_generation = true;
    settings.account_number_service.url = Some(url.to_owned());
    settings.account_number_service.timeout_secs = timeout_secs;
    settings.account_number_service.authorization = Some(
        coffer::configuration::SecretString::from(AUTHORIZATION.to_owned()),
    );
    spawn_with(settings).await
}

async fn a_generated_number_comes_from_the_service_with_its_authorization(backend: Backend) {
    // Arrange
    let service = NumberService::start().await;
    let app = generating_app(backend, &format!("{}/number", service.base), 5).await;
    let (ledger, identity, balance) = owned_balance(&app).await;

    // Act
    let generated = open(&app, json!({ "balance_id": balance })).await;
    let own_bank = open(
        &app,
        json!({ "ledger_id": ledger, "identity_id": identity, "currency": "EUR", "bank_name": "My Bank" }),
    )
    .await;
    let calls_before_given = service.calls().len();
    let given = open(&app, json!({ "balance_id": balance, "number": "given-1" })).await;

    // Assert
    assert_eq!(generated["number"], "0000000001");
    assert_eq!(generated["bank_name"], "Stub Bank");
    assert_eq!(own_bank["number"], "0000000002");
    assert_eq!(own_bank["bank_name"], "My Bank", "the request's bank wins");
    assert_eq!(given["number"], "given-1");
    assert_eq!(given["bank_name"], "");
    assert_eq!(
        service.calls(),
        vec![Some(AUTHORIZATION.to_owned()); 2],
        "one call per generated number, with the configured header; none for a given number"
    );
    assert_eq!(calls_before_given, 2);
    let fetched = app
        .get(&format!(
            "/accounts/{}",
            generated["account_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(fetched.json, generated);
}
on_both_backends!(a_generated_number_comes_from_the_service_with_its_authorization);

async fn a_failing_number_service_is_acc_generation_failed_and_stores_nothing(backend: Backend) {
    // Arrange
    let service = NumberService::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    };
    let failures = [
        (
            format!("{}/slow", service.base),
            "account number generation failed: the account number service did not answer within 1 s",
        ),
        (
            format!("{}/error", service.base),
            "account number generation failed: the account number service answered HTTP 500",
        ),
        (
            format!("{}/missing", service.base),
            "account number generation failed: the account number service answered HTTP 404",
        ),
        (
            format!("{}/garbage", service.base),
            "account number generation failed: the account number service's answer is not \
             {\"account_number\", \"bank_name\"}",
        ),
        (
            format!("{}/no-number", service.base),
            "account number generation failed: the account number service answered no account_number",
        ),
        (
            format!("{}/blank-number", service.base),
            "account number generation failed: the account number service answered no account_number",
        ),
        (
            format!("{}/long-number", service.base),
            "account number generation failed: the account number service answered an \
             account_number that is blank or longer than 64 characters",
        ),
        (
            format!("{closed}/number"),
            "account number generation failed: the account number service could not be reached",
        ),
    ];

    for (url, message) in failures {
        let app = generating_app(backend, &url, 1).await;
        let (ledger, identity, balance) = owned_balance(&app).await;
        let before = stored(&app).await;

        // Act
        let started = Instant::now();
        let on_balance = app
            .post("/accounts", json!({ "balance_id": balance }))
            .await;
        let elapsed = started.elapsed();
        let on_ledger = app
            .post(
                "/accounts",
                json!({ "ledger_id": ledger, "identity_id": identity, "currency": "USD" }),
            )
            .await;

        // Assert
        for reply in [&on_balance, &on_ledger] {
            assert_error(
                reply,
                StatusCode::INTERNAL_SERVER_ERROR,
                "ACC_GENERATION_FAILED",
            );
            assert_eq!(reply.json["error"], message, "{url}");
            for secret in ["127.0.0.1", url.as_str(), AUTHORIZATION, "stub-token"] {
                assert!(!reply.text.contains(secret), "{secret} in {}", reply.text);
            }
        }
        assert!(
            elapsed < Duration::from_secs(10),
            "{url}: the timeout bounds the wait ({elapsed:?})"
        );
        assert_eq!(stored(&app).await, before, "{url}: nothing stored");
    }
    assert!(
        service
            .calls()
            .iter()
            .all(|header| header.as_deref() == Some(AUTHORIZATION)),
        "{:?}",
        service.calls()
    );
}
on_both_backends!(a_failing_number_service_is_acc_generation_failed_and_stores_nothing);

async fn generation_on_without_a_service_url_refuses_an_account_without_a_number(backend: Backend) {
    // Arrange
    let mut settings = test_settings(backend).await;
    settings.account_number_generation = true;
    let app = spawn_with(settings).await;
    let (_, _, balance) = owned_balance(&app).await;
    let before = stored(&app).await;

    // Act
    let refused = app
        .post("/accounts", json!({ "balance_id": balance }))
        .await;

    // Assert
    assert_error(
        &refused,
        StatusCode::INTERNAL_SERVER_ERROR,
        "ACC_GENERATION_FAILED",
    );
    assert_eq!(
        refused.json["error"],
        "account number generation failed: account_number_generation is on but its \
         http_service.url is not set"
    );
    assert_eq!(stored(&app).await, before);
}
on_both_backends!(generation_on_without_a_service_url_refuses_an_account_without_a_number);
