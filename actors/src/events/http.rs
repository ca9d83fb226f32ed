//! The HTTP client every sink sends with: https through rustls with the webpki roots, a
//! timeout on connecting and on the whole call, and redirects never followed (a receiver
//! cannot send Coffer's signed events, or a hook's body, to another host). An `awc` client
//! belongs to one thread: a sink makes its own on its dispatcher's arbiter.

use std::sync::Arc;
use std::time::Duration;

pub fn client(timeout: Duration) -> awc::Client {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|tls| tls.with_root_certificates(roots).with_no_client_auth());
    let mut connector = awc::Connector::new().timeout(timeout);
    if let Ok(tls) = tls {
        connector = connector.rustls_0_23(Arc::new(tls));
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .disable_redirects()
        .finish()
}

/// A failed call, said without the URL or headers (they may hold credentials).
pub fn send_error(error: &awc::error::SendRequestError, what: &str, timeout: Duration) -> String {
    match error {
        awc::error::SendRequestError::Timeout => {
            format!("{what} did not answer within {} ms", timeout.as_millis())
        }
        awc::error::SendRequestError::Connect(_) => format!("{what} could not be reached"),
        _ => format!("the request to {what} failed"),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986): a path segment or a
/// query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(percent_encode("txn_1-2.3~"), "txn_1-2.3~");
    }
}
