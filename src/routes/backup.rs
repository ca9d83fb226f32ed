//! `GET /backup`: a dump of the database into `backup_dir` (see [`crate::backup`]).
//! 200 `"backup successful"`; failures 500 `ADMIN_BACKUP_FAILED` in the shape Blnk's backup
//! endpoints use. Who may call it (the master key, or an API key with a `backup` scope) is
//! `http::auth`'s rule.

use crate::routes::observability::Operations;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn backup(state: web::Data<Operations>) -> HttpResponse {
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
