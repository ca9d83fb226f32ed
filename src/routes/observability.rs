//! `GET /metrics` (API and worker) in Prometheus' text format, guarded as in Blnk:
//! with `server.metrics_bearer_token` set, `Authorization: Bearer <token>` is required (exact,
//! case-sensitive scheme, constant-time comparison); without one the endpoint is open, unless
//! `server.secure` is on, which closes it (403 `AUTH_METRICS_DISABLED`).

use crate::backup::Backup;
use crate::configuration::Settings;
use crate::http::error::ErrorBody;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::ledger::Ledger;
use std::sync::Arc;

/// What `/metrics` and `/backup` need (who may call them is `http::auth`'s); shared by the HTTP workers of one server.
#[derive(Clone)]
pub struct Operations(Arc<Inner>);

struct Inner {
    ledger: Ledger,
    metrics_token: Option<String>,
    secure: bool,
    backup: Option<Backup>,
}

impl Operations {
    /// For the API server: metrics and backups.
    pub fn for_api(ledger: Ledger, settings: &Settings) -> Self {
        let backup = Some(Backup::new(settings, ledger.store().clone()));
        Self::new(ledger, settings, backup)
    }

    /// For the worker's monitoring server: metrics only.
    pub fn for_worker(ledger: Ledger, settings: &Settings) -> Self {
        Self::new(ledger, settings, None)
    }

    fn new(ledger: Ledger, settings: &Settings, backup: Option<Backup>) -> Self {
        Self(Arc::new(Inner {
            ledger,
            metrics_token: settings.metrics_bearer_token.clone(),
            secure: settings.secure,
            backup,
        }))
    }

    pub(crate) fn backup(&self) -> Option<&Backup> {
        self.0.backup.as_ref()
    }
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "`metrics_bearer_token` is set: `Authorization: Bearer <token>` missing or wrong", body = ErrorBody),
        (status = 403, description = "Secure mode without `metrics_bearer_token`: metrics are off", body = ErrorBody)))]
pub async fn metrics(request: HttpRequest, state: web::Data<Operations>) -> HttpResponse {
    if let Some(refused) = bearer_refusal(
        state.0.metrics_token.as_deref(),
        state.0.secure,
        request.headers(),
    ) {
        return refused;
    }
    let body = coffer_actors::metrics::exposition(&state.0.ledger).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Blnk's metrics guard (`api/middleware`, `MetricsAuth`): the refusal, if any.
fn bearer_refusal(
    token: Option<&str>,
    secure: bool,
    headers: &header::HeaderMap,
) -> Option<HttpResponse> {
    let Some(token) = token else {
        if secure {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                "AUTH_METRICS_DISABLED",
                "Metrics endpoint unavailable: metrics_bearer_token must be configured when \
                 secure mode is enabled",
            ));
        }
        return None;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if presented.is_empty() {
        return Some(unauthorized(
            "AUTH_METRICS_TOKEN_REQUIRED",
            "Authorization required: send Authorization: Bearer <metrics_bearer_token>",
        ));
    }
    let Some(candidate) = presented.strip_prefix(b"Bearer ") else {
        return Some(unauthorized(
            "AUTH_METRICS_TOKEN_REQUIRED",
            "Authorization header must use the Bearer scheme",
        ));
    };
    if !constant_time_eq(candidate, token.as_bytes()) {
        return Some(unauthorized(
            "AUTH_INVALID_BEARER_TOKEN",
            "Invalid bearer token",
        ));
    }
    None
}

fn unauthorized(code: &str, message: &str) -> HttpResponse {
    let mut response = refusal(StatusCode::UNAUTHORIZED, code, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Blnk's error body: `{"error": message, "error_detail": {"code", "message"}}`.
fn refusal(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ErrorBody::new(code, message))
}

/// Compares without stopping at the first difference (the length is not hidden).
use coffer_actors::access::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(token: Option<&str>, secure: bool, authorization: Option<&str>) -> u16 {
        let mut headers = header::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                header::AUTHORIZATION,
                header::HeaderValue::from_str(value).unwrap(),
            );
        }
        bearer_refusal(token, secure, &headers).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn the_bearer_matrix_matches_blnk() {
        let t = Some("s3cr3t-metrics-token");
        assert_eq!(status(None, false, None), 200);
        assert_eq!(status(None, false, Some("Bearer junk")), 200);
        assert_eq!(status(None, true, None), 403);
        assert_eq!(status(None, true, Some("Bearer anything")), 403);
        assert_eq!(status(t, true, None), 401);
        assert_eq!(status(t, true, Some("")), 401);
        assert_eq!(status(t, true, Some("Bearer")), 401);
        assert_eq!(status(t, true, Some("Bearer ")), 401);
        assert_eq!(status(t, true, Some("bearer s3cr3t-metrics-token")), 401);
        assert_eq!(status(t, true, Some("BEARER s3cr3t-metrics-token")), 401);
        assert_eq!(status(t, true, Some("Basic s3cr3t-metrics-token")), 401);
        assert_eq!(status(t, true, Some("Bearer  s3cr3t-metrics-token")), 401);
        assert_eq!(status(t, true, Some("Bearer s3cr3t-metrics-token ")), 401);
        assert_eq!(status(t, true, Some("Bearer s3cr3t")), 401);
        assert_eq!(status(t, true, Some("Bearer s3cr3t-metrics-tokenx")), 401);
        assert_eq!(status(t, true, Some("Bearer s3cr3t-metrics-token")), 200);
        assert_eq!(status(t, false, None), 401);
        assert_eq!(status(t, false, Some("Bearer s3cr3t-metrics-token")), 200);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
