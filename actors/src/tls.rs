//! Outbound TLS: one process-wide rustls crypto provider (ring), and the one client
//! configuration every connection that leaves the process uses (Alpaca REST, the
//! `trade_updates` stream, the alert webhook). It trusts the platform's root store, the PEM
//! file named by `SSL_CERT_FILE` (as OpenSSL tools read it) and `[tls] extra_ca_file`.
//! Certificates are always verified: there is deliberately no switch that turns that off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates trusted in addition to the platform's and
    /// `SSL_CERT_FILE`'s (a broker behind a private CA, a test venue); empty: none
    pub extra_ca_file: PathBuf,
}

/// Why the trust store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file could not be read or holds no certificate
    #[error("{what} {path}: {message}")]
    CaFile {
        /// `SSL_CERT_FILE` or `[tls] extra_ca_file`
        what: &'static str,
        /// The file
        path: PathBuf,
        /// Why
        message: String,
    },
    /// No root certificate at all: no broker could be verified
    #[error(
        "no trusted root certificates (install the platform's CA bundle, e.g. Debian's \
         ca-certificates, or name a PEM file in SSL_CERT_FILE or [tls] extra_ca_file)"
    )]
    NoRoots,
}

/// The process's crypto provider: ring, installed as the process default the first time it is
/// asked for (rustls needs exactly one; reqwest's own clients find it there too).
pub fn provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return Arc::clone(p);
    }
    // a concurrent first call may win the race: either way one provider is installed
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .map(Arc::clone)
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The client configuration of outbound connections, built once at start-up and shared.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    roots: usize,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots)
            .finish()
    }
}

impl ClientTls {
    /// The platform's roots, `SSL_CERT_FILE`'s and `config.extra_ca_file`'s.
    pub fn from_env(config: &TlsConfig) -> Result<Self, TlsError> {
        let env_file = std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let extra = (!config.extra_ca_file.as_os_str().is_empty())
            .then_some(config.extra_ca_file.as_path());
        Self::with_sources(env_file.as_deref(), extra)
    }

    /// The platform's roots plus those of `ssl_cert_file` and `extra_ca_file`.
    pub fn with_sources(
        ssl_cert_file: Option<&Path>,
        extra_ca_file: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        let platform = rustls_native_certs::load_native_certs();
        for e in &platform.errors {
            tracing::debug!(error = %e, "a platform CA certificate could not be loaded");
        }
        roots.add_parsable_certificates(platform.certs);
        if ssl_cert_file.is_some() {
            // rustls-native-certs reads SSL_CERT_FILE *instead of* the platform store; the
            // platform's certificate directories are added back so it is "plus", not "instead"
            for dir in openssl_probe::candidate_cert_dirs() {
                let found = rustls_native_certs::load_certs_from_paths(None, Some(dir));
                roots.add_parsable_certificates(found.certs);
            }
        }
        for (what, path) in [
            ("SSL_CERT_FILE", ssl_cert_file),
            ("[tls] extra_ca_file", extra_ca_file),
        ] {
            if let Some(path) = path {
                let certs = read_pem(what, path)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::CaFile {
                        what,
                        path: path.to_path_buf(),
                        message: "no usable CA certificate in it".into(),
                    });
                }
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let count = roots.len();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| TlsError::NoRoots)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            roots: count,
        })
    }

    /// How many root certificates are trusted.
    pub fn root_count(&self) -> usize {
        self.roots
    }

    /// The rustls configuration (WebSocket connectors take it as is).
    pub fn rustls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config)
    }

    /// A reqwest builder that verifies servers with this configuration (HTTP/1.1 only).
    pub fn http(&self) -> reqwest::ClientBuilder {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder().tls_backend_preconfigured(config)
    }

    /// The tungstenite connector of `wss://` URLs.
    pub fn ws_connector(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.rustls())
    }
}

/// A client for the gateway's own HTTP API and other plain loopback calls (the CLI's requests
/// to a running gateway, tests): reqwest's defaults, with the process's crypto provider
/// installed first, which reqwest needs even for `http://`.
pub fn local_http() -> reqwest::Client {
    let _ = provider();
    reqwest::Client::new()
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError::CaFile {
        what,
        path: path.to_path_buf(),
        message,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))
}

/// A TLS failure somewhere in `error`'s chain, described for people: the handshake's reason
/// (an unknown issuer, a name mismatch, an expired certificate, ...).
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error hides its payload from `source()` (and may wrap another io::Error):
        // look inside
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = tls_failure(inner)
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}
