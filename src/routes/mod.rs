//! One module per resource. Handlers parse, make one call into the ledger core, and map the
//! reply; no SQL and no business rules here.

pub mod accounts;
pub mod backup;
pub mod balances;
pub mod history;
pub mod identities;
pub mod ledgers;
pub mod lifecycle;
pub mod metadata;
pub mod monitors;
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
        .route("/balances/{id}/at", web::get().to(history::balance_at))
        .route(
            "/balances/{id}/identity",
            web::put().to(balances::relink_identity),
        )
        .route(
            "/balances-snapshots",
            web::post().to(history::take_snapshots),
        )
        .route("/balance-monitors", web::post().to(monitors::create))
        .route("/balance-monitors", web::get().to(monitors::list))
        .route(
            "/balance-monitors/balances/{balance_id}",
            web::get().to(monitors::by_balance),
        )
        .route("/balance-monitors/{id}", web::get().to(monitors::get))
        .route("/balance-monitors/{id}", web::put().to(monitors::replace))
        .route("/balance-monitors/{id}", web::delete().to(monitors::delete))
        .route("/identities", web::post().to(identities::create))
        .route("/identities", web::get().to(identities::list))
        .route("/identities/filter", web::post().to(identities::filter))
        .route("/identities/{id}", web::get().to(identities::get))
        .route("/identities/{id}", web::put().to(identities::replace))
        .route("/identities/{id}", web::delete().to(identities::delete))
        .route(
            "/identities/{id}/tokenized-fields",
            web::get().to(identities::tokenized),
        )
        .route(
            "/identities/{id}/tokenize/{field}",
            web::post().to(identities::tokenize_field),
        )
        .route(
            "/identities/{id}/tokenize",
            web::post().to(identities::tokenize),
        )
        .route(
            "/identities/{id}/detokenize/{field}",
            web::get().to(identities::detokenize_field),
        )
        .route(
            "/identities/{id}/detokenize",
            web::post().to(identities::detokenize),
        )
        .route("/accounts", web::post().to(accounts::create))
        .route("/accounts", web::get().to(accounts::list))
        .route("/accounts/filter", web::post().to(accounts::filter))
        .route("/accounts/{id}", web::get().to(accounts::get))
        .route("/mocked-account", web::get().to(accounts::mocked))
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
        .route("/transactions/{id}", web::get().to(transactions::get))
        // Last: any first segment (`ldg_…`, `bln_…`, `idt_…`, `txn_…`, `bulk_…`).
        .route("/{id}/metadata", web::post().to(metadata::update));
}
