//! API errors in Blnk's shape, `{"error": "...", "error_detail": {"code", "message", "details"}}`,
//! and the one exhaustive table from error to code and HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use coffer_actors::access::AccessError;
use coffer_actors::domain::AmountError;
use coffer_actors::events::search::api::SearchError;
use coffer_actors::LedgerError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or a field has the wrong JSON type.
    #[error("{0}")]
    Malformed(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A query parameter is bad (`limit=abc`).
    #[error("{0}")]
    BadQuery(String),
    #[error("route {0} not found")]
    RouteNotFound(String),
    #[error("Too many requests, please try again later.")]
    RateLimited,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// Blnk's code and HTTP status for every error. No wildcard arm: a new variant must be
/// placed here on purpose.
pub fn code_and_status(error: &ApiError) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match error {
        ApiError::Malformed(_) => ("GEN_MALFORMED_REQUEST", S::BAD_REQUEST),
        ApiError::PayloadTooLarge(_) => ("GEN_PAYLOAD_TOO_LARGE", S::PAYLOAD_TOO_LARGE),
        ApiError::BadQuery(_) => ("GEN_BAD_REQUEST", S::BAD_REQUEST),
        ApiError::RouteNotFound(_) => ("GEN_NOT_FOUND", S::NOT_FOUND),
        ApiError::RateLimited => ("GEN_RATE_LIMITED", S::TOO_MANY_REQUESTS),
        ApiError::Access(error) => access_code_and_status(error),
        ApiError::Ledger(error) => ledger_code_and_status(error),
        ApiError::Search(error) => search_code_and_status(error),
    }
}

fn search_code_and_status(error: &SearchError) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match error {
        // Blnk has no search routes without Typesense: not found, saying why.
        SearchError::Disabled => ("SRCH_DISABLED", S::NOT_FOUND),
        SearchError::UnknownCollection(_) | SearchError::BadRequest(_) | SearchError::Query(_) => {
            ("SRCH_QUERY_INVALID", S::BAD_REQUEST)
        }
        SearchError::Unavailable(_) => ("SRCH_UNAVAILABLE", S::SERVICE_UNAVAILABLE),
        SearchError::ReindexNotStarted => ("SRCH_REINDEX_NOT_STARTED", S::NOT_FOUND),
        SearchError::Store(error) => ledger_code_and_status(error),
    }
}

fn access_code_and_status(error: &AccessError) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match error {
        AccessError::MissingKey => ("AUTH_MISSING_API_KEY", S::UNAUTHORIZED),
        AccessError::InvalidKey => ("AUTH_INVALID_API_KEY", S::UNAUTHORIZED),
        AccessError::ExpiredKey => ("AUTH_EXPIRED_API_KEY", S::UNAUTHORIZED),
        AccessError::UnknownResource => ("AUTH_UNKNOWN_RESOURCE", S::FORBIDDEN),
        AccessError::InsufficientPermissions { .. } => {
            ("AUTH_INSUFFICIENT_PERMISSIONS", S::FORBIDDEN)
        }
        AccessError::CrossOwnerAccess => ("AUTH_CROSS_OWNER_ACCESS", S::FORBIDDEN),
        AccessError::ScopeEscalation(_) => ("AUTH_SCOPE_ESCALATION", S::FORBIDDEN),
        AccessError::OwnerRequired => ("APIKEY_OWNER_REQUIRED", S::BAD_REQUEST),
        AccessError::InvalidRequest(_) => ("APIKEY_INVALID", S::BAD_REQUEST),
        AccessError::KeyNotFound(_) => ("APIKEY_NOT_FOUND", S::NOT_FOUND),
        AccessError::MasterKeyRequired(_) => ("AUTH_MASTER_KEY_REQUIRED", S::FORBIDDEN),
        AccessError::Ledger(error) => ledger_code_and_status(error),
    }
}

fn ledger_code_and_status(error: &LedgerError) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match error {
        LedgerError::LedgerValidation(_) => ("GEN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::BalanceValidation(_) => ("BAL_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::TransactionValidation(_) => ("TXN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::IdentityValidation(_) => ("IDT_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::AccountValidation(_) => ("GEN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::MonitorValidation(_) => ("GEN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::HookValidation(_) => ("HOOK_INVALID", S::BAD_REQUEST),
        LedgerError::InvalidFilter(_) => ("GEN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::InvalidTimestamp => ("BAL_INVALID_TIMESTAMP", S::BAD_REQUEST),
        LedgerError::InvalidEntityId(_) => ("META_INVALID_ENTITY_ID", S::BAD_REQUEST),
        LedgerError::FieldNotTokenizable(_) => ("IDT_FIELD_NOT_TOKENIZABLE", S::BAD_REQUEST),
        LedgerError::FieldNotTokenized(_) => ("IDT_FIELD_NOT_TOKENIZED", S::BAD_REQUEST),
        LedgerError::TokenizationDisabled => ("IDT_TOKENIZATION_DISABLED", S::FORBIDDEN),
        LedgerError::InvalidAmount(amount) => match amount {
            AmountError::PrecisionNotInteger
            | AmountError::PrecisionNegative
            | AmountError::PrecisionTooLarge => ("TXN_PRECISION_NOT_INTEGER", S::BAD_REQUEST),
            AmountError::NotANumber
            | AmountError::NotPositive
            | AmountError::TooLarge
            | AmountError::NotAnInteger => ("TXN_INVALID_AMOUNT", S::BAD_REQUEST),
        },
        LedgerError::InvalidDistribution(_) => ("TXN_INVALID_DISTRIBUTION", S::BAD_REQUEST),
        LedgerError::BulkEmpty => ("TXN_BULK_EMPTY", S::BAD_REQUEST),
        LedgerError::BulkLimitExceeded(_) => ("TXN_BULK_LIMIT_EXCEEDED", S::BAD_REQUEST),
        LedgerError::BulkItemInvalid { .. } => ("TXN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::InvalidStatusAction(_) => ("TXN_INVALID_STATUS_ACTION", S::BAD_REQUEST),
        LedgerError::SameSourceAndDestination => ("TXN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::LedgerNotFound(_) => ("LGR_NOT_FOUND", S::NOT_FOUND),
        LedgerError::BalanceNotFound(_) => ("BAL_NOT_FOUND", S::NOT_FOUND),
        LedgerError::TransactionNotFound(_) => ("TXN_NOT_FOUND", S::NOT_FOUND),
        LedgerError::IdentityNotFound(_) => ("IDT_NOT_FOUND", S::NOT_FOUND),
        LedgerError::AccountNotFound(_) => ("ACC_NOT_FOUND", S::NOT_FOUND),
        LedgerError::MonitorNotFound(_) => ("BAL_MONITOR_NOT_FOUND", S::NOT_FOUND),
        LedgerError::HookNotFound(_) => ("HOOK_NOT_FOUND", S::NOT_FOUND),
        LedgerError::EntityNotFound(_) => ("META_ENTITY_NOT_FOUND", S::NOT_FOUND),
        LedgerError::PrecisionMismatch { .. } => ("TXN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::NotInflight(_) => ("TXN_NOT_INFLIGHT", S::BAD_REQUEST),
        LedgerError::AlreadyCommitted(_) => ("TXN_ALREADY_COMMITTED", S::CONFLICT),
        LedgerError::AlreadyVoided(_) => ("TXN_ALREADY_VOIDED", S::CONFLICT),
        LedgerError::CommitAmountExceeded { .. } => ("TXN_COMMIT_AMOUNT_EXCEEDED", S::BAD_REQUEST),
        LedgerError::ActionAlreadyQueued(_) => ("GEN_CONFLICT", S::CONFLICT),
        LedgerError::NotRefundable { .. } => ("GEN_BAD_REQUEST", S::BAD_REQUEST),
        LedgerError::AlreadyRefunded(_) => ("GEN_CONFLICT", S::CONFLICT),
        LedgerError::DuplicateReference(_) => ("TXN_DUPLICATE_REFERENCE", S::CONFLICT),
        LedgerError::DuplicateBalance { .. } => ("GEN_CONFLICT", S::CONFLICT),
        // Blnk answers a taken identity id as a validation error (its upgrade of GEN_CONFLICT).
        LedgerError::DuplicateIdentity(_) => ("IDT_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::DuplicateAccount(_) => ("ACC_DUPLICATE", S::CONFLICT),
        LedgerError::FieldAlreadyTokenized(_) => ("IDT_FIELD_ALREADY_TOKENIZED", S::CONFLICT),
        LedgerError::IdentityInUse { .. } => ("GEN_CONFLICT", S::CONFLICT),
        LedgerError::InsufficientFunds(_) => ("TXN_INSUFFICIENT_FUNDS", S::BAD_REQUEST),
        LedgerError::OverdraftLimitExceeded(_) => ("TXN_INSUFFICIENT_FUNDS", S::BAD_REQUEST),
        LedgerError::UnitRefused(_) => ("TXN_VALIDATION_ERROR", S::BAD_REQUEST),
        LedgerError::BatchRefused { cause, .. } => ledger_code_and_status(cause),
        LedgerError::Overloaded => ("QUEUE_BACKPRESSURE", S::SERVICE_UNAVAILABLE),
        LedgerError::AccountNumberGeneration(_) => {
            ("ACC_GENERATION_FAILED", S::INTERNAL_SERVER_ERROR)
        }
        LedgerError::Storage(_) | LedgerError::Queue(_) | LedgerError::Internal(_) => {
            ("GEN_INTERNAL", S::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Validation failures also carry Blnk's legacy `errors` key.
fn is_validation(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Ledger(
            LedgerError::LedgerValidation(_)
                | LedgerError::BalanceValidation(_)
                | LedgerError::TransactionValidation(_)
                | LedgerError::AccountValidation(_)
                | LedgerError::MonitorValidation(_)
                | LedgerError::InvalidFilter(_)
        )
    )
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        code_and_status(self).1
    }

    fn error_response(&self) -> HttpResponse {
        let (status, body) = error_body(self);
        HttpResponse::build(status).json(body)
    }
}

/// Blnk's error body. The fields are in the order the wire has always had them (the keys of
/// a `serde_json` map, alphabetical).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The batch a failed `POST /transactions/bulk` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The message (`"internal server error"` for a 5xx: the cause is logged, never sent).
    pub error: String,
    pub error_detail: ErrorDetail,
    /// Blnk's legacy key on validation failures: the message, or the filter problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code (`TXN_INSUFFICIENT_FUNDS`, `GEN_MALFORMED_REQUEST`, …).
    pub code: String,
    /// `{"index": n}` for a bulk item, `[{"Param", "Message"}]` for filter problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    pub message: String,
}

impl ErrorBody {
    /// A body with no details: `{"error": message, "error_detail": {"code", "message"}}`.
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            batch_id: None,
            error: message.to_owned(),
            error_detail: ErrorDetail {
                code: code.to_owned(),
                details: None,
                message: message.to_owned(),
            },
            errors: None,
        }
    }
}

/// The status and body of an error (callers may fill in more, such as a bulk `batch_id`).
pub fn error_body(error: &ApiError) -> (StatusCode, ErrorBody) {
    let (code, status) = code_and_status(error);
    // A failed account-number service is named (its own words, never its URL): the
    // caller can act on it, and nothing internal is in it.
    let shown = status == StatusCode::SERVICE_UNAVAILABLE
        || matches!(
            error,
            ApiError::Ledger(LedgerError::AccountNumberGeneration(_))
        );
    let message = if status.is_server_error() && !shown {
        // The cause is logged, never sent.
        tracing::error!(%error, "request failed");
        "internal server error".to_owned()
    } else {
        error.to_string()
    };
    let details = match error {
        ApiError::Ledger(LedgerError::InvalidFilter(filter)) => {
            Some(json!([{ "Param": filter.param, "Message": filter.message }]))
        }
        ApiError::Ledger(
            LedgerError::BulkItemInvalid { index, .. } | LedgerError::BatchRefused { index, .. },
        ) => Some(json!({ "index": index })),
        _ => None,
    };
    let mut body = ErrorBody::new(code, &message);
    let filter_errors = matches!(error, ApiError::Ledger(LedgerError::InvalidFilter(_)));
    if filter_errors {
        body.errors = details.clone();
    } else if is_validation(error) {
        body.errors = Some(json!(message));
    }
    body.error_detail.details = details;
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed body serializes exactly as the map it replaced did.
    #[test]
    fn the_error_body_keeps_its_wire_bytes() {
        let (status, body) = error_body(&ApiError::Ledger(LedgerError::TransactionValidation(
            "currency: cannot be blank.".into(),
        )));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"currency: cannot be blank.","error_detail":{"code":"TXN_VALIDATION_ERROR","message":"currency: cannot be blank."},"errors":"currency: cannot be blank."}"#
        );
        let (_, mut body) = error_body(&ApiError::Ledger(LedgerError::BulkItemInvalid {
            index: 3,
            message: "bad".into(),
        }));
        body.batch_id = Some("bulk_1".into());
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"batch_id":"bulk_1","error":"transactions[3]: bad","error_detail":{"code":"TXN_VALIDATION_ERROR","details":{"index":3},"message":"transactions[3]: bad"}}"#
        );
    }
}
