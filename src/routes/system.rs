use crate::http::error::ApiError;
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[utoipa::path(get, path = "/", operation_id = "root", tag = "system",
    responses((status = 200, description = "`\"server running...\"`", content_type = "application/json", body = String)))]
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json("server running...")
}

/// `{"status":"UP"}`, or 503 with the reason when the database does not answer.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "system",
    responses((status = 200, description = "Up", body = HealthJson),
        (status = 503, description = "The database does not answer", body = HealthJson)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.ledger.store().ping(state.health_timeout_ms).await {
        Ok(()) => HttpResponse::Ok().json(HealthJson {
            reason: None,
            status: "UP",
        }),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            HttpResponse::ServiceUnavailable().json(HealthJson {
                reason: Some("database unreachable"),
                status: "DOWN",
            })
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HealthJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// `UP` or `DOWN`.
    status: &'static str,
}

pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(format!(
        "{} {}",
        request.method(),
        request.path()
    )))
}
