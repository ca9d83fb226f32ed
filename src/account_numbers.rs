//! The account-number service (Blnk's `account_number_generation.http_service`): a `GET` of
//! its URL, with the configured `Authorization` header, answering
//! `{"account_number": …, "bank_name": …}`. Every call has a timeout; any failure is a
//! clear `ACC_GENERATION_FAILED` naming what went wrong (never the URL or the header).
//!
//! `awc` clients belong to one thread, so each HTTP worker builds its own
//! ([`AccountNumberClient::new`], in the app factory).

use crate::configuration::{AccountNumberService, SecretString};
use coffer_actors::accounts::{AccountNumbers, GeneratedAccount};
use coffer_actors::LedgerError;
use futures_util::future::LocalBoxFuture;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer read from the service.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// The configured service, or none (`enable_auto_generation` off).
pub struct AccountNumberClient(Option<AccountNumberSource>);

/// Where generated numbers come from.
pub enum AccountNumberSource {
    Http(HttpAccountNumbers),
    /// Generation is on but `http_service.url` is not set: every request is told so.
    Unconfigured,
}

impl AccountNumberClient {
    pub fn new(enabled: bool, service: &AccountNumberService) -> Self {
        match (&service.url, enabled) {
            (Some(url), true) => Self(Some(AccountNumberSource::Http(HttpAccountNumbers::new(
                url.clone(),
                service.authorization.clone(),
                Duration::from_secs(service.timeout_secs),
            )))),
            (None, true) => Self(Some(AccountNumberSource::Unconfigured)),
            (_, false) => Self(None),
        }
    }

    pub fn service(&self) -> Option<&AccountNumberSource> {
        self.0.as_ref()
    }
}

impl AccountNumbers for AccountNumberSource {
    fn generate(&self) -> LocalBoxFuture<'_, Result<GeneratedAccount, LedgerError>> {
        match self {
            AccountNumberSource::Http(http) => http.generate(),
            AccountNumberSource::Unconfigured => Box::pin(async {
                Err(LedgerError::AccountNumberGeneration(
                    "account_number_generation is on but its http_service.url is not set".into(),
                ))
            }),
        }
    }
}

pub struct HttpAccountNumbers {
    client: awc::Client,
    url: String,
    authorization: Option<SecretString>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Answer {
    account_number: Option<String>,
    bank_name: Option<String>,
}

impl HttpAccountNumbers {
    pub fn new(url: String, authorization: Option<SecretString>, timeout: Duration) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|config| config.with_root_certificates(roots).with_no_client_auth());
        let mut connector = awc::Connector::new().timeout(timeout);
        if let Ok(tls) = tls {
            connector = connector.rustls_0_23(Arc::new(tls));
        }
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(timeout)
            .finish();
        Self {
            client,
            url,
            authorization,
            timeout,
        }
    }

    async fn call(&self) -> Result<GeneratedAccount, LedgerError> {
        let failed = |why: String| LedgerError::AccountNumberGeneration(why);
        let mut request = self.client.get(&self.url);
        if let Some(authorization) = &self.authorization {
            request = request.insert_header(("Authorization", authorization.expose_secret()));
        }
        let mut response = request.send().await.map_err(|error| {
            failed(match error {
                awc::error::SendRequestError::Timeout => format!(
                    "the account number service did not answer within {} s",
                    self.timeout.as_secs()
                ),
                awc::error::SendRequestError::Connect(_) => {
                    "the account number service could not be reached".to_owned()
                }
                _ => "the request to the account number service failed".to_owned(),
            })
        })?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "the account number service answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let answer: Answer = response.json().limit(ANSWER_BYTES_MAX).await.map_err(|_| {
            failed(
                "the account number service's answer is not {\"account_number\", \"bank_name\"}"
                    .to_owned(),
            )
        })?;
        match answer.account_number.filter(|n| !n.trim().is_empty()) {
            Some(number) => Ok(GeneratedAccount {
                number,
                bank_name: answer.bank_name.unwrap_or_default(),
            }),
            None => Err(failed(
                "the account number service answered no account_number".to_owned(),
            )),
        }
    }
}

impl AccountNumbers for HttpAccountNumbers {
    fn generate(&self) -> LocalBoxFuture<'_, Result<GeneratedAccount, LedgerError>> {
        Box::pin(self.call())
    }
}

/// A made-up 12-digit account number (`GET /mocked-account`; Blnk's is gofakeit's ACH
/// account number). Random, not unique: for tests only.
pub fn mock_number() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    format!("{:012}", random % 1_000_000_000_000)
}
