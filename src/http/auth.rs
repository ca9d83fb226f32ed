//! Authentication and authorization of every request, in this one place (a middleware; no
//! handler checks a key or a scope).
//!
//! - Open paths: `/`, `/health`, `/metrics` (its own bearer rules) and `/openapi.json`.
//! - Open mode (`server.secure` off): every caller is the master principal, as if it had
//!   sent the master key (so API-key management works there; Blnk's open mode refuses it).
//! - Secure mode: `X-Blnk-Key` is the master key (compared in constant time) or an API key
//!   (see [`coffer_actors::access`]); missing, invalid, expired or revoked → 401.
//! - An API key's request needs a scope allowing the path's resource
//!   ([`coffer_actors::domain::access::Resource::of_path`]) and the method's action
//!   ([`coffer_actors::domain::access::Action::of_method`]) → else 403.
//! - A `POST` made with an API key gets `meta_data.BLNK_GENERATED_BY` = the key's id in its
//!   body, as Blnk does (the body's other bytes are kept as sent: numbers stay exact).
//!
//! Handlers that act for the caller (the API-key routes) take the [`Caller`] extractor.

use super::error::ApiError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use coffer_actors::access::{Access, Principal};
use serde_json::value::RawValue;
use std::future::{ready, Ready};

/// The header Blnk's SDKs send the key in.
pub const KEY_HEADER: &str = "X-Blnk-Key";
/// The metadata key a key's `POST` is stamped with (Blnk's).
pub const GENERATED_BY_KEY: &str = "BLNK_GENERATED_BY";

/// Paths anyone may call, in both modes.
pub const OPEN_PATHS: [&str; 4] = ["/", "/health", "/metrics", "/openapi.json"];

/// What the middleware needs (shared by every HTTP worker).
#[derive(Clone)]
pub struct Gate {
    pub access: Access,
    pub secure: bool,
    pub body_bytes_max: usize,
}

pub async fn authorize(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if OPEN_PATHS.contains(&request.path()) {
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let gate = request
        .app_data::<web::Data<Gate>>()
        .expect("the gate is app data")
        .clone();
    let principal = match admit(&gate, &request).await {
        Ok(principal) => principal,
        Err(refusal) => {
            let response = refusal.error_response();
            return Ok(request.into_response(response).map_into_boxed_body());
        }
    };
    if let Principal::Key(key) = &principal {
        if request.method() == actix_web::http::Method::POST {
            if let Err(refusal) = stamp_body(&mut request, &key.api_key_id, &gate).await {
                let response = refusal.error_response();
                return Ok(request.into_response(response).map_into_boxed_body());
            }
        }
    }
    request.extensions_mut().insert(principal);
    Ok(next.call(request).await?.map_into_boxed_body())
}

async fn admit(gate: &Gate, request: &ServiceRequest) -> Result<Principal, ApiError> {
    let principal = if gate.secure {
        let presented = request
            .headers()
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        gate.access.authenticate(presented).await?
    } else {
        Principal::Master
    };
    principal.authorize(request.path(), request.method().as_str())?;
    Ok(principal)
}

/// Adds `BLNK_GENERATED_BY` to the body's `meta_data` when the body is a JSON object whose
/// `meta_data` is absent, null or an object; anything else is left for the handler to refuse.
async fn stamp_body(
    request: &mut ServiceRequest,
    key_id: &str,
    gate: &Gate,
) -> Result<(), ApiError> {
    let payload = request
        .extract::<web::Payload>()
        .await
        .map_err(|e| ApiError::Malformed(format!("unreadable body: {e}")))?;
    let body = super::read_body(payload, gate.body_bytes_max).await?;
    let stamped = stamped(&body, key_id).map_or(body, web::Bytes::from);
    request.set_payload(Payload::from(stamped));
    Ok(())
}

const META_DATA: &str = "meta_data";

/// Only what the stamp needs from a body: where its `meta_data` lies (borrowed from the
/// body, so nothing else is copied; the other fields are skipped by the parse).
#[derive(serde::Deserialize)]
struct MetaProbe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    meta_data: Option<&'a RawValue>,
}

/// `Some` whenever the key is there, a JSON `null` included (`Option`'s own would say `None`).
fn present<'de, D: serde::Deserializer<'de>>(from: D) -> Result<Option<&'de RawValue>, D::Error> {
    serde::Deserialize::deserialize(from).map(Some)
}

/// The body with `meta_data.BLNK_GENERATED_BY` set, spliced into the bytes as sent (numbers
/// and key order kept; nothing is re-serialized), or `None` when the body is not a JSON
/// object whose `meta_data` is absent, null or an object. The stamp goes last in
/// `meta_data`, so it wins over a client's own `BLNK_GENERATED_BY` (the last duplicate
/// key is the one kept).
fn stamped(body: &[u8], key_id: &str) -> Option<Vec<u8>> {
    let probe: MetaProbe = serde_json::from_slice(body).ok()?;
    let entry = format!(
        "{}:{}",
        serde_json::to_string(GENERATED_BY_KEY).ok()?,
        serde_json::to_string(key_id).ok()?
    );
    let object_start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[object_start] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + entry.len() + META_DATA.len() + 8);
    match probe.meta_data.map(RawValue::get) {
        None => {
            let rest = &body[object_start + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            out.extend_from_slice(&body[..=object_start]);
            out.extend_from_slice(format!("\"{META_DATA}\":{{{entry}}}").as_bytes());
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        Some("null") => {
            let at = raw_offset(body, "null", probe.meta_data)?;
            out.extend_from_slice(&body[..at]);
            out.push(b'{');
            out.extend_from_slice(entry.as_bytes());
            out.push(b'}');
            out.extend_from_slice(&body[at + 4..]);
        }
        Some(meta) if meta.starts_with('{') => {
            let at = raw_offset(body, meta, probe.meta_data)?;
            let inner_empty = meta[1..meta.len() - 1].trim().is_empty();
            let close = at + meta.len() - 1;
            out.extend_from_slice(&body[..close]);
            if !inner_empty {
                out.push(b',');
            }
            out.extend_from_slice(entry.as_bytes());
            out.extend_from_slice(&body[close..]);
        }
        Some(_) => return None,
    }
    Some(out)
}

/// Where the borrowed `raw` text starts in `body`, checked to be `expected` there.
fn raw_offset(body: &[u8], expected: &str, raw: Option<&RawValue>) -> Option<usize> {
    let raw = raw?.get();
    let at = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (body.get(at..at + raw.len())? == expected.as_bytes()).then_some(at)
}

/// The caller a handler acts for (inserted by [`authorize`]).
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let principal = request.extensions().get::<Principal>().cloned();
        ready(principal.map(Caller).ok_or_else(|| {
            ApiError::Ledger(coffer_actors::LedgerError::Internal(
                "no caller: the authorization middleware did not run".into(),
            ))
            .into()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_post_is_stamped_and_its_numbers_stay_exact() {
        let body = br#"{"amount": 123456789012345678901234567890.5, "meta_data": {"a": 1}}"#;
        let stamped: serde_json::Value =
            serde_json::from_slice(&stamped(body, "api_key_1").unwrap()).unwrap();
        assert_eq!(stamped["meta_data"]["a"], 1);
        assert_eq!(stamped["meta_data"][GENERATED_BY_KEY], "api_key_1");
        let text = String::from_utf8(super::stamped(body, "api_key_1").unwrap()).unwrap();
        assert!(text.contains("123456789012345678901234567890.5"), "{text}");
    }

    #[test]
    fn missing_or_null_metadata_is_created_and_other_bodies_are_left_alone() {
        for body in [
            &br#"{"name": "x"}"#[..],
            br#"{"meta_data": null}"#,
            br#" { } "#,
            br#"{"meta_data": { }, "b": [1]}"#,
            br#"{"a": {"meta_data": 1}, "meta_data" : {"x": {"y": "}"}} }"#,
            br#"{"meta_data": {"BLNK_GENERATED_BY": "spoofed"}}"#,
        ] {
            let text = stamped(body, "k").unwrap();
            let stamped: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(
                stamped["meta_data"][GENERATED_BY_KEY],
                "k",
                "{}",
                String::from_utf8_lossy(&text)
            );
            let original: serde_json::Value = serde_json::from_slice(body).unwrap();
            for (key, value) in original.as_object().unwrap() {
                if key != META_DATA {
                    assert_eq!(&stamped[key], value);
                }
            }
        }
        let nested = stamped(br#"{"meta_data": {"x": {"y": "}"}}}"#, "k").unwrap();
        let nested: serde_json::Value = serde_json::from_slice(&nested).unwrap();
        assert_eq!(nested["meta_data"]["x"]["y"], "}");
        for body in [
            &b"[1, 2]"[..],
            b"not json",
            br#"{"meta_data": "text"}"#,
            br#"{"meta_data": {}, "meta_data": {}}"#,
            b"",
        ] {
            assert!(stamped(body, "k").is_none());
        }
    }
}
