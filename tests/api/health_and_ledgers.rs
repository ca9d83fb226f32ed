use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

async fn health_and_root_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json, json!({ "status": "UP" }));
    let root = app.get("/").await;
    assert_eq!(root.json, json!("server running..."));
}
on_both_backends!(health_and_root_answer);

async fn ledgers_are_created_read_listed_filtered_and_renamed(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post(
            "/ledgers",
            json!({ "name": "Customers", "meta_data": { "region": "eu" } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["ledger_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ldg_"));
    assert_eq!(created.json["meta_data"], json!({ "region": "eu" }));

    let fetched = app.get(&format!("/ledgers/{id}")).await;
    assert_eq!(fetched.json["name"], "Customers");

    let general = app.get("/ledgers/general_ledger_id").await;
    assert_eq!(general.status, StatusCode::OK);
    assert_eq!(general.json["name"], "General Ledger");

    app.create_ledger("Merchants").await;
    let listed = app.get("/ledgers?limit=10&offset=0").await;
    assert_eq!(listed.json.as_array().unwrap().len(), 3);
    let by_name = app.get("/ledgers?name_eq=Merchants").await;
    assert_eq!(by_name.json.as_array().unwrap().len(), 1);
    let by_meta = app.get("/ledgers?meta_data.region_eq=eu").await;
    assert_eq!(by_meta.json[0]["ledger_id"], id.as_str());

    let filtered = app
        .post(
            "/ledgers/filter",
            json!({ "filters": [{ "field": "name", "operator": "ilike", "value": "%cust%" }], "include_count": true }),
        )
        .await;
    assert_eq!(filtered.status, StatusCode::OK, "{}", filtered.text);
    assert_eq!(filtered.json["total_count"], 1);

    let renamed = app
        .put(&format!("/ledgers/{id}"), json!({ "name": "Clients" }))
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/ledgers/{id}")).await.json["name"],
        "Clients"
    );
}
on_both_backends!(ledgers_are_created_read_listed_filtered_and_renamed);

async fn ledger_errors_have_blnk_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let missing = app.get("/ledgers/ldg_nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json["error_detail"]["code"], "LGR_NOT_FOUND");
    let blank = app.post("/ledgers", json!({ "name": "" })).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(blank.json["error_detail"]["code"], "GEN_VALIDATION_ERROR");
    let wrong_type = app.post("/ledgers", json!({ "name": 5 })).await;
    assert_eq!(
        wrong_type.json["error_detail"]["code"],
        "GEN_MALFORMED_REQUEST"
    );
    let bad_limit = app.get("/ledgers?limit=0").await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    let bad_filter = app.get("/ledgers?nope_eq=1").await;
    assert_eq!(bad_filter.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_filter.json["error_detail"]["code"],
        "GEN_VALIDATION_ERROR"
    );
    // Nothing was created by the refused requests.
    assert_eq!(app.get("/ledgers").await.json.as_array().unwrap().len(), 1);
}
on_both_backends!(ledger_errors_have_blnk_codes);

#[actix_web::test]
async fn health_reports_down_when_the_database_is_gone() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    // Drop the test database under the running server.
    let (base, name) = app
        .database_url()
        .rsplit_once('/')
        .map(|(b, n)| (b.to_owned(), n.to_owned()))
        .unwrap();
    let admin = sea_orm::Database::connect(format!("{base}/postgres"))
        .await
        .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        &format!("DROP DATABASE {name} WITH (FORCE)"),
    )
    .await
    .unwrap();
    let health = crate::helpers::wait_for(
        std::time::Duration::from_secs(30),
        "health to report DOWN",
        || async {
            let reply = app.get("/health").await;
            (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply)
        },
    )
    .await;
    assert_eq!(
        health.json,
        json!({ "status": "DOWN", "reason": "database unreachable" })
    );
}
