//! The transaction lifecycle beyond a single transfer: inflight commits and voids (one or
//! in bulk), refunds, bulk requests and the manual recovery of stuck queued transactions.

use super::transactions::{transfer_request, TransactionBody};
use crate::http::dto::{PreviewJson, TransactionJson};
use crate::http::error::{error_body, ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body, raw_text};
use crate::http::openapi::{integer_schema, number_schema};
use crate::http::query::pairs;
use crate::http::{read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::inflight::HoldAction;
use coffer_actors::domain::{ids, Amount};
use coffer_actors::ledger::{BulkRequest, HoldCommand, HoldReply, RefundRequest};
use coffer_actors::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::Duration;
use utoipa::ToSchema;

/// Most transactions of one bulk request (Blnk's limit).
const BULK_ITEMS_MAX: usize = 10_000;
/// Most ids of one bulk commit or void.
const BULK_ACTIONS_MAX: usize = 100;

#[derive(Deserialize, ToSchema)]
pub struct InflightBody {
    /// `commit` or `void`.
    status: Option<String>,
    /// A partial commit, in major units (0 or none: all that remains).
    #[schema(schema_with = number_schema)]
    amount: Option<Box<RawValue>>,
    /// A partial commit, in minor units.
    #[schema(schema_with = integer_schema)]
    precise_amount: Option<Box<RawValue>>,
    #[serde(default)]
    skip_queue: bool,
    #[serde(default)]
    dry_run: bool,
}

fn hold_command(
    id: String,
    status: Option<&str>,
    amount: Option<&RawValue>,
    precise: Option<&RawValue>,
    skip_queue: bool,
) -> Result<HoldCommand, ApiError> {
    let status = status.unwrap_or_default().trim().to_ascii_lowercase();
    let precise = match precise {
        Some(raw) => Some(
            Amount::parse_minor(raw_text(raw))
                .map_err(LedgerError::from)?
                .into_bigint(),
        ),
        None => None,
    };
    // Blnk: an amount of 0 (or none) commits everything that remains.
    let amount_major = amount
        .map(raw_text)
        .map(str::to_owned)
        .filter(|a| a.trim() != "0");
    let action = match status.as_str() {
        "commit" => HoldAction::Commit(precise),
        "void" => HoldAction::Void,
        _ => return Err(LedgerError::InvalidStatusAction(status).into()),
    };
    let amount_major = if matches!(action, HoldAction::Commit(None)) {
        amount_major
    } else {
        None
    };
    Ok(HoldCommand {
        id,
        action,
        amount_major,
        skip_queue,
    })
}

/// `PUT /transactions/inflight/{id}`.
#[utoipa::path(put, path = "/transactions/inflight/{id}", operation_id = "update_inflight_transaction", tag = "transactions",
    params(("id" = String, Path, description = "The inflight transaction's id")), request_body = InflightBody,
    responses((status = 200, description = "Committed or voided (`queued: true` when queued); with `dry_run`, the preview", body = InflightReply),
        (status = 404, description = "Transaction not found", body = ErrorBody),
        (status = 409, description = "Already committed, voided, or an action is queued", body = ErrorBody),
        (status = 503, description = "The queue or the committer is full (`QUEUE_BACKPRESSURE`): retry later", body = ErrorBody)))]
pub async fn update_inflight(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: InflightBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let command = hold_command(
        id.into_inner(),
        body.status.as_deref(),
        body.amount.as_deref(),
        body.precise_amount.as_deref(),
        body.skip_queue,
    )?;
    if body.dry_run {
        let preview = state.ledger.preview_hold_action(&command).await?;
        return Ok(
            HttpResponse::Ok().json(InflightReply::Preview(Box::new(PreviewJson::from(
                &preview,
            )))),
        );
    }
    let json = match state.ledger.hold_action(command).await? {
        HoldReply::Applied(rows) => TransactionJson::from(&rows[0]),
        HoldReply::Queued(rows) => {
            let mut json = TransactionJson::from(&rows[0]);
            json.queued = Some(true);
            json
        }
    };
    Ok(HttpResponse::Ok().json(InflightReply::Transaction(Box::new(json))))
}

/// The answer to `PUT /transactions/inflight/{id}`: the commit or void, or its preview.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum InflightReply {
    Transaction(Box<TransactionJson>),
    Preview(Box<PreviewJson>),
}

/// One id's outcome in a bulk commit or void (keys in their wire order).
#[derive(Serialize, ToSchema)]
pub struct BulkActionResult {
    /// `QUEUED`, or why it failed (`NOT_FOUND`, `ALREADY_VOIDED`, `INVALID_AMOUNT`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// `succeeded`, `queued` or `failed`.
    status: &'static str,
    transaction_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct BulkActionsJson {
    failed: usize,
    results: Vec<BulkActionResult>,
    succeeded: usize,
}

/// Blnk's per-item result codes of bulk commits and voids.
fn result_code(error: &LedgerError) -> &'static str {
    match error {
        LedgerError::TransactionNotFound(_) => "NOT_FOUND",
        LedgerError::AlreadyVoided(_) => "ALREADY_VOIDED",
        LedgerError::AlreadyCommitted(_) => "ALREADY_COMMITTED",
        LedgerError::NotInflight(_) => "NOT_INFLIGHT",
        LedgerError::ActionAlreadyQueued(_) => "ALREADY_QUEUED",
        LedgerError::CommitAmountExceeded { .. } | LedgerError::InvalidAmount(_) => {
            "INVALID_AMOUNT"
        }
        _ => "INTERNAL_ERROR",
    }
}

async fn run_bulk_actions(
    state: &AppState,
    commands: Vec<Result<HoldCommand, (String, ApiError)>>,
) -> HttpResponse {
    let result = |transaction_id, status, code, message| BulkActionResult {
        code,
        message,
        status,
        transaction_id,
    };
    let runs = commands.into_iter().map(|command| async move {
        let command = match command {
            Ok(command) => command,
            Err((id, error)) => {
                return result(
                    id,
                    "failed",
                    Some("INVALID_AMOUNT"),
                    Some(error.to_string()),
                )
            }
        };
        let id = command.id.clone();
        match state.ledger.hold_action(command).await {
            Ok(HoldReply::Applied(_)) => result(id, "succeeded", None, None),
            Ok(HoldReply::Queued(_)) => result(id, "queued", Some("QUEUED"), None),
            Err(error) => result(
                id,
                "failed",
                Some(result_code(&error)),
                Some(error.to_string()),
            ),
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let failed = results.iter().filter(|r| r.status == "failed").count();
    HttpResponse::Ok().json(BulkActionsJson {
        failed,
        succeeded: results.len() - failed,
        results,
    })
}

#[derive(Deserialize, ToSchema)]
pub struct BulkCommitItem {
    transaction_id: Option<String>,
    /// A partial commit, in major units.
    #[schema(schema_with = number_schema)]
    amount: Option<Box<RawValue>>,
    /// A partial commit, in minor units.
    #[schema(schema_with = integer_schema)]
    precise_amount: Option<Box<RawValue>>,
}

#[derive(Deserialize, ToSchema)]
pub struct BulkCommitBody {
    #[serde(default)]
    transactions: Vec<BulkCommitItem>,
    #[serde(default)]
    skip_queue: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct BulkVoidBody {
    #[serde(default)]
    transaction_ids: Vec<String>,
    #[serde(default)]
    skip_queue: bool,
}

fn check_action_count(count: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(LedgerError::BulkEmpty.into());
    }
    if count > BULK_ACTIONS_MAX {
        return Err(LedgerError::BulkLimitExceeded(BULK_ACTIONS_MAX).into());
    }
    Ok(())
}

/// `POST /transactions/inflight/bulk/commit`.
#[utoipa::path(post, path = "/transactions/inflight/bulk/commit", operation_id = "bulk_commit_inflight", tag = "transactions",
    request_body = BulkCommitBody,
    responses((status = 200, description = "Each id's outcome", body = BulkActionsJson)))]
pub async fn bulk_commit(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: BulkCommitBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    check_action_count(body.transactions.len())?;
    let commands = body
        .transactions
        .into_iter()
        .map(|item| {
            let id = item.transaction_id.unwrap_or_default();
            hold_command(
                id.clone(),
                Some("commit"),
                item.amount.as_deref(),
                item.precise_amount.as_deref(),
                body.skip_queue,
            )
            .map_err(|e| (id, e))
        })
        .collect();
    Ok(run_bulk_actions(&state, commands).await)
}

/// `POST /transactions/inflight/bulk/void`.
#[utoipa::path(post, path = "/transactions/inflight/bulk/void", operation_id = "bulk_void_inflight", tag = "transactions",
    request_body = BulkVoidBody,
    responses((status = 200, description = "Each id's outcome", body = BulkActionsJson)))]
pub async fn bulk_void(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: BulkVoidBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    check_action_count(body.transaction_ids.len())?;
    let commands = body
        .transaction_ids
        .into_iter()
        .map(|id| {
            hold_command(id.clone(), Some("void"), None, None, body.skip_queue).map_err(|e| (id, e))
        })
        .collect();
    Ok(run_bulk_actions(&state, commands).await)
}

#[derive(Deserialize, ToSchema)]
pub struct RefundBody {
    #[serde(default)]
    skip_queue: bool,
    #[serde(default)]
    dry_run: bool,
    description: Option<String>,
    meta_data: Option<serde_json::Value>,
}

/// `POST /refund-transaction/{id}` (the body is optional).
#[utoipa::path(post, path = "/refund-transaction/{id}", operation_id = "refund_transaction", tag = "transactions",
    params(("id" = String, Path, description = "The transaction to refund")), request_body = RefundBody,
    responses((status = 201, description = "The refund", body = TransactionJson),
        (status = 200, description = "`dry_run`: what would happen", body = PreviewJson),
        (status = 404, description = "Transaction not found", body = ErrorBody),
        (status = 409, description = "Already refunded", body = ErrorBody),
        (status = 503, description = "The queue or the committer is full (`QUEUE_BACKPRESSURE`): retry later", body = ErrorBody)))]
pub async fn refund(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: RefundBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let request = RefundRequest {
        id: id.into_inner(),
        description: body.description.filter(|d| !d.trim().is_empty()),
        meta_data: meta_object(body.meta_data)?,
        skip_queue: body.skip_queue,
    };
    if body.dry_run {
        let preview = state.ledger.preview_refund(&request).await?;
        return Ok(HttpResponse::Ok().json(PreviewJson::from(&preview)));
    }
    let record = state.ledger.refund(request).await?;
    Ok(HttpResponse::Created().json(TransactionJson::from(&record)))
}

#[derive(Deserialize, ToSchema)]
pub struct BulkBody {
    #[serde(default)]
    transactions: Vec<TransactionBody>,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    inflight: bool,
    #[serde(default)]
    run_async: bool,
    #[serde(default)]
    skip_queue: bool,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /transactions/bulk`.
#[utoipa::path(post, path = "/transactions/bulk", operation_id = "record_bulk_transactions", tag = "transactions",
    request_body = BulkBody,
    responses((status = 201, description = "Recorded", body = BulkRecordedJson),
        (status = 202, description = "`run_async`: stored, the workers apply it", body = BulkAcceptedJson),
        (status = 200, description = "`dry_run`: what would happen", body = BulkPreviewJson),
        (status = 404, description = "Balance not found", body = ErrorBody),
        (status = 409, description = "A reference has been used", body = ErrorBody),
        (status = 503, description = "The queue or the committer is full (`QUEUE_BACKPRESSURE`): retry later", body = ErrorBody)))]
pub async fn bulk(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: BulkBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    if body.transactions.is_empty() {
        return Err(LedgerError::BulkEmpty.into());
    }
    if body.transactions.len() > BULK_ITEMS_MAX {
        return Err(LedgerError::BulkLimitExceeded(BULK_ITEMS_MAX).into());
    }
    // `run_async`: the batch is stored (QUEUED, one commit) before the 202, and the workers
    // apply it (an atomic batch whole); a 2xx always means durably recorded.
    let run_async = body.run_async;
    let (atomic, inflight, skip_queue) =
        (body.atomic, body.inflight, body.skip_queue && !run_async);
    let mut items = Vec::with_capacity(body.transactions.len());
    for (index, mut item) in body.transactions.into_iter().enumerate() {
        item.inflight = inflight;
        item.skip_queue = skip_queue;
        let request = transfer_request(item).map_err(|error| LedgerError::BulkItemInvalid {
            index,
            message: error.to_string(),
        })?;
        items.push(request);
    }
    if body.dry_run {
        let preview = state
            .ledger
            .preview_transfers(&items, atomic, "bulk")
            .await?;
        let results = preview
            .row_rejections
            .iter()
            .enumerate()
            .map(|(index, rejection)| BulkRowPreview {
                index,
                rejection: rejection.as_ref().map(|r| BulkRejection {
                    code: r.code,
                    message: r.message.clone(),
                    reason: r.reason,
                }),
                would_apply: rejection.is_none(),
            })
            .collect();
        return Ok(HttpResponse::Ok().json(BulkPreviewJson {
            atomic,
            // As a map, as it has always been sent: its keys in alphabetical order.
            cumulative: serde_json::to_value(PreviewJson::from(&preview))
                .expect("a preview serializes"),
            dry_run: true,
            results,
            would_apply: preview.would_apply,
        }));
    }
    let bulk = BulkRequest {
        batch_id: ids::new_id(ids::BULK_PREFIX),
        items,
        atomic,
        inflight,
        skip_queue,
    };
    match state.ledger.record_bulk(bulk).await {
        Ok(outcome) if run_async => Ok(HttpResponse::Accepted().json(BulkAcceptedJson {
            batch_id: outcome.batch_id,
            message: "Bulk transaction processing started",
            status: "processing",
        })),
        // Blnk answers `inflight` or `applied`, whether or not the items were queued.
        Ok(outcome) => Ok(HttpResponse::Created().json(BulkRecordedJson {
            batch_id: outcome.batch_id,
            status: if inflight { "inflight" } else { "applied" },
            transaction_count: outcome.transaction_count,
        })),
        Err((error, batch_id)) => {
            let (status, mut body) = error_body(&ApiError::Ledger(error));
            body.batch_id = Some(batch_id);
            Ok(HttpResponse::build(status).json(body))
        }
    }
}

/// `dry_run` of a bulk request (keys in their wire order).
#[derive(Serialize, ToSchema)]
pub struct BulkPreviewJson {
    atomic: bool,
    /// The whole batch's effect.
    #[schema(value_type = PreviewJson)]
    cumulative: serde_json::Value,
    dry_run: bool,
    results: Vec<BulkRowPreview>,
    would_apply: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BulkRowPreview {
    index: usize,
    rejection: Option<BulkRejection>,
    would_apply: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BulkRejection {
    code: &'static str,
    message: String,
    reason: &'static str,
}

/// `run_async`: stored, to be applied by the workers.
#[derive(Serialize, ToSchema)]
pub struct BulkAcceptedJson {
    batch_id: String,
    message: &'static str,
    /// `processing`.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct BulkRecordedJson {
    batch_id: String,
    /// `applied` or `inflight`.
    status: &'static str,
    transaction_count: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveredJson {
    /// How many stuck transactions were queued again.
    recovered: usize,
    /// The age threshold used, as a Go duration (`2m0s`).
    threshold: String,
}

/// Parses a Go duration (`2m`, `1h30m`, `90s`, `500ms`).
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * seconds).ok()?;
    }
    Some(total)
}

/// Formats like Go's `Duration.String()` for whole seconds (`2m0s`, `1h0m0s`).
fn go_format(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, (seconds % 3600) / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// `POST /transactions/recover?threshold=2m`: the recovery sweep, now.
#[utoipa::path(post, path = "/transactions/recover", operation_id = "recover_transactions", tag = "transactions",
    params(("threshold" = Option<String>, Query, pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$", description = "Minimum age of a stuck QUEUED transaction, a Go duration (`2m`, `1h30m`); default 2m")),
    responses((status = 200, description = "Queued again", body = RecoveredJson)))]
pub async fn recover(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = pairs(request.query_string());
    let threshold = match query.iter().find(|(name, _)| name == "threshold") {
        Some((_, text)) => go_duration(text)
            .ok_or_else(|| ApiError::BadQuery(format!("Invalid threshold {text}")))?,
        None => Duration::from_secs(120),
    };
    let recovered = coffer_actors::queue::sweep::recover(&state.ledger, threshold, 10_000).await?;
    Ok(HttpResponse::Ok().json(RecoveredJson {
        recovered,
        threshold: go_format(threshold),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_format() {
        assert_eq!(go_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("abc"), None);
        assert_eq!(go_format(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_format(Duration::from_secs(3600)), "1h0m0s");
    }
}
