//! Blnk's search API (1.11): `POST /search/{collection}` (201, Typesense's `SearchResult`
//! passed through as its bytes), `POST /multi-search` (200), and the reindex
//! (`POST /search/reindex`: 202, or 409 while one runs on any replica; `GET /search/reindex`:
//! its progress). The handlers parse, call [`SearchApi`] and map its answer; the index itself
//! is kept by the workers (`coffer_actors::events::search`).

use crate::http::error::{ApiError, ErrorBody, ErrorDetail};
use crate::http::json::parse_body;
use crate::http::{read_body, AppState};
use actix_web::{web, HttpResponse};
use coffer_actors::events::search::api::SearchApi;
use coffer_actors::events::search::store::ReindexProgress;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Typesense's search parameters (`q`, `query_by`, `filter_by`, `sort_by`, `page`,
/// `per_page`, `facet_by`, …), passed on as they are.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // The OpenAPI document's; the handler passes the raw body on.
pub struct SearchBody {
    q: Option<String>,
    query_by: Option<String>,
    filter_by: Option<String>,
    sort_by: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `{"searches": [{"collection": "transactions", "q": …}, …]}`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // The OpenAPI document's; the handler passes the raw body on.
pub struct MultiSearchBody {
    searches: Vec<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReindexBody {
    /// Records per page (default 1000, at most 10,000).
    batch_size: Option<i64>,
}

/// A reindex's progress, as Blnk shows it.
#[derive(Serialize, ToSchema)]
pub struct ReindexProgressJson {
    /// `in_progress`, `completed` or `failed`.
    status: String,
    /// `pending`, `ledgers`, `identities`, `balances`, `transactions`, `completed`.
    phase: String,
    total_records: i64,
    processed_records: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    paused: bool,
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<ReindexProgress> for ReindexProgressJson {
    fn from(progress: ReindexProgress) -> Self {
        Self {
            status: progress.status,
            phase: progress.phase,
            total_records: progress.total_records,
            processed_records: progress.processed_records,
            errors: progress.errors,
            started_at: time(progress.started_ms),
            completed_at: progress.completed_ms.map(time),
            paused: false,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReindexStarted {
    message: &'static str,
    progress: ReindexProgressJson,
}

/// 409: Blnk's error body with the running reindex's progress.
#[derive(Serialize, ToSchema)]
pub struct ReindexRunning {
    error: String,
    error_detail: ErrorDetail,
    progress: ReindexProgressJson,
}

fn typesense_json(status: actix_web::http::StatusCode, bytes: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(bytes)
}

#[utoipa::path(post, path = "/search/{collection}", operation_id = "search", tag = "search",
    params(("collection" = String, Path, description = "ledgers, balances, transactions, identities or reconciliations")),
    request_body = SearchBody,
    responses((status = 201, description = "Typesense's SearchResult, as it answered", body = Object),
        (status = 404, description = "Search is not enabled", body = ErrorBody),
        (status = 503, description = "The search index is unavailable", body = ErrorBody)))]
pub async fn search(
    state: web::Data<AppState>,
    api: web::Data<SearchApi>,
    collection: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.body_bytes_max).await?;
    let result = api.search(&collection, &body).await?;
    Ok(typesense_json(actix_web::http::StatusCode::CREATED, result))
}

#[utoipa::path(post, path = "/multi-search", operation_id = "multi_search", tag = "search",
    request_body = MultiSearchBody,
    responses((status = 200, description = "Typesense's MultiSearchResult, as it answered", body = Object),
        (status = 404, description = "Search is not enabled", body = ErrorBody),
        (status = 503, description = "The search index is unavailable", body = ErrorBody)))]
pub async fn multi_search(
    state: web::Data<AppState>,
    api: web::Data<SearchApi>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.body_bytes_max).await?;
    let result = api.multi_search(&body).await?;
    Ok(typesense_json(actix_web::http::StatusCode::OK, result))
}

#[utoipa::path(post, path = "/search/reindex", operation_id = "start_reindex", tag = "search",
    request_body = ReindexBody,
    responses((status = 202, description = "The reindex was started (by the workers)", body = ReindexStarted),
        (status = 404, description = "Search is not enabled", body = ErrorBody),
        (status = 409, description = "A reindex is running", body = ReindexRunning)))]
pub async fn start_reindex(
    state: web::Data<AppState>,
    api: web::Data<SearchApi>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: ReindexBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let batch_size = match body.batch_size {
        None => None,
        Some(size) if size > 0 => Some(u32::try_from(size).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(ApiError::Malformed(
                "batch_size must be a positive integer".into(),
            ))
        }
    };
    Ok(match api.request_reindex(batch_size).await? {
        Ok(progress) => HttpResponse::Accepted().json(ReindexStarted {
            message: "Reindex operation started",
            progress: progress.into(),
        }),
        Err(running) => {
            let message = "a reindex operation is already in progress";
            let body = ErrorBody::new("SRCH_REINDEX_IN_PROGRESS", message);
            HttpResponse::Conflict().json(ReindexRunning {
                error: body.error,
                error_detail: body.error_detail,
                progress: running.into(),
            })
        }
    })
}

#[utoipa::path(get, path = "/search/reindex", operation_id = "reindex_progress", tag = "search",
    responses((status = 200, description = "The last reindex's progress", body = ReindexProgressJson),
        (status = 404, description = "No reindex was started, or search is not enabled", body = ErrorBody)))]
pub async fn reindex_progress(api: web::Data<SearchApi>) -> Result<HttpResponse, ApiError> {
    let progress = api.reindex_progress().await?;
    Ok(HttpResponse::Ok().json(ReindexProgressJson::from(progress)))
}
