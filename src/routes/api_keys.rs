//! API keys (Blnk 1.10): create (the plaintext is in this answer only), list an owner's,
//! revoke. Who may do what (owner forcing, cross-owner and escalation refusals) is the core's
//! rule (`coffer_actors::access`); the caller comes from the authorization middleware.

use crate::http::auth::Caller;
use crate::http::dto::ApiKeyJson;
use crate::http::error::ApiError;
use crate::http::json::parse_body;
use crate::http::query::{pairs, values};
use crate::http::{read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::access::{AccessError, KeyRequest};
use coffer_actors::store::filter::parse_time;
use serde::Deserialize;

/// Longest key name and owner id.
const NAME_CHARS_MAX: usize = 256;
const OWNER_CHARS_MAX: usize = 256;
/// Most scopes one key holds.
const SCOPES_MAX: usize = 64;

#[derive(Deserialize)]
struct KeyBody {
    name: Option<String>,
    owner: Option<String>,
    scopes: Option<Vec<String>>,
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
