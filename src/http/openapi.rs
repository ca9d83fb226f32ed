//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, derived from the handlers'
//! `#[utoipa::path]` annotations and the DTOs' `ToSchema` (one list of paths, here).
//!
//! Responses every operation can give (a malformed request, a body past the limit, the rate
//! limit, an internal error; the key checks on every path but the open ones) are added by
//! [`CommonResponses`], so no handler can forget them. `tests/api/openapi.rs` checks that the
//! document and `routes::route_table()` name the same operations.

use super::auth::OPEN_PATHS;
use crate::routes;
use actix_web::HttpResponse;
use serde_json::json;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffer",
        description = "A double-entry ledger server speaking Blnk's HTTP API. Money amounts \
                       are exact JSON numbers of any size (integers in minor units), never \
                       floats. In secure mode every path but `/`, `/health`, `/metrics` and \
                       `/openapi.json` needs `X-Blnk-Key`."
    ),
    paths(
        openapi_json,
        routes::system::root,
        routes::system::health,
        routes::observability::metrics,
        routes::backup::backup,
        routes::history::take_snapshots,
        routes::accounts::mocked,
        routes::transactions::create,
        routes::transactions::list,
        routes::transactions::filter,
        routes::lifecycle::bulk,
        routes::lifecycle::recover,
        routes::lifecycle::bulk_commit,
        routes::lifecycle::bulk_void,
        routes::transactions::get,
        routes::lifecycle::update_inflight,
        routes::transactions::by_reference,
        routes::lifecycle::refund,
        routes::balances::create,
        routes::balances::list,
        routes::balances::filter,
        routes::history::balance_at,
        routes::balances::get,
        routes::balances::relink_identity,
        routes::balances::by_indicator,
        routes::ledgers::create,
        routes::ledgers::list,
        routes::ledgers::filter,
        routes::ledgers::get,
        routes::ledgers::rename,
        routes::monitors::create,
        routes::monitors::list,
        routes::monitors::by_balance,
        routes::monitors::get,
        routes::monitors::replace,
        routes::monitors::delete,
        routes::identities::create,
        routes::identities::list,
        routes::identities::filter,
        routes::identities::get,
        routes::identities::replace,
        routes::identities::delete,
        routes::identities::tokenized,
        routes::identities::tokenize_field,
        routes::identities::tokenize,
        routes::identities::detokenize_field,
        routes::identities::detokenize,
        routes::accounts::create,
        routes::accounts::list,
        routes::accounts::filter,
        routes::accounts::get,
        routes::api_keys::create,
        routes::api_keys::list,
        routes::api_keys::revoke,
        routes::metadata::update,
        routes::hooks::create,
        routes::hooks::list,
        routes::hooks::get,
        routes::hooks::replace,
        routes::hooks::delete,
        routes::search::start_reindex,
        routes::search::reindex_progress,
        routes::search::search,
        routes::search::multi_search,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&CommonResponses)
)]
pub struct ApiDoc;

/// The document, serialized once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document =
            serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
        add_links(&mut document);
        document.to_string()
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// An exact integer of any size (money in minor units): a bare JSON integer, no format.
pub fn integer_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some("An exact integer of any size"))
        .build()
}

/// An exact decimal of any size (an amount in major units): a bare JSON number.
pub fn number_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some("An exact decimal number of any size"))
        .build()
}

/// The error responses every operation shares, and the key scheme.
struct CommonResponses;

const KEY_SCHEME: &str = "blnk_key";

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                super::auth::KEY_HEADER,
                "The master key (`server.secret_key`) or an API key; secure mode only",
            ))),
        );
        let common = [
            (
                "400",
                "Malformed request: bad JSON, a wrong field type, a bad query parameter",
            ),
            (
                "413",
                "Request body larger than `server.max_request_body_size_mb`",
            ),
            (
                "429",
                "Rate limit (`rate_limit.requests_per_second`) exceeded",
            ),
            ("500", "Internal error (the cause is logged, never sent)"),
        ];
        let guarded = [
            (
                "401",
                "Secure mode: `X-Blnk-Key` missing, invalid, expired or revoked",
            ),
            ("403", "Secure mode: the key's scopes do not allow this"),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            let open = OPEN_PATHS.contains(&path.as_str());
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let extra = if open { &[][..] } else { &guarded[..] };
                for (status, description) in common.iter().chain(extra) {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| RefOr::T(error_response(description)));
                }
                if !open {
                    operation.security = Some(vec![SecurityRequirement::new(
                        KEY_SCHEME,
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Where a created resource's id can go next: OpenAPI links, which the fuzzer's stateful
/// phase follows (create a ledger, then read, rename, annotate it, open a balance in it, …).
/// (from operation, to operation, where the id goes, the created object's id field)
const LINKS: &[(&str, &str, &str, &str)] = &[
    ("create_ledger", "get_ledger", "path.id", "ledger_id"),
    ("create_ledger", "update_ledger", "path.id", "ledger_id"),
    ("create_ledger", "update_metadata", "path.id", "ledger_id"),
    (
        "create_ledger",
        "create_balance",
        "body.ledger_id",
        "ledger_id",
    ),
    ("create_balance", "get_balance", "path.id", "balance_id"),
    ("create_balance", "get_balance_at", "path.id", "balance_id"),
    (
        "create_balance",
        "update_balance_identity",
        "path.id",
        "balance_id",
    ),
    ("create_balance", "update_metadata", "path.id", "balance_id"),
    (
        "create_balance",
        "list_balance_monitors_of_balance",
        "path.balance_id",
        "balance_id",
    ),
    (
        "create_balance",
        "create_balance_monitor",
        "body.balance_id",
        "balance_id",
    ),
    (
        "create_balance",
        "record_transaction",
        "body.destination",
        "balance_id",
    ),
    (
        "create_balance",
        "create_account",
        "body.balance_id",
        "balance_id",
    ),
    (
        "record_transaction",
        "get_transaction",
        "path.id",
        "transaction_id",
    ),
    (
        "record_transaction",
        "get_transaction_by_reference",
        "path.reference",
        "reference",
    ),
    (
        "record_transaction",
        "update_inflight_transaction",
        "path.id",
        "transaction_id",
    ),
    (
        "record_transaction",
        "refund_transaction",
        "path.id",
        "transaction_id",
    ),
    (
        "record_transaction",
        "update_metadata",
        "path.id",
        "transaction_id",
    ),
    ("create_identity", "get_identity", "path.id", "identity_id"),
    (
        "create_identity",
        "replace_identity",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "delete_identity",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "tokenize_identity",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "tokenize_identity_field",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "detokenize_identity",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "detokenize_identity_field",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "list_tokenized_fields",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "update_metadata",
        "path.id",
        "identity_id",
    ),
    (
        "create_identity",
        "create_balance",
        "body.identity_id",
        "identity_id",
    ),
    ("create_account", "get_account", "path.id", "account_id"),
    (
        "create_balance_monitor",
        "get_balance_monitor",
        "path.id",
        "monitor_id",
    ),
    (
        "create_balance_monitor",
        "replace_balance_monitor",
        "path.id",
        "monitor_id",
    ),
    (
        "create_balance_monitor",
        "delete_balance_monitor",
        "path.id",
        "monitor_id",
    ),
    ("create_api_key", "revoke_api_key", "path.id", "api_key_id"),
];

/// Adds [`LINKS`] to the 201 of each creating operation. On the JSON: utoipa 5.5's `Link`
/// serializes its fields in snake case (`operation_id`), which no tool reads.
fn add_links(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for operation in paths.values_mut().filter_map(|item| item.as_object_mut()) {
        for operation in operation.values_mut() {
            let from = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(created) = operation["responses"]
                .get_mut("201")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            let mut links = serde_json::Map::new();
            for (_, to, target, field) in LINKS.iter().filter(|link| link.0 == from) {
                let value = format!("$response.body#/{field}");
                let link = match target.strip_prefix("body.") {
                    Some(key) => json!({ "operationId": to, "requestBody": { key: value } }),
                    None => json!({ "operationId": to, "parameters": { *target: value } }),
                };
                links.insert(format!("{to}.{target}"), link);
            }
            if !links.is_empty() {
                created.insert("links".into(), links.into());
            }
        }
    }
}
