//! A TWS session for executions sync: connect and handshake, START_API, wait for the next valid
//! id and the managed accounts, then request executions and collect them with their commission
//! reports. Every read has a timeout; any malformed frame or unexpected end is an error.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::tws::{self, CommissionReport, Execution, Incoming, MAX_VERSION, MIN_VERSION, TwsError};

/// How long commission reports that trail the end of an executions request are waited for.
const COMMISSION_GRACE: Duration = Duration::from_millis(50);
/// TWS error codes from 2100 up are notices ("market data farm connection is OK", ...).
const FIRST_NOTICE_CODE: i64 = 2100;

/// Which executions to ask for (TWS's ExecutionFilter; empty fields match everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only orders of this API client (0: all)
    pub client_id: i64,
    /// Only this account
    pub account: String,
    /// Only executions after this time, `yyyymmdd hh:mm:ss` (TWS keeps about a week)
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
    /// Commission reports, by exec id order of arrival
    pub commissions: Vec<CommissionReport>,
}

/// A connected, started TWS session.
#[derive(Debug)]
pub struct TwsSession {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    server_version: u32,
    client_id: i64,
    accounts: Vec<String>,
    next_order_id: i64,
    read_timeout: Duration,
    next_req_id: i64,
}

impl TwsSession {
    /// Connects, negotiates the version and starts the API as `client_id`.
    pub async fn connect(
        addr: SocketAddr,
        client_id: i64,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, TwsError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                TwsError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} took longer than {connect_timeout:?}"),
                ))
            })??;
        stream.set_nodelay(true)?;
        let (reader, mut writer) = stream.into_split();
        writer.write_all(&tws::client_hello()).await?;
        let mut session = Self {
            reader: BufReader::new(reader),
            writer,
            server_version: 0,
            client_id,
            accounts: Vec::new(),
            next_order_id: 0,
            read_timeout,
            next_req_id: 1,
        };
        let hello = session.frame().await?;
        let mut fields = tws::Fields::parse(&hello)?;
        let version: u32 = fields.int("server version")?;
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(TwsError::Version(version));
        }
        session.server_version = version;
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
            match session.next_message().await? {
                Incoming::NextValidId(id) => {
                    session.next_order_id = id;
                    have_id = true;
                }
                Incoming::ManagedAccounts(accounts) => {
                    session.accounts = accounts;
                    have_accounts = true;
                }
                Incoming::Error { code, message, .. } if code < FIRST_NOTICE_CODE => {
                    return Err(TwsError::Malformed(format!(
                        "TWS refused the session: {code} {message}"
                    )));
                }
                _ => {}
            }
        }
        Ok(session)
    }

    /// The negotiated server version.
    pub fn server_version(&self) -> u32 {
        self.server_version
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

    /// Requests executions matching `filter` and collects them, with their commission reports,
    /// until TWS ends the request.
    pub async fn executions(&mut self, filter: &ExecutionFilter) -> Result<Executions, TwsError> {
        let req_id = self.next_req_id;
        self.next_req_id += 1;
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
        loop {
            match self.next_message().await? {
                Incoming::Execution(e) if e.req_id == req_id => out.executions.push(*e),
                Incoming::Commission(c) => out.commissions.push(c),
                Incoming::ExecutionDataEnd { req_id: r } if r == req_id => break,
                Incoming::Error { id, code, message }
                    if id == req_id || (code < FIRST_NOTICE_CODE && id < 0) =>
                {
                    return Err(TwsError::Malformed(format!(
                        "TWS refused the executions request: {code} {message}"
                    )));
                }
                _ => {}
            }
        }
        // commission reports may trail the end marker
        while let Ok(frame) =
            tokio::time::timeout(COMMISSION_GRACE, tws::read_frame(&mut self.reader)).await
        {
            match frame? {
                Some(frame) => {
                    if let Incoming::Commission(c) = tws::decode(&frame, self.server_version)? {
                        out.commissions.push(c);
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    async fn frame(&mut self) -> Result<Vec<u8>, TwsError> {
        match tokio::time::timeout(self.read_timeout, tws::read_frame(&mut self.reader)).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(TwsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "TWS closed the connection",
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TwsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TWS sent nothing for {:?}", self.read_timeout),
            ))),
        }
    }

    async fn next_message(&mut self) -> Result<Incoming, TwsError> {
        let frame = self.frame().await?;
        tws::decode(&frame, self.server_version)
    }
}
