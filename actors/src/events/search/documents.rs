//! The collections and their documents, shaped like Blnk's: a document is the entity as the
//! API serves it (the event's `data`), with `id` = the entity id, big integers as strings,
//! times as Unix seconds (int64) and `meta_data` an object. The payload's values are moved
//! across as raw JSON text: an amount is never parsed into a number here.

use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The collections Blnk's search API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Ledgers,
    Identities,
    Balances,
    Transactions,
    Reconciliations,
}

/// Dependencies first: a transaction's balances are indexed before it.
pub const ALL: [Collection; 5] = [
    Collection::Ledgers,
    Collection::Identities,
    Collection::Balances,
    Collection::Transactions,
    Collection::Reconciliations,
];

/// A schema field: name, Typesense type, optional.
type Field = (&'static str, &'static str, bool);

const LEDGER_FIELDS: &[Field] = &[
    ("ledger_id", "string", false),
    ("name", "string", false),
    ("created_at", "int64", false),
    ("meta_data", "object", true),
];

const BALANCE_FIELDS: &[Field] = &[
    ("balance", "string", false),
    ("version", "int64", false),
    ("inflight_balance", "string", false),
    ("credit_balance", "string", false),
    ("inflight_credit_balance", "string", false),
    ("debit_balance", "string", false),
    ("inflight_debit_balance", "string", false),
    ("precision", "float", false),
    ("ledger_id", "string", false),
    ("identity_id", "string", true),
    ("balance_id", "string", false),
    ("indicator", "string", false),
    ("currency", "string", false),
    ("created_at", "int64", false),
    ("inflight_expires_at", "int64", false),
    ("meta_data", "object", true),
];

const TRANSACTION_FIELDS: &[Field] = &[
    ("precise_amount", "string", false),
    ("amount", "float", false),
    ("precision", "float", false),
    ("transaction_id", "string", false),
    ("parent_transaction", "string", false),
    ("source", "string", false),
    ("destination", "string", false),
    ("reference", "string", false),
    ("currency", "string", false),
    ("description", "string", false),
    ("status", "string", false),
    ("hash", "string", false),
    ("allow_overdraft", "bool", false),
    ("inflight", "bool", false),
    ("created_at", "int64", false),
    ("scheduled_for", "int64", false),
    ("inflight_expiry_date", "int64", false),
    ("effective_date", "int64", false),
    ("meta_data", "object", true),
];

const RECONCILIATION_FIELDS: &[Field] = &[
    ("reconciliation_id", "string", false),
    ("upload_id", "string", false),
    ("status", "string", false),
    ("matched_transactions", "int32", false),
    ("unmatched_transactions", "int32", false),
    ("started_at", "int64", false),
    ("completed_at", "int64", false),
];

const IDENTITY_FIELDS: &[Field] = &[
    ("identity_id", "string", false),
    ("identity_type", "string", false),
    ("organization_name", "string", false),
    ("category", "string", false),
    ("first_name", "string", false),
    ("last_name", "string", false),
    ("other_names", "string", false),
    ("gender", "string", false),
    ("email_address", "string", false),
    ("phone_number", "string", false),
    ("nationality", "string", false),
    ("street", "string", false),
    ("country", "string", false),
    ("state", "string", false),
    ("post_code", "string", false),
    ("city", "string", false),
    ("dob", "int64", false),
    ("created_at", "int64", false),
    ("meta_data", "object", true),
];

/// Integers of any size, sent as strings (Typesense's numbers are 64-bit at most).
const BIG_INTEGER_FIELDS: &[&str] = &[
    "precise_amount",
    "balance",
    "inflight_balance",
    "credit_balance",
    "inflight_credit_balance",
    "debit_balance",
    "inflight_debit_balance",
    "queued_debit_balance",
    "queued_credit_balance",
];

/// RFC 3339 texts in the payload, Unix seconds in the document.
const TIME_FIELDS: &[&str] = &[
    "created_at",
    "scheduled_for",
    "inflight_expiry_date",
    "inflight_commit_date",
    "effective_date",
    "inflight_expires_at",
    "dob",
    "started_at",
    "completed_at",
];

impl Collection {
    /// The name Blnk's API uses (`POST /search/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ledgers => "ledgers",
            Self::Identities => "identities",
            Self::Balances => "balances",
            Self::Transactions => "transactions",
            Self::Reconciliations => "reconciliations",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|c| c.name() == name)
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Self::Ledgers => LEDGER_FIELDS,
            Self::Identities => IDENTITY_FIELDS,
            Self::Balances => BALANCE_FIELDS,
            Self::Transactions => TRANSACTION_FIELDS,
            Self::Reconciliations => RECONCILIATION_FIELDS,
        }
    }

    /// Typesense's field objects of this collection's schema.
    pub fn field_json(self) -> Vec<serde_json::Value> {
        self.fields()
            .iter()
            .map(|(name, kind, optional)| {
                serde_json::json!({"name": name, "type": kind, "facet": true, "optional": optional})
            })
            .collect()
    }

    /// The body of `POST /collections` for this collection, named `full_name`.
    pub fn schema_json(self, full_name: &str) -> String {
        serde_json::json!({
            "name": full_name,
            "fields": self.field_json(),
            "default_sorting_field": self.sorting_field(),
            "enable_nested_fields": true,
        })
        .to_string()
    }

    fn sorting_field(self) -> &'static str {
        match self {
            Self::Reconciliations => "started_at",
            _ => "created_at",
        }
    }
}

/// Why a payload could not be made into a document (it is not a JSON object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {collection} document of {id} is not a JSON object: {why}")]
pub struct DocumentError {
    pub collection: &'static str,
    pub id: String,
    pub why: String,
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Unix seconds of an RFC 3339 text; the empty text and anything unreadable are 0 (Blnk
/// logs and writes 0 too).
fn unix_seconds(raw: &RawValue) -> i64 {
    let Ok(text) = serde_json::from_str::<String>(raw.get()) else {
        // Already a number: whole seconds as they are.
        return raw.get().parse::<i64>().unwrap_or(0);
    };
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// A JSON integer's text as a JSON string; anything else as it is.
fn big_integer(raw: &RawValue) -> String {
    let text = raw.get();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("\"{text}\"")
    } else if text == "null" {
        "\"0\"".to_owned()
    } else {
        text.to_owned()
    }
}

fn default_of(kind: &str) -> &'static str {
    match kind {
        "string" => "\"\"",
        "bool" => "false",
        "object" => "{}",
        _ => "0",
    }
}

/// The document (one JSON line) of `payload` in `collection`, with `id` = `id`.
pub fn document(collection: Collection, id: &str, payload: &str) -> Result<String, DocumentError> {
    let fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(payload).map_err(|error| DocumentError {
            collection: collection.name(),
            id: id.to_owned(),
            why: error.to_string(),
        })?;
    let schema = collection.fields();
    let mut out = String::with_capacity(payload.len() + 64);
    out.push_str("{\"id\":");
    out.push_str(&json_string(id));
    for (name, raw) in &fields {
        if name == "id" {
            continue;
        }
        let declared = schema.iter().find(|(field, _, _)| field == name);
        let optional = declared.is_some_and(|(_, _, optional)| *optional);
        let value = if BIG_INTEGER_FIELDS.contains(&name.as_str()) {
            big_integer(raw)
        } else if TIME_FIELDS.contains(&name.as_str()) {
            unix_seconds(raw).to_string()
        } else if name == "meta_data" {
            if raw.get().trim_start().starts_with('{') {
                raw.get().to_owned()
            } else {
                "{}".to_owned()
            }
        } else if raw.get() == "null" {
            match declared {
                // A declared field must have its type: null is its zero.
                Some((_, kind, false)) => default_of(kind).to_owned(),
                _ => continue,
            }
        } else {
            raw.get().to_owned()
        };
        // Blnk drops empty optional strings (an optional field may then stay unset).
        if optional && value == "\"\"" {
            continue;
        }
        let _ = write!(out, ",{}:{}", json_string(name), value);
    }
    // Required fields the payload lacks (e.g. a balance without a precision).
    for (name, kind, optional) in schema {
        if !optional && !fields.contains_key(*name) {
            let _ = write!(out, ",{}:{}", json_string(name), default_of(kind));
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_strings_and_times_unix_seconds_without_passing_through_numbers() {
        let payload = r#"{"precise_amount":1234567890123456789012345678901234567890,"amount":12.5,
            "created_at":"2026-01-01T00:00:00Z","scheduled_for":"","meta_data":null,
            "status":"APPLIED","source":"bln_a"}"#;
        let doc = document(Collection::Transactions, "txn_1", payload).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed["id"], "txn_1");
        assert_eq!(
            parsed["precise_amount"],
            "1234567890123456789012345678901234567890"
        );
        assert_eq!(parsed["created_at"], 1_767_225_600);
        assert_eq!(parsed["scheduled_for"], 0);
        assert_eq!(parsed["meta_data"], serde_json::json!({}));
        // Missing required fields get their type's zero.
        assert_eq!(parsed["hash"], "");
        assert_eq!(parsed["inflight"], false);
        assert!(doc.contains(r#""amount":12.5"#));
    }

    #[test]
    fn an_empty_optional_string_is_dropped_and_a_bad_payload_refused() {
        let doc = document(
            Collection::Balances,
            "bln_1",
            r#"{"identity_id":"","balance":-5,"precision":100}"#,
        )
        .unwrap();
        assert!(!doc.contains("identity_id"));
        assert!(doc.contains(r#""balance":"-5""#));
        assert!(document(Collection::Balances, "bln_1", "[1]").is_err());
    }
}
