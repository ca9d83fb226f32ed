//! The security headers Blnk sends on every response, and HSTS when the request came over
//! TLS (Coffer serves plain HTTP: TLS ends at the ingress, which says so in
//! `X-Forwarded-Proto`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

const ALWAYS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cache-control", "no-store"),
];
const HSTS: (&str, &str) = (
    "strict-transport-security",
    "max-age=31536000; includeSubDomains",
);

pub async fn add(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let over_tls = request.connection_info().scheme() == "https";
    let mut response = next.call(request).await?;
    let headers = response.headers_mut();
    let extra = over_tls.then_some(HSTS);
    for (name, value) in ALWAYS.into_iter().chain(extra) {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(response)
}
