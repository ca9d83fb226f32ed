//! `POST /{entity-id}/metadata` (Blnk 1.8): merges keys into a ledger's, balance's,
//! identity's or transaction's `meta_data`; on a balance, `BLNK_RUN_RECONCILIATION: "SOURCE"`
//! also recomputes it from its transactions.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::parse_body;
use crate::http::{read_body, AppState};
use actix_web::{web, HttpResponse};
use coffer_actors::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct MetadataBody {
    /// The keys to merge (a JSON object).
    meta_data: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct MetadataJson {
    meta_data: Value,
}

#[utoipa::path(post, path = "/{id}/metadata", operation_id = "update_metadata", tag = "metadata",
    params(("id" = String, Path, description = "A ledger, balance, identity or transaction id (`ldg_…`, `bln_…`, `idt_…`, `txn_…`)")),
    request_body = MetadataBody,
    responses((status = 200, description = "The merged metadata", body = MetadataJson),
        (status = 404, description = "Entity not found", body = ErrorBody)))]
pub async fn update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: MetadataBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let update = match body.meta_data {
        Some(Value::Object(map)) => map,
        None | Some(Value::Null) => {
            return Err(LedgerError::LedgerValidation("meta_data: cannot be blank.".into()).into())
        }
        Some(_) => {
            return Err(ApiError::Malformed(
                "meta_data must be a JSON object".into(),
            ))
        }
    };
    let meta_data = state.ledger.update_metadata(&id, update).await?;
    Ok(HttpResponse::Ok().json(MetadataJson { meta_data }))
}
