//! Hostile input gets a 4xx in Blnk's shape, never a 5xx, and changes nothing.

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;
use serde_json::json;

async fn hostile_input_is_refused_with_a_client_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let ids = app.balances("USD", 2).await;
    app.fund(&ids[0], "USD", 100).await;
    let before = (app.all_balances().await, app.all_transactions().await.len());

    let mut with_nul = app.transfer(&ids[0], &ids[1], 5, true);
    with_nul["reference"] = json!("a\u{0}b");
    let replies = vec![
        app.post("/transactions", with_nul).await,
        app.get("/balances/bln_%00x").await,
        app.get("/transactions?reference_eq=%00").await,
        app.get("/balances/%FF%FE").await,
        app.get("/transactions?offset=18446744073709551615").await,
        app.get("/balances?balance_gt=1e99999").await,
        app.post("/balances/filter", json!({ "filters": [{ "field": "balance", "operator": "gt", "value": "1e999" }] })).await,
        app.post("/balances/filter", json!({ "limit": 1000 })).await,
        app.post("/transactions/filter", json!({ "offset": -1 })).await,
        app.post("/ledgers", json!({ "name": "x".repeat(5000) })).await,
        app.post("/transactions", json!({ "precise_amount": 1, "currency": "USD", "reference": "r", "description": "d", "source": ids[0], "destination": ids[1], "meta_data": "text" })).await,
        app.post("/transactions", json!({ "precise_amount": 1, "precision": 1e300, "currency": "USD", "reference": "r", "description": "d", "source": ids[0], "destination": ids[1] })).await,
    ];
    for (index, reply) in replies.iter().enumerate() {
        assert!(
            reply.status.is_client_error(),
            "case {index}: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            reply.json["error"].is_string(),
            "case {index}: {}",
            reply.text
        );
        assert!(
            reply.json["error_detail"]["code"].is_string(),
            "case {index}: {}",
            reply.text
        );
    }
    assert_eq!(
        (app.all_balances().await, app.all_transactions().await.len()),
        before
    );
}
on_both_backends!(hostile_input_is_refused_with_a_client_error);
