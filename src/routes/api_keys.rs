//! API keys (Blnk 1.10): create (the plaintext is in this answer only), list an owner's,
//! revoke. Who may do what (owner forcing, cross-owner and escalation refusals) is the core's
//! rule (`coffer_actors::access`); the caller comes from the authorization middleware.

use crate::http::auth::Caller;
use crate::http::dto::ApiKeyJson;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::parse_body;
use crate::http::query::{pairs, values};
use crate::http::{read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::access::{AccessError, KeyRequest};
use coffer_actors::store::filter::parse_time;
use serde::Deserialize;
use utoipa::ToSchema;

/// Longest key name and owner id.
const NAME_CHARS_MAX: usize = 256;
const OWNER_CHARS_MAX: usize = 256;
/// Most scopes one key holds.
const SCOPES_MAX: usize = 64;

#[derive(Deserialize, ToSchema)]
pub struct KeyBody {
    name: Option<String>,
    /// Required with the master key; an API key creates keys for its own owner.
    owner: Option<String>,
    /// `resource:action` (`transactions:write`, `balances:read`, `*:*`).
    scopes: Option<Vec<String>>,
    /// RFC 3339.
    expires_at: Option<String>,
}

fn key_request(body: KeyBody) -> Result<KeyRequest, AccessError> {
    let invalid = |m: &str| AccessError::InvalidRequest(m.to_owned());
    let name = body.name.unwrap_or_default();
    if name.chars().count() > NAME_CHARS_MAX {
        return Err(invalid("name is too long"));
    }
    let owner = body.owner.map(|o| o.trim().to_owned());
    if owner
        .as_ref()
        .is_some_and(|o| o.chars().count() > OWNER_CHARS_MAX)
    {
        return Err(invalid("owner is too long"));
    }
    let scopes = body.scopes.unwrap_or_default();
    if scopes.len() > SCOPES_MAX {
        return Err(invalid("too many scopes"));
    }
    let expires_at = body
        .expires_at
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("expires_at is required"))?;
    let expires_at =
        parse_time(&expires_at).ok_or_else(|| invalid("expires_at must be an RFC 3339 time"))?;
    Ok(KeyRequest {
        name,
        owner,
        scopes,
        expires_at,
    })
}

/// The `owner` query parameter, if given.
fn owner_param(request: &HttpRequest) -> Option<String> {
    let pairs = pairs(request.query_string());
    let owner = values(&pairs, "owner").next().map(str::to_owned);
    owner
}

#[utoipa::path(post, path = "/api-keys", operation_id = "create_api_key", tag = "api-keys",
    request_body = KeyBody,
    responses((status = 201, description = "The key, with its plaintext `key` (shown only here)", body = ApiKeyJson)))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: KeyBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let issued = state
        .access
        .create_key(&caller.0, key_request(body)?)
        .await?;
    Ok(HttpResponse::Created().json(ApiKeyJson::new(&issued.stored, issued.plaintext)))
}

#[utoipa::path(get, path = "/api-keys", operation_id = "list_api_keys", tag = "api-keys",
    params(("owner" = Option<String>, Query, description = "The owner whose keys to list (required for the master key)")),
    responses((status = 200, description = "The owner's keys (never their hashes)", body = Vec<ApiKeyJson>)))]
pub async fn list(
    caller: Caller,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = state
        .access
        .list_keys(&caller.0, owner_param(&request))
        .await?;
    let keys: Vec<ApiKeyJson> = keys.iter().map(|k| ApiKeyJson::new(k, None)).collect();
    Ok(HttpResponse::Ok().json(keys))
}

#[utoipa::path(delete, path = "/api-keys/{id}", operation_id = "revoke_api_key", tag = "api-keys",
    params(("id" = String, Path, description = "API key id"), ("owner" = Option<String>, Query, description = "The key's owner")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "Key not found", body = ErrorBody)))]
pub async fn revoke(
    caller: Caller,
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .access
        .revoke_key(&caller.0, &id, owner_param(&request))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
