//! One module per resource. Handlers parse, make one call into the ledger core, and map the
//! reply; no SQL and no business rules here.

pub mod accounts;
pub mod api_keys;
pub mod backup;
pub mod balances;
pub mod history;
pub mod hooks;
pub mod identities;
pub mod ledgers;
pub mod lifecycle;
pub mod metadata;
pub mod monitors;
pub mod observability;
pub mod search;
pub mod system;
pub mod transactions;

use crate::http::openapi;
use crate::http::route_pattern::RoutePattern;
use actix_web::http::Method;
use actix_web::{guard, web, FromRequest, Handler, Resource, Responder, Route, Scope};

/// The route table, one scope per first path segment: actix tries routes in order, matching
/// each pattern with a `{id}` in it by regular expression (about a microsecond a try), so a
/// flat table of fifty routes cost every request a few dozen regex runs (8–12% of the server's
/// CPU on past-balance reads). A static prefix is a string compare: no top-level route is
/// dynamic but the metadata catch-all (last), and within a scope the static paths come first,
/// then the dynamic ones busiest first. Their shapes never overlap (segment counts or methods
/// differ), so the order changes which route is tried first, never which one answers.
/// Each route carries its pattern ([`RoutePattern`]) for metrics and traces.
/// A path no route takes (wrong method included) ends at the app's default service, a 404.
fn route_groups() -> Vec<(&'static str, Vec<Endpoint>)> {
    use Method as M;
    let top_level = vec![
        endpoint(M::GET, "/", system::root),
        endpoint(M::GET, "/health", system::health),
        endpoint(M::GET, "/metrics", observability::metrics),
        endpoint(M::GET, "/backup", backup::backup),
        endpoint(M::POST, "/balances-snapshots", history::take_snapshots),
        endpoint(M::GET, "/mocked-account", accounts::mocked),
        endpoint(M::GET, "/openapi.json", openapi::openapi_json),
    ];
    vec![
        ("", top_level),
        (
            "/transactions",
            vec![
                endpoint(M::POST, "/transactions", transactions::create),
                endpoint(M::GET, "/transactions", transactions::list),
                endpoint(M::POST, "/transactions/filter", transactions::filter),
                endpoint(M::POST, "/transactions/bulk", lifecycle::bulk),
                endpoint(M::POST, "/transactions/recover", lifecycle::recover),
                endpoint(
                    M::POST,
                    "/transactions/inflight/bulk/commit",
                    lifecycle::bulk_commit,
                ),
                endpoint(
                    M::POST,
                    "/transactions/inflight/bulk/void",
                    lifecycle::bulk_void,
                ),
                endpoint(M::GET, "/transactions/{id}", transactions::get),
                endpoint(
                    M::PUT,
                    "/transactions/inflight/{id}",
                    lifecycle::update_inflight,
                ),
                endpoint(
                    M::GET,
                    "/transactions/reference/{reference}",
                    transactions::by_reference,
                ),
            ],
        ),
        (
            "/refund-transaction",
            vec![endpoint(
                M::POST,
                "/refund-transaction/{id}",
                lifecycle::refund,
            )],
        ),
        (
            "/balances",
            vec![
                endpoint(M::POST, "/balances", balances::create),
                endpoint(M::GET, "/balances", balances::list),
                endpoint(M::POST, "/balances/filter", balances::filter),
                endpoint(M::GET, "/balances/{id}/at", history::balance_at),
                endpoint(M::GET, "/balances/{id}", balances::get),
                endpoint(M::PUT, "/balances/{id}/identity", balances::relink_identity),
                endpoint(
                    M::GET,
                    "/balances/indicator/{indicator}/currency/{currency}",
                    balances::by_indicator,
                ),
            ],
        ),
        (
            "/ledgers",
            vec![
                endpoint(M::POST, "/ledgers", ledgers::create),
                endpoint(M::GET, "/ledgers", ledgers::list),
                endpoint(M::POST, "/ledgers/filter", ledgers::filter),
                endpoint(M::GET, "/ledgers/{id}", ledgers::get),
                endpoint(M::PUT, "/ledgers/{id}", ledgers::rename),
            ],
        ),
        (
            "/balance-monitors",
            vec![
                endpoint(M::POST, "/balance-monitors", monitors::create),
                endpoint(M::GET, "/balance-monitors", monitors::list),
                endpoint(
                    M::GET,
                    "/balance-monitors/balances/{balance_id}",
                    monitors::by_balance,
                ),
                endpoint(M::GET, "/balance-monitors/{id}", monitors::get),
                endpoint(M::PUT, "/balance-monitors/{id}", monitors::replace),
                endpoint(M::DELETE, "/balance-monitors/{id}", monitors::delete),
            ],
        ),
        (
            "/identities",
            vec![
                endpoint(M::POST, "/identities", identities::create),
                endpoint(M::GET, "/identities", identities::list),
                endpoint(M::POST, "/identities/filter", identities::filter),
                endpoint(M::GET, "/identities/{id}", identities::get),
                endpoint(M::PUT, "/identities/{id}", identities::replace),
                endpoint(M::DELETE, "/identities/{id}", identities::delete),
                endpoint(
                    M::GET,
                    "/identities/{id}/tokenized-fields",
                    identities::tokenized,
                ),
                endpoint(
                    M::POST,
                    "/identities/{id}/tokenize/{field}",
                    identities::tokenize_field,
                ),
                endpoint(M::POST, "/identities/{id}/tokenize", identities::tokenize),
                endpoint(
                    M::GET,
                    "/identities/{id}/detokenize/{field}",
                    identities::detokenize_field,
                ),
                endpoint(
                    M::POST,
                    "/identities/{id}/detokenize",
                    identities::detokenize,
                ),
            ],
        ),
        (
            "/accounts",
            vec![
                endpoint(M::POST, "/accounts", accounts::create),
                endpoint(M::GET, "/accounts", accounts::list),
                endpoint(M::POST, "/accounts/filter", accounts::filter),
                endpoint(M::GET, "/accounts/{id}", accounts::get),
            ],
        ),
        (
            "/api-keys",
            vec![
                endpoint(M::POST, "/api-keys", api_keys::create),
                endpoint(M::GET, "/api-keys", api_keys::list),
                endpoint(M::DELETE, "/api-keys/{id}", api_keys::revoke),
            ],
        ),
        (
            "/hooks",
            vec![
                endpoint(M::POST, "/hooks", hooks::create),
                endpoint(M::GET, "/hooks", hooks::list),
                endpoint(M::GET, "/hooks/{id}", hooks::get),
                endpoint(M::PUT, "/hooks/{id}", hooks::replace),
                endpoint(M::DELETE, "/hooks/{id}", hooks::delete),
            ],
        ),
        // Last: any first segment (`ldg_…`, `bln_…`, `idt_…`, `txn_…`, `bulk_…`).
        (
            "",
            vec![endpoint(M::POST, "/{id}/metadata", metadata::update)],
        ),
        (
            "/search",
            vec![
                // Before `/search/{collection}`: tried in order.
                endpoint(M::POST, "/search/reindex", search::start_reindex),
                endpoint(M::GET, "/search/reindex", search::reindex_progress),
                endpoint(M::POST, "/search/{collection}", search::search),
            ],
        ),
        (
            "",
            vec![endpoint(M::POST, "/multi-search", search::multi_search)],
        ),
    ]
}

pub fn configure(config: &mut web::ServiceConfig) {
    for (prefix, endpoints) in route_groups() {
        if prefix.is_empty() {
            for endpoint in endpoints {
                config.service(endpoint.under(""));
            }
        } else {
            config.service(scope(prefix, endpoints));
        }
    }
}

/// Every route as (method, pattern), in the order they are tried: what the authorization
/// matrix and the OpenAPI coverage tests walk, so a new route cannot be left out of them.
pub fn route_table() -> Vec<(Method, &'static str)> {
    route_groups()
        .into_iter()
        .flat_map(|(_, endpoints)| endpoints.into_iter().map(|e| (e.method, e.pattern)))
        .collect()
}

/// One method on one path, named by its full pattern.
struct Endpoint {
    method: Method,
    pattern: &'static str,
    route: Route,
}

fn endpoint<F, Args>(method: Method, pattern: &'static str, handler: F) -> Endpoint
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let route = web::method(method.clone()).to(handler);
    Endpoint {
        method,
        pattern,
        route,
    }
}

impl Endpoint {
    /// The endpoint as a resource of the scope at `prefix`. The method is a guard of the
    /// resource, not only of its route, so a path served for another method falls through to
    /// the next resource (and at last to the 404), as a Blnk client expects, not to a 405.
    fn under(self, prefix: &str) -> Resource {
        let path = self
            .pattern
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{} lies outside its scope {prefix}", self.pattern));
        web::resource(path)
            .guard(guard::Method(self.method))
            .app_data(RoutePattern(self.pattern))
            .route(self.route)
    }
}

fn scope(prefix: &'static str, endpoints: Vec<Endpoint>) -> Scope {
    endpoints
        .into_iter()
        .fold(web::scope(prefix), |scope, endpoint| {
            scope.service(endpoint.under(prefix))
        })
}
