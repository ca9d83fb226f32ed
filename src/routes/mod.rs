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

/// The route table, one scope per first path segment: actix tries a scope's routes in order,
/// matching each pattern with a `{id}` in it by regular expression, so a flat table of fifty
/// routes cost every request a few dozen regex runs (8–12% of the server's CPU on past-balance
/// reads). A static prefix is a string compare; only the routes of one scope are tried.
/// A path no route takes (wrong method included) ends at the app's default service, a 404.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(system::root))
        .route("/health", web::get().to(system::health))
        .route("/metrics", web::get().to(observability::metrics))
        .route("/backup", web::get().to(backup::backup))
        .service(
            web::scope("/transactions")
                .route("", web::post().to(transactions::create))
                .route("", web::get().to(transactions::list))
                .route("/filter", web::post().to(transactions::filter))
                .route("/bulk", web::post().to(lifecycle::bulk))
                .route("/recover", web::post().to(lifecycle::recover))
                .route(
                    "/inflight/bulk/commit",
                    web::post().to(lifecycle::bulk_commit),
                )
                .route("/inflight/bulk/void", web::post().to(lifecycle::bulk_void))
                .route("/inflight/{id}", web::put().to(lifecycle::update_inflight))
                .route(
                    "/reference/{reference}",
                    web::get().to(transactions::by_reference),
                )
                .route("/{id}", web::get().to(transactions::get)),
        )
        .service(
            web::scope("/balances")
                .route("", web::post().to(balances::create))
                .route("", web::get().to(balances::list))
                .route("/filter", web::post().to(balances::filter))
                .route(
                    "/indicator/{indicator}/currency/{currency}",
                    web::get().to(balances::by_indicator),
                )
                .route("/{id}", web::get().to(balances::get))
                .route("/{id}/at", web::get().to(history::balance_at))
                .route("/{id}/identity", web::put().to(balances::relink_identity)),
        )
        .route(
            "/balances-snapshots",
            web::post().to(history::take_snapshots),
        )
        .service(
            web::scope("/ledgers")
                .route("", web::post().to(ledgers::create))
                .route("", web::get().to(ledgers::list))
                .route("/filter", web::post().to(ledgers::filter))
                .route("/{id}", web::get().to(ledgers::get))
                .route("/{id}", web::put().to(ledgers::rename)),
        )
        .service(
            web::scope("/balance-monitors")
                .route("", web::post().to(monitors::create))
                .route("", web::get().to(monitors::list))
                .route(
                    "/balances/{balance_id}",
                    web::get().to(monitors::by_balance),
                )
                .route("/{id}", web::get().to(monitors::get))
                .route("/{id}", web::put().to(monitors::replace))
                .route("/{id}", web::delete().to(monitors::delete)),
        )
        .service(
            web::scope("/identities")
                .route("", web::post().to(identities::create))
                .route("", web::get().to(identities::list))
                .route("/filter", web::post().to(identities::filter))
                .route("/{id}", web::get().to(identities::get))
                .route("/{id}", web::put().to(identities::replace))
                .route("/{id}", web::delete().to(identities::delete))
                .route(
                    "/{id}/tokenized-fields",
                    web::get().to(identities::tokenized),
                )
                .route(
                    "/{id}/tokenize/{field}",
                    web::post().to(identities::tokenize_field),
                )
                .route("/{id}/tokenize", web::post().to(identities::tokenize))
                .route(
                    "/{id}/detokenize/{field}",
                    web::get().to(identities::detokenize_field),
                )
                .route("/{id}/detokenize", web::post().to(identities::detokenize)),
        )
        .service(
            web::scope("/accounts")
                .route("", web::post().to(accounts::create))
                .route("", web::get().to(accounts::list))
                .route("/filter", web::post().to(accounts::filter))
                .route("/{id}", web::get().to(accounts::get)),
        )
        .route("/mocked-account", web::get().to(accounts::mocked))
        .route(
            "/refund-transaction/{id}",
            web::post().to(lifecycle::refund),
        )
        // Last: any first segment (`ldg_…`, `bln_…`, `idt_…`, `txn_…`, `bulk_…`).
        .route("/{id}/metadata", web::post().to(metadata::update));
}
