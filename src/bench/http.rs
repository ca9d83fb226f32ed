//! A small JSON-over-HTTP client for the bench, on `awc` (the actix-http stack the server
//! already uses). Single-threaded: it lives on the current actix system.

use awc::http::Method;
use serde_json::Value;
use std::time::Duration;

/// Longest time one request may take before it counts as a `CLIENT_TIMEOUT`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read (a page of 1,000 balances is under 1 MiB).
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Tries of a GET before its transport error is reported.
const GET_ATTEMPTS: u32 = 4;

/// A parsed answer: the status and its JSON body (`Null` if none or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Blnk's `error_detail.code`, or `HTTP_<status>` when the body has none.
    pub fn error_code(&self) -> String {
        self.json["error_detail"]["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP_{}", self.status))
    }

    /// The error message of an error body, if any.
    pub fn error_message(&self) -> String {
        match &self.json["error"] {
            Value::String(text) => text.clone(),
            Value::Null => match &self.json {
                Value::Null => String::new(),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }

    /// `status code: message`, for error reports.
    pub fn describe(&self) -> String {
        let message = self.error_message();
        if message.is_empty() {
            format!("{} {}", self.status, self.error_code())
        } else {
            format!("{} {}: {}", self.status, self.error_code(), message)
        }
    }
}

/// A request that got no HTTP answer. Its outcome on the server is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// `CLIENT_TIMEOUT`, `CLIENT_CONNECT`, `CLIENT_SEND` or `CLIENT_BODY`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TransportError {}

/// The client for one server. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct Http {
    client: awc::Client,
    base: String,
    /// Sent as `X-Blnk-Key` on every request (a secure server's master or API key).
    api_key: Option<std::sync::Arc<str>>,
}

/// Accepts only `http://127.0.0.1…`, `http://localhost…` or `http://[::1]…`: the bench never
/// loads a remote machine.
pub fn check_local_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must start with http:// (got {url})"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if rest.len() != authority.len() {
        anyhow::bail!("--url must be a server root such as http://127.0.0.1:5001 (got {url})");
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        anyhow::bail!(
            "coffer bench only drives a server on this machine (127.0.0.1, localhost or [::1]); got {host:?}"
        );
    }
    Ok(trimmed.to_owned())
}

impl Http {
    /// A client for `url` (which must be local) with up to `connections` open connections.
    pub fn new(url: &str, connections: usize) -> anyhow::Result<Self> {
        Self::with_key(url, connections, None)
    }

    /// [`Http::new`] sending `api_key` as `X-Blnk-Key` on every request.
    pub fn with_key(url: &str, connections: usize, api_key: Option<&str>) -> anyhow::Result<Self> {
        let base = check_local_url(url)?;
        let connector = awc::Connector::new()
            .limit(connections.max(1))
            .timeout(Duration::from_secs(5));
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(REQUEST_TIMEOUT)
            .disable_redirects()
            .finish();
        Ok(Self {
            client,
            base,
            api_key: api_key.map(Into::into),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The server's port (the URL's, or 80).
    pub fn port(&self) -> u16 {
        self.base
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(80)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Reply, TransportError> {
        let (status, bytes) = self.send_raw(method, path, body).await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, json })
    }

    /// One request: its status and body bytes.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Vec<u8>), TransportError> {
        use awc::error::SendRequestError;
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .insert_header(("content-type", "application/json"));
        if let Some(key) = &self.api_key {
            request = request.insert_header(("X-Blnk-Key", &**key));
        }
        let sent = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| {
            let code = match &e {
                SendRequestError::Timeout => "CLIENT_TIMEOUT",
                SendRequestError::Connect(_) => "CLIENT_CONNECT",
                _ => "CLIENT_SEND",
            };
            TransportError {
                code,
                message: e.to_string(),
            }
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .body()
            .limit(BODY_BYTES_MAX)
            .await
            .map_err(|e| TransportError {
                code: "CLIENT_BODY",
                message: e.to_string(),
            })?;
        Ok((status, bytes.to_vec()))
    }

    /// The text of a 2xx `GET` (`/metrics`), or why there is none.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let (status, bytes) = self
            .send_raw(Method::GET, path, None)
            .await
            .map_err(|e| anyhow::anyhow!("GET {path}: {}", e.message))?;
        anyhow::ensure!((200..300).contains(&status), "GET {path} answered {status}");
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A GET, sent again after a transport error (reading changes nothing, so a retry is
    /// safe): seen here, the client's connection pool answering "connector has been
    /// disconnected" once after a long run, which failed a run's final balance check.
    pub async fn get(&self, path: &str) -> Result<Reply, TransportError> {
        let mut attempt = 1;
        loop {
            match self.send(Method::GET, path, None).await {
                Err(_) if attempt < GET_ATTEMPTS => {
                    actix_web::rt::time::sleep(Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, TransportError> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Reply, TransportError> {
        self.send(Method::PUT, path, Some(body.to_string())).await
    }
}

/// Percent-encodes a path segment or query-string value (keeps unreserved characters).
pub use coffer_actors::events::http::percent_encode as encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_urls_are_accepted() {
        assert_eq!(
            check_local_url("http://127.0.0.1:5001/").unwrap(),
            "http://127.0.0.1:5001"
        );
        assert!(check_local_url("http://localhost:8080").is_ok());
        assert!(check_local_url("http://[::1]:5001").is_ok());
        for bad in [
            "http://10.0.0.1:5001",
            "http://example.com",
            "https://127.0.0.1:5001",
            "http://127.0.0.1.evil.com:5001",
            "http://localhost:5001/api",
            "127.0.0.1:5001",
        ] {
            assert!(check_local_url(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("@ab-1%"), "%40ab-1%25");
    }
}
