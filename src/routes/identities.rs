//! Identities (Blnk 1.6): CRUD, filters, and the tokenization of personal fields.

use crate::http::dto::{message, page, IdentityJson};
use crate::http::error::ApiError;
use crate::http::json::{meta_object, parse_body};
use crate::http::query::whole_or_page;
use crate::http::{filter_query, read_body, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use coffer_actors::domain::identity::{
    check_identity_id, parse_dob, tokenized_fields, IdentityFields, TokenField,
};
use coffer_actors::domain::ids;
use coffer_actors::store::ListQuery;
use coffer_actors::LedgerError;
use serde::Deserialize;
use serde_json::json;

/// An identity as a client sends it (every field optional: Blnk stores `""` for absent ones).
#[derive(Deserialize)]
struct IdentityBody {
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
pub async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    respond(&state, whole_or_page(request.query_string(), 20)?).await
}

pub async fn filter(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    respond(&state, filter_query(payload, state.body_bytes_max).await?).await
}

/// `PUT`: a full replace (Blnk updates only the fields given; a careful client expects PUT
/// to replace). The id in the path wins over one in the body.
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

pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.ledger.store().delete_identity(&id).await?;
    Ok(message("Identity deleted successfully"))
}

#[derive(Deserialize)]
struct FieldsBody {
    fields: Option<Vec<String>>,
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
    Ok(HttpResponse::Ok().json(json!({ "field": field, "value": value })))
}

/// The values of `fields` by the names asked, or of every tokenized field (Blnk's names)
/// when none are named.
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
    let fields: serde_json::Map<String, serde_json::Value> = values
        .into_iter()
        .map(|(name, value)| (name, value.into()))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "fields": fields })))
}

pub async fn tokenized(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.ledger.store().identity(&id).await?;
    let names: Vec<&str> = tokenized_fields(identity.meta_data.as_ref())
        .into_iter()
        .map(TokenField::pascal)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "tokenized_fields": names })))
}
