//! Flex dates and times: a row's execution time, and why it cannot be read.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use super::FlexRow;

/// A Flex date: `yyyyMMdd` or `yyyy-MM-dd` (the query's date format; the day-month orders
/// such as `MM/dd/yyyy` are refused, as `01/02` can be read two ways).
pub(super) fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
        .ok()
}

/// A Flex time of day: `HHmmss` or `HH:mm:ss`.
pub(super) fn parse_clock(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H%M%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .ok()
}

/// How a Flex time should be written (the Flex Query's date and time formats).
pub(super) const TIME_FORMATS: &str = "set the Flex query's date format to yyyyMMdd or yyyy-MM-dd and its \
    time format to HHmmss or HH:mm:ss";

/// Why a row's time cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowTimeError {
    /// `dateTime` in a form tradegate does not read
    #[error("dateTime {0:?} is not in a form tradegate reads: {TIME_FORMATS}")]
    DateTime(String),
    /// `dateTime` is a date only, and no `tradeTime` goes with it
    #[error(
        "dateTime {0:?} has no time of day: include the time in the Flex query ({TIME_FORMATS})"
    )]
    NoTimeOfDay(String),
    /// `tradeDate` / `tradeTime` in a form tradegate does not read
    #[error(
        "tradeDate {date:?} / tradeTime {clock:?} are not in a form tradegate reads: {TIME_FORMATS}"
    )]
    TradeDateTime {
        /// `tradeDate`
        date: String,
        /// `tradeTime`
        clock: String,
    },
    /// No time at all
    #[error("the row has no dateTime (nor tradeDate and tradeTime)")]
    Missing,
}

/// When a row executed, as wall time: its `dateTime` (date and time joined by `;`, `,`, a space
/// or `T`), else `tradeDate` with `tradeTime`.
pub fn row_time(row: &FlexRow) -> Result<NaiveDateTime, RowTimeError> {
    if let Some(text) = row.get("dateTime") {
        if let Some((date, clock)) = text.split_once([';', ',', ' ', 'T']) {
            return match (parse_date(date.trim()), parse_clock(clock.trim())) {
                (Some(d), Some(t)) => Ok(d.and_time(t)),
                _ => Err(RowTimeError::DateTime(text.to_string())),
            };
        }
        if let (Some(d), Some(t)) = (parse_date(text), row.get("tradeTime").and_then(parse_clock)) {
            return Ok(d.and_time(t));
        }
        return Err(RowTimeError::NoTimeOfDay(text.to_string()));
    }
    match (row.get("tradeDate"), row.get("tradeTime")) {
        (Some(date), Some(clock)) => match (parse_date(date), parse_clock(clock)) {
            (Some(d), Some(t)) => Ok(d.and_time(t)),
            _ => Err(RowTimeError::TradeDateTime {
                date: date.to_string(),
                clock: clock.to_string(),
            }),
        },
        _ => Err(RowTimeError::Missing),
    }
}
