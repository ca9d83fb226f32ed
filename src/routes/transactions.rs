use crate::http::dto::{page, Page, PreviewJson, TransactionJson};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body, raw_text};
use crate::http::openapi::{integer_schema, number_schema};
use crate::http::query::{list_query, FilterBody, ListParams};
use crate::http::{filter_query, read_body, AppState};
use crate::routes::balances::CURRENCY_CHARS_MAX;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use coffer_actors::domain::distribution::parse_share;
use coffer_actors::domain::history::storable_times;
use coffer_actors::domain::{Amount, Precision};
use coffer_actors::ledger::{LegSpec, Legs, Side, TransferRequest};
use coffer_actors::store::filter::parse_time;
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Longest reference, description or balance identifier.
const TEXT_CHARS_MAX: usize = 1024;

/// One leg of a split: a balance and its share.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LegBody {
    identifier: Option<String>,
    /// A percentage (`"20%"`), an amount in major units, or `"left"`.
    distribution: Option<serde_json::Value>,
    /// An amount in minor units.
    precise_distribution: Option<serde_json::Value>,
}

/// A transfer: `source` to `destination`, or a split over `sources` or `destinations`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TransactionBody {
    /// In major units (`12.34`); or give `precise_amount`.
    #[schema(schema_with = number_schema)]
    amount: Option<Box<RawValue>>,
    /// In minor units.
    #[schema(schema_with = integer_schema)]
    precise_amount: Option<Box<RawValue>>,
    /// Minor units per major unit (default 1).
    #[schema(schema_with = integer_schema)]
    precision: Option<Box<RawValue>>,
    currency: Option<String>,
    reference: Option<String>,
    description: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    sources: Option<Vec<LegBody>>,
    destinations: Option<Vec<LegBody>>,
    #[serde(default)]
    allow_overdraft: bool,
    /// In major units.
    #[schema(schema_with = number_schema)]
    overdraft_limit: Option<Box<RawValue>>,
    #[serde(default)]
    pub(crate) inflight: bool,
    #[serde(default)]
    pub(crate) skip_queue: bool,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    pub(crate) dry_run: bool,
    scheduled_for: Option<String>,
    effective_date: Option<String>,
    inflight_expiry_date: Option<String>,
    inflight_commit_date: Option<String>,
    pub(crate) meta_data: Option<serde_json::Value>,
}

/// Most legs of one split.
const LEGS_MAX: usize = 100;

fn invalid(message: impl Into<String>) -> ApiError {
    LedgerError::TransactionValidation(message.into()).into()
}

fn text(value: Option<String>) -> String {
    value.map(|v| v.trim().to_owned()).unwrap_or_default()
}

fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    }
}

fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => parse_time(text)
            .filter(|time| storable_times().contains(time))
            .map(Some)
            .ok_or_else(|| invalid(format!("{name}: must be an RFC3339 time."))),
    }
}

fn legs(list: Vec<LegBody>, precision: &Precision) -> Result<Vec<LegSpec>, ApiError> {
    if list.is_empty() || list.len() > LEGS_MAX {
        return Err(invalid(format!("a split takes 1 to {LEGS_MAX} legs.")));
    }
    list.into_iter()
        .enumerate()
        .map(|(index, leg)| {
            let identifier = text(leg.identifier);
            if identifier.is_empty() || identifier.chars().count() > TEXT_CHARS_MAX {
                return Err(invalid(format!(
                    "legs[{index}].identifier: cannot be blank."
                )));
            }
            let distribution = json_text(&leg.distribution).unwrap_or_default();
            let precise_distribution = json_text(&leg.precise_distribution);
            let share = parse_share(
                Some(&distribution),
                precise_distribution.as_deref(),
                precision,
            )
            .map_err(LedgerError::from)?;
            Ok(LegSpec {
                identifier,
                share,
                distribution,
                precise_distribution,
            })
        })
        .collect()
}

/// Checks a transaction body in Blnk's order and builds the request.
pub(crate) fn transfer_request(body: TransactionBody) -> Result<TransferRequest, ApiError> {
    let (currency, reference, description) = (
        text(body.currency),
        text(body.reference),
        text(body.description),
    );
    let (source, destination) = (text(body.source), text(body.destination));
    let mut blank = Vec::new();
    for (name, value, split) in [
        ("currency", &currency, false),
        ("description", &description, false),
        ("reference", &reference, false),
        ("source", &source, body.sources.is_some()),
        ("destination", &destination, body.destinations.is_some()),
    ] {
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
    let split = match (body.sources, body.destinations) {
        (Some(_), Some(_)) => return Err(invalid("use sources or destinations, not both.")),
        (Some(list), None) => Some((Side::Sources, list, destination.clone())),
        (None, Some(list)) => Some((Side::Destinations, list, source.clone())),
        (None, None) => None,
    };
    let legs = match split {
        None => Legs::Single {
            source,
            destination,
        },
        Some((side, list, other)) => {
            if other.is_empty() {
                return Err(invalid("the other side of a split cannot be blank."));
            }
            Legs::Split {
                side,
                other,
                legs: legs(list, &precision)?,
            }
        }
    };
    let overdraft_limit = match body.overdraft_limit.as_deref() {
        Some(raw) => Some(
            precision
                .major_to_minor(raw_text(raw))
                .map_err(LedgerError::from)?,
        ),
        None => None,
    };
    Ok(TransferRequest {
        legs,
        amount,
        precision,
        currency,
        reference,
        description: Some(description),
        allow_overdraft: body.allow_overdraft,
        overdraft_limit,
        inflight: body.inflight,
        skip_queue: body.skip_queue,
        atomic: body.atomic,
        effective_date: time("effective_date", body.effective_date.as_deref())?,
        scheduled_for: time("scheduled_for", body.scheduled_for.as_deref())?,
        inflight_expiry_date: time("inflight_expiry_date", body.inflight_expiry_date.as_deref())?,
        inflight_commit_date: time("inflight_commit_date", body.inflight_commit_date.as_deref())?,
        meta_data: meta_object(body.meta_data)?,
    })
}

#[utoipa::path(post, path = "/transactions", operation_id = "record_transaction", tag = "transactions",
    request_body = TransactionBody,
    responses((status = 201, description = "Recorded (APPLIED, INFLIGHT, or QUEUED: stored before this answer)", body = TransactionJson),
        (status = 200, description = "`dry_run`: what would happen", body = PreviewJson),
        (status = 404, description = "Balance not found", body = ErrorBody),
        (status = 409, description = "The reference has been used (`TXN_DUPLICATE_REFERENCE`)", body = ErrorBody),
        (status = 503, description = "The queue or the committer is full (`QUEUE_BACKPRESSURE`): retry later", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: TransactionBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let dry_run = body.dry_run;
    let request = transfer_request(body)?;
    if dry_run {
        let preview = state.ledger.preview_transfer(&request).await?;
        return Ok(HttpResponse::Ok().json(PreviewJson::from(&preview)));
    }
    let recorded = state.ledger.record(request).await?;
    Ok(HttpResponse::Created().json(TransactionJson::from(&recorded)))
}

#[utoipa::path(get, path = "/transactions/{id}", operation_id = "get_transaction", tag = "transactions",
    params(("id" = String, Path, description = "Transaction id")),
    responses((status = 200, description = "The transaction", body = TransactionJson), (status = 404, description = "Transaction not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = state.ledger.store().transaction(&id).await?;
    Ok(HttpResponse::Ok().json(TransactionJson::from(&record)))
}

#[utoipa::path(get, path = "/transactions/reference/{reference}", operation_id = "get_transaction_by_reference", tag = "transactions",
    params(("reference" = String, Path, description = "The transaction's reference")),
    responses((status = 200, description = "The transaction", body = TransactionJson), (status = 404, description = "Transaction not found", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/transactions", operation_id = "list_transactions", tag = "transactions",
    params(ListParams),
    responses((status = 200, description = "A page of transactions", body = Vec<TransactionJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, list_query(request.query_string(), 20)?).await
}

#[utoipa::path(post, path = "/transactions/filter", operation_id = "filter_transactions", tag = "transactions",
    request_body = FilterBody,
    responses((status = 200, description = "The matching transactions", body = Page<TransactionJson>)))]
pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}
