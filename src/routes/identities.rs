//! Identities (Blnk 1.6): CRUD, filters, and the tokenization of personal fields.

use crate::http::dto::{message, page, IdentityJson, MessageJson, Page};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::{meta_object, parse_body};
use crate::http::query::{whole_or_page, FilterBody, ListParams};
use crate::http::{filter_query, read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::identity::{
    check_identity_id, parse_dob, tokenized_fields, IdentityFields, TokenField,
};
use coffer_actors::domain::ids;
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An identity as a client sends it (every field optional: Blnk stores `""` for absent ones).
#[derive(Deserialize, ToSchema)]
pub struct IdentityBody {
    identity_id: Option<String>,
    identity_type: Option<String>,
    organization_name: Option<String>,
    category: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    other_names: Option<String>,
    gender: Option<String>,
    email_address: Option<String>,
    phone_number: Option<String>,
    nationality: Option<String>,
    street: Option<String>,
    country: Option<String>,
    state: Option<String>,
    post_code: Option<String>,
    city: Option<String>,
    dob: Option<String>,
    meta_data: Option<serde_json::Value>,
}

impl IdentityBody {
    /// The checked fields (every problem named at once, Blnk's `field: reason; …`).
    fn fields(self) -> Result<(Option<String>, IdentityFields), ApiError> {
        let mut problems = Vec::new();
        let dob = match self.dob.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let parsed = parse_dob(text);
                if parsed.is_none() {
                    problems.push("dob: must be an RFC 3339 time or a date (YYYY-MM-DD)".into());
                }
                parsed
            }
        };
        let text = |value: Option<String>| value.unwrap_or_default();
        let fields = IdentityFields {
            identity_type: text(self.identity_type).trim().to_ascii_lowercase(),
            organization_name: text(self.organization_name),
            category: text(self.category),
            first_name: text(self.first_name),
            last_name: text(self.last_name),
            other_names: text(self.other_names),
            gender: text(self.gender),
            email_address: text(self.email_address),
            phone_number: text(self.phone_number),
            nationality: text(self.nationality),
            street: text(self.street),
            country: text(self.country),
            state: text(self.state),
            post_code: text(self.post_code),
            city: text(self.city),
            dob,
            meta_data: meta_object(self.meta_data)?,
        };
        problems.extend(fields.problems(chrono::Utc::now()));
        if !problems.is_empty() {
            return Err(
                LedgerError::IdentityValidation(format!("{}.", problems.join("; "))).into(),
            );
        }
        let identity_id = self.identity_id.filter(|id| !id.is_empty());
        Ok((identity_id, fields))
    }
}

#[utoipa::path(post, path = "/identities", operation_id = "create_identity", tag = "identities",
    request_body = IdentityBody,
    responses((status = 201, description = "The identity", body = IdentityJson)))]
pub async fn create(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: IdentityBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let (identity_id, fields) = body.fields()?;
    let identity_id = match identity_id {
        Some(id) => {
            check_identity_id(&id).map_err(LedgerError::IdentityValidation)?;
            id
        }
        None => ids::new_id(ids::IDENTITY_PREFIX),
    };
    let created = state
        .ledger
        .store()
        .create_identity(identity_id, fields)
        .await?;
    Ok(HttpResponse::Created().json(IdentityJson::from(&created)))
}

#[utoipa::path(get, path = "/identities/{id}", operation_id = "get_identity", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity", body = IdentityJson), (status = 404, description = "Identity not found", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.ledger.store().identity(&id).await?;
    Ok(HttpResponse::Ok().json(IdentityJson::from(&identity)))
}

async fn respond(state: &AppState, query: ListQuery) -> Result<HttpResponse, ApiError> {
    let (rows, total) = state.ledger.store().list_identities(query).await?;
    Ok(page(rows.iter().map(IdentityJson::from).collect(), total))
}

/// Every identity without paging or filters (Blnk), else a page (20 by default).
#[utoipa::path(get, path = "/identities", operation_id = "list_identities", tag = "identities",
    params(ListParams),
    responses((status = 200, description = "Every identity, or a page with `limit`/`offset` or filters", body = Vec<IdentityJson>)))]
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, whole_or_page(request.query_string(), 20)?).await
}

#[utoipa::path(post, path = "/identities/filter", operation_id = "filter_identities", tag = "identities",
    request_body = FilterBody,
    responses((status = 200, description = "The matching identities", body = Page<IdentityJson>)))]
pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}

/// `PUT`: a full replace (Blnk updates only the fields given; a careful client expects PUT
/// to replace). The id in the path wins over one in the body.
#[utoipa::path(put, path = "/identities/{id}", operation_id = "replace_identity", tag = "identities",
    params(("id" = String, Path, description = "Identity id")), request_body = IdentityBody,
    responses((status = 200, description = "Replaced", body = MessageJson), (status = 404, description = "Identity not found", body = ErrorBody)))]
pub async fn replace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: IdentityBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let (_, fields) = body.fields()?;
    state.ledger.store().replace_identity(&id, fields).await?;
    Ok(message("Identity updated successfully"))
}

#[utoipa::path(delete, path = "/identities/{id}", operation_id = "delete_identity", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "Deleted", body = MessageJson), (status = 404, description = "Identity not found", body = ErrorBody),
        (status = 409, description = "Balances or accounts still use it", body = ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.ledger.store().delete_identity(&id).await?;
    Ok(message("Identity deleted successfully"))
}

#[derive(Deserialize, ToSchema)]
pub struct FieldsBody {
    fields: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct DetokenizedField {
    field: String,
    value: String,
}

#[derive(Serialize, ToSchema)]
pub struct DetokenizedFields {
    fields: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenizedFields {
    tokenized_fields: Vec<&'static str>,
}

/// Tokenizable fields by the names a client used (unknown names refused, repeats once).
fn tokenizable(names: &[String]) -> Result<Vec<TokenField>, ApiError> {
    let mut fields = Vec::new();
    for name in names {
        let field = TokenField::parse(name)
            .ok_or_else(|| LedgerError::FieldNotTokenizable(name.clone()))?;
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

#[utoipa::path(post, path = "/identities/{id}/tokenize/{field}", operation_id = "tokenize_identity_field", tag = "identities",
    params(("id" = String, Path, description = "Identity id"), ("field" = String, Path, description = "A tokenizable field (`FirstName`, `email_address`, …)")),
    responses((status = 200, description = "Tokenized", body = MessageJson), (status = 404, description = "Identity not found", body = ErrorBody),
        (status = 403, description = "Tokenization is not configured (`IDT_TOKENIZATION_DISABLED`)", body = ErrorBody),
        (status = 409, description = "Already tokenized", body = ErrorBody)))]
pub async fn tokenize_field(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, field) = path.into_inner();
    let tokenizer = state.tokenizer()?;
    let fields = tokenizable(&[field])?;
    state
        .ledger
        .store()
        .tokenize_identity_fields(&id, fields, tokenizer)
        .await?;
    Ok(message("Field tokenized successfully"))
}

/// All of `fields`, or none: one already tokenized refuses the request (Blnk stops there,
/// keeping the fields before it tokenized).
#[utoipa::path(post, path = "/identities/{id}/tokenize", operation_id = "tokenize_identity", tag = "identities",
    params(("id" = String, Path, description = "Identity id")), request_body = FieldsBody,
    responses((status = 200, description = "Tokenized", body = MessageJson), (status = 404, description = "Identity not found", body = ErrorBody),
        (status = 403, description = "Tokenization is not configured (`IDT_TOKENIZATION_DISABLED`)", body = ErrorBody),
        (status = 409, description = "A field is already tokenized", body = ErrorBody)))]
pub async fn tokenize(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tokenizer = state.tokenizer()?;
    let body: FieldsBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let names = body.fields.unwrap_or_default();
    if names.is_empty() {
        return Err(
            LedgerError::LedgerValidation("at least one field must be specified".into()).into(),
        );
    }
    let fields = tokenizable(&names)?;
    state
        .ledger
        .store()
        .tokenize_identity_fields(&id, fields, tokenizer)
        .await?;
    Ok(message("Fields tokenized successfully"))
}

#[utoipa::path(get, path = "/identities/{id}/detokenize/{field}", operation_id = "detokenize_identity_field", tag = "identities",
    params(("id" = String, Path, description = "Identity id"), ("field" = String, Path, description = "A tokenized field")),
    responses((status = 200, description = "The field's value", body = DetokenizedField), (status = 404, description = "Identity not found", body = ErrorBody),
        (status = 403, description = "Tokenization is not configured (`IDT_TOKENIZATION_DISABLED`)", body = ErrorBody)))]
pub async fn detokenize_field(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, field) = path.into_inner();
    let tokenizer = state.tokenizer()?;
    let requested = vec![(field.clone(), TokenField::parse(&field))];
    let mut values = state
        .ledger
        .store()
        .detokenize_identity_fields(&id, Some(requested), tokenizer)
        .await?;
    let (_, value) = values.pop().expect("one value per field asked");
    Ok(HttpResponse::Ok().json(DetokenizedField { field, value }))
}

/// The values of `fields` by the names asked, or of every tokenized field (Blnk's names)
/// when none are named.
#[utoipa::path(post, path = "/identities/{id}/detokenize", operation_id = "detokenize_identity", tag = "identities",
    params(("id" = String, Path, description = "Identity id")), request_body = FieldsBody,
    responses((status = 200, description = "The values, by the names asked", body = DetokenizedFields), (status = 404, description = "Identity not found", body = ErrorBody),
        (status = 403, description = "Tokenization is not configured (`IDT_TOKENIZATION_DISABLED`)", body = ErrorBody)))]
pub async fn detokenize(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tokenizer = state.tokenizer()?;
    let body: FieldsBody = parse_body(&read_body(payload, state.body_bytes_max).await?)?;
    let requested = body.fields.filter(|names| !names.is_empty()).map(|names| {
        names
            .into_iter()
            .map(|name| {
                let field = TokenField::parse(&name);
                (name, field)
            })
            .collect()
    });
    let values = state
        .ledger
        .store()
        .detokenize_identity_fields(&id, requested, tokenizer)
        .await?;
    let fields = values.into_iter().collect();
    Ok(HttpResponse::Ok().json(DetokenizedFields { fields }))
}

#[utoipa::path(get, path = "/identities/{id}/tokenized-fields", operation_id = "list_tokenized_fields", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The tokenized fields", body = TokenizedFields), (status = 404, description = "Identity not found", body = ErrorBody)))]
pub async fn tokenized(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.ledger.store().identity(&id).await?;
    let tokenized_fields = tokenized_fields(identity.meta_data.as_ref())
        .into_iter()
        .map(TokenField::pascal)
        .collect();
    Ok(HttpResponse::Ok().json(TokenizedFields { tokenized_fields }))
}
