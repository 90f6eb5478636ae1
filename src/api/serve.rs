//! The API's own accept loop. axum's `serve` sets no timeouts and speaks only plain TCP; here
//! each connection gets its own task that completes the TLS handshake (when `[api]
//! tls_cert_file` is set) within a deadline, then hyper's HTTP/1 with a header read timeout
//! (so a client that never sends, or trickles, a request cannot hold a connection open) and
//! upgrades for the strategy WebSocket. A stop lets open requests finish, for a while.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::tls::ServerTls;

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish their requests once the API stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServerTls>,
    limits: super::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = limits.header_timeout;
    let acceptor = tls.map(|t| t.acceptor());
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // at most this many connections at once: past it, new ones wait in the kernel's backlog
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = std::sync::Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // out of file descriptors and the like: wait instead of spinning
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // order messages are small and latency-bound: no Nagle delay on answers or pushes
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let (app, acceptor, close) = (app.clone(), acceptor.clone(), close.clone());
        connections.spawn(async move {
            connection(tcp, peer, app, acceptor, header_timeout, close).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "API connections still open after the drain: closed"
        );
    }
    Ok(())
}

/// Serves one connection, plain or TLS.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
    close: watch::Receiver<bool>,
) {
    let service =
        TowerToHyperService::new(app.map_request(move |mut r: hyper::Request<Incoming>| {
            r.extensions_mut().insert(ConnectInfo(peer));
            r.map(Body::new)
        }));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    match acceptor {
        None => {
            drive(
                http.serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
                close,
            )
            .await
        }
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => {
                drive(
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades(),
                    close,
                )
                .await;
            }
            Ok(Err(e)) => {
                metrics::counter!("tradegate_api_tls_handshake_failures_total").increment(1);
                tracing::debug!(error = %e, %peer, "API TLS handshake failed");
            }
            Err(_) => {
                metrics::counter!("tradegate_api_tls_handshake_failures_total").increment(1);
                tracing::debug!(%peer, "API TLS handshake timed out");
            }
        },
    }
}

/// Runs a connection to its end; when the API stops, it finishes its request and closes.
async fn drive<C>(connection: C, mut close: watch::Receiver<bool>)
where
    C: GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
            return;
        }
        _ = close.wait_for(|closing| *closing) => {}
    }
    connection.as_mut().shut_down();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

/// A hyper connection that can be asked to finish gracefully.
trait GracefulConnection: Future<Output = hyper::Result<()>> {
    fn shut_down(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
