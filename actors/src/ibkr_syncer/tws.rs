//! The TWS socket protocol, text form (server versions up to 200), for what executions sync
//! needs. Written by hand because the `ibapi` crate speaks only the protobuf protocol (server
//! versions 213+) and hands prices over as `f64` (DESIGN section 7).
//!
//! Wire format: after the handshake every message is a 4-byte big-endian length and a payload of
//! NUL-terminated text fields, the first being the message id. Fields are parsed straight into
//! exact types; every malformed frame is an error, never a panic.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Lowest server version tradegate accepts (the range `ib_async` advertises starts here too).
pub const MIN_VERSION: u32 = 157;
/// Highest server version tradegate advertises: below 201, so the server keeps the text protocol.
pub const MAX_VERSION: u32 = 178;
/// Largest frame accepted; TWS messages are far smaller, so a larger length is a broken stream.
pub const MAX_FRAME: usize = 1 << 20;
/// From this server version an execution carries `pendingPriceRevision`.
const VERSION_PENDING_PRICE_REVISION: u32 = 178;

/// Outgoing message ids.
pub mod out {
    /// REQ_EXECUTIONS
    pub const REQ_EXECUTIONS: u32 = 7;
    /// START_API
    pub const START_API: u32 = 71;
}

/// Incoming message ids.
pub mod inc {
    /// ERR_MSG
    pub const ERROR: u32 = 4;
    /// NEXT_VALID_ID
    pub const NEXT_VALID_ID: u32 = 9;
    /// EXECUTION_DATA
    pub const EXECUTION_DATA: u32 = 11;
    /// MANAGED_ACCTS
    pub const MANAGED_ACCOUNTS: u32 = 15;
    /// EXECUTION_DATA_END
    pub const EXECUTION_DATA_END: u32 = 55;
    /// COMMISSION_REPORT
    pub const COMMISSION_REPORT: u32 = 59;
}

/// TWS's answer when another session uses the client id already.
pub const CLIENT_ID_IN_USE: i64 = 326;

/// A protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum TwsError {
    /// The socket failed or closed
    #[error("TWS connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that cannot be what the protocol says
    #[error("malformed TWS message: {0}")]
    Malformed(String),
    /// The server speaks a version outside the advertised range
    #[error("TWS server version {0} is outside {MIN_VERSION}..={MAX_VERSION}")]
    Version(u32),
    /// TWS answered with an error message (ERR_MSG) that ends the session or the request
    #[error("TWS refused {what}: error {code}: {message}")]
    Refused {
        /// What was refused (the session, the executions request)
        what: &'static str,
        /// TWS's error code
        code: i64,
        /// Its text
        message: String,
    },
    /// TWS did not finish answering within the request's deadline
    #[error("TWS did not finish {what} within {limit:?}")]
    Deadline {
        /// What was asked
        what: &'static str,
        /// The deadline
        limit: std::time::Duration,
    },
}

impl TwsError {
    /// Whether TWS refused the session because another uses its client id (a configuration
    /// error: retrying cannot help while the other session lives).
    pub fn client_id_in_use(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if *code == CLIENT_ID_IN_USE)
    }
}

fn malformed(message: impl Into<String>) -> TwsError {
    TwsError::Malformed(message.into())
}

/// Encodes one message: the length prefix and the NUL-terminated fields.
pub fn encode_fields<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let len: usize = fields.iter().map(|f| f.as_ref().len() + 1).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    for field in fields {
        out.extend_from_slice(field.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// The client's opening bytes: `API\0`, then the version range as one length-prefixed string.
pub fn client_hello() -> Vec<u8> {
    let range = format!("v{MIN_VERSION}..{MAX_VERSION}");
    let mut out = b"API\0".to_vec();
    out.extend_from_slice(&u32::try_from(range.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(range.as_bytes());
    out
}

/// Parses the version range a client advertises (`v157..178`, or `v100` for one version).
pub fn parse_version_range(text: &str) -> Result<(u32, u32), TwsError> {
    let body = text
        .strip_prefix('v')
        .ok_or_else(|| malformed(format!("version range {text:?} does not start with v")))?;
    let (min, max) = body.split_once("..").unwrap_or((body, body));
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| malformed(format!("version range {text:?}")))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(malformed(format!("version range {text:?} is empty")));
    }
    Ok((min, max))
}

/// Reads one length-prefixed frame; `Ok(None)` at a clean end of stream between frames. Not
/// cancel-safe (a cancelled read loses what it read): under a timeout use [`FrameReader`].
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, TwsError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(malformed(format!(
            "frame of {len} bytes (most is {MAX_FRAME})"
        )));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// Reads frames so that a read may be cancelled (by a timeout) at any point without losing a
/// byte: what arrived is kept in a buffer until a whole frame is there. `AsyncReadExt::read_buf`
/// is cancel-safe; `read_exact` is not.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next whole frame, if the buffer holds one.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, TwsError> {
        let unread = &self.buf[self.start..];
        if unread.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([unread[0], unread[1], unread[2], unread[3]]) as usize;
        if len > MAX_FRAME {
            return Err(malformed(format!(
                "frame of {len} bytes (most is {MAX_FRAME})"
            )));
        }
        if unread.len() < 4 + len {
            return Ok(None);
        }
        let frame = unread[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream between frames. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TwsError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.start > 0 {
                // move the partial frame to the front before reading more
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.len() == self.start {
                    Ok(None)
                } else {
                    Err(TwsError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "TWS closed the connection in the middle of a message",
                    )))
                };
            }
        }
    }
}

/// Writes one message.
pub async fn write_fields<S: AsRef<str>>(
    writer: &mut (impl AsyncWrite + Unpin),
    fields: &[S],
) -> Result<(), TwsError> {
    writer.write_all(&encode_fields(fields)).await?;
    Ok(())
}

/// The fields of one frame, read in order with typed accessors.
#[derive(Debug)]
pub struct Fields<'a> {
    fields: Vec<Cow<'a, str>>,
    next: usize,
}

/// One field's text: UTF-8 as it is; anything else (a TWS with a Chinese locale writes its
/// zone name in GB2312, rust-ibapi#352) decoded as GB18030, a superset of GB2312 and GBK, and
/// only bytes that are neither as U+FFFD. A field is never a reason to fail its frame.
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => encoding_rs::GB18030
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map_or_else(
                || Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
                |text| Cow::Owned(text.into_owned()),
            ),
    }
}

impl<'a> Fields<'a> {
    /// Splits a frame payload into its fields; every field must end with NUL. Text that is not
    /// UTF-8 is decoded by [`decode_text`].
    pub fn parse(payload: &'a [u8]) -> Result<Self, TwsError> {
        if payload.is_empty() {
            return Err(malformed("empty frame"));
        }
        if payload.last() != Some(&0) {
            return Err(malformed("the last field is not NUL-terminated"));
        }
        let body = &payload[..payload.len() - 1];
        let fields = match std::str::from_utf8(body) {
            // the common case: one check for the whole frame
            Ok(text) => text.split('\0').map(Cow::Borrowed).collect(),
            Err(_) => body.split(|b| *b == 0).map(decode_text).collect(),
        };
        Ok(Self { fields, next: 0 })
    }

    /// How many fields are left.
    pub fn remaining(&self) -> usize {
        self.fields.len() - self.next
    }

    /// The next field as text.
    pub fn string(&mut self, what: &str) -> Result<&str, TwsError> {
        let field = self
            .fields
            .get(self.next)
            .ok_or_else(|| malformed(format!("missing field {what}")))?;
        self.next += 1;
        Ok(field)
    }

    /// The next field as an integer (empty is 0, as TWS sends unset ints).
    pub fn int<T: FromStr + Default>(&mut self, what: &str) -> Result<T, TwsError> {
        let text = self.string(what)?;
        if text.is_empty() {
            return Ok(T::default());
        }
        text.parse()
            .map_err(|_| malformed(format!("{what} is not an integer: {text:?}")))
    }

    /// The next field as an exact decimal (empty is `None`).
    pub fn decimal(&mut self, what: &str) -> Result<Option<Decimal>, TwsError> {
        let text = self.string(what)?;
        parse_decimal(text).map_err(|e| malformed(format!("{what}: {e}")))
    }

    /// The next field as a decimal where Java's `Double.MAX_VALUE` (or infinity) means unset.
    pub fn decimal_or_unset(&mut self, what: &str) -> Result<Option<Decimal>, TwsError> {
        let text = self.string(what)?;
        if is_unset_double(text) {
            return Ok(None);
        }
        parse_decimal(text).map_err(|e| malformed(format!("{what}: {e}")))
    }

    /// The next field as a 0/1 flag.
    pub fn flag(&mut self, what: &str) -> Result<bool, TwsError> {
        match self.string(what)? {
            "" | "0" | "false" => Ok(false),
            "1" | "true" => Ok(true),
            other => Err(malformed(format!("{what} is not a flag: {other:?}"))),
        }
    }
}

/// Whether a double field holds the "unset" marker.
fn is_unset_double(text: &str) -> bool {
    let t = text.trim();
    t == "1.7976931348623157E308"
        || t == "1.7976931348623157e308"
        || t.eq_ignore_ascii_case("infinity")
        || t.eq_ignore_ascii_case("inf")
}

/// An exact decimal from TWS text: plain (`142.46`) or scientific (`1.5E-4`); empty is `None`.
pub fn parse_decimal(text: &str) -> Result<Option<Decimal>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let parsed = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t)
    } else {
        Decimal::from_str(t)
    };
    parsed
        .map(Some)
        .map_err(|_| format!("not a decimal number: {text:?}"))
}

/// An execution's time as TWS writes it: `yyyymmdd  hh:mm:ss` (one or two spaces) in the TWS
/// login's zone, or with a zone name after it, or `yyyymmdd-hh:mm:ss`, which is UTC (IB's own
/// form for UTC times; ib_insync#671, nautilus_trader#2359). The zone is resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwsTime {
    /// The text as received (kept for the audit record and written back as is)
    pub text: String,
    /// The wall-clock time
    pub local: NaiveDateTime,
    /// The zone name, when one was given (e.g. `US/Eastern`)
    pub zone: Option<String>,
    /// Written `yyyymmdd-hh:mm:ss`: UTC unless a zone name follows
    pub utc: bool,
}

impl TwsTime {
    /// Parses the TWS time text.
    pub fn parse(text: &str) -> Result<Self, TwsError> {
        let t = text.trim();
        let bad = || malformed(format!("execution time {text:?}"));
        if t.len() < 8 || !t.is_char_boundary(8) {
            return Err(bad());
        }
        let (date, rest) = t.split_at(8);
        let utc = rest.starts_with('-');
        let rest = rest
            .strip_prefix('-')
            .unwrap_or(rest)
            .trim_start_matches(' ');
        let (clock, zone) = match rest.split_once(' ') {
            Some((clock, zone)) => (clock, Some(zone.trim().to_string())),
            None => (rest, None),
        };
        let local = NaiveDateTime::parse_from_str(&format!("{date} {clock}"), "%Y%m%d %H:%M:%S")
            .map_err(|_| bad())?;
        Ok(Self {
            text: text.to_string(),
            local,
            zone: zone.filter(|z| !z.is_empty()),
            utc,
        })
    }
}

impl fmt::Display for TwsTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The contract part of an execution (what sync keeps of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contract {
    /// IB contract id
    pub con_id: i64,
    /// Ticker
    pub symbol: String,
    /// STK, OPT, FUT, ...
    pub sec_type: String,
    /// Expiry of derivatives
    pub last_trade_date: String,
    /// Strike of options
    pub strike: Option<Decimal>,
    /// C or P
    pub right: String,
    /// Contract multiplier
    pub multiplier: String,
    /// Listing exchange
    pub exchange: String,
    /// Currency
    pub currency: String,
    /// Local symbol
    pub local_symbol: String,
    /// Trading class
    pub trading_class: String,
}

/// One EXECUTION_DATA message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execution {
    /// The request it answers (-1 for unsolicited)
    pub req_id: i64,
    /// The API order id
    pub order_id: i64,
    /// The instrument
    pub contract: Contract,
    /// The execution id (a correction differs only after the final period)
    pub exec_id: String,
    /// When it executed
    pub time: TwsTime,
    /// The account
    pub account: String,
    /// Where it executed
    pub exchange: String,
    /// BOT or SLD
    pub side: String,
    /// Quantity of this fill
    pub shares: Decimal,
    /// Price of this fill
    pub price: Decimal,
    /// IB's permanent order id (0 when unknown)
    pub perm_id: i64,
    /// The API client that placed the order
    pub client_id: i64,
    /// Whether it was a liquidation
    pub liquidation: i64,
    /// Cumulative quantity of the order
    pub cum_qty: Decimal,
    /// Average price of the order so far
    pub avg_price: Decimal,
    /// The order reference the client set
    pub order_ref: String,
    /// EV rule
    pub ev_rule: String,
    /// EV multiplier
    pub ev_multiplier: Option<Decimal>,
    /// Model code
    pub model_code: String,
    /// 1 added, 2 removed, 3 routed out
    pub last_liquidity: i64,
    /// Whether the price may still be revised (server 178+)
    pub pending_price_revision: bool,
}

/// One COMMISSION_REPORT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommissionReport {
    /// The execution it belongs to
    pub exec_id: String,
    /// The commission; `None` when TWS sent the unset marker
    pub commission: Option<Decimal>,
    /// Its currency
    pub currency: String,
    /// Realized P&L, when known
    pub realized_pnl: Option<Decimal>,
}

/// One incoming message, as far as sync cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The next order id the client may use (TWS sends it after START_API)
    NextValidId(i64),
    /// The accounts of the login
    ManagedAccounts(Vec<String>),
    /// One execution
    Execution(Box<Execution>),
    /// The end of the executions of a request
    ExecutionDataEnd {
        /// The request
        req_id: i64,
    },
    /// A commission report
    Commission(CommissionReport),
    /// An error or notice
    Error {
        /// The request it concerns (-1 for none)
        id: i64,
        /// The TWS error code (2100+ are notices)
        code: i64,
        /// The text
        message: String,
    },
    /// A message sync does not need
    Other(u32),
}

/// Decodes one frame sent by a server of `server_version`.
pub fn decode(payload: &[u8], server_version: u32) -> Result<Incoming, TwsError> {
    let mut f = Fields::parse(payload)?;
    let id: u32 = f.int("message id")?;
    let message = match id {
        inc::NEXT_VALID_ID => {
            let _version: i64 = f.int("version")?;
            Incoming::NextValidId(f.int("order id")?)
        }
        inc::MANAGED_ACCOUNTS => {
            let _version: i64 = f.int("version")?;
            let list = f.string("accounts")?;
            Incoming::ManagedAccounts(
                list.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        }
        inc::EXECUTION_DATA => {
            Incoming::Execution(Box::new(decode_execution(&mut f, server_version)?))
        }
        inc::EXECUTION_DATA_END => {
            let _version: i64 = f.int("version")?;
            Incoming::ExecutionDataEnd {
                req_id: f.int("request id")?,
            }
        }
        inc::COMMISSION_REPORT => {
            let _version: i64 = f.int("version")?;
            let exec_id = f.string("exec id")?.to_string();
            let commission = f.decimal_or_unset("commission")?;
            let currency = f.string("currency")?.to_string();
            let realized_pnl = f.decimal_or_unset("realized pnl")?;
            Incoming::Commission(CommissionReport {
                exec_id,
                commission,
                currency,
                realized_pnl,
            })
        }
        inc::ERROR => {
            let _version: i64 = f.int("version")?;
            Incoming::Error {
                id: f.int("id")?,
                code: f.int("code")?,
                message: f.string("message")?.to_string(),
            }
        }
        other => Incoming::Other(other),
    };
    Ok(message)
}

fn decode_execution(f: &mut Fields<'_>, server_version: u32) -> Result<Execution, TwsError> {
    let req_id = f.int("request id")?;
    let order_id = f.int("order id")?;
    let contract = Contract {
        con_id: f.int("con id")?,
        symbol: f.string("symbol")?.to_string(),
        sec_type: f.string("sec type")?.to_string(),
        last_trade_date: f.string("last trade date")?.to_string(),
        strike: f.decimal("strike")?,
        right: f.string("right")?.to_string(),
        multiplier: f.string("multiplier")?.to_string(),
        exchange: f.string("exchange")?.to_string(),
        currency: f.string("currency")?.to_string(),
        local_symbol: f.string("local symbol")?.to_string(),
        trading_class: f.string("trading class")?.to_string(),
    };
    let exec_id = f.string("exec id")?.to_string();
    if exec_id.is_empty() {
        return Err(malformed("execution without exec id"));
    }
    let time = TwsTime::parse(f.string("time")?)?;
    let account = f.string("account")?.to_string();
    let exchange = f.string("exchange")?.to_string();
    let side = f.string("side")?.to_string();
    let required = |value: Option<Decimal>, what: &str| {
        value.ok_or_else(|| malformed(format!("execution {exec_id} without {what}")))
    };
    let shares = required(f.decimal("shares")?, "shares")?;
    let price = required(f.decimal("price")?, "price")?;
    let perm_id = f.int("perm id")?;
    let client_id = f.int("client id")?;
    let liquidation = f.int("liquidation")?;
    let cum_qty = f.decimal("cum qty")?.unwrap_or_default();
    let avg_price = f.decimal("avg price")?.unwrap_or_default();
    let order_ref = f.string("order ref")?.to_string();
    let ev_rule = f.string("ev rule")?.to_string();
    let ev_multiplier = f.decimal_or_unset("ev multiplier")?;
    let model_code = f.string("model code")?.to_string();
    let last_liquidity = f.int("last liquidity")?;
    let pending_price_revision = if server_version >= VERSION_PENDING_PRICE_REVISION {
        f.flag("pending price revision")?
    } else {
        false
    };
    Ok(Execution {
        req_id,
        order_id,
        contract,
        exec_id,
        time,
        account,
        exchange,
        side,
        shares,
        price,
        perm_id,
        client_id,
        liquidation,
        cum_qty,
        avg_price,
        order_ref,
        ev_rule,
        ev_multiplier,
        model_code,
        last_liquidity,
        pending_price_revision,
    })
}

/// The fields of an EXECUTION_DATA message as a server of `server_version` sends them (used by
/// the simulated TWS; `decode` reads them back).
pub fn execution_fields(e: &Execution, server_version: u32) -> Vec<String> {
    let c = &e.contract;
    let opt = |d: Option<Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    let mut fields = vec![
        inc::EXECUTION_DATA.to_string(),
        e.req_id.to_string(),
        e.order_id.to_string(),
        c.con_id.to_string(),
        c.symbol.clone(),
        c.sec_type.clone(),
        c.last_trade_date.clone(),
        opt(c.strike),
        c.right.clone(),
        c.multiplier.clone(),
        c.exchange.clone(),
        c.currency.clone(),
        c.local_symbol.clone(),
        c.trading_class.clone(),
        e.exec_id.clone(),
        e.time.to_string(),
        e.account.clone(),
        e.exchange.clone(),
        e.side.clone(),
        e.shares.to_string(),
        e.price.to_string(),
        e.perm_id.to_string(),
        e.client_id.to_string(),
        e.liquidation.to_string(),
        e.cum_qty.to_string(),
        e.avg_price.to_string(),
        e.order_ref.clone(),
        e.ev_rule.clone(),
        opt(e.ev_multiplier),
        e.model_code.clone(),
        e.last_liquidity.to_string(),
    ];
    if server_version >= VERSION_PENDING_PRICE_REVISION {
        fields.push(if e.pending_price_revision { "1" } else { "0" }.to_string());
    }
    fields
}

/// The fields of a COMMISSION_REPORT message as a server sends them; an unknown commission or
/// P&L is written as Java's `Double.MAX_VALUE`, as TWS does.
pub fn commission_fields(c: &CommissionReport) -> Vec<String> {
    const UNSET: &str = "1.7976931348623157E308";
    let value = |d: Option<Decimal>| d.map_or_else(|| UNSET.to_string(), |d| d.to_string());
    vec![
        inc::COMMISSION_REPORT.to_string(),
        "1".into(),
        c.exec_id.clone(),
        value(c.commission),
        c.currency.clone(),
        value(c.realized_pnl),
        String::new(),
        String::new(),
    ]
}

/// How an execution id was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecIdForm {
    /// `a.b.c.RR`: the last segment is the revision (IB: a correction "differs from a previous
    /// ExecId in only the digits after the final period")
    Plain,
    /// `a.b.c.RR.LL`, five segments, the form of combo legs: the fifth tells the legs' fills
    /// apart, the fourth is the revision
    ComboLeg,
    /// Neither: kept whole as its own base, revision 0, never merged with another fill
    Unrecognised,
}

/// An execution id split into the part a correction keeps (`base`) and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecId<'a> {
    /// What every revision of this fill shares
    pub base: Cow<'a, str>,
    /// The revision (0 when the id has none)
    pub revision: i32,
    /// How the id was read
    pub form: ExecIdForm,
}

/// A revision segment as IB writes it: two hexadecimal digits (`01`, `02`, ... `0a`, ...; IB's
/// ids are hexadecimal throughout, so `.0a` follows `.09`).
fn revision_of(segment: &str) -> Option<i32> {
    (segment.len() == 2 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| i32::from_str_radix(segment, 16).ok())
        .flatten()
}

/// Splits an execution id (see [`ExecIdForm`]): `0000e0d5.64305db8.01.02` is base
/// `0000e0d5.64305db8.01`, revision 2; the combo leg `0000e0d5.64305db8.01.02.03` is base
/// `0000e0d5.64305db8.01.*.03`, revision 2 (the `*` stands for the revision, so a leg's base
/// can never equal another id's); anything else is its own base with revision 0.
pub fn parse_exec_id(exec_id: &str) -> ExecId<'_> {
    let whole = ExecId {
        base: Cow::Borrowed(exec_id),
        revision: 0,
        form: ExecIdForm::Unrecognised,
    };
    let segments: Vec<&str> = exec_id.split('.').collect();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return whole;
    }
    if segments.len() == 5 {
        return match revision_of(segments[3]) {
            Some(revision) => ExecId {
                base: Cow::Owned(format!(
                    "{}.{}.{}.*.{}",
                    segments[0], segments[1], segments[2], segments[4]
                )),
                revision,
                form: ExecIdForm::ComboLeg,
            },
            None => whole,
        };
    }
    let (base, last) = exec_id.rsplit_once('.').unwrap_or((exec_id, ""));
    match revision_of(last) {
        Some(revision) => ExecId {
            base: Cow::Borrowed(base),
            revision,
            form: ExecIdForm::Plain,
        },
        None => whole,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A frame TWS really sent (server version below 178, so no pendingPriceRevision).
    const CAPTURED: &[u8] = b"11\x00-1\x0010003\x00265598\x00AAPL\x00STK\x00\x000.0\x00\x00\x00ISLAND\x00USD\x00AAPL\x00NMS\x000000e0d5.63cefb1e.01.01\x0020221017  16:49:50\x00DU3479983\x00ISLAND\x00SLD\x003\x00142.46\x001481406469\x00999\x000\x003\x00142.46\x00\x00\x00\x00\x002\x00";

    #[test]
    fn a_captured_execution_decodes_into_exact_values() {
        let Incoming::Execution(e) = decode(CAPTURED, 176).unwrap() else {
            panic!("not an execution");
        };
        assert_eq!(e.req_id, -1);
        assert_eq!(e.order_id, 10003);
        assert_eq!(e.contract.symbol, "AAPL");
        assert_eq!(e.contract.strike, Some(Decimal::ZERO));
        assert_eq!(e.exec_id, "0000e0d5.63cefb1e.01.01");
        assert_eq!(e.time.local.to_string(), "2022-10-17 16:49:50");
        assert_eq!(e.time.zone, None);
        assert_eq!(e.account, "DU3479983");
        assert_eq!(e.side, "SLD");
        assert_eq!(e.shares, Decimal::new(3, 0));
        assert_eq!(e.price, Decimal::new(14246, 2));
        assert_eq!(e.perm_id, 1_481_406_469);
        assert_eq!(e.client_id, 999);
        assert_eq!(e.avg_price, Decimal::new(14246, 2));
        assert_eq!(e.order_ref, "");
        assert_eq!(e.ev_multiplier, None);
        assert_eq!(e.last_liquidity, 2);
        assert!(!e.pending_price_revision);
        // written back the way a server of the same version writes it, it decodes the same
        let again = encode_fields(&execution_fields(&e, 176));
        assert_eq!(&again[4..], CAPTURED);
        let Incoming::Execution(e178) =
            decode(&encode_fields(&execution_fields(&e, 178))[4..], 178).unwrap()
        else {
            panic!()
        };
        assert_eq!(e178, e);
    }

    #[test]
    fn times_with_and_without_a_zone_name() {
        let plain = TwsTime::parse("20221017  16:49:50").unwrap();
        assert_eq!(plain.zone, None);
        let zoned = TwsTime::parse("20240102 09:30:01 US/Eastern").unwrap();
        assert_eq!(zoned.zone.as_deref(), Some("US/Eastern"));
        assert_eq!(zoned.local.to_string(), "2024-01-02 09:30:01");
        let dashed = TwsTime::parse("20240102-09:30:01").unwrap();
        assert_eq!(dashed.local, zoned.local);
        assert!(dashed.utc && dashed.zone.is_none(), "{dashed:?}");
        assert!(!plain.utc && !zoned.utc);
        for bad in [
            "",
            "2024",
            "20241399 10:00:00",
            "20240102 25:00:00",
            "ééééééééé",
        ] {
            assert!(TwsTime::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commission_unset_is_none_not_a_huge_number() {
        let unset = CommissionReport {
            exec_id: "0001.01".into(),
            commission: None,
            currency: "USD".into(),
            realized_pnl: None,
        };
        let frame = encode_fields(&commission_fields(&unset));
        assert!(
            String::from_utf8_lossy(&frame).contains("1.7976931348623157E308"),
            "unset is written as TWS writes it"
        );
        let Incoming::Commission(c) = decode(&frame[4..], 176).unwrap() else {
            panic!()
        };
        assert_eq!(c.commission, None);
        assert_eq!(c.realized_pnl, None);
        let frame = encode_fields(&["59", "1", "0001.01", "1.0425", "USD", "-3.5", "", ""]);
        let Incoming::Commission(c) = decode(&frame[4..], 176).unwrap() else {
            panic!()
        };
        assert_eq!(c.commission, Some(Decimal::new(10425, 4)));
        assert_eq!(c.realized_pnl, Some(Decimal::new(-35, 1)));
    }

    #[test]
    fn the_small_messages_decode() {
        let d = |fields: &[&str]| decode(&encode_fields(fields)[4..], 176).unwrap();
        assert_eq!(d(&["9", "1", "42"]), Incoming::NextValidId(42));
        assert_eq!(
            d(&["15", "1", "DU1,DU2,"]),
            Incoming::ManagedAccounts(vec!["DU1".into(), "DU2".into()])
        );
        assert_eq!(
            d(&["55", "1", "7"]),
            Incoming::ExecutionDataEnd { req_id: 7 }
        );
        assert_eq!(
            d(&[
                "4",
                "2",
                "-1",
                "2104",
                "Market data farm connection is OK:usfarm",
                ""
            ]),
            Incoming::Error {
                id: -1,
                code: 2104,
                message: "Market data farm connection is OK:usfarm".into()
            }
        );
        assert_eq!(d(&["61", "3"]), Incoming::Other(61));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad: [&[u8]; 6] = [
            b"",
            b"11",
            b"abc\0",
            b"9\x001\x00x\x00",
            b"11\0-1\0",
            b"\xff\xfe\0",
        ];
        for frame in bad {
            assert!(decode(frame, 176).is_err(), "{frame:?}");
        }
        // an execution missing its price
        let mut fields: Vec<&str> = CAPTURED[..CAPTURED.len() - 1]
            .split(|b| *b == 0)
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect();
        fields[20] = "";
        let err = decode(&encode_fields(&fields)[4..], 176).unwrap_err();
        assert!(err.to_string().contains("price"), "{err}");
        fields[20] = "1,5";
        assert!(decode(&encode_fields(&fields)[4..], 176).is_err());
    }

    fn split(id: &str) -> (String, i32, ExecIdForm) {
        let e = parse_exec_id(id);
        (e.base.into_owned(), e.revision, e.form)
    }

    #[test]
    fn exec_ids_split_into_base_and_revision_as_ib_writes_them() {
        use ExecIdForm::*;
        let plain = |base: &str, revision| (base.to_string(), revision, Plain);
        let whole = |id: &str| (id.to_string(), 0, Unrecognised);
        assert_eq!(
            split("0000e0d5.64305db8.01.01"),
            plain("0000e0d5.64305db8.01", 1)
        );
        assert_eq!(
            split("0000e0d5.64305db8.01.02"),
            plain("0000e0d5.64305db8.01", 2)
        );
        // hexadecimal, as the rest of the id: .0a corrects .09, it is not a fill of its own
        assert_eq!(
            split("0000e0d5.64305db8.01.0a"),
            plain("0000e0d5.64305db8.01", 10)
        );
        // a combo leg: the fifth segment is the leg, the fourth the revision
        let leg1 = split("0000e0d5.64305db8.01.01.01");
        let leg2 = split("0000e0d5.64305db8.01.01.02");
        let leg2_fixed = split("0000e0d5.64305db8.01.02.02");
        assert_eq!(leg1, ("0000e0d5.64305db8.01.*.01".to_string(), 1, ComboLeg));
        assert_ne!(leg1.0, leg2.0, "two legs are two fills");
        assert_eq!((leg2_fixed.0.as_str(), leg2_fixed.1), (leg2.0.as_str(), 2));
        for odd in [
            "noperiod",
            "abc.def",
            "abc.",
            ".01",
            "a.99999999999",
            "a.1",
            "a..01",
            "0000e0d5.64305db8.01.zz",
            "0000e0d5.64305db8.01.zz.01",
        ] {
            assert_eq!(split(odd), whole(odd), "{odd}");
        }
    }

    #[test]
    fn version_ranges() {
        assert_eq!(parse_version_range("v157..178").unwrap(), (157, 178));
        assert_eq!(parse_version_range("v100").unwrap(), (100, 100));
        for bad in ["157..178", "v178..157", "vx..1", ""] {
            assert!(parse_version_range(bad).is_err(), "{bad}");
        }
        let hello = client_hello();
        assert!(hello.starts_with(b"API\0"));
        assert_eq!(&hello[8..], b"v157..178");
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused() {
        let mut wire = Vec::new();
        write_fields(&mut wire, &["9", "1", "5"]).await.unwrap();
        write_fields(&mut wire, &["55", "1", "2"]).await.unwrap();
        let mut reader = wire.as_slice();
        let first = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode(&first, 176).unwrap(), Incoming::NextValidId(5));
        let second = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            decode(&second, 176).unwrap(),
            Incoming::ExecutionDataEnd { req_id: 2 }
        );
        assert!(
            read_frame(&mut reader).await.unwrap().is_none(),
            "clean end"
        );
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(read_frame(&mut huge.as_slice()).await.is_err());
        // a frame cut short is an error, not a clean end
        let mut cut = &wire[..6];
        assert!(read_frame(&mut cut).await.is_err());
        for reader in [FrameReader::new(&wire[..6]), FrameReader::new(&huge[..])] {
            let mut reader = reader;
            assert!(reader.next_frame().await.is_err());
        }
    }

    /// A frame that arrives in pieces, with the read cancelled by a timeout between them (as a
    /// grace read after the end marker does), is read whole afterwards: nothing is lost and the
    /// stream stays in step.
    #[tokio::test]
    async fn a_read_cancelled_mid_frame_loses_nothing() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(client);
        let frame = encode_fields(&["59", "1", "0001.01", "1.5", "USD", "", "", ""]);
        server.write_all(&frame[..7]).await.unwrap();
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_frame()).await;
        assert!(cut.is_err(), "no whole frame yet: the read is cancelled");
        server.write_all(&frame[7..]).await.unwrap();
        write_fields(&mut server, &["55", "1", "2"]).await.unwrap();
        let Incoming::Commission(c) =
            decode(&reader.next_frame().await.unwrap().unwrap(), 176).unwrap()
        else {
            panic!("the commission report, whole")
        };
        assert_eq!(c.commission, Some(Decimal::new(15, 1)));
        assert_eq!(
            decode(&reader.next_frame().await.unwrap().unwrap(), 176).unwrap(),
            Incoming::ExecutionDataEnd { req_id: 2 }
        );
        drop(server);
        assert!(reader.next_frame().await.unwrap().is_none(), "clean end");
    }

    /// The handshake of a TWS with a Chinese locale: the connection time's zone in GB2312
    /// (rust-ibapi#352). The frame decodes; the zone reads as the Chinese text it is.
    #[test]
    fn gb2312_text_decodes_and_never_fails_its_frame() {
        let mut hello = b"176\x0020240102 10:00:00 ".to_vec();
        hello.extend_from_slice(&[
            0xd6, 0xd0, 0xb9, 0xfa, 0xb1, 0xea, 0xd7, 0xbc, 0xca, 0xb1, 0xbc, 0xe4,
        ]);
        hello.push(0);
        let mut f = Fields::parse(&hello).unwrap();
        assert_eq!(f.int::<u32>("version").unwrap(), 176);
        assert_eq!(f.string("time").unwrap(), "20240102 10:00:00 中国标准时间");
        // bytes that are neither UTF-8 nor GB18030 become U+FFFD, never an error
        assert_eq!(decode_text(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(decode_text("déjà".as_bytes()), "déjà");
    }

    proptest! {
        #[test]
        fn no_frame_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 176);
            let _ = decode(&bytes, 178);
        }

        #[test]
        fn no_field_list_makes_the_decoder_panic(
            id in prop_oneof![Just("4"), Just("9"), Just("11"), Just("15"), Just("55"), Just("59")],
            fields in proptest::collection::vec("[0-9A-Za-z.:, -]{0,12}", 0..40),
        ) {
            let mut all = vec![id.to_string()];
            all.extend(fields);
            let frame = encode_fields(&all);
            let _ = decode(&frame[4..], 178);
        }
    }
}
