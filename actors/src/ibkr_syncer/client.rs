//! A TWS session for executions sync: connect and handshake, START_API, wait for the next valid
//! id and the managed accounts, then request executions and collect them with their commission
//! reports. The handshake has a deadline (the connect timeout), every read a timeout, and every
//! request a deadline for the whole answer; reads are cancel-safe, so a timeout never cuts a
//! frame. TWS's notices (farm status 2104/2106/2158, 2110, the connectivity messages
//! 1100/1101/1102 of IB's nightly reset, ...) are kept as the session's state for its owner to
//! log, never a reason to fail a request; only an error for the request itself, or one that ends
//! the session, fails it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::tws::{
    self, CommissionReport, Execution, FrameReader, Incoming, MAX_VERSION, MIN_VERSION, Position,
    TwsError,
};

/// How long commission reports that trail the end of an executions request are waited for;
/// later ones are kept by the session for its next request.
const COMMISSION_GRACE: Duration = Duration::from_millis(50);
/// Commission reports kept for a later request at most (the newest win).
const MAX_PENDING_COMMISSIONS: usize = 10_000;
/// How long an unmatched commission report is kept.
const PENDING_COMMISSION_AGE: Duration = Duration::from_secs(24 * 3600);
/// The default deadline of one request's whole answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Which executions to ask for (TWS's ExecutionFilter; empty fields match everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only orders of this API client (0: all)
    pub client_id: i64,
    /// Only this account
    pub account: String,
    /// Only executions after this time, `yyyymmdd-hh:mm:ss` in UTC
    pub time: String,
    /// Only this symbol
    pub symbol: String,
    /// Only this security type
    pub sec_type: String,
    /// Only this exchange
    pub exchange: String,
    /// Only this side (BUY or SELL)
    pub side: String,
}

/// What an executions request returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executions {
    /// The executions, in the order TWS sent them
    pub executions: Vec<Execution>,
    /// Commission reports in order of arrival: those of this request, those that trailed an
    /// earlier one and those TWS pushed in between
    pub commissions: Vec<CommissionReport>,
    /// Executions TWS pushed meanwhile (reqId -1) or that answered an earlier request; not part
    /// of this answer
    pub unsolicited: u64,
}

/// What a TWS error message means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// 1100: TWS lost its connection to IB's servers
    ConnectivityLost,
    /// 1101: restored, market data subscriptions lost
    RestoredDataLost,
    /// 1102: restored, nothing lost
    RestoredDataKept,
    /// 1300: TWS moved its socket port and drops this connection
    SocketPortReset,
    /// 2100 and up: information (data farm status, ...)
    Info,
    /// Any other error not tied to a request of this session
    Warning,
}

impl NoticeKind {
    /// The kind of TWS error `code`.
    pub fn of(code: i64) -> Self {
        match code {
            1100 => Self::ConnectivityLost,
            1101 => Self::RestoredDataLost,
            1102 => Self::RestoredDataKept,
            1300 => Self::SocketPortReset,
            c if c >= 2100 => Self::Info,
            _ => Self::Warning,
        }
    }
}

/// A TWS message that is state, not an answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    /// What it means
    pub kind: NoticeKind,
    /// TWS's code
    pub code: i64,
    /// The id it names (-1: none)
    pub id: i64,
    /// Its text
    pub message: String,
}

/// How a session is opened.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole handshake (connection, version, START_API, id and accounts)
    pub connect: Duration,
    /// The longest silence while an answer is awaited
    pub read: Duration,
    /// The whole answer to one request
    pub request: Duration,
}

/// A connected, started TWS session.
#[derive(Debug)]
pub struct TwsSession {
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    server_version: u32,
    connection_time: String,
    client_id: i64,
    accounts: Vec<String>,
    next_order_id: i64,
    timeouts: Timeouts,
    next_req_id: i64,
    notices: Vec<Notice>,
    pending_commissions: VecDeque<(Instant, CommissionReport)>,
    /// Executions TWS pushed (reqId -1) since the owner last asked, by account
    pushed: Vec<String>,
}

fn timed_out(what: impl Into<String>) -> TwsError {
    TwsError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.into(),
    ))
}

impl TwsSession {
    /// Connects, negotiates the version and starts the API as `client_id`; the whole handshake
    /// has `connect_timeout`, each request [`DEFAULT_REQUEST_TIMEOUT`].
    pub async fn connect(
        addr: SocketAddr,
        client_id: i64,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, TwsError> {
        Self::open(
            addr,
            client_id,
            Timeouts {
                connect: connect_timeout,
                read: read_timeout,
                request: DEFAULT_REQUEST_TIMEOUT,
            },
        )
        .await
    }

    /// [`connect`](Self::connect) with every timeout given.
    pub async fn open(
        addr: SocketAddr,
        client_id: i64,
        timeouts: Timeouts,
    ) -> Result<Self, TwsError> {
        match tokio::time::timeout(timeouts.connect, Self::handshake(addr, client_id, timeouts))
            .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(timed_out(format!(
                "the TWS handshake with {addr} took longer than {:?}",
                timeouts.connect
            ))),
        }
    }

    async fn handshake(
        addr: SocketAddr,
        client_id: i64,
        timeouts: Timeouts,
    ) -> Result<Self, TwsError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(&tws::client_hello()).await?;
        let mut session = Self {
            reader: FrameReader::new(reader),
            writer,
            server_version: 0,
            connection_time: String::new(),
            client_id,
            accounts: Vec::new(),
            next_order_id: 0,
            timeouts,
            next_req_id: 1,
            notices: Vec::new(),
            pending_commissions: VecDeque::new(),
            pushed: Vec::new(),
        };
        let hello = session.frame(None).await?;
        let mut fields = tws::Fields::parse(&hello)?;
        let version: u32 = fields.int("server version")?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(TwsError::Version(version));
        }
        session.server_version = version;
        if fields.remaining() > 0 {
            session.connection_time = fields.string("connection time")?.to_string();
        }
        tws::write_fields(
            &mut session.writer,
            &[
                tws::out::START_API.to_string(),
                "2".into(),
                client_id.to_string(),
                String::new(),
            ],
        )
        .await?;
        let (mut have_id, mut have_accounts) = (false, false);
        while !(have_id && have_accounts) {
            match session.next_message(None).await? {
                Incoming::NextValidId(id) => {
                    session.next_order_id = id;
                    have_id = true;
                }
                Incoming::ManagedAccounts(accounts) => {
                    session.accounts = accounts;
                    have_accounts = true;
                }
                Incoming::Error { id, code, message } => match NoticeKind::of(code) {
                    NoticeKind::Warning => {
                        return Err(TwsError::Refused {
                            what: "the session",
                            code,
                            message,
                        });
                    }
                    kind => session.notices.push(Notice {
                        kind,
                        code,
                        id,
                        message,
                    }),
                },
                _ => {}
            }
        }
        Ok(session)
    }

    /// The negotiated server version.
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// The connection time TWS sent in its handshake, with the login's zone name after it.
    pub fn connection_time(&self) -> &str {
        &self.connection_time
    }

    /// The accounts of the login.
    pub fn accounts(&self) -> &[String] {
        &self.accounts
    }

    /// The next order id TWS announced.
    pub fn next_order_id(&self) -> i64 {
        self.next_order_id
    }

    /// The client id the session started with.
    pub fn client_id(&self) -> i64 {
        self.client_id
    }

    /// The deadline of one request's whole answer.
    pub fn set_request_timeout(&mut self, limit: Duration) {
        self.timeouts.request = limit;
    }

    /// The notices received since the last call (the owner logs them as connectivity state).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Gives back commission reports a sync could not place, for the next request (a report
    /// may belong to another account of the login, or to a fill stored later).
    pub fn keep_commissions(&mut self, reports: Vec<CommissionReport>) {
        let now = Instant::now();
        for report in reports {
            self.pending_commissions.push_back((now, report));
        }
        while self.pending_commissions.len() > MAX_PENDING_COMMISSIONS {
            self.pending_commissions.pop_front();
        }
    }

    /// Requests executions matching `filter` and collects them, with their commission reports,
    /// until TWS ends the request, within the request deadline.
    pub async fn executions(&mut self, filter: &ExecutionFilter) -> Result<Executions, TwsError> {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
        let deadline = Instant::now() + self.timeouts.request;
        tws::write_fields(
            &mut self.writer,
            &[
                tws::out::REQ_EXECUTIONS.to_string(),
                "3".into(),
                req_id.to_string(),
                filter.client_id.to_string(),
                filter.account.clone(),
                filter.time.clone(),
                filter.symbol.clone(),
                filter.sec_type.clone(),
                filter.exchange.clone(),
                filter.side.clone(),
            ],
        )
        .await?;
        let mut out = Executions::default();
        let now = Instant::now();
        out.commissions = self
            .pending_commissions
            .drain(..)
            .filter(|(at, _)| now.duration_since(*at) < PENDING_COMMISSION_AGE)
            .map(|(_, c)| c)
            .collect();
        loop {
            match self.next_message(Some(deadline)).await? {
                Incoming::Execution(e) if e.req_id == req_id => out.executions.push(*e),
                Incoming::Execution(e) => {
                    out.unsolicited += 1;
                    self.pushed(&e);
                }
                Incoming::Commission(c) => out.commissions.push(c),
                Incoming::ExecutionDataEnd { req_id: r } if r == req_id => break,
                Incoming::Error { id, code, message } if id == req_id => {
                    return Err(TwsError::Refused {
                        what: "the executions request",
                        code,
                        message,
                    });
                }
                Incoming::Error { id, code, message } => self.note(id, code, message),
                _ => {}
            }
        }
        // commission reports may trail the end marker; the reader is cancel-safe, so a report
        // cut by the grace's end is read whole by the next request
        while let Ok(frame) = tokio::time::timeout(COMMISSION_GRACE, self.reader.next_frame()).await
        {
            let Some(frame) = frame? else { break };
            match tws::decode(&frame, self.server_version)? {
                Incoming::Commission(c) => out.commissions.push(c),
                Incoming::Execution(e) => {
                    out.unsolicited += 1;
                    self.pushed(&e);
                }
                Incoming::Error { id, code, message } => self.note(id, code, message),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Asks TWS for the positions of every account of the login (REQ_POSITIONS) and collects
    /// them until POSITION_END, within the request deadline; then cancels the subscription (TWS
    /// would push every later change otherwise), also when the answer failed. A position sent
    /// twice (an update pushed while the answer was under way) counts once, as its last word.
    /// Positions TWS reports as zero (closed today) are part of the answer; what they mean is
    /// the caller's to say. A frame that cannot be read fails the answer, not the session: the
    /// rest is read to its end marker.
    pub async fn positions(&mut self) -> Result<Vec<Position>, TwsError> {
        let deadline = Instant::now() + self.timeouts.request;
        tws::write_fields(
            &mut self.writer,
            &[tws::out::REQ_POSITIONS.to_string(), "1".into()],
        )
        .await?;
        let mut out: Vec<Position> = Vec::new();
        let mut unreadable = None;
        let outcome = loop {
            let frame = match self.frame(Some(deadline)).await {
                Ok(frame) => frame,
                Err(TwsError::Deadline { limit, .. }) => {
                    break Err(TwsError::Deadline {
                        what: "the positions request",
                        limit,
                    });
                }
                Err(e) => return Err(e),
            };
            match tws::decode(&frame, self.server_version) {
                Ok(Incoming::Position(p)) => {
                    let same = |q: &Position| {
                        q.account == p.account
                            && q.contract.con_id == p.contract.con_id
                            && q.contract.symbol == p.contract.symbol
                            && q.contract.sec_type == p.contract.sec_type
                    };
                    match out.iter_mut().find(|q| same(q)) {
                        Some(q) => *q = *p,
                        None => out.push(*p),
                    }
                }
                Ok(Incoming::PositionEnd) => break Ok(()),
                Ok(Incoming::Commission(c)) => self.keep_commissions(vec![c]),
                Ok(Incoming::Execution(e)) => self.pushed(&e),
                Ok(Incoming::Error { id, code, message }) => self.note(id, code, message),
                Ok(_) => {}
                Err(e) => {
                    unreadable.get_or_insert(e);
                }
            }
        };
        tws::write_fields(
            &mut self.writer,
            &[tws::out::CANCEL_POSITIONS.to_string(), "1".into()],
        )
        .await?;
        outcome?;
        match unreadable {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Reads what TWS pushed while no request was under way, for at most `wait`: executions
    /// (their accounts are kept for [`take_pushed`](Self::take_pushed)), commission reports
    /// (kept for the next request) and notices. An error is a broken session (TWS closed it,
    /// or sent a frame that cannot be read).
    pub async fn read_pushed(&mut self, wait: Duration) -> Result<(), TwsError> {
        let until = Instant::now() + wait;
        // the reader is cancel-safe: a frame cut by the wait's end is read whole next time
        while let Ok(frame) = tokio::time::timeout_at(until.into(), self.reader.next_frame()).await
        {
            let Some(frame) = frame? else {
                return Err(TwsError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "TWS closed the connection",
                )));
            };
            match tws::decode(&frame, self.server_version)? {
                Incoming::Execution(e) => self.pushed(&e),
                Incoming::Commission(c) => self.keep_commissions(vec![c]),
                Incoming::Error { id, code, message } => self.note(id, code, message),
                _ => {}
            }
        }
        Ok(())
    }

    /// The accounts of the executions TWS pushed since the last call (each once).
    pub fn take_pushed(&mut self) -> Vec<String> {
        let mut accounts = std::mem::take(&mut self.pushed);
        accounts.sort();
        accounts.dedup();
        accounts
    }

    fn pushed(&mut self, e: &Execution) {
        metrics::counter!("tradegate_ibkr_pushed_executions_total").increment(1);
        if !self.pushed.contains(&e.account) {
            self.pushed.push(e.account.clone());
        }
    }

    fn note(&mut self, id: i64, code: i64, message: String) {
        let kind = NoticeKind::of(code);
        metrics::counter!("tradegate_ibkr_notices_total", "code" => code.to_string()).increment(1);
        tracing::debug!(id, code, ?kind, message, "TWS notice");
        self.notices.push(Notice {
            kind,
            code,
            id,
            message,
        });
    }

    /// The next frame, within the read timeout and, when given, the request's deadline.
    async fn frame(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>, TwsError> {
        let silence = Instant::now() + self.timeouts.read;
        let until = deadline.map_or(silence, |d| d.min(silence));
        match tokio::time::timeout_at(until.into(), self.reader.next_frame()).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(TwsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "TWS closed the connection",
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) if deadline.is_some_and(|d| d <= silence) => Err(TwsError::Deadline {
                what: "the executions request",
                limit: self.timeouts.request,
            }),
            Err(_) => Err(timed_out(format!(
                "TWS sent nothing for {:?}",
                self.timeouts.read
            ))),
        }
    }

    async fn next_message(&mut self, deadline: Option<Instant>) -> Result<Incoming, TwsError> {
        let frame = self.frame(deadline).await?;
        tws::decode(&frame, self.server_version)
    }
}
