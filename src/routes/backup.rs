//! `GET /backup`: a dump of the database into `backup_dir` (see [`crate::backup`]).
//! 200 `"backup successful"`; failures 500 `ADMIN_BACKUP_FAILED` in the shape Blnk's backup
//! endpoints use. Who may call it (the master key, or an API key with a `backup` scope) is
//! `http::auth`'s rule.

use crate::http::error::ErrorDetail;
use crate::routes::observability::Operations;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[utoipa::path(get, path = "/backup", operation_id = "backup", tag = "system",
    responses((status = 200, description = "`\"backup successful\"`", content_type = "application/json", body = String),
        (status = 500, description = "The dump failed (`ADMIN_BACKUP_FAILED`; the cause is logged)", body = BackupFailure)))]
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
    let detail = || ErrorDetail {
        code: "ADMIN_BACKUP_FAILED".to_owned(),
        details: None,
        message: "backup failed".to_owned(),
    };
    HttpResponse::InternalServerError().json(BackupFailure {
        error: detail(),
        error_detail: detail(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct BackupFailure {
    error: ErrorDetail,
    error_detail: ErrorDetail,
}
