//! The positions of an IBKR account: TWS's positions request (REQ_POSITIONS 61, answered by
//! POSITION_DATA 61 … POSITION_END 62) asked over the syncer's session, the request and the
//! answer stored in `api_payloads` (source `ibkr`), the snapshot recorded for reconciliation.
//!
//! A position is keyed as [`crate::store::reconciliation`] keys IBKR fills: a stock by its
//! symbol, any other instrument by its symbol and security type. TWS reports a position closed
//! today as zero; that is no open position, so no row (the stored answer keeps it).

use chrono::Utc;
use serde_json::{Value, json};

use super::client::TwsSession;
use super::sync::SyncError;
use super::tws::{Position, TwsError};
use crate::domain::ApiPayload;
use crate::store::positions::{NewPosition, NewSnapshot, record_snapshot};
use crate::store::reconciliation::IBKR;
use crate::store::{self};

/// What the stored request names as its endpoint.
const ENDPOINT: &str = "tws:REQ_POSITIONS";

/// The key of a position: its symbol for a stock, else its symbol and security type.
pub fn position_key(symbol: &str, sec_type: &str) -> String {
    if sec_type.is_empty() || sec_type == "STK" {
        symbol.to_string()
    } else {
        format!("{symbol} {sec_type}")
    }
}

fn raw(p: &Position) -> Value {
    let c = &p.contract;
    json!({
        "account": p.account,
        "con_id": c.con_id,
        "symbol": c.symbol,
        "sec_type": c.sec_type,
        "last_trade_date": c.last_trade_date,
        "strike": c.strike,
        "right": c.right,
        "multiplier": c.multiplier,
        "exchange": c.exchange,
        "currency": c.currency,
        "local_symbol": c.local_symbol,
        "trading_class": c.trading_class,
        "position": p.position,
        "avg_cost": p.avg_cost,
    })
}

/// The open positions of `account` among those of the login, netted by key (two contracts of
/// one key, two option series say, are one position, as their fills are summed).
pub fn positions_of(account: &str, all: &[Position]) -> Vec<NewPosition> {
    let mut out: Vec<NewPosition> = Vec::new();
    for p in all.iter().filter(|p| p.account == account) {
        let key = position_key(&p.contract.symbol, &p.contract.sec_type);
        match out.iter_mut().find(|n| n.symbol == key) {
            Some(n) => {
                n.quantity += p.position;
                // one average cost cannot stand for two contracts
                n.average_cost = None;
                // the raw form of a netted position is the list of what it nets
                match &mut n.raw {
                    Value::Array(items) => items.push(raw(p)),
                    one => *one = Value::Array(vec![one.take(), raw(p)]),
                }
            }
            None => out.push(NewPosition {
                symbol: key,
                quantity: p.position,
                average_cost: p.avg_cost,
                raw: raw(p),
            }),
        }
    }
    out.retain(|n| !n.quantity.is_zero());
    out
}

fn payload_error(e: impl std::fmt::Display) -> SyncError {
    SyncError::Unavailable(format!("storing a positions payload: {e}"))
}

/// Asks TWS once for the positions of the login and records a snapshot of each of
/// `accounts`: the request stored before it is sent, the answer (or the failure) after, both
/// shared by the snapshots they made. The snapshots' ids, by account. An answer TWS could not
/// give whole records no snapshot ([`SyncError::Positions`]; the session goes on); a closed
/// connection or an answer not finished in time is [`SyncError::Tws`] (the session is over).
pub async fn snapshot(
    pool: &deadpool_postgres::Pool,
    session: &mut TwsSession,
    (host, port): (&str, u16),
    accounts: &[String],
) -> Result<Vec<(String, i64)>, SyncError> {
    let client = pool
        .get()
        .await
        .map_err(|e| SyncError::Unavailable(format!("no database connection: {e}")))?;
    let request = ApiPayload::request(
        IBKR,
        json!({
            "endpoint": ENDPOINT,
            "method": "GET",
            "params": {"host": host, "port": port, "client_id": session.client_id(),
                       "accounts": accounts, "message": ["61", "1"]},
        }),
    )
    .map_err(payload_error)?;
    let request_payload_id = store::payloads::insert_payload(&**client, &request).await?;
    let requested_at = Utc::now();
    let answer = session.positions().await;
    let as_of = Utc::now();
    let body = match &answer {
        Ok(all) => json!({
            "status_code": 200,
            "body": {"positions": all.iter().filter(|p| accounts.contains(&p.account)).map(raw)
                .collect::<Vec<_>>()},
        }),
        // a TWS that failed the request: what it did, as a gateway's failure would read
        Err(e) => json!({"status_code": 502, "body": {"error": e.to_string()}}),
    };
    let mut response = ApiPayload::response(IBKR, body).map_err(payload_error)?;
    response.captured_at = as_of;
    let response_payload_id = store::payloads::insert_payload(&**client, &response).await?;
    let all = answer.map_err(|e| match e {
        TwsError::Malformed(_) => SyncError::Positions(e),
        other => SyncError::Tws(other),
    })?;
    let mut ids = Vec::with_capacity(accounts.len());
    for account in accounts {
        let positions = positions_of(account, &all);
        let id = record_snapshot(
            &**client,
            &NewSnapshot {
                broker: IBKR,
                account,
                requested_at,
                as_of,
                request_payload_id,
                response_payload_id,
                positions: &positions,
            },
        )
        .await?;
        metrics::counter!("tradegate_position_snapshots_total", "broker" => IBKR).increment(1);
        tracing::info!(
            account,
            snapshot = id,
            positions = positions.len(),
            "IBKR positions recorded"
        );
        ids.push((account.clone(), id));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibkr_syncer::tws::Contract;
    use rust_decimal::Decimal;

    fn position(account: &str, symbol: &str, sec_type: &str, q: i64) -> Position {
        Position {
            account: account.into(),
            contract: Contract {
                symbol: symbol.into(),
                sec_type: sec_type.into(),
                ..Contract::default()
            },
            position: Decimal::from(q),
            avg_cost: Some(Decimal::TEN),
        }
    }

    #[test]
    fn positions_are_keyed_as_fills_are_and_closed_ones_dropped() {
        let all = [
            position("A", "AAPL", "STK", 10),
            position("A", "MSFT", "STK", 0),
            position("B", "AAPL", "STK", 99),
            position("A", "SPY", "OPT", 2),
            position("A", "SPY", "OPT", -5),
            position("A", "ES", "FUT", 1),
        ];
        let got: Vec<(String, Decimal, Option<Decimal>)> = positions_of("A", &all)
            .into_iter()
            .map(|p| (p.symbol, p.quantity, p.average_cost))
            .collect();
        assert_eq!(
            got,
            [
                ("AAPL".into(), Decimal::TEN, Some(Decimal::TEN)),
                ("SPY OPT".into(), Decimal::from(-3), None),
                ("ES FUT".into(), Decimal::ONE, Some(Decimal::TEN)),
            ]
        );
        assert!(positions_of("C", &all).is_empty());
        assert_eq!(position_key("AAPL", ""), "AAPL");
    }
}
