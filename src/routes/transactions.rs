use crate::http::dto::{page, TransactionJson};
use crate::http::error::ApiError;
use crate::http::json::{meta_object, parse_body, raw_text};
use crate::http::query::{list_query, FilterBody};
use crate::http::{read_body, AppState};
use crate::routes::balances::CURRENCY_CHARS_MAX;
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::{Amount, Precision};
use coffer_actors::ledger::TransferRequest;
use coffer_actors::store::filter::parse_time;
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest reference, description or balance identifier.
const TEXT_CHARS_MAX: usize = 1024;

#[derive(Deserialize)]
struct TransactionBody {
    amount: Option<Box<RawValue>>,
    precise_amount: Option<Box<RawValue>>,
    precision: Option<Box<RawValue>>,
    currency: Option<String>,
    reference: Option<String>,
    description: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    sources: Option<Vec<serde_json::Value>>,
    destinations: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    allow_overdraft: bool,
    overdraft_limit: Option<Box<RawValue>>,
    #[serde(default)]
    inflight: bool,
    #[serde(default)]
    skip_queue: bool,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    dry_run: bool,
    scheduled_for: Option<String>,
    effective_date: Option<String>,
    inflight_expiry_date: Option<String>,
    inflight_commit_date: Option<String>,
    meta_data: Option<serde_json::Value>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    LedgerError::TransactionValidation(message.into()).into()
}

fn text(value: Option<String>) -> String {
    value.map(|v| v.trim().to_owned()).unwrap_or_default()
}

/// Checks a transaction body in Blnk's order and builds the request.
fn transfer_request(body: TransactionBody) -> Result<TransferRequest, ApiError> {
    let (currency, reference, description) = (
        text(body.currency),
        text(body.reference),
        text(body.description),
    );
    let (source, destination) = (text(body.source), text(body.destination));
    let mut blank = Vec::new();
    for (name, value) in [
        ("currency", &currency),
        ("description", &description),
        ("reference", &reference),
        ("source", &source),
        ("destination", &destination),
    ] {
        let split = match name {
            "source" => body.sources.is_some(),
            "destination" => body.destinations.is_some(),
            _ => false,
        };
        if value.is_empty() && !split {
            blank.push(format!("{name}: cannot be blank"));
        }
    }
    if !blank.is_empty() {
        return Err(invalid(format!("{}.", blank.join("; "))));
    }
    for (name, value) in [
        ("reference", &reference),
        ("description", &description),
        ("source", &source),
        ("destination", &destination),
    ] {
        if value.chars().count() > TEXT_CHARS_MAX {
            return Err(invalid(format!(
                "{name}: longer than {TEXT_CHARS_MAX} characters."
            )));
        }
    }
    if currency.chars().count() > CURRENCY_CHARS_MAX {
        return Err(invalid(format!(
            "currency: longer than {CURRENCY_CHARS_MAX} characters."
        )));
    }
    let unsupported = [
        (
            body.sources.is_some() || body.destinations.is_some(),
            "sources/destinations",
        ),
        (body.inflight, "inflight"),
        (
            body.scheduled_for.as_deref().is_some_and(|s| !s.is_empty()),
            "scheduled_for",
        ),
        (
            body.inflight_expiry_date
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
            "inflight_expiry_date",
        ),
        (
            body.inflight_commit_date
                .as_deref()
                .is_some_and(|s| !s.is_empty()),
            "inflight_commit_date",
        ),
        (body.dry_run, "dry_run"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(used, _)| *used) {
        return Err(invalid(format!(
            "{name}: not supported by this Coffer version yet."
        )));
    }
    let precision =
        Precision::parse(body.precision.as_deref().map(raw_text)).map_err(LedgerError::from)?;
    let amount = match (body.amount.as_deref(), body.precise_amount.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "amount: use either amount or precise_amount, not both.",
            ))
        }
        (None, None) => return Err(invalid("amount: amount or precise_amount is required.")),
        (Some(major), None) => Amount::parse_major(raw_text(major), &precision),
        (None, Some(minor)) => Amount::parse_minor(raw_text(minor)),
    }
    .map_err(LedgerError::from)?;
    let overdraft_limit = match body.overdraft_limit.as_deref() {
        Some(raw) => Some(
            precision
                .major_to_minor(raw_text(raw))
                .map_err(LedgerError::from)?,
        ),
        None => None,
    };
    let effective_date = match body.effective_date.as_deref().filter(|d| !d.is_empty()) {
        Some(date) => Some(
            parse_time(date).ok_or_else(|| invalid("effective_date: must be an RFC3339 time."))?,
        ),
        None => None,
    };
    Ok(TransferRequest {
        source,
        destination,
        amount,
        precision,
        currency,
        reference,
        description: Some(description),
        allow_overdraft: body.allow_overdraft,
        overdraft_limit,
        skip_queue: body.skip_queue,
        atomic: body.atomic,
        effective_date,
        meta_data: meta_object(body.meta_data)?,
    })
}

pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: TransactionBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let record = state.ledger.record(transfer_request(body)?).await?;
    Ok(HttpResponse::Created().json(TransactionJson::from(&record)))
}

pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = state.ledger.store().transaction(&id).await?;
    Ok(HttpResponse::Ok().json(TransactionJson::from(&record)))
}

pub async fn by_reference(
    state: web::Data<AppState>,
    reference: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = state
        .ledger
        .store()
        .transaction_by_reference(&reference)
        .await?
        .ok_or_else(|| LedgerError::TransactionNotFound(reference.into_inner()))?;
    Ok(HttpResponse::Ok().json(TransactionJson::from(&record)))
}

async fn respond(state: &AppState, query: ListQuery) -> Result<HttpResponse, ApiError> {
    let (rows, total) = state.ledger.store().list_transactions(query).await?;
    Ok(page(
        rows.iter().map(TransactionJson::from).collect(),
        total,
    ))
}

pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, list_query(request.query_string(), 20)?).await
}

pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: FilterBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    respond(&state, body.into_query()?).await
}
