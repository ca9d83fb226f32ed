//! One module per resource. Handlers parse, make one call into the ledger core, and map the
//! reply; no SQL and no business rules here.

pub mod backup;
pub mod balances;
pub mod ledgers;
pub mod lifecycle;
pub mod observability;
pub mod system;
pub mod transactions;

use actix_web::web;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(system::root))
        .route("/health", web::get().to(system::health))
        .route("/metrics", web::get().to(observability::metrics))
        .route("/backup", web::get().to(backup::backup))
        .route("/ledgers", web::post().to(ledgers::create))
        .route("/ledgers", web::get().to(ledgers::list))
        .route("/ledgers/filter", web::post().to(ledgers::filter))
        .route("/ledgers/{id}", web::get().to(ledgers::get))
        .route("/ledgers/{id}", web::put().to(ledgers::rename))
        .route("/balances", web::post().to(balances::create))
        .route("/balances", web::get().to(balances::list))
        .route("/balances/filter", web::post().to(balances::filter))
        .route(
            "/balances/indicator/{indicator}/currency/{currency}",
            web::get().to(balances::by_indicator),
        )
        .route("/balances/{id}", web::get().to(balances::get))
        .route("/transactions", web::post().to(transactions::create))
        .route("/transactions", web::get().to(transactions::list))
        .route("/transactions/filter", web::post().to(transactions::filter))
        .route("/transactions/bulk", web::post().to(lifecycle::bulk))
        .route("/transactions/recover", web::post().to(lifecycle::recover))
        .route(
            "/transactions/inflight/bulk/commit",
            web::post().to(lifecycle::bulk_commit),
        )
        .route(
            "/transactions/inflight/bulk/void",
            web::post().to(lifecycle::bulk_void),
        )
        .route(
            "/transactions/inflight/{id}",
            web::put().to(lifecycle::update_inflight),
        )
        .route(
            "/refund-transaction/{id}",
            web::post().to(lifecycle::refund),
        )
        .route(
            "/transactions/reference/{reference}",
            web::get().to(transactions::by_reference),
        )
        .route("/transactions/{id}", web::get().to(transactions::get));
}
