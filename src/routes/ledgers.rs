use crate::http::dto::{page, LedgerJson, Page};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body};
use crate::http::query::{list_query, FilterBody, ListParams};
use crate::http::{filter_query, read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::ids;
use coffer_actors::store::{ListQuery, NewLedger};
use coffer_actors::LedgerError;
use serde::Deserialize;
use utoipa::ToSchema;

/// Longest ledger name.
const NAME_CHARS_MAX: usize = 256;

#[derive(Deserialize, ToSchema)]
pub struct LedgerBody {
    name: Option<String>,
    meta_data: Option<serde_json::Value>,
}

fn checked_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(LedgerError::LedgerValidation("name: cannot be blank.".into()).into());
    }
    if name.chars().count() > NAME_CHARS_MAX {
        return Err(LedgerError::LedgerValidation(format!(
            "name: the length must be no more than {NAME_CHARS_MAX}."
        ))
        .into());
    }
    Ok(name)
}

#[utoipa::path(post, path = "/ledgers", operation_id = "create_ledger", tag = "ledgers",
    request_body = LedgerBody,
    responses((status = 201, description = "The ledger", body = LedgerJson)))]
pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: LedgerBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let new = NewLedger {
        ledger_id: ids::new_id(ids::LEDGER_PREFIX),
        name: checked_name(body.name)?,
        meta_data: meta_object(body.meta_data)?,
    };
    let ledger = state.ledger.store().create_ledger(new).await?;
    Ok(HttpResponse::Created().json(LedgerJson::from(&ledger)))
}

#[utoipa::path(get, path = "/ledgers/{id}", operation_id = "get_ledger", tag = "ledgers",
    params(("id" = String, Path, description = "Ledger id")),
    responses((status = 200, description = "The ledger", body = LedgerJson), (status = 404, description = "Ledger not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ledger = state.ledger.store().ledger(&id).await?;
    Ok(HttpResponse::Ok().json(LedgerJson::from(&ledger)))
}

#[utoipa::path(put, path = "/ledgers/{id}", operation_id = "update_ledger", tag = "ledgers",
    params(("id" = String, Path, description = "Ledger id")), request_body = LedgerBody,
    responses((status = 200, description = "The renamed ledger", body = LedgerJson), (status = 404, description = "Ledger not found", body = ErrorBody)))]
pub async fn rename(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: LedgerBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let ledger = state
        .ledger
        .store()
        .rename_ledger(&id, checked_name(body.name)?)
        .await?;
    Ok(HttpResponse::Ok().json(LedgerJson::from(&ledger)))
}

async fn respond(state: &AppState, query: ListQuery) -> Result<HttpResponse, ApiError> {
    let (rows, total) = state.ledger.store().list_ledgers(query).await?;
    Ok(page(rows.iter().map(LedgerJson::from).collect(), total))
}

#[utoipa::path(get, path = "/ledgers", operation_id = "list_ledgers", tag = "ledgers",
    params(ListParams),
    responses((status = 200, description = "A page of ledgers", body = Vec<LedgerJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, list_query(request.query_string(), 10)?).await
}

#[utoipa::path(post, path = "/ledgers/filter", operation_id = "filter_ledgers", tag = "ledgers",
    request_body = FilterBody,
    responses((status = 200, description = "The matching ledgers", body = Page<LedgerJson>)))]
pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}
