//! Request bodies and exact JSON numbers.
//!
//! Bodies are read as bytes (bounded by the payload limit) and parsed here so every failure
//! gets Blnk's error shape. Money leaves as bare JSON integers of any size (written as raw
//! JSON text, never through `f64`), and numbers arrive as raw text for exact parsing.

use super::error::ApiError;
use bigdecimal::num_bigint::BigInt;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// Parses a JSON body; an empty body counts as `{}` (the SDKs send none for empty options).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if has_nul_escape(bytes) {
        // PostgreSQL cannot store NUL in text; refuse it here rather than fail later.
        return Err(ApiError::Malformed(
            "NUL characters (\\u0000) are not allowed".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        let message = match error.classify() {
            serde_json::error::Category::Data => format!("invalid request body: {error}"),
            _ => format!("malformed JSON body: {error}"),
        };
        ApiError::Malformed(message)
    })
}

/// A bare JSON integer of any size.
pub fn integer(value: &BigInt) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("an integer is valid JSON")
}

/// A bare JSON number from exact decimal text (`12.34`).
pub fn decimal(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| integer(&BigInt::default()))
}

/// The raw text of a JSON number or string field, for exact parsing.
pub fn raw_text(value: &RawValue) -> &str {
    value.get()
}

/// `meta_data` must be a JSON object (or absent/null).
pub fn meta_object(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(object @ serde_json::Value::Object(_)) => Ok(Some(object)),
        Some(_) => Err(ApiError::Malformed(
            "meta_data must be a JSON object".into(),
        )),
    }
}

/// Whether JSON text holds a `\u0000` escape (raw NUL bytes are already invalid JSON).
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && w[2..].iter().all(|b| *b == b'0'))
}
