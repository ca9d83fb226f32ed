//! HTTP plumbing shared by the routes: errors, JSON shapes, bodies and query strings, and the
//! middleware every request passes (security headers, rate limit, authorization, metrics).

pub mod auth;
pub mod dto;
pub mod error;
pub mod json;
pub mod openapi;
pub mod query;
pub mod rate_limit;
pub mod request_metrics;
pub mod route_pattern;
pub mod security_headers;

use actix_web::web;
use error::ApiError;
use futures_util::StreamExt;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ledger: coffer_actors::ledger::Ledger,
    /// API keys: issuing, listing, revoking (the middleware authenticates through it too).
    pub access: coffer_actors::access::Access,
    pub body_bytes_max: usize,
    pub health_timeout_ms: u64,
    /// PII tokenization, when `tokenization_secret` is set.
    pub tokenizer: Option<std::sync::Arc<coffer_actors::domain::pii::Tokenizer>>,
    /// `coffer.allow_private_hook_urls`: hook URLs are not checked against private ranges.
    pub allow_private_hook_urls: bool,
}

impl AppState {
    /// The tokenizer, or Blnk's 403 `IDT_TOKENIZATION_DISABLED`.
    pub fn tokenizer(
        &self,
    ) -> Result<std::sync::Arc<coffer_actors::domain::pii::Tokenizer>, ApiError> {
        self.tokenizer.clone().ok_or(ApiError::Ledger(
            coffer_actors::LedgerError::TokenizationDisabled,
        ))
    }
}

/// Reads a request body, refusing more than `limit` bytes with Blnk's 413.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Malformed(format!("unreadable body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The page a `POST /<entity>/filter` body asks for (read, parsed and checked).
pub async fn filter_query(
    payload: web::Payload,
    limit: usize,
) -> Result<coffer_actors::store::ListQuery, ApiError> {
    let body: query::FilterBody = json::parse_body(&read_body(payload, limit).await?)?;
    body.into_query()
}

/// `%00` anywhere in the path or query: PostgreSQL cannot compare text holding NUL.
pub fn has_encoded_nul(uri: &actix_web::http::Uri) -> bool {
    let text = uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    text.as_bytes().windows(3).any(|w| w == b"%00")
}
