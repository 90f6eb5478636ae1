//! A PostgreSQL wire-protocol proxy on loopback for fault tests: it forwards TCP connections to a
//! server's unix socket, and on command refuses connections ("database down") or cuts a
//! connection right after the server has answered a COMMIT, or an autocommitted prepared
//! statement, so the client never learns that its transaction committed ("unknown commit
//! outcome"). It can also add a delay to every round trip (a distant or slow server) and stall: let
//! connections in and forward requests, but answer nothing after the handshake (a server whose
//! sessions hang).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// A running proxy.
pub struct PgProxy {
    /// Loopback port it listens on
    pub port: u16,
    switches: Switches,
    down: watch::Sender<bool>,
}

/// The proxy's switches and counters, shared with every connection.
#[derive(Clone)]
struct Switches {
    cut_next_commit: Arc<AtomicBool>,
    cut_statement: Arc<Mutex<Option<String>>>,
    cuts: Arc<AtomicU32>,
    open: Arc<AtomicUsize>,
    latency_us: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
}

/// Counts a connection open while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PgProxy {
    /// Proxies to the server whose unix socket directory is `socket_dir` (port 5432).
    pub async fn start(socket_dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let socket = socket_dir.join(".s.PGSQL.5432");
        let switches = Switches {
            cut_next_commit: Arc::new(AtomicBool::new(false)),
            cut_statement: Arc::new(Mutex::new(None)),
            cuts: Arc::new(AtomicU32::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            latency_us: Arc::new(AtomicU64::new(0)),
            stalled: Arc::new(AtomicBool::new(false)),
        };
        let (down, down_rx) = watch::channel(false);
        {
            let switches = switches.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if *down_rx.borrow() {
                        drop(client);
                        continue;
                    }
                    switches.open.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(proxy_connection(
                        client,
                        socket.clone(),
                        switches.clone(),
                        down_rx.clone(),
                    ));
                }
            });
        }
        Self {
            port,
            switches,
            down,
        }
    }

    /// A conninfo through the proxy for `dbname`.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Down: closes every open connection and refuses new ones. Up: accepts again.
    pub fn set_down(&self, down: bool) {
        let _ = self.down.send(down);
    }

    /// The next COMMIT is executed by the server, but its answer never reaches the client.
    pub fn cut_next_commit(&self) {
        self.switches.cut_next_commit.store(true, Ordering::SeqCst);
    }

    /// The next execution of a prepared statement whose text contains `text` is run (and,
    /// outside a transaction, committed) by the server, but its answer never reaches the client.
    pub fn cut_next_statement(&self, text: &str) {
        *self.switches.cut_statement.lock().unwrap() = Some(text.to_string());
    }

    /// Forgets a pending [`PgProxy::cut_next_commit`] or [`PgProxy::cut_next_statement`].
    pub fn disarm(&self) {
        self.switches.cut_next_commit.store(false, Ordering::SeqCst);
        *self.switches.cut_statement.lock().unwrap() = None;
    }

    /// Down, and waits (at most 10 s) until every connection through the proxy is closed, so
    /// no statement sent afterwards can still reach the server.
    pub async fn go_down(&self) {
        self.set_down(true);
        let closed = super::wait_until(std::time::Duration::from_secs(10), || async {
            (self.switches.open.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await;
        assert!(closed.is_some(), "the proxy kept connections open");
    }

    /// Delays each round trip (every simple query and every Sync) by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.switches.latency_us.store(micros, Ordering::SeqCst);
    }

    /// Stalled: connections are accepted and their handshake answered, requests reach the
    /// server, but no answer after the handshake reaches the client (answers are dropped).
    /// A client that closes its socket meanwhile is seen to close.
    pub fn set_stalled(&self, stalled: bool) {
        self.switches.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.switches.open.load(Ordering::SeqCst)
    }

    /// How many connections were cut after a COMMIT.
    pub fn cuts(&self) -> u32 {
        self.switches.cuts.load(Ordering::SeqCst)
    }
}

/// Whether the server messages in `bytes` (from the first) include a ReadyForQuery.
fn has_ready_for_query(bytes: &[u8]) -> bool {
    let mut at = 0;
    while bytes.len() >= at + 5 {
        if bytes[at] == b'Z' {
            return true;
        }
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        at += 1 + len as usize;
    }
    false
}

/// The NUL-terminated string at the start of `bytes`, and what follows it.
fn c_str(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    (&bytes[..end], bytes.get(end + 1..).unwrap_or_default())
}

async fn proxy_connection(
    client: TcpStream,
    socket: PathBuf,
    switches: Switches,
    mut down: watch::Receiver<bool>,
) {
    let _open = Open(switches.open.clone());
    let Switches {
        cut_next_commit,
        cut_statement,
        cuts,
        latency_us,
        stalled,
        ..
    } = switches;
    let Ok(server) = UnixStream::connect(&socket).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cutting = Arc::new(AtomicBool::new(false));

    let upstream = {
        let cutting = cutting.clone();
        async move {
            // the startup packet has no type byte: length, then payload
            let mut length = [0u8; 4];
            client_read.read_exact(&mut length).await?;
            let mut startup = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
            client_read.read_exact(&mut startup).await?;
            server_write.write_all(&length).await?;
            server_write.write_all(&startup).await?;
            // the prepared statements of this connection, by name, with their text
            let mut prepared: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            loop {
                let mut header = [0u8; 5];
                client_read.read_exact(&mut header).await?;
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                let mut body = vec![0u8; len.saturating_sub(4)];
                client_read.read_exact(&mut body).await?;
                if header[0] == b'Q'
                    && body.starts_with(b"COMMIT")
                    && cut_next_commit.swap(false, Ordering::SeqCst)
                {
                    cutting.store(true, Ordering::SeqCst);
                }
                if header[0] == b'P' {
                    let (name, rest) = c_str(&body);
                    let (query, _) = c_str(rest);
                    prepared.push((name.to_vec(), query.to_vec()));
                }
                if header[0] == b'B' {
                    let (_portal, rest) = c_str(&body);
                    let (statement, _) = c_str(rest);
                    let mut armed = cut_statement.lock().unwrap();
                    let matches = armed.as_ref().is_some_and(|text| {
                        prepared.iter().any(|(name, query)| {
                            name == statement
                                && query.windows(text.len()).any(|w| w == text.as_bytes())
                        })
                    });
                    if matches {
                        *armed = None;
                        cutting.store(true, Ordering::SeqCst);
                    }
                }
                let latency = latency_us.load(Ordering::SeqCst);
                if latency > 0 && matches!(header[0], b'Q' | b'S') {
                    tokio::time::sleep(Duration::from_micros(latency)).await;
                }
                server_write.write_all(&header).await?;
                server_write.write_all(&body).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut withheld: Vec<u8> = Vec::new();
        // the handshake ends with the first ReadyForQuery; a stall holds back what follows
        let mut handshake_done = false;
        let mut handshake: Vec<u8> = Vec::new();
        loop {
            let n = server_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if handshake_done && stalled.load(Ordering::SeqCst) {
                continue;
            }
            if !handshake_done {
                handshake.extend_from_slice(&buffer[..n]);
                handshake_done = has_ready_for_query(&handshake);
            }
            if !cutting.load(Ordering::SeqCst) {
                client_write.write_all(&buffer[..n]).await?;
                continue;
            }
            // withhold the COMMIT's answer; once the server is ready again it has committed
            withheld.extend_from_slice(&buffer[..n]);
            let mut at = 0;
            while withheld.len() >= at + 5 {
                let kind = withheld[at];
                let len = u32::from_be_bytes([
                    withheld[at + 1],
                    withheld[at + 2],
                    withheld[at + 3],
                    withheld[at + 4],
                ]) as usize;
                if withheld.len() < at + 1 + len {
                    break;
                }
                if kind == b'Z' {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                at += 1 + len;
            }
        }
    };
    let went_down = async move {
        loop {
            if *down.borrow() {
                return;
            }
            if down.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    // whichever ends first ends the connection: both sockets close when dropped
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        () = went_down => {}
    }
}
