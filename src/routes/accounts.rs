//! Accounts (Blnk 1.7): open, read (with `include=balance|identity|ledger`), list, filter,
//! and Blnk's mocked account number.

use crate::account_numbers::AccountNumberClient;
use crate::http::dto::{page, AccountJson, BalanceJson, IdentityJson, LedgerJson, Page};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body};
use crate::http::query::{pairs, values, whole_or_page, FilterBody, ListParams};
use crate::http::{filter_query, read_body, AppState};
use crate::routes::balances::CURRENCY_CHARS_MAX;
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::accounts::{self, AccountNumbers, AccountRequest, NUMBER_CHARS_MAX};
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest bank name (an account number: `accounts::NUMBER_CHARS_MAX`).
const BANK_NAME_CHARS_MAX: usize = 256;

#[derive(Deserialize, ToSchema)]
pub struct AccountBody {
    bank_name: Option<String>,
    number: Option<String>,
    currency: Option<String>,
    identity_id: Option<String>,
    ledger_id: Option<String>,
    balance_id: Option<String>,
    meta_data: Option<serde_json::Value>,
}

/// Blnk's rules: a `balance_id`, or `ledger_id`, `identity_id` and `currency` (then a balance
/// is created), never a ledger or currency beside a balance.
fn account_request(body: AccountBody) -> Result<AccountRequest, ApiError> {
    let given =
        |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let request = AccountRequest {
        balance_id: given(body.balance_id),
        ledger_id: given(body.ledger_id),
        identity_id: given(body.identity_id),
        currency: given(body.currency),
        number: given(body.number),
        bank_name: given(body.bank_name),
        meta_data: meta_object(body.meta_data)?,
    };
    let mut problems = Vec::new();
    if request.balance_id.is_none() {
        for (field, value) in [
            ("currency", &request.currency),
            ("identity_id", &request.identity_id),
            ("ledger_id", &request.ledger_id),
        ] {
            if value.is_none() {
                problems.push(format!(
                    "{field}: {field} is required when balance_id is not provided"
                ));
            }
        }
    } else {
        for (field, value) in [
            ("currency", &request.currency),
            ("ledger_id", &request.ledger_id),
        ] {
            if value.is_some() {
                problems.push(format!(
                    "{field}: either {field} or balance_id must be provided, not both"
                ));
            }
        }
    }
    let too_long = |value: &Option<String>, max: usize| {
        value.as_ref().is_some_and(|v| v.chars().count() > max)
    };
    if too_long(&request.currency, CURRENCY_CHARS_MAX) {
        problems.push(format!(
            "currency: longer than {CURRENCY_CHARS_MAX} characters"
        ));
    }
    if too_long(&request.number, NUMBER_CHARS_MAX) {
        problems.push(format!("number: longer than {NUMBER_CHARS_MAX} characters"));
    }
    if too_long(&request.bank_name, BANK_NAME_CHARS_MAX) {
        problems.push(format!(
            "bank_name: longer than {BANK_NAME_CHARS_MAX} characters"
        ));
    }
    if !problems.is_empty() {
        return Err(LedgerError::AccountValidation(format!("{}.", problems.join("; "))).into());
    }
    Ok(request)
}

#[utoipa::path(post, path = "/accounts", operation_id = "create_account", tag = "accounts",
    request_body = AccountBody,
    responses((status = 201, description = "The account", body = AccountJson),
        (status = 404, description = "Balance, ledger or identity not found", body = ErrorBody),
        (status = 409, description = "The account number is taken", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    numbers: web::Data<AccountNumberClient>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: AccountBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let request = account_request(body)?;
    let numbers = numbers.service().map(|s| s as &dyn AccountNumbers);
    let account = accounts::open(state.ledger.store(), request, numbers).await?;
    Ok(HttpResponse::Created().json(AccountJson::from(&account)))
}

/// `include=balance`, `include=identity`, `include=ledger` (repeated or comma-separated)
/// embed those; the others stay `null`, as in Blnk.
#[utoipa::path(get, path = "/accounts/{id}", operation_id = "get_account", tag = "accounts",
    params(("id" = String, Path, description = "Account id"),
        ("include" = Option<String>, Query, description = "`balance`, `identity`, `ledger` (repeated or comma-separated): embed those")),
    responses((status = 200, description = "The account", body = AccountJson), (status = 404, description = "Account not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let store = state.ledger.store();
    let account = store.account(&id).await?;
    let query = pairs(request.query_string());
    let includes: Vec<&str> = values(&query, "include")
        .flat_map(|v| v.split(','))
        .collect();
    let mut json = AccountJson::from(&account);
    if includes.contains(&"balance") {
        json.balance = Some(BalanceJson::new(&store.balance(&account.balance_id).await?));
    }
    if includes.contains(&"identity") {
        json.identity = Some(IdentityJson::from(
            &store.identity(&account.identity_id).await?,
        ));
    }
    if includes.contains(&"ledger") {
        json.ledger = Some(LedgerJson::from(&store.ledger(&account.ledger_id).await?));
    }
    Ok(HttpResponse::Ok().json(json))
}

async fn respond(state: &AppState, query: ListQuery) -> Result<HttpResponse, ApiError> {
    let (rows, total) = state.ledger.store().list_accounts(query).await?;
    Ok(page(rows.iter().map(AccountJson::from).collect(), total))
}

/// Every account without paging or filters (Blnk), else a page (20 by default).
#[utoipa::path(get, path = "/accounts", operation_id = "list_accounts", tag = "accounts",
    params(ListParams),
    responses((status = 200, description = "Every account, or a page with `limit`/`offset` or filters", body = Vec<AccountJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, whole_or_page(request.query_string(), 20)?).await
}

#[utoipa::path(post, path = "/accounts/filter", operation_id = "filter_accounts", tag = "accounts",
    request_body = FilterBody,
    responses((status = 200, description = "The matching accounts", body = Page<AccountJson>)))]
pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}

/// Blnk's test helper: a bank and a made-up 12-digit account number.
#[utoipa::path(get, path = "/mocked-account", operation_id = "mocked_account", tag = "accounts",
    responses((status = 200, description = "A made-up account number", body = MockedAccount)))]
pub async fn mocked() -> HttpResponse {
    HttpResponse::Ok().json(MockedAccount {
        account_number: crate::account_numbers::mock_number(),
        bank_name: "Blnk Bank",
    })
}

#[derive(Serialize, ToSchema)]
pub struct MockedAccount {
    account_number: String,
    bank_name: &'static str,
}
