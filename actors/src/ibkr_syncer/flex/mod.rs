//! IB Flex Query reports: the backfill of executions older than TWS's window. TWS and IB Gateway
//! serve executions since midnight (up to 7 days only where TWS's Trade Log setting says so), so
//! a gateway down across midnight would lose those fills; IB's Flex reports (an Activity Flex
//! Query with its Trades section at execution level, or a Trade Confirmation Flex Query) list
//! them for any range. This module reads such a report (IB's XML) into [`NewFill`]s with the
//! same exec ids, revisions and parent keys as TWS's, so they are applied through the same
//! idempotent path ([`super::backfill`]).
//!
//! What Flex writes: `FlexQueryResponse > FlexStatements > FlexStatement(accountId, fromDate,
//! toDate, whenGenerated) > Trades > Trade` (or `TradeConfirms > TradeConfirm`), every value an
//! attribute. Of a trade: `ibExecID` (TradeConfirm: `execID`) is TWS's exec id; `ibOrderID` the
//! perm id; `buySell` BUY/SELL (a ` (Ca.)` suffix marks a cancellation); `quantity` negative
//! for sells; `tradePrice`; `ibCommission` negative (a cost); `fifoPnlRealized`; `dateTime`
//! as the query's date and time formats put it (`yyyyMMdd;HHmmss` by default), in Eastern time.
//! Rows of other levels of detail (ORDER, CLOSED_LOT, summaries, or `Order`/`Lot` elements) are
//! not executions and are counted, not stored.

use chrono::NaiveDate;

mod normalize;
mod time;
mod xml;

pub use normalize::{AccountFills, RAW_SOURCE, commission_record, normalize_report, normalize_row};
pub use time::{RowTimeError, row_time};
pub use xml::{ServiceAnswer, decode_document, parse_report, parse_service_answer, root_element};

/// Why a Flex report cannot be read as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlexError {
    /// Not well-formed XML, or not in any encoding tradegate reads
    #[error("the Flex report is not readable XML: {0}")]
    Malformed(String),
    /// The document is a Flex Web Service answer (an error), not a report
    #[error("IB's Flex Web Service answered error {code}: {message}")]
    Service {
        /// IB's error code (1001-1021)
        code: u32,
        /// IB's message
        message: String,
    },
    /// Some other document
    #[error(
        "the document is not a Flex Query report (its root element is <{0}>, not <FlexQueryResponse>)"
    )]
    NotAReport(String),
    /// Trades are listed, but none at the execution level
    #[error(
        "the Flex report lists {0} trade rows but none at the execution level: in the Flex \
         Query's Trades section, tick Options > Execution (tradegate stores executions, not \
         orders or closed lots)"
    )]
    NoExecutions(u64),
}

impl FlexError {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "flex_malformed",
            Self::Service { .. } => "flex_refused",
            Self::NotAReport(_) => "flex_not_a_report",
            Self::NoExecutions(_) => "flex_no_executions",
        }
    }
}

/// One `FlexStatement`: an account's report over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlexStatement {
    /// `accountId`
    pub account_id: String,
    /// `fromDate`, when it parses
    pub from_date: Option<NaiveDate>,
    /// `toDate`, when it parses
    pub to_date: Option<NaiveDate>,
    /// The statement's own attributes (kept with every fill it gives)
    pub attributes: Vec<(String, String)>,
    /// Its execution-level trade rows, in document order
    pub rows: Vec<FlexRow>,
    /// Trade rows of another level of detail (orders, lots, summaries): not executions
    pub ignored_rows: u64,
}

/// One execution-level row (`Trade` or `TradeConfirm`), its attributes as IB wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexRow {
    /// `Trade` or `TradeConfirm`
    pub element: String,
    /// Its attributes (empty ones left out)
    pub attributes: Vec<(String, String)>,
}

impl FlexRow {
    /// The value of attribute `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        attribute(&self.attributes, name)
    }
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// IB's Flex Web Service error codes worth asking again after a wait: the statement is being
/// generated (1019), the service is busy or the request came too fast (1001, 1004-1009, 1018,
/// 1021). Others (an invalid token or query, an expired token, an IP not allowed, ...) are
/// fatal.
pub fn retryable(code: u32) -> bool {
    matches!(code, 1001 | 1004..=1009 | 1018 | 1019 | 1021)
}

#[cfg(test)]
mod tests {
    use super::normalize::*;
    use super::time::*;
    use super::xml::*;
    use super::*;
    use chrono_tz::Tz;
    use rust_decimal::Decimal;

    use crate::domain::Side;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<FlexQueryResponse queryName="tradegate" type="AF">
<FlexStatements count="1">
<FlexStatement accountId="U100" fromDate="20241202" toDate="20241203" period="Last2Days" whenGenerated="20241204;083000">
<Trades>
<Trade accountId="U100" currency="USD" assetCategory="STK" symbol="AAPL" conid="265598" listingExchange="NASDAQ" underlyingSymbol="AAPL" multiplier="1" dateTime="20241202;103015" tradeDate="20241202" exchange="ISLAND" quantity="60" tradePrice="190.5" ibCommission="-0.3" ibCommissionCurrency="USD" fifoPnlRealized="0" buySell="BUY" ibOrderID="9001" ibExecID="0000e0d5.674d1a01.01.01" orderReference="s-1" levelOfDetail="EXECUTION" />
<Trade accountId="U100" currency="USD" assetCategory="STK" symbol="AAPL" dateTime="20241202;103016" quantity="40" tradePrice="190.75" ibCommission="-0.2" ibCommissionCurrency="USD" buySell="BUY" ibOrderID="9001" ibExecID="0000e0d5.674d1a02.01.01" orderReference="s-1" levelOfDetail="EXECUTION" />
<Order accountId="U100" symbol="AAPL" quantity="100" buySell="BUY" ibOrderID="9001" levelOfDetail="ORDER" />
<Trade accountId="U100" assetCategory="OPT" symbol="AAPL  241220C00200000" underlyingSymbol="AAPL" dateTime="2024-12-03 15:59:59" quantity="-2" tradePrice="1.25" ibCommission="-1.3" buySell="SELL" ibOrderID="9002" ibExecID="0000e0d5.674d1a03.01.01" levelOfDetail="EXECUTION" />
<Trade accountId="U100" symbol="MSFT" dateTime="20241203;100000" quantity="5" tradePrice="420" buySell="BUY (Ca.)" ibOrderID="9003" ibExecID="0000e0d5.674d1a04.01.01" levelOfDetail="EXECUTION" />
</Trades>
</FlexStatement>
</FlexStatements>
</FlexQueryResponse>"#;

    #[test]
    fn a_report_reads_as_fills_in_eastern_time() {
        let statements = parse_report(REPORT).unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].rows.len(), 4);
        assert_eq!(statements[0].ignored_rows, 1);
        let accounts = normalize_report(&statements, Tz::America__New_York);
        assert_eq!(accounts.len(), 1);
        let a = &accounts[0];
        assert_eq!(a.fills.len(), 3);
        assert_eq!(a.rejected.len(), 1);
        assert_eq!(a.rejected[0].code, "flex_cancellation");
        let first = &a.fills[0];
        assert_eq!(first.exec_id_base, "0000e0d5.674d1a01.01");
        assert_eq!(first.exec_revision, 1);
        assert_eq!(first.perm_id, 9001);
        assert_eq!(first.side, Side::Buy);
        assert_eq!(first.commission, Some(Decimal::new(3, 1)));
        // 10:30:15 EST is 15:30:15 UTC
        assert_eq!(first.executed_at.to_rfc3339(), "2024-12-02T15:30:15+00:00");
        let second = &a.fills[1];
        assert_eq!(second.cum_quantity, Decimal::from(100));
        assert_eq!(second.avg_price, Decimal::new(1906, 1));
        let option = &a.fills[2];
        assert_eq!(option.symbol, "AAPL");
        assert_eq!(option.sec_type, "OPT");
        assert_eq!(option.side, Side::Sell);
        assert_eq!(option.quantity, Decimal::from(2));
        assert_eq!(option.executed_at.to_rfc3339(), "2024-12-03T20:59:59+00:00");
        assert!(first.raw.get().contains(r#""source":"ib_flex""#));
    }

    #[test]
    fn a_report_cut_off_between_rows_is_refused_whole() {
        let cut = REPORT
            .find("<Trade accountId=\"U100\" assetCategory=\"OPT\"")
            .unwrap();
        let err = parse_report(&REPORT[..cut]).unwrap_err();
        assert_eq!(err.code(), "flex_malformed");
        assert!(err.to_string().contains("cut off"), "{err}");
        let miscounted = REPORT.replace("count=\"1\"", "count=\"2\"");
        let err = parse_report(&miscounted).unwrap_err();
        assert!(err.to_string().contains("count=\"2\""), "{err}");
    }

    fn one_row(row: &str) -> AccountFills {
        let xml = format!(
            "<FlexQueryResponse><FlexStatements count=\"1\"><FlexStatement accountId=\"U100\">\
             <TradeConfirms>{row}</TradeConfirms></FlexStatement></FlexStatements>\
             </FlexQueryResponse>"
        );
        let statements = parse_report(&xml).unwrap();
        // every account's rows together (a row may name another account than its statement)
        let mut all = AccountFills::default();
        for a in normalize_report(&statements, Tz::America__New_York) {
            all.fills.extend(a.fills);
            all.rejected.extend(a.rejected);
            all.ignored_rows += a.ignored_rows;
        }
        all
    }

    #[test]
    fn trade_confirmation_rows_read_with_their_own_names() {
        let a = one_row(
            r#"<TradeConfirm accountId="U100" assetCategory="STK" symbol="IBM" dateTime="20241202;101010" quantity="-3" price="220.5" amount="-661.5" commission="-1" commissionCurrency="USD" buySell="SELL" orderID="4411" execID="0001f4e8.674d9b01.01.01" code="P" levelOfDetail="EXECUTION" />"#,
        );
        assert!(a.rejected.is_empty(), "{:?}", a.rejected);
        let f = &a.fills[0];
        assert_eq!(
            (f.exec_id.as_str(), f.perm_id, f.price, f.quantity),
            (
                "0001f4e8.674d9b01.01.01",
                4411,
                Decimal::new(2205, 1),
                Decimal::from(3)
            )
        );
        assert_eq!(f.commission, Some(Decimal::ONE));
        let cancelled = one_row(
            r#"<TradeConfirm accountId="U100" symbol="IBM" dateTime="20241202;101010" quantity="3" price="220.5" buySell="BUY" orderID="4412" execID="0001f4e8.674d9b02.01.01" code="Ca" />"#,
        );
        assert_eq!(cancelled.rejected[0].code, "flex_cancellation");
    }

    #[test]
    fn rows_without_what_a_fill_needs_are_refused_each_with_a_code() {
        let base = r#"symbol="IBM" dateTime="20241202;101010" quantity="3" tradePrice="1" buySell="BUY" execID="0001f4e8.674d9b03.01.01""#;
        let cases = [
            (format!(r#"<Trade accountId="U100" {base} />"#), "flex_no_order_id"),
            (
                format!(r#"<Trade accountId="Main account" {base} ibOrderID="1" />"#),
                "flex_not_an_account_id",
            ),
            (
                format!(r#"<Trade accountId="U100" {base} ibOrderID="-4" />"#),
                "bad_number",
            ),
            (
                r#"<Trade accountId="U100" symbol="IBM" dateTime="20241202;101010" quantity="3" tradePrice="1" buySell="BUY" ibOrderID="5" />"#
                    .to_string(),
                "no_exec_id",
            ),
            (
                r#"<Trade accountId="U100" symbol="IBM" dateTime="20240310;023000" quantity="3" tradePrice="1" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" />"#
                    .to_string(),
                "time_gap",
            ),
        ];
        for (row, code) in cases {
            let a = one_row(&row);
            assert!(a.fills.is_empty(), "{row}");
            assert_eq!(a.rejected[0].code, code, "{row}");
        }
        // an expiry or assignment has no exec id and is no execution: left out, not refused
        let a = one_row(
            r#"<Trade accountId="U100" symbol="X 241220C" transactionType="BookTrade" quantity="-1" tradePrice="0" buySell="SELL" ibOrderID="5" levelOfDetail="EXECUTION" />"#,
        );
        assert!(a.rejected.is_empty() && a.fills.is_empty());
        assert_eq!(a.ignored_rows, 1);
    }

    #[test]
    fn numbers_too_large_to_multiply_do_not_panic() {
        let a = one_row(
            r#"<Trade accountId="U100" symbol="X" dateTime="20241202;101010" quantity="70000000000000000000000000000" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" /><Trade accountId="U100" symbol="X" dateTime="20241202;101011" quantity="70000000000000000000000000000" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.c.01.01" />"#,
        );
        assert_eq!(a.fills.len(), 2);
        let huge = one_row(
            r#"<Trade accountId="U100" symbol="X" dateTime="20241202;101010" quantity="1e400" tradePrice="9" buySell="BUY" ibOrderID="5" ibExecID="a.b.01.01" />"#,
        );
        assert_eq!(huge.rejected[0].code, "bad_number");
        assert!(decode_document(b"<?xml encoding=\xff\xfe?>\xff").is_err());
    }

    #[test]
    fn order_level_only_reports_are_refused_with_what_to_change() {
        let xml = r#"<FlexQueryResponse><FlexStatements><FlexStatement accountId="U1"><Trades>
            <Trade accountId="U1" symbol="X" levelOfDetail="ORDER" /></Trades></FlexStatement>
            </FlexStatements></FlexQueryResponse>"#;
        let err = parse_report(xml).unwrap_err();
        assert_eq!(err.code(), "flex_no_executions");
        assert!(err.to_string().contains("Execution"), "{err}");
    }

    #[test]
    fn service_answers_are_read() {
        let ok = "<FlexStatementResponse timestamp='x'><Status>Success</Status>\
            <ReferenceCode>1234567890</ReferenceCode><Url>https://x</Url></FlexStatementResponse>";
        assert_eq!(
            parse_service_answer(ok).unwrap(),
            ServiceAnswer::Reference("1234567890".into())
        );
        let fail = "<FlexStatementResponse><Status>Fail</Status><ErrorCode>1019</ErrorCode>\
            <ErrorMessage>Statement generation in progress. Please try again shortly.</ErrorMessage>\
            </FlexStatementResponse>";
        assert_eq!(
            parse_service_answer(fail).unwrap(),
            ServiceAnswer::Error {
                code: 1019,
                message: "Statement generation in progress. Please try again shortly.".into()
            }
        );
        assert!(matches!(
            parse_report(fail),
            Err(FlexError::Service { code: 1019, .. })
        ));
        assert!(retryable(1019) && retryable(1018) && !retryable(1012) && !retryable(1015));
    }

    #[test]
    fn times_in_the_forms_flex_writes_and_refusals_of_others() {
        let row = |attrs: &[(&str, &str)]| FlexRow {
            element: "Trade".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let want = NaiveDate::from_ymd_opt(2024, 12, 2)
            .unwrap()
            .and_hms_opt(9, 31, 5)
            .unwrap();
        for text in [
            "20241202;093105",
            "2024-12-02, 09:31:05",
            "20241202 09:31:05",
            "2024-12-02T093105",
        ] {
            assert_eq!(
                row_time(&row(&[("dateTime", text)])).unwrap(),
                want,
                "{text}"
            );
        }
        assert_eq!(
            row_time(&row(&[("tradeDate", "20241202"), ("tradeTime", "093105")])).unwrap(),
            want
        );
        let err = row_time(&row(&[("dateTime", "12/02/2024;093105")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("yyyyMMdd"), "{err}");
        assert!(row_time(&row(&[("dateTime", "20241202")])).is_err());
    }

    #[test]
    fn a_non_utf8_report_is_decoded_by_its_declaration() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1252
            .encode("<?xml version=\"1.0\" encoding=\"windows-1252\"?><a n=\"caf\u{e9}\"/>");
        let text = decode_document(&bytes).unwrap();
        assert!(text.contains("caf\u{e9}"));
        assert!(decode_document(b"\xff\xfe<a/>").is_err());
    }
}
