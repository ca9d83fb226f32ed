//! `POST /{entity-id}/metadata` (Blnk 1.8): merges keys into a ledger's, balance's,
//! identity's or transaction's `meta_data`; on a balance, `BLNK_RUN_RECONCILIATION: "SOURCE"`
//! also recomputes it from its transactions.

use crate::http::error::ApiError;
use crate::http::json::parse_body;
use crate::http::{read_body, AppState};
use actix_web::{web, HttpResponse};
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct MetadataBody {
    meta_data: Option<Value>,
}

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
    Ok(HttpResponse::Ok().json(json!({ "meta_data": meta_data })))
}
