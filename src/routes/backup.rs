//! `GET /backup`: a dump of the database into `backup_dir` (see [`crate::backup`]).
//! 200 `"backup successful"`; failures 500 `ADMIN_BACKUP_FAILED` in the shape Blnk's backup
//! endpoints use. In secure mode (`server.secure`) the master key is required in `X-Blnk-Key`.

use crate::routes::observability::{constant_time_eq, refusal, Operations};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

pub async fn backup(request: HttpRequest, state: web::Data<Operations>) -> HttpResponse {
    if state.secure() {
        let presented = request
            .headers()
            .get("X-Blnk-Key")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if presented.is_empty() {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "AUTH_MISSING_API_KEY",
                "Authentication required. Use X-Blnk-Key header",
            );
        }
        let master = state.secret_key().unwrap_or_default().as_bytes();
        if master.is_empty() || !constant_time_eq(presented, master) {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "AUTH_INVALID_API_KEY",
                "Invalid API key",
            );
        }
    }
    let Some(backup) = state.backup() else {
        return failed();
    };
    match backup.run().await {
        Ok(path) => {
            tracing::info!(path = %path.display(), "backup written");
            HttpResponse::Ok().json("backup successful")
        }
        Err(error) => {
            // The cause (paths, pg_dump's words) is logged, never sent.
            tracing::error!(%error, "backup failed");
            failed()
        }
    }
}

/// Blnk's backup error shape: `{"error": {code, message}, "error_detail": {code, message}}`.
fn failed() -> HttpResponse {
    let detail = json!({ "code": "ADMIN_BACKUP_FAILED", "message": "backup failed" });
    HttpResponse::InternalServerError().json(json!({ "error": detail, "error_detail": detail }))
}
