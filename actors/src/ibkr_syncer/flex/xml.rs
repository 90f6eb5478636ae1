//! Reading Flex XML: a document decoded, the Web Service's answer, a report's statements and
//! execution rows.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};

use super::time::parse_date;
use super::{FlexError, FlexRow, FlexStatement, attribute};

/// Decodes a report's bytes: UTF-8 (with or without a byte-order mark), else the encoding its
/// XML declaration names.
pub fn decode_document(bytes: &[u8]) -> Result<Cow<'_, str>, FlexError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(Cow::Borrowed(text));
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    let label = head
        .split_once("encoding=")
        .and_then(|(_, rest)| {
            let quote = rest.chars().next()?;
            rest.strip_prefix(quote)?
                .split(quote)
                .next()
                .map(str::to_string)
        })
        .ok_or_else(|| {
            FlexError::Malformed("not UTF-8, and no encoding is declared".to_string())
        })?;
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| FlexError::Malformed(format!("unknown encoding {label:?}")))?;
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors {
        return Err(FlexError::Malformed(format!("not valid {label}")));
    }
    Ok(Cow::Owned(text.into_owned()))
}

pub(super) fn attributes_of(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, FlexError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| FlexError::Malformed(e.to_string()))?;
        let value = a
            .unescape_value()
            .map_err(|e| FlexError::Malformed(e.to_string()))?;
        if value.trim().is_empty() {
            continue;
        }
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        out.push((key, value.into_owned()));
    }
    Ok(out)
}

/// The answer of the Flex Web Service (`FlexStatementResponse`): a reference code, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// `Status` Success: the reference code to fetch the statement with
    Reference(String),
    /// `Status` Fail (or Warn): IB's code and message
    Error {
        /// `ErrorCode`
        code: u32,
        /// `ErrorMessage`
        message: String,
    },
}

/// Reads a `FlexStatementResponse` document.
pub fn parse_service_answer(xml: &str) -> Result<ServiceAnswer, FlexError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut current: Option<String> = None;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut root: Option<String> = None;
    loop {
        match reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?
        {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if root.is_none() {
                    root = Some(name.clone());
                }
                current = Some(name);
            }
            Event::Text(t) => {
                if let Some(name) = &current {
                    let text = t
                        .decode()
                        .map_err(|e| FlexError::Malformed(e.to_string()))?;
                    let text = quick_xml::escape::unescape(&text)
                        .map_err(|e| FlexError::Malformed(e.to_string()))?;
                    fields
                        .entry(name.clone())
                        .or_default()
                        .push_str(text.trim());
                }
            }
            Event::CData(t) => {
                if let Some(name) = &current {
                    fields
                        .entry(name.clone())
                        .or_default()
                        .push_str(String::from_utf8_lossy(&t).trim());
                }
            }
            Event::End(_) => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    match root.as_deref() {
        Some("FlexStatementResponse") => {}
        Some(other) => return Err(FlexError::NotAReport(other.to_string())),
        None => return Err(FlexError::Malformed("an empty document".into())),
    }
    let status = fields.get("Status").map(String::as_str).unwrap_or_default();
    if status.eq_ignore_ascii_case("Success")
        && let Some(reference) = fields.get("ReferenceCode").filter(|r| !r.is_empty())
    {
        return Ok(ServiceAnswer::Reference(reference.clone()));
    }
    let code = fields
        .get("ErrorCode")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let message = fields
        .get("ErrorMessage")
        .cloned()
        .unwrap_or_else(|| format!("status {status:?} without an error message"));
    Ok(ServiceAnswer::Error { code, message })
}

/// The local name of a document's root element (`FlexQueryResponse`, `FlexStatementResponse`).
pub fn root_element(xml: &str) -> Result<String, FlexError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?
        {
            Event::Start(e) | Event::Empty(e) => {
                return Ok(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::Eof => return Err(FlexError::Malformed("an empty document".into())),
            _ => {}
        }
    }
}

/// Whether a trade row is an execution: `Trade`/`TradeConfirm` rows whose `levelOfDetail` is
/// `EXECUTION` (or absent, in queries that write no level).
pub(super) fn is_execution(element: &str, attributes: &[(String, String)]) -> bool {
    matches!(element, "Trade" | "TradeConfirm")
        && attribute(attributes, "levelOfDetail")
            .is_none_or(|l| l.eq_ignore_ascii_case("EXECUTION"))
}

/// Parses a Flex Query report (see the module docs). A `FlexStatementResponse` (the Web
/// Service's error answer) is [`FlexError::Service`].
pub fn parse_report(xml: &str) -> Result<Vec<FlexStatement>, FlexError> {
    match root_element(xml)?.as_str() {
        "FlexQueryResponse" => {}
        "FlexStatementResponse" => {
            return match parse_service_answer(xml)? {
                ServiceAnswer::Error { code, message } => Err(FlexError::Service { code, message }),
                ServiceAnswer::Reference(_) => {
                    Err(FlexError::NotAReport("FlexStatementResponse".into()))
                }
            };
        }
        other => return Err(FlexError::NotAReport(other.to_string())),
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut statements: Vec<FlexStatement> = Vec::new();
    // the section a row is in (`Trades`, `TradeConfirms`), by depth
    let mut section: Option<(String, usize)> = None;
    let mut depth = 0usize;
    let mut trade_rows = 0u64;
    let mut root_closed = false;
    let mut declared: Option<usize> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| FlexError::Malformed(e.to_string()))?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if section.as_ref().is_some_and(|(_, d)| *d == depth) {
                    section = None;
                }
                root_closed |= depth == 0;
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        match name.as_str() {
            "FlexStatements" => {
                declared = attribute(&attributes_of(&e)?, "count").and_then(|c| c.parse().ok());
            }
            "FlexStatement" => {
                let attributes = attributes_of(&e)?;
                let date = |key: &str| attribute(&attributes, key).and_then(parse_date);
                statements.push(FlexStatement {
                    account_id: attribute(&attributes, "accountId")
                        .unwrap_or_default()
                        .to_string(),
                    from_date: date("fromDate"),
                    to_date: date("toDate"),
                    rows: Vec::new(),
                    ignored_rows: 0,
                    attributes,
                });
            }
            "Trades" | "TradeConfirms" if !empty => section = Some((name.clone(), depth)),
            _ if section.is_some() => {
                let attributes = attributes_of(&e)?;
                let Some(statement) = statements.last_mut() else {
                    return Err(FlexError::Malformed(format!(
                        "a <{name}> outside any <FlexStatement>"
                    )));
                };
                // rows that are no exchange execution (an expiry, an assignment, a book
                // trade) carry no exec id: they are not fills TWS would send
                let not_exchange = attribute(&attributes, "transactionType")
                    .is_some_and(|t| t != "ExchTrade")
                    && attribute(&attributes, "ibExecID")
                        .or_else(|| attribute(&attributes, "execID"))
                        .is_none();
                if is_execution(&name, &attributes) && !not_exchange {
                    statement.rows.push(FlexRow {
                        element: name,
                        attributes,
                    });
                } else {
                    statement.ignored_rows += 1;
                    // rows of another level of detail (not rows that are no execution)
                    trade_rows += u64::from(!not_exchange);
                }
            }
            _ => {}
        }
        if !empty {
            depth += 1;
        }
    }
    if !root_closed {
        return Err(FlexError::Malformed(
            "the report ends before </FlexQueryResponse>: it was cut off (a download or a copy \
             that did not finish); nothing of it is imported"
                .into(),
        ));
    }
    if let Some(n) = declared
        && n != statements.len()
    {
        return Err(FlexError::Malformed(format!(
            "<FlexStatements count=\"{n}\"> but {} statements follow",
            statements.len()
        )));
    }
    let executions: usize = statements.iter().map(|s| s.rows.len()).sum();
    if executions == 0 && trade_rows > 0 {
        return Err(FlexError::NoExecutions(trade_rows));
    }
    Ok(statements)
}
