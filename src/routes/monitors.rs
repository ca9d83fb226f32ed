//! Balance monitors (Blnk 1.4): create, read, list (all, or one balance's), replace, delete.
//! They fire in the events work; here they are stored with their exact threshold.

use crate::http::dto::{message, MessageJson, MonitorJson};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body, raw_text};
use crate::http::openapi::{integer_schema, number_schema};
use crate::http::query::{whole_or_page, ListParams};
use crate::http::{read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::ids;
use coffer_actors::domain::monitor::MonitorCondition;
use coffer_actors::store::filter::{FieldFilter, FilterOp};
use coffer_actors::store::MonitorSpec;
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Longest description and callback URL.
const DESCRIPTION_CHARS_MAX: usize = 1024;
const CALLBACK_URL_CHARS_MAX: usize = 2048;

#[derive(Deserialize, ToSchema)]
pub struct ConditionBody {
    /// `balance`, `credit_balance`, `debit_balance`, `inflight_balance`, …
    field: Option<String>,
    /// `>`, `<`, `>=`, `<=`, `=`, `!=`.
    operator: Option<String>,
    /// The threshold, in major units.
    #[schema(schema_with = number_schema)]
    value: Option<Box<RawValue>>,
    #[schema(schema_with = integer_schema)]
    precision: Option<Box<RawValue>>,
}

#[derive(Deserialize, ToSchema)]
pub struct MonitorBody {
    balance_id: Option<String>,
    condition: Option<ConditionBody>,
    description: Option<String>,
    call_back_url: Option<String>,
    meta_data: Option<serde_json::Value>,
}

fn monitor_spec(body: MonitorBody) -> Result<MonitorSpec, ApiError> {
    let mut problems = Vec::new();
    let balance_id = body.balance_id.unwrap_or_default().trim().to_owned();
    if balance_id.is_empty() {
        problems.push("balance_id: cannot be blank".to_owned());
    }
    let condition = match &body.condition {
        None => {
            problems.push("condition: cannot be blank".to_owned());
            None
        }
        Some(c) => MonitorCondition::parse(
            c.field.as_deref(),
            c.operator.as_deref(),
            c.value.as_deref().map(raw_text),
            c.precision.as_deref().map(raw_text),
        )
        .map_err(|found| problems.extend(found.into_iter().map(|p| format!("condition.{p}"))))
        .ok(),
    };
    let description = body.description.filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_CHARS_MAX)
    {
        problems.push(format!(
            "description: longer than {DESCRIPTION_CHARS_MAX} characters"
        ));
    }
    let call_back_url = body.call_back_url.filter(|u| !u.trim().is_empty());
    if let Some(url) = &call_back_url {
        let web_url = url::Url::parse(url)
            .ok()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
        if !web_url || url.chars().count() > CALLBACK_URL_CHARS_MAX {
            problems.push("call_back_url: must be an http or https URL".to_owned());
        }
    }
    let meta_data = meta_object(body.meta_data)?;
    match condition {
        Some(condition) if problems.is_empty() => Ok(MonitorSpec {
            balance_id,
            condition,
            description,
            call_back_url,
            meta_data,
        }),
        _ => Err(LedgerError::MonitorValidation(format!("{}.", problems.join("; "))).into()),
    }
}

#[utoipa::path(post, path = "/balance-monitors", operation_id = "create_balance_monitor", tag = "balance-monitors",
    request_body = MonitorBody,
    responses((status = 201, description = "The monitor", body = MonitorJson), (status = 404, description = "Balance not found", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: MonitorBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let spec = monitor_spec(body)?;
    let created = state
        .ledger
        .store()
        .create_monitor(ids::new_id(ids::MONITOR_PREFIX), spec)
        .await?;
    Ok(HttpResponse::Created().json(MonitorJson::from(&created)))
}

#[utoipa::path(get, path = "/balance-monitors/{id}", operation_id = "get_balance_monitor", tag = "balance-monitors",
    params(("id" = String, Path, description = "Monitor id")),
    responses((status = 200, description = "The monitor", body = MonitorJson), (status = 404, description = "Monitor not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let monitor = state.ledger.store().monitor(&id).await?;
    Ok(HttpResponse::Ok().json(MonitorJson::from(&monitor)))
}

/// Every monitor (Blnk lists all), or a page with `limit`/`offset`.
#[utoipa::path(get, path = "/balance-monitors", operation_id = "list_balance_monitors", tag = "balance-monitors",
    params(ListParams),
    responses((status = 200, description = "Every monitor, or a page with `limit`/`offset`", body = Vec<MonitorJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = whole_or_page(request.query_string(), 20)?;
    let rows = state.ledger.store().list_monitors(query).await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(MonitorJson::from).collect::<Vec<_>>()))
}

/// A balance's monitors (an unknown balance has none).
#[utoipa::path(get, path = "/balance-monitors/balances/{balance_id}", operation_id = "list_balance_monitors_of_balance", tag = "balance-monitors",
    params(("balance_id" = String, Path, description = "Balance id"), ListParams),
    responses((status = 200, description = "The balance's monitors", body = Vec<MonitorJson>)))]
pub async fn by_balance(
    state: web::Data<AppState>,
    balance_id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut query = whole_or_page(request.query_string(), 20)?;
    query.filters.push(FieldFilter {
        field: "balance_id".into(),
        op: FilterOp::Eq,
        values: vec![balance_id.into_inner()],
    });
    let rows = state.ledger.store().list_monitors(query).await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(MonitorJson::from).collect::<Vec<_>>()))
}

/// `PUT`: the whole monitor again, checked like a new one (`precise_value` recomputed).
#[utoipa::path(put, path = "/balance-monitors/{id}", operation_id = "replace_balance_monitor", tag = "balance-monitors",
    params(("id" = String, Path, description = "Monitor id")), request_body = MonitorBody,
    responses((status = 200, description = "Replaced", body = MessageJson), (status = 404, description = "Monitor or balance not found", body = ErrorBody)))]
pub async fn replace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: MonitorBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let spec = monitor_spec(body)?;
    state.ledger.store().replace_monitor(&id, spec).await?;
    Ok(message("BalanceMonitor updated successfully"))
}

#[utoipa::path(delete, path = "/balance-monitors/{id}", operation_id = "delete_balance_monitor", tag = "balance-monitors",
    params(("id" = String, Path, description = "Monitor id")),
    responses((status = 200, description = "Deleted", body = MessageJson), (status = 404, description = "Monitor not found", body = ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.ledger.store().delete_monitor(&id).await?;
    Ok(message("BalanceMonitor deleted successfully"))
}
