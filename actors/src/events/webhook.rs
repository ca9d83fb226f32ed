//! The global webhook (Blnk's `notification.webhook`): the [`Sender`] that POSTs each event
//! as `{"event": <name>, "data": <payload>}` to the configured URL with the static headers,
//! signed when a secret is set (`X-Blnk-Signature`, hex HMAC-SHA256 over
//! `<unix seconds>.<body>`, and `X-Blnk-Timestamp`). Every call has a timeout; a non-2xx
//! answer is a failure (retried by the dispatcher).

use super::delivery::Sender;
use super::{signature, Event, SinkError};
use futures_util::future::LocalBoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The configured webhook.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: Vec<(String, SecretString)>,
    /// Signs the deliveries (Blnk's `server.secret_key`).
    pub secret_key: Option<SecretString>,
    pub timeout: Duration,
}

pub struct WebhookSender {
    client: awc::Client,
    config: WebhookConfig,
}

impl WebhookSender {
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            client: super::http::client(config.timeout),
            config,
        }
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
        let response = request.send_body(body).await.map_err(|error| {
            SinkError(super::http::send_error(
                &error,
                "the webhook",
                self.config.timeout,
            ))
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

impl Sender for WebhookSender {
    fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.post(event))
    }
}
