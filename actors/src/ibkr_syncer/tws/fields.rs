//! A frame's fields read in order: typed accessors, text decoding, decimals, TWS times.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use super::{TwsError, malformed};
use chrono::NaiveDateTime;
use rust_decimal::Decimal;

/// The fields of one frame, read in order with typed accessors.
#[derive(Debug)]
pub struct Fields<'a> {
    pub(super) fields: Vec<Cow<'a, str>>,
    pub(super) next: usize,
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
pub(super) fn is_unset_double(text: &str) -> bool {
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
