//! Identities (Blnk 1.6): creation with every field, reading, lists and filters, full
//! replace, deletion (refused while a balance or account is linked), relinking a balance to
//! another identity, and bad input: always a 4xx with Blnk's code, never a change.

use crate::helpers::{
    assert_error, field_values, spawn_app, spawn_with, test_settings, Backend, TestApp,
};
use crate::on_both_backends;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Go's zero time: Blnk's `dob` when unset.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The secret the tokenizing test servers use (32 bytes).
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Every text field of an identity, by JSON name.
pub(crate) const TEXT_FIELDS: [&str; 15] = [
    "identity_type",
    "organization_name",
    "category",
    "first_name",
    "last_name",
    "other_names",
    "gender",
    "email_address",
    "phone_number",
    "nationality",
    "street",
    "country",
    "state",
    "post_code",
    "city",
];

/// A test server that can tokenize.
pub(crate) async fn tokenizing_app(backend: Backend) -> TestApp {
    let mut settings = test_settings(backend).await;
    settings.tokenization_secret =
        Some(coffer::configuration::SecretString::from(SECRET.to_owned()));
    spawn_with(settings).await
}

/// An individual with every field set.
pub(crate) fn full_individual() -> Value {
    json!({
        "identity_type": "individual",
        "organization_name": "",
        "category": "retail",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "other_names": "Augusta King",
        "gender": "female",
        "email_address": "ada@example.com",
        "phone_number": "+2348012345678",
        "nationality": "British",
        "street": "12 St James's Square",
        "country": "GB",
        "state": "London",
        "post_code": "SW1Y 4JH",
        "city": "London",
        "dob": "1815-12-10T00:00:00Z",
        "meta_data": { "tier": "gold", "score": 7 },
    })
}

/// Creates an identity from `body`; returns what the server answered.
pub(crate) async fn create(app: &TestApp, body: Value) -> Value {
    let reply = app.post("/identities", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json
}

pub(crate) async fn identity(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/identities/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

/// Every identity (the unpaged list), by id.
pub(crate) async fn all_identities(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/identities").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let mut rows = reply.json.as_array().expect("a JSON array").clone();
    rows.sort_by_key(|row| row["identity_id"].as_str().unwrap().to_owned());
    rows
}

/// What a test may compare before and after a refused request.
async fn everything(app: &TestApp) -> (Vec<Value>, Vec<Value>, Value) {
    let accounts = app.get("/accounts").await;
    assert_eq!(accounts.status, StatusCode::OK, "{}", accounts.text);
    (
        all_identities(app).await,
        app.all_balances().await,
        accounts.json,
    )
}

/// A time in Blnk's RFC 3339 form.
fn assert_rfc3339(value: &Value) {
    let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|_| panic!("RFC 3339: {text}"));
}

/// `body` as the server serves it: every field, `""` for unset text, the zero `dob`.
fn served(body: &Value, identity_id: &str, created_at: &Value) -> Value {
    let mut expected = json!({ "identity_id": identity_id, "created_at": created_at });
    for field in TEXT_FIELDS {
        expected[field] = body.get(field).cloned().unwrap_or(json!(""));
    }
    expected["dob"] = body.get("dob").cloned().unwrap_or(json!(ZERO_TIME));
    expected["meta_data"] = body.get("meta_data").cloned().unwrap_or(Value::Null);
    expected
}

async fn an_individual_is_created_with_every_field_and_read_back(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let body = full_individual();

    // Act
    let created = app.post("/identities", body.clone()).await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["identity_id"].as_str().unwrap();
    assert!(id.starts_with("idt_"), "{id}");
    uuid::Uuid::parse_str(&id[4..]).expect("a uuid after the prefix");
    assert_rfc3339(&created.json["created_at"]);
    assert_eq!(
        created.json,
        served(&body, id, &created.json["created_at"]),
        "every field as given"
    );
    assert_eq!(identity(&app, id).await, created.json);
}
on_both_backends!(an_individual_is_created_with_every_field_and_read_back);

async fn an_organization_is_created_with_a_chosen_id_and_a_date_only_dob(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let chosen = format!("idt_{}", uuid::Uuid::new_v4());
    let body = json!({
        "identity_id": chosen, "identity_type": "Organization",
        "organization_name": "Analytical Engines Ltd", "category": "merchant",
        "email_address": "ops@engines.example", "country": "GB", "dob": "2001-02-03",
    });

    // Act
    let created = app.post("/identities", body).await;

    // Assert
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let expected = served(
        &json!({
            "identity_type": "organization",
            "organization_name": "Analytical Engines Ltd", "category": "merchant",
            "email_address": "ops@engines.example", "country": "GB",
            "dob": "2001-02-03T00:00:00Z",
        }),
        &chosen,
        &created.json["created_at"],
    );
    assert_eq!(
        created.json, expected,
        "the type lowercased, the date at midnight UTC"
    );
    assert_eq!(identity(&app, &chosen).await, expected);
}
on_both_backends!(an_organization_is_created_with_a_chosen_id_and_a_date_only_dob);

async fn unset_fields_are_empty_and_an_unset_dob_is_the_zero_time(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;

    // Act
    let minimal = app
        .post("/identities", json!({ "identity_type": "individual" }))
        .await;
    let blanks = app
        .post(
            "/identities",
            json!({ "identity_type": " individual ", "identity_id": "", "dob": "", "meta_data": null }),
        )
        .await;
    let offset = app
        .post(
            "/identities",
            json!({ "identity_type": "individual", "dob": "1990-05-17T10:30:00+02:00" }),
        )
        .await;

    // Assert
    for reply in [&minimal, &blanks] {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let id = reply.json["identity_id"].as_str().unwrap();
        assert!(id.starts_with("idt_"), "an empty id is generated: {id}");
        assert_eq!(
            reply.json,
            served(
                &json!({ "identity_type": "individual" }),
                id,
                &reply.json["created_at"]
            )
        );
    }
    assert_eq!(offset.status, StatusCode::CREATED, "{}", offset.text);
    assert_eq!(offset.json["dob"], "1990-05-17T08:30:00Z", "stored in UTC");
}
on_both_backends!(unset_fields_are_empty_and_an_unset_dob_is_the_zero_time);

async fn the_list_is_whole_without_parameters_and_paged_or_filtered_with_them(backend: Backend) {
    // Arrange: 25 identities, more than a default page of 20.
    let app = spawn_app(backend).await;
    let mut created = BTreeSet::new();
    for i in 0..25 {
        let country = ["NG", "GH", "KE"][i % 3];
        let first_name = if i < 2 { "Ada" } else { "Grace" };
        let body =
            json!({ "identity_type": "individual", "first_name": first_name, "country": country });
        created.insert(
            create(&app, body).await["identity_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // Act
    let whole = app.get("/identities").await;
    let mut pages = Vec::new();
    for offset in [0, 10, 20] {
        pages.push(
            app.get(&format!("/identities?limit=10&offset={offset}"))
                .await,
        );
    }
    let first_page = app.get("/identities?limit=3").await;
    let by_name = app.get("/identities?first_name_eq=Ada").await;
    let by_countries = app.get("/identities?country_in=NG,GH").await;
    let by_countries_paged = app.get("/identities?country_in=NG,GH&limit=100").await;
    let kenyans_or_adas = app
        .get("/identities?country_eq=KE&first_name_eq=Ada&logical_operator=or")
        .await;

    // Assert
    assert_eq!(
        field_values(&whole, "identity_id"),
        created,
        "no parameters: every identity"
    );
    let page_ids: Vec<BTreeSet<String>> = pages
        .iter()
        .map(|p| field_values(p, "identity_id"))
        .collect();
    assert_eq!(
        page_ids.iter().map(BTreeSet::len).collect::<Vec<_>>(),
        [10, 10, 5]
    );
    let union: BTreeSet<String> = page_ids.iter().flatten().cloned().collect();
    assert_eq!(union, created, "the pages cover every identity once");
    assert_eq!(field_values(&first_page, "identity_id").len(), 3);
    assert_eq!(field_values(&by_name, "identity_id").len(), 2);
    for row in by_name.json.as_array().unwrap() {
        assert_eq!(row["first_name"], "Ada");
    }
    // NG or GH: 17 of the 25; a filtered list is a page of 20 by default.
    assert_eq!(field_values(&by_countries, "identity_id").len(), 17);
    assert_eq!(field_values(&by_countries_paged, "identity_id").len(), 17);
    for row in by_countries.json.as_array().unwrap() {
        assert!(["NG", "GH"].contains(&row["country"].as_str().unwrap()));
    }
    // KE (8 of them) or Ada (identities 0 and 1, neither in KE).
    assert_eq!(field_values(&kenyans_or_adas, "identity_id").len(), 10);
}
on_both_backends!(the_list_is_whole_without_parameters_and_paged_or_filtered_with_them);

async fn a_filtered_list_is_a_default_page_of_twenty(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    for _ in 0..22 {
        create(
            &app,
            json!({ "identity_type": "individual", "country": "NG" }),
        )
        .await;
    }

    // Act
    let filtered = app.get("/identities?country_eq=NG").await;
    let whole = app.get("/identities").await;

    // Assert
    assert_eq!(
        field_values(&filtered, "identity_id").len(),
        20,
        "Blnk's default page with filters"
    );
    assert_eq!(field_values(&whole, "identity_id").len(), 22);
}
on_both_backends!(a_filtered_list_is_a_default_page_of_twenty);

async fn identities_are_filtered_by_post_with_and_without_a_count(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ada = create(&app, full_individual()).await;
    let mut grace = full_individual();
    grace["first_name"] = json!("Grace");
    grace["country"] = json!("US");
    let grace = create(&app, grace).await;
    create(
        &app,
        json!({ "identity_type": "organization", "organization_name": "Engines" }),
    )
    .await;

    // Act
    let counted = app
        .post(
            "/identities/filter",
            json!({
                "filters": [{ "field": "identity_type", "operator": "eq", "value": "individual" }],
                "include_count": true, "sort_by": "first_name", "sort_order": "asc",
            }),
        )
        .await;
    let plain = app
        .post(
            "/identities/filter",
            json!({ "filters": [{ "field": "country", "operator": "in", "values": ["US", "KE"] }] }),
        )
        .await;
    let by_meta = app
        .post(
            "/identities/filter",
            json!({ "filters": [{ "field": "meta_data.tier", "operator": "eq", "value": "gold" }], "limit": 1 }),
        )
        .await;
    let bad_field = app
        .post(
            "/identities/filter",
            json!({ "filters": [{ "field": "nope", "operator": "eq", "value": "x" }] }),
        )
        .await;
    let bad_order = app
        .post("/identities/filter", json!({ "sort_order": "sideways" }))
        .await;

    // Assert
    assert_eq!(counted.status, StatusCode::OK, "{}", counted.text);
    assert_eq!(counted.json["total_count"], 2, "{}", counted.text);
    assert_eq!(
        counted.json["data"],
        json!([ada.clone(), grace.clone()]),
        "sorted by first name"
    );
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
    assert_eq!(plain.json, json!([grace]));
    assert_eq!(
        field_values(&by_meta, "identity_id").len(),
        1,
        "limit 1 of the two gold identities"
    );
    assert_error(&bad_field, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_error(&bad_order, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST");
}
on_both_backends!(identities_are_filtered_by_post_with_and_without_a_count);

async fn bad_list_queries_are_400(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    app.create_identity("Ada").await;

    // Act
    let zero = app.get("/identities?limit=0").await;
    let word = app.get("/identities?offset=abc").await;
    let unknown = app.get("/identities?nope_eq=1").await;

    // Assert
    assert_error(&zero, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST");
    assert_error(&word, StatusCode::BAD_REQUEST, "GEN_BAD_REQUEST");
    assert_error(&unknown, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
    assert_eq!(
        unknown.json["errors"][0]["Param"], "nope",
        "{}",
        unknown.text
    );
}
on_both_backends!(bad_list_queries_are_400);

async fn put_replaces_the_whole_identity(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let created = create(&app, full_individual()).await;
    let id = created["identity_id"].as_str().unwrap();
    let replacement = json!({
        "identity_id": format!("idt_{}", uuid::Uuid::new_v4()),
        "identity_type": "individual", "first_name": "Augusta", "city": "Paris",
        "dob": "1990-01-02", "meta_data": { "note": "moved" },
    });

    // Act
    let replaced = app.put(&format!("/identities/{id}"), replacement).await;

    // Assert
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        replaced.json,
        json!({ "message": "Identity updated successfully" })
    );
    let expected = served(
        &json!({
            "identity_type": "individual", "first_name": "Augusta", "city": "Paris",
            "dob": "1990-01-02T00:00:00Z", "meta_data": { "note": "moved" },
        }),
        id,
        &created["created_at"],
    );
    assert_eq!(
        identity(&app, id).await,
        expected,
        "omitted fields are empty, the id in the path wins, created_at stays"
    );
    assert_eq!(
        all_identities(&app).await.len(),
        1,
        "nothing else was created"
    );
}
on_both_backends!(put_replaces_the_whole_identity);

async fn an_identity_read_and_put_back_stays_the_same(backend: Backend) {
    // Arrange: one with every field, one with no dob (served as the zero time).
    let app = spawn_app(backend).await;
    let full = create(&app, full_individual()).await;
    let bare = create(
        &app,
        json!({ "identity_type": "organization", "organization_name": "Engines" }),
    )
    .await;

    for before in [full, bare] {
        let id = before["identity_id"].as_str().unwrap();

        // Act
        let replaced = app.put(&format!("/identities/{id}"), before.clone()).await;

        // Assert
        assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
        assert_eq!(identity(&app, id).await, before);
    }
}
on_both_backends!(an_identity_read_and_put_back_stays_the_same);

async fn a_deleted_identity_is_gone(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let gone = app.create_identity("Ada").await;
    let kept = app.create_identity("Grace").await;

    // Act
    let deleted = app.delete(&format!("/identities/{gone}")).await;
    let again = app.delete(&format!("/identities/{gone}")).await;

    // Assert
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    assert_eq!(
        deleted.json,
        json!({ "message": "Identity deleted successfully" })
    );
    assert_error(
        &app.get(&format!("/identities/{gone}")).await,
        StatusCode::NOT_FOUND,
        "IDT_NOT_FOUND",
    );
    assert_error(&again, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
    let left: Vec<Value> = all_identities(&app).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["identity_id"], kept.as_str());
}
on_both_backends!(a_deleted_identity_is_gone);

async fn an_identity_linked_to_a_balance_or_an_account_is_not_deleted(backend: Backend) {
    // Arrange: Ada owns a balance; Grace only an account (on a balance with no identity).
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let ada = app.create_identity("Ada").await;
    let grace = app.create_identity("Grace").await;
    let other = app.create_identity("Other").await;
    let owned = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "identity_id": ada }),
        )
        .await;
    assert_eq!(owned.status, StatusCode::CREATED, "{}", owned.text);
    let owned = owned.json["balance_id"].as_str().unwrap().to_owned();
    let unowned = app.create_balance(&ledger, "USD").await;
    let account = app
        .post(
            "/accounts",
            json!({ "balance_id": unowned, "identity_id": grace, "number": "1000000001" }),
        )
        .await;
    assert_eq!(account.status, StatusCode::CREATED, "{}", account.text);
    let before = everything(&app).await;

    // Act
    let ada_refused = app.delete(&format!("/identities/{ada}")).await;
    let grace_refused = app.delete(&format!("/identities/{grace}")).await;
    let after_refusals = everything(&app).await;
    let relinked = app
        .put(
            &format!("/balances/{owned}/identity"),
            json!({ "identity_id": other }),
        )
        .await;
    let ada_deleted = app.delete(&format!("/identities/{ada}")).await;

    // Assert
    assert_error(&ada_refused, StatusCode::CONFLICT, "GEN_CONFLICT");
    assert_eq!(
        ada_refused.json["error"],
        format!("identity {ada} is still linked to 1 balance(s) and 0 account(s)")
    );
    assert_error(&grace_refused, StatusCode::CONFLICT, "GEN_CONFLICT");
    assert_eq!(
        grace_refused.json["error"],
        format!("identity {grace} is still linked to 0 balance(s) and 1 account(s)")
    );
    assert_eq!(
        after_refusals, before,
        "both identities stay, nothing changed"
    );
    assert_eq!(relinked.status, StatusCode::OK, "{}", relinked.text);
    assert_eq!(ada_deleted.status, StatusCode::OK, "{}", ada_deleted.text);
    assert_error(
        &app.get(&format!("/identities/{ada}")).await,
        StatusCode::NOT_FOUND,
        "IDT_NOT_FOUND",
    );
}
on_both_backends!(an_identity_linked_to_a_balance_or_an_account_is_not_deleted);

async fn a_balance_is_relinked_and_embeds_its_identity_on_request(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let ada = app.create_identity("Ada").await;
    let grace = create(&app, full_individual()).await;
    let grace_id = grace["identity_id"].as_str().unwrap();
    let balance = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "identity_id": ada }),
        )
        .await;
    let balance = balance.json["balance_id"].as_str().unwrap().to_owned();
    let unowned = app.create_balance(&ledger, "EUR").await;

    // Act
    let relinked = app
        .put(
            &format!("/balances/{balance}/identity"),
            json!({ "identity_id": grace_id }),
        )
        .await;
    let with_identity = app
        .get(&format!("/balances/{balance}?include=identity"))
        .await;
    let with_both = app
        .get(&format!("/balances/{balance}?include=identity,ledger"))
        .await;
    let without = app.get(&format!("/balances/{balance}")).await;
    let unowned_with_identity = app
        .get(&format!("/balances/{unowned}?include=identity"))
        .await;

    // Assert
    assert_eq!(relinked.status, StatusCode::OK, "{}", relinked.text);
    assert_eq!(
        relinked.json,
        json!({ "message": "Balance identity updated successfully" })
    );
    assert_eq!(
        with_identity.status,
        StatusCode::OK,
        "{}",
        with_identity.text
    );
    assert_eq!(with_identity.json["identity_id"], grace_id);
    assert_eq!(with_identity.json["identity"], grace, "the whole identity");
    assert_eq!(with_both.json["identity"], grace);
    assert_eq!(with_both.json["ledger"]["ledger_id"], ledger.as_str());
    assert_eq!(without.json["identity_id"], grace_id);
    assert!(without.json.get("identity").is_none(), "{}", without.text);
    assert_eq!(unowned_with_identity.status, StatusCode::OK);
    assert!(
        unowned_with_identity.json.get("identity").is_none(),
        "{}",
        unowned_with_identity.text
    );
}
on_both_backends!(a_balance_is_relinked_and_embeds_its_identity_on_request);

async fn relinking_refuses_unknown_ids_and_bad_bodies_and_changes_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let ada = app.create_identity("Ada").await;
    let balance = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "identity_id": ada }),
        )
        .await;
    let balance = balance.json["balance_id"].as_str().unwrap().to_owned();
    let path = format!("/balances/{balance}/identity");
    let before = everything(&app).await;

    // Act
    let unknown_identity = app.put(&path, json!({ "identity_id": "idt_nope" })).await;
    let unknown_balance = app
        .put("/balances/bln_nope/identity", json!({ "identity_id": ada }))
        .await;
    let missing = app.put(&path, json!({})).await;
    let blank = app.put(&path, json!({ "identity_id": "  " })).await;
    let empty_body = app.request(Method::PUT, &path, None).await;
    let malformed = app
        .request(Method::PUT, &path, Some("{\"identity_id\":".into()))
        .await;
    let mistyped = app.put(&path, json!({ "identity_id": 7 })).await;

    // Assert
    assert_error(&unknown_identity, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
    assert_error(&unknown_balance, StatusCode::NOT_FOUND, "BAL_NOT_FOUND");
    for reply in [&missing, &blank, &empty_body] {
        assert_error(reply, StatusCode::BAD_REQUEST, "GEN_VALIDATION_ERROR");
        assert_eq!(reply.json["error"], "identity_id is required");
    }
    assert_error(&malformed, StatusCode::BAD_REQUEST, "GEN_MALFORMED_REQUEST");
    assert_error(&mistyped, StatusCode::BAD_REQUEST, "GEN_MALFORMED_REQUEST");
    assert_eq!(everything(&app).await, before);
}
on_both_backends!(relinking_refuses_unknown_ids_and_bad_bodies_and_changes_nothing);

async fn a_balance_for_an_unknown_identity_is_refused(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let before = everything(&app).await;

    // Act
    let refused = app
        .post(
            "/balances",
            json!({ "ledger_id": ledger, "currency": "USD", "identity_id": "idt_nope" }),
        )
        .await;

    // Assert
    assert_error(&refused, StatusCode::BAD_REQUEST, "BAL_VALIDATION_ERROR");
    assert_eq!(
        refused.json["error"],
        "Invalid identity ID: identity 'idt_nope' does not exist"
    );
    assert_eq!(everything(&app).await, before);
}
on_both_backends!(a_balance_for_an_unknown_identity_is_refused);

/// Bodies that are not JSON objects.
fn not_objects() -> Vec<(&'static str, String)> {
    vec![
        ("truncated", "{\"identity_type\": \"individual\"".to_owned()),
        ("not JSON", "identity_type=individual".to_owned()),
        ("an array", "[]".to_owned()),
        ("a string", "\"individual\"".to_owned()),
        (
            "NUL",
            "{\"identity_type\":\"individual\",\"first_name\":\"a\\u0000\"}".to_owned(),
        ),
    ]
}

/// Identity bodies that are not JSON, or JSON of the wrong types.
fn malformed_identities() -> Vec<(&'static str, String)> {
    let mut bodies = not_objects();
    for (what, field, value) in [
        ("a numeric name", "first_name", json!(5)),
        ("a boolean type", "identity_type", json!(true)),
        ("a numeric dob", "dob", json!(19900517)),
        ("an object city", "city", json!({ "name": "Lagos" })),
        ("a string meta_data", "meta_data", json!("gold")),
        ("an array meta_data", "meta_data", json!(["gold"])),
        ("a numeric id", "identity_id", json!(12)),
    ] {
        let mut body = json!({ "identity_type": "individual", "first_name": "Ada" });
        body[field] = value;
        bodies.push((what, body.to_string()));
    }
    bodies
}

async fn malformed_and_mistyped_identity_bodies_are_400_and_change_nothing(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    let id = create(&app, full_individual()).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = everything(&app).await;
    let mut malformed_filters = not_objects();
    for (what, body) in [
        ("a string filters", json!({ "filters": "first_name" })),
        ("a string limit", json!({ "limit": "ten" })),
        ("a string include_count", json!({ "include_count": "yes" })),
        (
            "a numeric field",
            json!({ "filters": [{ "field": 5, "operator": "eq", "value": "x" }] }),
        ),
        (
            "string values",
            json!({ "filters": [{ "field": "country", "operator": "in", "values": "NG" }] }),
        ),
    ] {
        malformed_filters.push((what, body.to_string()));
    }
    let endpoints = [
        (
            Method::POST,
            "/identities".to_owned(),
            malformed_identities(),
        ),
        (
            Method::PUT,
            format!("/identities/{id}"),
            malformed_identities(),
        ),
        (
            Method::POST,
            "/identities/filter".to_owned(),
            malformed_filters,
        ),
    ];

    for (method, path, bodies) in &endpoints {
        for (what, body) in bodies.clone() {
            // Act
            let reply = app.request(method.clone(), path, Some(body)).await;

            // Assert
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{method} {path} with {what}: {}",
                reply.text
            );
            assert_eq!(
                reply.json["error_detail"]["code"], "GEN_MALFORMED_REQUEST",
                "{method} {path} with {what}: {}",
                reply.text
            );
        }
    }
    for path in [
        format!("/identities/{id}/tokenize"),
        format!("/identities/{id}/detokenize"),
    ] {
        for body in [
            "{\"fields\":",
            "{\"fields\": \"FirstName\"}",
            "{\"fields\": [1]}",
        ] {
            let reply = app.post_raw(&path, body).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "GEN_MALFORMED_REQUEST");
        }
    }
    assert_eq!(everything(&app).await, before);
}
on_both_backends!(malformed_and_mistyped_identity_bodies_are_400_and_change_nothing);

async fn invalid_identity_fields_are_idt_validation_errors_and_change_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let id = create(&app, full_individual()).await["identity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = everything(&app).await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let next_year = (chrono::Utc::now() + chrono::Duration::days(366))
        .format("%Y-%m-%d")
        .to_string();
    let mut invalid: Vec<(String, Value, &str)> = vec![
        (
            "no type".into(),
            json!({ "first_name": "Ada" }),
            "identity_type: must be one of individual, organization.",
        ),
        (
            "an unknown type".into(),
            json!({ "identity_type": "person" }),
            "identity_type: must be one of individual, organization.",
        ),
        (
            "a bad dob".into(),
            json!({ "identity_type": "individual", "dob": "17/05/1990" }),
            "dob: must be an RFC 3339 time or a date (YYYY-MM-DD).",
        ),
        (
            "an impossible date".into(),
            json!({ "identity_type": "individual", "dob": "1990-02-30" }),
            "dob: must be an RFC 3339 time or a date (YYYY-MM-DD).",
        ),
        (
            "a dob tomorrow".into(),
            json!({ "identity_type": "individual", "dob": tomorrow }),
            "dob: cannot be in the future.",
        ),
        (
            "a dob next year".into(),
            json!({ "identity_type": "individual", "dob": next_year }),
            "dob: cannot be in the future.",
        ),
        (
            "several problems".into(),
            json!({ "identity_type": "robot", "dob": "soon", "city": "c".repeat(1025) }),
            "dob: must be an RFC 3339 time or a date (YYYY-MM-DD); identity_type: must be one of \
             individual, organization; city: the length must be no more than 1024.",
        ),
    ];
    let messages: Vec<String> = TEXT_FIELDS
        .iter()
        .map(|field| format!("{field}: the length must be no more than 1024."))
        .collect();
    for (field, message) in TEXT_FIELDS.iter().zip(&messages).skip(1) {
        let mut body = json!({ "identity_type": "individual" });
        // Multibyte characters: the bound is in characters.
        body[*field] = json!("é".repeat(1025));
        invalid.push((format!("a long {field}"), body, message));
    }

    for (what, body, message) in &invalid {
        // Act
        let created = app.post("/identities", body.clone()).await;
        let replaced = app.put(&format!("/identities/{id}"), body.clone()).await;

        // Assert
        for reply in [&created, &replaced] {
            assert!(!reply.status.is_server_error(), "{what}: {}", reply.text);
            assert_error(reply, StatusCode::BAD_REQUEST, "IDT_VALIDATION_ERROR");
            assert_eq!(reply.json["error"], *message, "{what}");
        }
    }
    assert_eq!(everything(&app).await, before);

    // At the bound, every field is accepted.
    let mut longest = json!({ "identity_type": "individual" });
    for field in TEXT_FIELDS.iter().skip(1) {
        longest[*field] = json!("é".repeat(1024));
    }
    let accepted = app.post("/identities", longest.clone()).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.text);
    let replaced = app.put(&format!("/identities/{id}"), longest).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
}
on_both_backends!(invalid_identity_fields_are_idt_validation_errors_and_change_nothing);

async fn bad_chosen_ids_are_refused_and_a_taken_one_gets_blnks_code(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let chosen = format!("idt_{}", uuid::Uuid::new_v4());
    let first = create(
        &app,
        json!({ "identity_id": chosen, "identity_type": "individual", "first_name": "Ada" }),
    )
    .await;
    let before = everything(&app).await;

    // Act
    let taken = app
        .post(
            "/identities",
            json!({ "identity_id": chosen, "identity_type": "individual", "first_name": "Eve" }),
        )
        .await;
    let no_prefix = app
        .post(
            "/identities",
            json!({ "identity_id": uuid::Uuid::new_v4().to_string(), "identity_type": "individual" }),
        )
        .await;
    let not_uuid = app
        .post(
            "/identities",
            json!({ "identity_id": "idt_nope", "identity_type": "individual" }),
        )
        .await;
    let other_prefix = app
        .post(
            "/identities",
            json!({ "identity_id": format!("bln_{}", uuid::Uuid::new_v4()), "identity_type": "individual" }),
        )
        .await;

    // Assert
    assert_error(&taken, StatusCode::BAD_REQUEST, "IDT_VALIDATION_ERROR");
    assert_eq!(
        taken.json["error"],
        format!("Identity already exists: {chosen}")
    );
    for reply in [&no_prefix, &other_prefix] {
        assert_error(reply, StatusCode::BAD_REQUEST, "IDT_VALIDATION_ERROR");
        assert_eq!(
            reply.json["error"],
            "identity_id must start with the 'idt_' prefix"
        );
    }
    assert_error(&not_uuid, StatusCode::BAD_REQUEST, "IDT_VALIDATION_ERROR");
    assert_eq!(
        not_uuid.json["error"],
        "identity_id suffix after 'idt_' must be a valid UUID"
    );
    assert_eq!(everything(&app).await, before);
    assert_eq!(
        identity(&app, &chosen).await,
        first,
        "the first one is kept"
    );
}
on_both_backends!(bad_chosen_ids_are_refused_and_a_taken_one_gets_blnks_code);

async fn unknown_identities_are_404_on_every_endpoint(backend: Backend) {
    // Arrange
    let app = tokenizing_app(backend).await;
    app.create_identity("Ada").await;
    let before = everything(&app).await;

    for id in [format!("idt_{}", uuid::Uuid::new_v4()), "nope".to_owned()] {
        // Act
        let replies = [
            app.get(&format!("/identities/{id}")).await,
            app.put(
                &format!("/identities/{id}"),
                json!({ "identity_type": "individual" }),
            )
            .await,
            app.delete(&format!("/identities/{id}")).await,
            app.get(&format!("/identities/{id}/tokenized-fields")).await,
            app.post_raw(&format!("/identities/{id}/tokenize/FirstName"), "")
                .await,
            app.post(
                &format!("/identities/{id}/tokenize"),
                json!({ "fields": ["FirstName"] }),
            )
            .await,
            app.get(&format!("/identities/{id}/detokenize/FirstName"))
                .await,
            app.post(&format!("/identities/{id}/detokenize"), json!({}))
                .await,
        ];

        // Assert
        for reply in &replies {
            assert_error(reply, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
            assert_eq!(
                reply.json["error"],
                format!("Identity with ID '{id}' not found")
            );
        }
    }
    assert_eq!(everything(&app).await, before);
}
on_both_backends!(unknown_identities_are_404_on_every_endpoint);

async fn identity_bodies_over_the_limit_are_413_and_change_nothing(backend: Backend) {
    // Arrange
    let mut settings = test_settings(backend).await;
    settings.body_bytes_max = 512;
    settings.tokenization_secret =
        Some(coffer::configuration::SecretString::from(SECRET.to_owned()));
    let app = spawn_with(settings).await;
    let id = app.create_identity("Ada").await;
    let ledger = app.create_ledger("Customers").await;
    let balance = app.create_balance(&ledger, "USD").await;
    let before = everything(&app).await;
    let big = json!({ "identity_type": "individual", "first_name": "x".repeat(600) });
    let big_fields = json!({ "fields": vec!["FirstName"; 100] });

    // Act
    let replies = [
        ("create", app.post("/identities", big.clone()).await),
        (
            "replace",
            app.put(&format!("/identities/{id}"), big.clone()).await,
        ),
        ("filter", app.post("/identities/filter", big.clone()).await),
        (
            "tokenize",
            app.post(&format!("/identities/{id}/tokenize"), big_fields.clone())
                .await,
        ),
        (
            "detokenize",
            app.post(&format!("/identities/{id}/detokenize"), big_fields)
                .await,
        ),
        (
            "relink",
            app.put(
                &format!("/balances/{balance}/identity"),
                json!({ "identity_id": "x".repeat(600) }),
            )
            .await,
        ),
        (
            "garbage",
            app.post_raw("/identities", &"{".repeat(2_000)).await,
        ),
    ];

    // Assert
    for (what, reply) in &replies {
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            reply.text
        );
        assert_error(
            reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "GEN_PAYLOAD_TOO_LARGE",
        );
    }
    assert_eq!(everything(&app).await, before);
    let small = app
        .post("/identities", json!({ "identity_type": "individual" }))
        .await;
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.text);
}
on_both_backends!(identity_bodies_over_the_limit_are_413_and_change_nothing);

async fn a_delete_racing_new_links_never_leaves_them_linked_to_nothing(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let ledger = app.create_ledger("Customers").await;
    let mut deleted_rounds = 0;
    let mut refused_rounds = 0;

    for round in 0..30 {
        let id = app.create_identity("Ada").await;
        let relinked = app.create_balance(&ledger, "USD").await;

        let (relink_path, delete_path) = (
            format!("/balances/{relinked}/identity"),
            format!("/identities/{id}"),
        );

        // Act: a new balance, a relink and a new account for the identity, and its delete.
        let (created, relink, account, deleted) = futures_util::join!(
            app.post(
                "/balances",
                json!({ "ledger_id": ledger, "currency": "USD", "identity_id": id }),
            ),
            app.put(&relink_path, json!({ "identity_id": id })),
            app.post(
                "/accounts",
                json!({ "ledger_id": ledger, "identity_id": id, "currency": "EUR", "number": format!("race-{round}") }),
            ),
            app.delete(&delete_path),
        );

        // Assert: the delete and a link never both succeed.
        let linked = [
            created.status == StatusCode::CREATED,
            relink.status == StatusCode::OK,
            account.status == StatusCode::CREATED,
        ];
        for reply in [&created, &relink, &account, &deleted] {
            assert!(!reply.status.is_server_error(), "{}", reply.text);
        }
        if deleted.status == StatusCode::OK {
            deleted_rounds += 1;
            assert_eq!(linked, [false; 3], "deleted, yet linked: {linked:?}");
            assert_error(&created, StatusCode::BAD_REQUEST, "BAL_VALIDATION_ERROR");
            assert_error(&relink, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
            assert_error(&account, StatusCode::NOT_FOUND, "IDT_NOT_FOUND");
        } else {
            refused_rounds += 1;
            assert_error(&deleted, StatusCode::CONFLICT, "GEN_CONFLICT");
            assert!(linked.contains(&true), "refused with no link: {linked:?}");
            identity(&app, &id).await;
        }
    }
    // Every balance and account names an identity that exists.
    let linked_balances = app.all_balances().await;
    for balance in linked_balances.iter().filter(|b| b["identity_id"] != "") {
        let id = balance["balance_id"].as_str().unwrap();
        let reply = app.get(&format!("/balances/{id}?include=identity")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.json["identity"]["identity_id"],
            balance["identity_id"]
        );
    }
    for account in app.get("/accounts").await.json.as_array().unwrap() {
        let id = account["account_id"].as_str().unwrap();
        let reply = app.get(&format!("/accounts/{id}?include=identity")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    assert_eq!(deleted_rounds + refused_rounds, 30);
}
on_both_backends!(a_delete_racing_new_links_never_leaves_them_linked_to_nothing);
