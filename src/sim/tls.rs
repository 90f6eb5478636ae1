//! TLS for the simulated venues, so that the gateway is tested over `https` and `wss` as it
//! reaches a real broker: a listener that completes each handshake on its own task (a slow or
//! refused client never holds up the others) and hands axum the established streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A venue's server certificate and key, in PEM.
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
#[error("the venue's TLS {what}: {message}")]
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
}

/// Handshakes a TLS listener completed, and the time they took.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    completed: AtomicU64,
    failed: AtomicU64,
    micros: AtomicU64,
}

impl HandshakeStats {
    /// Handshakes completed.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Handshakes refused or broken off (an untrusted certificate looks like this here).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Mean server-side time of a completed handshake.
    pub fn mean(&self) -> Duration {
        let n = self.completed().max(1);
        Duration::from_micros(self.micros.load(Ordering::Relaxed) / n)
    }
}

/// A listener whose connections are TLS streams (axum serves it like a TCP listener).
#[derive(Debug)]
pub struct TlsListener {
    established: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` with `tls`, counting handshakes into `stats`.
    pub fn new(listener: TcpListener, tls: &ServerTls, stats: Arc<HandshakeStats>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
        let (tx, established) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "venue accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx, stats) = (acceptor.clone(), tx.clone(), Arc::clone(&stats));
                tokio::spawn(async move {
                    let started = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            stats.completed.fetch_add(1, Ordering::Relaxed);
                            stats.micros.fetch_add(
                                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                                Ordering::Relaxed,
                            );
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, %peer, "venue TLS handshake failed");
                        }
                        Err(_) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Self { established, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(established) => established,
            // the accept loop ended: serve nothing more
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
