//! Balance history (Blnk 1.3): a balance as it was at a time, and daily snapshots.

use crate::http::dto::{BalanceAtJson, MessageJson, PastBalanceJson};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::query::{flag, pairs};
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use coffer_actors::domain::history::storable_times;
use coffer_actors::LedgerError;

/// Largest page of `POST /balances-snapshots?batch_size=`.
const SNAPSHOT_PAGE_MAX: u64 = 10_000;

/// `GET /balances/{id}/at?timestamp=<RFC 3339>&from_source=true`: the balance's credit,
/// debit and balance at that time (now when absent), exact, back-dated entries included.
#[utoipa::path(get, path = "/balances/{id}/at", operation_id = "get_balance_at", tag = "balances",
    params(("id" = String, Path, description = "Balance id"),
        ("timestamp" = Option<String>, Query, description = "RFC 3339; now when absent"),
        ("from_source" = Option<bool>, Query, description = "`true`: recompute from the transactions, not the snapshots")),
    responses((status = 200, description = "The balance at that time", body = BalanceAtJson), (status = 404, description = "Balance not found", body = ErrorBody)))]
pub async fn balance_at(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = pairs(request.query_string());
    let asked = query
        .iter()
        .find(|(name, _)| name == "timestamp")
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty());
    let timestamp = match asked {
        None => Utc::now().fixed_offset(),
        Some(text) => {
            DateTime::parse_from_rfc3339(text).map_err(|_| LedgerError::InvalidTimestamp)?
        }
    };
    let from_source = flag(&query, "from_source");
    // No stored time lies outside these (see `storable_times`): the answer there is the
    // answer at their edge, which every backend compares right.
    let times = storable_times();
    let at = timestamp
        .with_timezone(&Utc)
        .clamp(*times.start(), *times.end());
    let past = state.ledger.balance_at(&id, at, from_source).await?;
    Ok(HttpResponse::Ok().json(BalanceAtJson {
        balance: PastBalanceJson::from(&past),
        // Blnk's `time.RFC3339`: whole seconds, in the offset asked.
        timestamp: timestamp.to_rfc3339_opts(SecondsFormat::Secs, true),
        from_source,
    }))
}

/// `POST /balances-snapshots?batch_size=1000`: a pass over every balance, in the background.
#[utoipa::path(post, path = "/balances-snapshots", operation_id = "take_balance_snapshots", tag = "balances",
    params(("batch_size" = Option<u64>, Query, minimum = 1, description = "Balances per page of the pass (at most 10000)")),
    responses((status = 200, description = "Started", body = MessageJson)))]
pub async fn take_snapshots(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = pairs(request.query_string());
    let page_size = match query.iter().find(|(name, _)| name == "batch_size") {
        None => 1000,
        Some((_, value)) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|size| *size > 0)
            .ok_or_else(|| LedgerError::LedgerValidation("invalid batch_size value".into()))?
            .min(SNAPSHOT_PAGE_MAX),
    };
    state.ledger.snapshot_all_balances(page_size);
    Ok(HttpResponse::Ok().json(MessageJson {
        message: "Snapshotting in progress. should be completed shortly".to_owned(),
    }))
}
