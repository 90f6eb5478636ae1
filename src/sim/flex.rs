//! A simulated IB Flex Web Service (version 3) over HTTPS, answering as IB's does:
//! `GET .../FlexWebService/SendRequest?t=TOKEN&q=QUERY&v=3` gives a reference code, and
//! `GET .../FlexWebService/GetStatement?t=TOKEN&q=REFERENCE&v=3` gives error 1019 ("generation
//! in progress") a configurable number of times, then the report. It refuses what IB refuses: a
//! request without a User-Agent (HTTP 403), an unknown token (1015) or query (1014), an unknown
//! reference (1003), more than one request a second or ten a minute per token (1018); and it
//! can answer SendRequest with any error code (e.g. 1012, an expired token), for tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::tls::{HandshakeStats, ServerTls, TlsListener};

/// The path of the service, as on IB's host.
pub const PATH: &str = "/AccountManagement/FlexWebService";

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct FlexSimConfig {
    /// The token it accepts
    pub token: String,
    /// The query id it knows
    pub query_id: String,
    /// The report it serves (IB's XML)
    pub statement: String,
    /// How many GetStatement requests of a reference are answered 1019 before the report
    pub pending_polls: u32,
    /// Answer every SendRequest with this error instead
    pub send_error: Option<(u32, String)>,
}

/// One request the service received (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `SendRequest` or `GetStatement`
    pub endpoint: String,
    /// The error code answered (0: success)
    pub answered: u32,
    /// When it came
    pub at: Instant,
}

#[derive(Debug)]
struct Inner {
    config: FlexSimConfig,
    references: Vec<(String, u32)>,
    requests: std::collections::VecDeque<Instant>,
    received: Vec<Received>,
    next_reference: u64,
}

/// A running simulated Flex Web Service.
#[derive(Debug, Clone)]
pub struct SimFlex {
    inner: Arc<Mutex<Inner>>,
    /// TLS handshakes it completed
    pub handshakes: Arc<HandshakeStats>,
}

impl SimFlex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The requests received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Serves `statement` from now on.
    pub fn set_statement(&self, statement: String) {
        self.lock().config.statement = statement;
    }
}

fn answer(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml;charset=utf-8")], body).into_response()
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%d %B, %Y %I:%M %p UTC")
        .to_string()
}

fn failure(code: u32, message: &str) -> Response {
    answer(format!(
        "<FlexStatementResponse timestamp=\"{}\">\n<Status>Fail</Status>\n\
         <ErrorCode>{code}</ErrorCode>\n<ErrorMessage>{message}</ErrorMessage>\n\
         </FlexStatementResponse>\n",
        timestamp()
    ))
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    t: Option<String>,
    q: Option<String>,
    v: Option<String>,
}

/// The checks every request passes first: a User-Agent, the version, the pace, the token.
fn admit(sim: &SimFlex, headers: &HeaderMap, params: &Params, endpoint: &str) -> Option<Response> {
    if headers.get(header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        return Some((StatusCode::FORBIDDEN, "a User-Agent header is required").into_response());
    }
    let mut inner = sim.lock();
    let refuse = |inner: &mut Inner, code: u32, message: &str| {
        inner.received.push(Received {
            endpoint: endpoint.to_string(),
            answered: code,
            at: Instant::now(),
        });
        Some(failure(code, message))
    };
    if params.v.as_deref() != Some("3") {
        return refuse(
            &mut inner,
            1010,
            "Legacy Flex Queries are no longer supported. Please convert over to Activity Flex.",
        );
    }
    // IB's limits per token: one request a second, ten a minute (every request counts)
    let now = Instant::now();
    while inner
        .requests
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        inner.requests.pop_front();
    }
    let too_soon = inner
        .requests
        .back()
        .is_some_and(|last| now.duration_since(*last) < Duration::from_secs(1))
        || inner.requests.len() >= 10;
    inner.requests.push_back(now);
    if too_soon {
        return refuse(
            &mut inner,
            1018,
            "Too many requests have been made from this token. Please try again shortly.",
        );
    }
    if params.t.as_deref() != Some(inner.config.token.as_str()) {
        return refuse(&mut inner, 1015, "Token is invalid.");
    }
    None
}

async fn send_request(
    State(sim): State<SimFlex>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &params, "SendRequest") {
        return refused;
    }
    let mut inner = sim.lock();
    let (code, response) = if let Some((code, message)) = inner.config.send_error.clone() {
        (code, failure(code, &message))
    } else if params.q.as_deref() != Some(inner.config.query_id.as_str()) {
        (1014, failure(1014, "Query is invalid."))
    } else {
        inner.next_reference += 1;
        let reference = format!("{}", 7_000_000_000u64 + inner.next_reference);
        let pending = inner.config.pending_polls;
        inner.references.push((reference.clone(), pending));
        (
            0,
            answer(format!(
                "<FlexStatementResponse timestamp=\"{}\">\n<Status>Success</Status>\n\
                 <ReferenceCode>{reference}</ReferenceCode>\n\
                 <Url>https://gdcdyn.interactivebrokers.com/Universal/servlet/FlexStatementService.GetStatement</Url>\n\
                 </FlexStatementResponse>\n",
                timestamp()
            )),
        )
    };
    inner.received.push(Received {
        endpoint: "SendRequest".into(),
        answered: code,
        at: Instant::now(),
    });
    response
}

async fn get_statement(
    State(sim): State<SimFlex>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Some(refused) = admit(&sim, &headers, &params, "GetStatement") {
        return refused;
    }
    let mut inner = sim.lock();
    let reference = params.q.unwrap_or_default();
    let pending = inner
        .references
        .iter_mut()
        .find(|(r, _)| *r == reference)
        .map(|(_, pending)| {
            let was = *pending;
            *pending = pending.saturating_sub(1);
            was
        });
    let (code, response) = match pending {
        None => (1003, failure(1003, "Statement is not available.")),
        Some(p) if p > 0 => (
            1019,
            failure(
                1019,
                "Statement generation in progress. Please try again shortly.",
            ),
        ),
        Some(_) => (0, answer(inner.config.statement.clone())),
    };
    inner.received.push(Received {
        endpoint: "GetStatement".into(),
        answered: code,
        at: Instant::now(),
    });
    response
}

/// The service's routes.
pub fn router(sim: SimFlex) -> Router {
    Router::new()
        .route(&format!("{PATH}/SendRequest"), get(send_request))
        .route(&format!("{PATH}/GetStatement"), get(get_statement))
        .with_state(sim)
}

/// Starts the service over TLS on `listener` in the background; its handle.
pub fn spawn_tls(listener: TcpListener, config: FlexSimConfig, tls: &ServerTls) -> SimFlex {
    let sim = SimFlex {
        inner: Arc::new(Mutex::new(Inner {
            config,
            references: Vec::new(),
            requests: std::collections::VecDeque::new(),
            received: Vec::new(),
            next_reference: 0,
        })),
        handshakes: Arc::new(HandshakeStats::default()),
    };
    let listener = TlsListener::new(listener, tls, Arc::clone(&sim.handshakes));
    let served = router(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, served).await {
            tracing::error!(error = %e, "simulated Flex Web Service stopped");
        }
    });
    sim
}

/// The service's base URL (what `[ibkr.flex] url` names) at `addr`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("https://{addr}{PATH}")
}
