//! TLS for the simulated venues, so that the gateway is tested over `https` and `wss` as it
//! reaches a real broker: a listener that completes each handshake on its own task (a slow or
//! refused client never holds up the others) and hands axum the established streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

pub use crate::api::tls::{ServerTls, ServerTlsError};

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
        let acceptor = tls.acceptor();
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
