use crate::http::error::ApiError;
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json("server running...")
}

/// `{"status":"UP"}`, or 503 with the reason when the database does not answer.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.ledger.store().ping(state.health_timeout_ms).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "UP" })),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "DOWN", "reason": "database unreachable" }))
        }
    }
}

pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(format!(
        "{} {}",
        request.method(),
        request.path()
    )))
}
