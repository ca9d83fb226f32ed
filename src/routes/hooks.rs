//! Transaction hooks (Blnk 1.9): create, replace, read, list (all or one type), delete.
//! Only the master key manages them (a hook receives every transaction: with an API key,
//! one tenant could read all). In open mode every caller is the master, so they work there
//! too (Blnk's open mode refuses them all, a defect not copied).
//!
//! Errors have Blnk's flat hook shape, `{code, message, details, error_detail}`, with the
//! codes and statuses of the one error table (`HOOK_INVALID`, `HOOK_NOT_FOUND`,
//! `AUTH_MASTER_KEY_REQUIRED`, …). Delivery is in `coffer_actors::events::hooks`.

use crate::http::auth::Caller;
use crate::http::dto::MessageJson;
use crate::http::error::{error_body, ApiError, ErrorDetail};
use crate::http::json::parse_body;
use crate::http::query::pairs;
use crate::http::{read_body, AppState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, SecondsFormat, Utc};
use coffer_actors::access::{AccessError, Principal};
use coffer_actors::domain::hook::{Hook, HookInput, HookSpec, HookType};
use coffer_actors::domain::ids;
use coffer_actors::events::hooks::resolve_public;
use coffer_actors::LedgerError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// How long creating or replacing a hook waits for its host to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Go's zero time: what Blnk serves as the `last_run` of a hook never called.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// An error of a hook route, in Blnk's flat hook shape.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HookError(#[from] ApiError);

impl From<LedgerError> for HookError {
    fn from(error: LedgerError) -> Self {
        Self(ApiError::Ledger(error))
    }
}

impl From<AccessError> for HookError {
    fn from(error: AccessError) -> Self {
        Self(ApiError::Access(error))
    }
}

/// Blnk's hook error body: the code, message and details at the top, and again in
/// `error_detail`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookErrorBody {
    pub code: String,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub error_detail: ErrorDetail,
}

impl ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
        crate::http::error::code_and_status(&self.0).1
    }

    fn error_response(&self) -> HttpResponse {
        let (status, body) = error_body(&self.0);
        let detail = body.error_detail;
        HttpResponse::build(status).json(HookErrorBody {
            code: detail.code.clone(),
            message: detail.message.clone(),
            details: detail.details.clone(),
            error_detail: detail,
        })
    }
}

#[derive(Deserialize, ToSchema)]
pub struct HookBody {
    name: Option<String>,
    /// An http(s) URL on a public address (unless `coffer.allow_private_hook_urls`).
    url: Option<String>,
    /// `PRE_TRANSACTION` or `POST_TRANSACTION`.
    #[serde(rename = "type")]
    hook_type: Option<String>,
    active: Option<bool>,
    /// Seconds per call (0 or less: 30; at most 300).
    timeout: Option<i64>,
    /// Retries after a failed call (0..10; less than 0: 3).
    retry_count: Option<i64>,
}

/// A hook as Blnk serves it.
#[derive(Serialize, ToSchema)]
pub struct HookJson {
    id: String,
    name: String,
    url: String,
    #[serde(rename = "type")]
    hook_type: String,
    active: bool,
    timeout: u32,
    retry_count: u32,
    created_at: String,
    /// `0001-01-01T00:00:00Z` until the first call.
    last_run: String,
    last_success: bool,
}

fn time(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl From<&Hook> for HookJson {
    fn from(hook: &Hook) -> Self {
        Self {
            id: hook.id.clone(),
            name: hook.spec.name.clone(),
            url: hook.spec.url.clone(),
            hook_type: hook.spec.hook_type.as_str().to_owned(),
            active: hook.spec.active,
            timeout: hook.spec.timeout_s,
            retry_count: hook.spec.retry_count,
            created_at: time(&hook.created_at),
            last_run: hook
                .last_run
                .as_ref()
                .map_or_else(|| ZERO_TIME.to_owned(), time),
            last_success: hook.last_success,
        }
    }
}

fn master_only(caller: &Caller) -> Result<(), HookError> {
    match caller.0 {
        Principal::Master => Ok(()),
        Principal::Key(_) => Err(AccessError::MasterKeyRequired("hook management").into()),
    }
}

fn invalid(problems: Vec<String>) -> HookError {
    LedgerError::HookValidation(format!("{}.", problems.join("; "))).into()
}

/// Checks a body; unless private URLs are allowed, also the addresses its host resolves to
/// now (they are checked again at every call).
async fn hook_spec(body: HookBody, private_allowed: bool) -> Result<HookSpec, HookError> {
    let input = HookInput {
        name: body.name.as_deref(),
        url: body.url.as_deref(),
        hook_type: body.hook_type.as_deref(),
        active: body.active,
        timeout: body.timeout,
        retry_count: body.retry_count,
    };
    let spec = HookSpec::parse(&input, private_allowed).map_err(invalid)?;
    if !private_allowed {
        resolve_public(&spec.url, RESOLVE_TIMEOUT)
            .await
            .map_err(|refusal| invalid(vec![format!("url: {refusal}")]))?;
    }
    Ok(spec)
}

async fn read_hook_body(state: &AppState, payload: web::Payload) -> Result<HookBody, HookError> {
    Ok(parse_body(
        &read_body(payload, state.body_bytes_max).await?,
    )?)
}

#[utoipa::path(post, path = "/hooks", operation_id = "create_hook", tag = "hooks",
    request_body = HookBody,
    responses((status = 201, description = "The hook", body = HookJson),
        (status = 400, description = "Invalid hook (HOOK_INVALID)", body = HookErrorBody),
        (status = 403, description = "Not the master key (AUTH_MASTER_KEY_REQUIRED)", body = HookErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, HookError> {
    master_only(&caller)?;
    let body = read_hook_body(&state, payload).await?;
    let spec = hook_spec(body, state.allow_private_hook_urls).await?;
    let hook = state
        .ledger
        .store()
        .create_hook(ids::new_id(ids::HOOK_PREFIX), spec)
        .await?;
    Ok(HttpResponse::Created().json(HookJson::from(&hook)))
}

/// `PUT`: the whole hook again, checked like a new one; id, creation time and last run kept.
#[utoipa::path(put, path = "/hooks/{id}", operation_id = "replace_hook", tag = "hooks",
    params(("id" = String, Path, description = "Hook id")), request_body = HookBody,
    responses((status = 200, description = "The replaced hook", body = HookJson),
        (status = 400, description = "Invalid hook (HOOK_INVALID)", body = HookErrorBody),
        (status = 403, description = "Not the master key (AUTH_MASTER_KEY_REQUIRED)", body = HookErrorBody),
        (status = 404, description = "No such hook (HOOK_NOT_FOUND)", body = HookErrorBody)))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, HookError> {
    master_only(&caller)?;
    let body = read_hook_body(&state, payload).await?;
    let spec = hook_spec(body, state.allow_private_hook_urls).await?;
    let hook = state.ledger.store().replace_hook(&id, spec).await?;
    Ok(HttpResponse::Ok().json(HookJson::from(&hook)))
}

#[utoipa::path(get, path = "/hooks/{id}", operation_id = "get_hook", tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses((status = 200, description = "The hook", body = HookJson),
        (status = 403, description = "Not the master key (AUTH_MASTER_KEY_REQUIRED)", body = HookErrorBody),
        (status = 404, description = "No such hook (HOOK_NOT_FOUND)", body = HookErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, HookError> {
    master_only(&caller)?;
    let hook = state.ledger.store().hook(&id).await?;
    Ok(HttpResponse::Ok().json(HookJson::from(&hook)))
}

/// Every hook, or those of `type` (`PRE_TRANSACTION`, `POST_TRANSACTION`), oldest first.
#[utoipa::path(get, path = "/hooks", operation_id = "list_hooks", tag = "hooks",
    params(("type" = Option<String>, Query, description = "PRE_TRANSACTION or POST_TRANSACTION; omitted: both")),
    responses((status = 200, description = "The hooks", body = Vec<HookJson>),
        (status = 400, description = "Unknown type (HOOK_INVALID)", body = HookErrorBody),
        (status = 403, description = "Not the master key (AUTH_MASTER_KEY_REQUIRED)", body = HookErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
) -> Result<HttpResponse, HookError> {
    master_only(&caller)?;
    let wanted = pairs(request.query_string())
        .into_iter()
        .find(|(name, _)| name == "type")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty());
    let hook_type = match wanted {
        None => None,
        Some(text) => Some(HookType::parse(&text).ok_or_else(|| {
            invalid(vec![
                "type: must be PRE_TRANSACTION or POST_TRANSACTION".to_owned()
            ])
        })?),
    };
    let hooks = state.ledger.store().list_hooks(hook_type).await?;
    Ok(HttpResponse::Ok().json(hooks.iter().map(HookJson::from).collect::<Vec<_>>()))
}

/// Deletes the hook; its undelivered calls are dropped.
#[utoipa::path(delete, path = "/hooks/{id}", operation_id = "delete_hook", tag = "hooks",
    params(("id" = String, Path, description = "Hook id")),
    responses((status = 200, description = "Deleted", body = MessageJson),
        (status = 403, description = "Not the master key (AUTH_MASTER_KEY_REQUIRED)", body = HookErrorBody),
        (status = 404, description = "No such hook (HOOK_NOT_FOUND)", body = HookErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, HookError> {
    master_only(&caller)?;
    state.ledger.store().delete_hook(&id).await?;
    Ok(crate::http::dto::message("hook deleted successfully"))
}
