//! TLS with rustls: loading the certificate and key, and offering HTTP/2
//! and HTTP/1.1 by ALPN.

use std::{path::Path, sync::Arc};

use rustls::ServerConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// ALPN protocols in our order of preference: HTTP/2 lifts the browser's
/// limit of six connections per origin, so it comes first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no certificate.
    #[error("cannot use the TLS certificate {path}: {cause}")]
    Certificate {
        /// The file named by `--tls-cert`.
        path: String,
        /// What went wrong.
        cause: String,
    },
    /// The key file is missing, unreadable or holds no private key.
    #[error("cannot use the TLS key {path}: {cause}")]
    Key {
        /// The file named by `--tls-key`.
        path: String,
        /// What went wrong.
        cause: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("cannot use the TLS certificate {cert} with the key {key}: {cause}")]
    Pair {
        /// The file named by `--tls-cert`.
        cert: String,
        /// The file named by `--tls-key`.
        key: String,
        /// What rustls said.
        cause: String,
    },
}

/// The acceptor `--tls-cert` and `--tls-key` ask for, or `None` for plain
/// HTTP.
///
/// # Errors
/// When either file is missing, unreadable, holds nothing usable, or the
/// key does not belong to the certificate.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsAcceptor::from(server_config(cert, key)?))),
        // clap makes each flag require the other.
        _ => Ok(None),
    }
}

/// A rustls server configuration for a PEM certificate chain and key.
///
/// # Errors
/// As [`acceptor`].
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |cause: String| TlsError::Certificate {
        path: cert.display().to_string(),
        cause,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|err| cert_error(describe(err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| cert_error(describe(err)))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".to_owned()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|err| TlsError::Key {
        path: key.display().to_string(),
        cause: describe(err),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|err| TlsError::Pair {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            cause: err.to_string(),
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn describe(err: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match err {
        Error::Io(err) => err.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    }
}
