//! The global webhook (Blnk's `notification.webhook`): the [`Sink`] that POSTs each event as
//! `{"event": <name>, "data": <payload>}` to the configured URL with the static headers,
//! signed when `server.secret_key` is set (`X-Blnk-Signature`, hex HMAC-SHA256 over
//! `<unix seconds>.<body>`, and `X-Blnk-Timestamp`). Every call has a timeout; a non-2xx
//! answer is a failure (retried by the dispatcher). Also [`BlnkPayloads`]: the event
//! payloads, made with the very serializers the API answers with.
//!
//! `awc` clients belong to one thread: the dispatcher makes its sink on its own arbiter.

use crate::configuration::{SecretString, Settings};
use crate::http::dto::{
    AccountJson, BalanceJson, IdentityJson, LedgerJson, MonitorJson, TransactionJson,
};
use coffer_actors::domain::TransactionRecord;
use coffer_actors::entity::{account, balance, balance_monitor, identity, ledger};
use coffer_actors::events::{signature, Event, Payloads, Sink, SinkError};
use futures_util::future::LocalBoxFuture;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// The API's JSON shapes as event payloads.
pub struct BlnkPayloads;

fn json<T: serde::Serialize>(value: &T) -> String {
    // These shapes hold only strings, integers and JSON already parsed: serializing them
    // cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

impl Payloads for BlnkPayloads {
    fn transaction(&self, record: &TransactionRecord) -> String {
        json(&TransactionJson::from(record))
    }
    fn ledger(&self, model: &ledger::Model) -> String {
        json(&LedgerJson::from(model))
    }
    fn balance(&self, model: &balance::Model) -> String {
        json(&BalanceJson::new(model))
    }
    fn identity(&self, model: &identity::Model) -> String {
        json(&IdentityJson::from(model))
    }
    fn account(&self, model: &account::Model) -> String {
        json(&AccountJson::from(model))
    }
    fn monitor(&self, model: &balance_monitor::Model) -> String {
        json(&MonitorJson::from(model))
    }
}

/// The configured webhook; `None` without `notification.webhook.url`.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: Vec<(String, SecretString)>,
    pub secret_key: Option<SecretString>,
    pub timeout: Duration,
}

impl WebhookConfig {
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        Some(Self {
            url: settings.webhook_url.clone()?,
            headers: settings.webhook_headers.clone(),
            secret_key: settings.secret_key.clone(),
            timeout: Duration::from_millis(settings.webhook_timeout_ms),
        })
    }
}

pub struct WebhookSink {
    client: awc::Client,
    config: WebhookConfig,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|tls| tls.with_root_certificates(roots).with_no_client_auth());
        let mut connector = awc::Connector::new().timeout(config.timeout);
        if let Ok(tls) = tls {
            connector = connector.rustls_0_23(Arc::new(tls));
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(config.timeout)
            .disable_redirects()
            .finish();
        Self { client, config }
    }

    async fn post(&self, event: &Event) -> Result<(), SinkError> {
        let body = event.body();
        let mut request = self
            .client
            .post(&self.config.url)
            .insert_header(("Content-Type", "application/json"));
        for (name, value) in &self.config.headers {
            request = request.insert_header((name.as_str(), value.expose_secret()));
        }
        if let Some(secret) = &self.config.secret_key {
            let timestamp = chrono::Utc::now().timestamp();
            let signed = signature(secret.expose_secret().as_bytes(), timestamp, &body);
            request = request
                .insert_header(("X-Blnk-Signature", signed))
                .insert_header(("X-Blnk-Timestamp", timestamp.to_string()));
        }
        // The URL and headers are never part of an error: they may hold credentials.
        let response = request.send_body(body).await.map_err(|error| {
            SinkError(match error {
                awc::error::SendRequestError::Timeout => format!(
                    "the webhook did not answer within {} ms",
                    self.config.timeout.as_millis()
                ),
                awc::error::SendRequestError::Connect(_) => {
                    "the webhook could not be reached".to_owned()
                }
                _ => "the request to the webhook failed".to_owned(),
            })
        })?;
        if !response.status().is_success() {
            return Err(SinkError(format!(
                "the webhook answered HTTP {}",
                response.status().as_u16()
            )));
        }
        Ok(())
    }
}

impl Sink for WebhookSink {
    fn deliver<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.post(event))
    }
}
