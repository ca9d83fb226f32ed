use crate::http::dto::{message, page, BalanceJson, IdentityJson, LedgerJson, MessageJson, Page};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body, raw_text};
use crate::http::openapi::integer_schema;
use crate::http::query::{flag, list_query, pairs, values, FilterBody, ListParams};
use crate::http::{filter_query, read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::ids::{is_indicator, GENERAL_LEDGER_ID};
use coffer_actors::domain::Precision;
use coffer_actors::store::{ListQuery, NewBalance};
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Longest currency code (Blnk takes free text; this bounds it).
pub const CURRENCY_CHARS_MAX: usize = 64;

#[derive(Deserialize, ToSchema)]
pub struct BalanceBody {
    ledger_id: Option<String>,
    currency: Option<String>,
    identity_id: Option<String>,
    indicator: Option<String>,
    /// Minor units per major unit (100: cents).
    #[schema(schema_with = integer_schema)]
    precision: Option<Box<RawValue>>,
    meta_data: Option<serde_json::Value>,
    #[serde(default)]
    track_fund_lineage: bool,
    allocation_strategy: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    LedgerError::BalanceValidation(message.into()).into()
}

fn new_balance(body: BalanceBody) -> Result<NewBalance, ApiError> {
    let ledger_id = body.ledger_id.unwrap_or_default().trim().to_owned();
    let currency = body.currency.unwrap_or_default().trim().to_owned();
    let mut blank = Vec::new();
    if ledger_id.is_empty() {
        blank.push("ledger_id: cannot be blank");
    }
    if currency.is_empty() {
        blank.push("currency: cannot be blank");
    }
    if !blank.is_empty() {
        return Err(invalid(format!("{}.", blank.join("; "))));
    }
    if currency.chars().count() > CURRENCY_CHARS_MAX {
        return Err(invalid(format!(
            "currency: longer than {CURRENCY_CHARS_MAX} characters."
        )));
    }
    let indicator = body.indicator.filter(|i| !i.is_empty());
    if let Some(indicator) = &indicator {
        if ledger_id != GENERAL_LEDGER_ID {
            return Err(invalid(
                "indicator: only balances in general_ledger_id can have an indicator.",
            ));
        }
        if !is_indicator(indicator) {
            return Err(invalid(
                "indicator: must start with @ and contain no spaces.",
            ));
        }
    }
    let allocation_strategy = match body
        .allocation_strategy
        .as_deref()
        .map(str::to_ascii_uppercase)
    {
        None => "FIFO".to_owned(),
        Some(s) if ["FIFO", "LIFO", "PROPORTIONAL"].contains(&s.as_str()) => s,
        Some(other) => {
            return Err(invalid(format!(
                "allocation_strategy: unknown strategy {other}."
            )))
        }
    };
    let identity_id = body.identity_id.filter(|i| !i.is_empty());
    if body.track_fund_lineage && identity_id.is_none() {
        return Err(invalid(
            "identity_id: required when track_fund_lineage is true.",
        ));
    }
    let precision = match body.precision.as_deref().map(raw_text) {
        None => None,
        Some(raw) => Some(Precision::parse(Some(raw)).map_err(LedgerError::InvalidAmount)?),
    };
    Ok(NewBalance {
        ledger_id,
        currency,
        identity_id,
        indicator,
        precision,
        meta_data: meta_object(body.meta_data)?,
        track_fund_lineage: body.track_fund_lineage,
        allocation_strategy: Some(allocation_strategy),
    })
}

#[utoipa::path(post, path = "/balances", operation_id = "create_balance", tag = "balances",
    request_body = BalanceBody,
    responses((status = 201, description = "The balance", body = BalanceJson),
        (status = 404, description = "Ledger or identity not found", body = ErrorBody),
        (status = 409, description = "A balance with this indicator and currency exists", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: BalanceBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let balance = state
        .ledger
        .store()
        .create_balance(new_balance(body)?)
        .await?;
    Ok(HttpResponse::Created().json(BalanceJson::new(&balance)))
}

/// `include=ledger` and `include=identity` embed those; `with_queued=true` adds the QUEUED
/// totals.
#[utoipa::path(get, path = "/balances/{id}", operation_id = "get_balance", tag = "balances",
    params(("id" = String, Path, description = "Balance id"),
        ("include" = Option<String>, Query, description = "`ledger`, `identity` (repeated or comma-separated): embed those"),
        ("with_queued" = Option<bool>, Query, description = "`true`: add the totals of QUEUED transactions")),
    responses((status = 200, description = "The balance", body = BalanceJson), (status = 404, description = "Balance not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let store = state.ledger.store();
    let balance = store.balance(&id).await?;
    let query = pairs(request.query_string());
    let mut json = BalanceJson::new(&balance);
    if flag(&query, "with_queued") {
        json = json.with_queued(&store.queued_totals(&balance.balance_id).await?);
    }
    let includes: Vec<&str> = values(&query, "include")
        .flat_map(|v| v.split(','))
        .collect();
    if includes.contains(&"ledger") {
        json.ledger = Some(LedgerJson::from(&store.ledger(&balance.ledger_id).await?));
    }
    if let (true, Some(identity_id)) = (includes.contains(&"identity"), &balance.identity_id) {
        json.identity = Some(IdentityJson::from(&store.identity(identity_id).await?));
    }
    Ok(HttpResponse::Ok().json(json))
}

#[derive(Deserialize, ToSchema)]
pub struct IdentityLink {
    identity_id: Option<String>,
}

/// `PUT /balances/{id}/identity`: links the balance to another identity.
#[utoipa::path(put, path = "/balances/{id}/identity", operation_id = "update_balance_identity", tag = "balances",
    params(("id" = String, Path, description = "Balance id")), request_body = IdentityLink,
    responses((status = 200, description = "Linked", body = MessageJson), (status = 404, description = "Balance or identity not found", body = ErrorBody)))]
pub async fn relink_identity(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: IdentityLink = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let identity_id = body.identity_id.unwrap_or_default().trim().to_owned();
    if identity_id.is_empty() {
        return Err(LedgerError::LedgerValidation("identity_id is required".into()).into());
    }
    state
        .ledger
        .store()
        .relink_balance_identity(&id, &identity_id)
        .await?;
    Ok(message("Balance identity updated successfully"))
}

#[utoipa::path(get, path = "/balances/indicator/{indicator}/currency/{currency}", operation_id = "get_balance_by_indicator", tag = "balances",
    params(("indicator" = String, Path, description = "Indicator (`@World`)"), ("currency" = String, Path, description = "Currency")),
    responses((status = 200, description = "The balance", body = BalanceJson), (status = 404, description = "Balance not found", body = ErrorBody)))]
pub async fn by_indicator(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (indicator, currency) = path.into_inner();
    let balance = state
        .ledger
        .store()
        .balance_by_indicator(&indicator, &currency)
        .await?;
    Ok(HttpResponse::Ok().json(BalanceJson::new(&balance)))
}

async fn respond(state: &AppState, query: ListQuery) -> Result<HttpResponse, ApiError> {
    let (rows, total) = state.ledger.store().list_balances(query).await?;
    Ok(page(rows.iter().map(BalanceJson::new).collect(), total))
}

#[utoipa::path(get, path = "/balances", operation_id = "list_balances", tag = "balances",
    params(ListParams),
    responses((status = 200, description = "A page of balances", body = Vec<BalanceJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, list_query(request.query_string(), 10)?).await
}

#[utoipa::path(post, path = "/balances/filter", operation_id = "filter_balances", tag = "balances",
    request_body = FilterBody,
    responses((status = 200, description = "The matching balances", body = Page<BalanceJson>)))]
pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}
