//! TLS on a listener: the server's certificate and key, loaded once, and an acceptor for each
//! connection's handshake (rustls, the process's one crypto provider).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A server's certificate and key: the API listener's (`[api] tls_cert_file`) or a
/// simulated venue's.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(***)")
    }
}

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what}: {message}")]
pub struct ServerTlsError {
    what: &'static str,
    message: String,
}

impl ServerTls {
    /// From a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_pem(cert_chain: &str, key: &str) -> Result<Self, ServerTlsError> {
        let fail = |what| {
            move |e: rustls::pki_types::pem::Error| ServerTlsError {
                what,
                message: e.to_string(),
            }
        };
        let chain = CertificateDer::pem_slice_iter(cert_chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail("certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(fail("key"))?;
        let mut config = ServerConfig::builder_with_provider(tradegate_actors::tls::provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| ServerTlsError {
                what: "certificate",
                message: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// From a PEM certificate chain file and a PEM key file.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, ServerTlsError> {
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| ServerTlsError {
                what,
                message: format!("cannot read {}: {e}", path.display()),
            })
        };
        Self::from_pem(&read("certificate", cert_file)?, &read("key", key_file)?)
    }

    /// An acceptor for handshakes with this certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}
