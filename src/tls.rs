//! The optional TLS listener. The supported production setup ends TLS at the ingress (the
//! Helm chart's `ingress.tls`); this serves HTTPS directly when `server.ssl_cert_path` and
//! `server.ssl_key_path` name a PEM certificate chain and its private key.

use crate::configuration::Settings;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The rustls configuration the settings ask for, or `None` for plain HTTP.
pub fn server_config(settings: &Settings) -> anyhow::Result<Option<rustls::ServerConfig>> {
    let (cert_path, key_path) = match (&settings.tls_cert_path, &settings.tls_key_path) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("server.ssl_cert_path and server.ssl_key_path must be set together"),
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert_path.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS identity")?;
    Ok(Some(config))
}
