//! Broker positions (`position_snapshots`, `broker_positions`): what a broker says an account
//! holds, one snapshot per ask, one row per open position.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// One open position as a broker reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPosition {
    /// The instrument
    pub symbol: String,
    /// Shares, negative when short
    pub quantity: Decimal,
    /// The average cost (entry price) per share, when the broker says
    pub average_cost: Option<Decimal>,
    /// The position as the broker sent it
    pub raw: Value,
}

/// A snapshot to record: whose, when, and the payloads of the ask.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSnapshot<'a> {
    /// The broker
    pub broker: &'a str,
    /// The account
    pub account: &'a str,
    /// When the request was sent
    pub requested_at: DateTime<Utc>,
    /// When the answer was received
    pub as_of: DateTime<Utc>,
    /// The stored request
    pub request_payload_id: i64,
    /// The stored answer
    pub response_payload_id: i64,
    /// The open positions
    pub positions: &'a [NewPosition],
}

/// A stored position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionRow {
    /// Its snapshot
    pub snapshot_id: i64,
    /// The instrument
    pub symbol: String,
    /// Shares, negative when short
    pub quantity: Decimal,
    /// The average cost per share
    pub average_cost: Option<Decimal>,
    /// When the broker said so
    pub as_of: DateTime<Utc>,
}

/// Records a snapshot and its positions in one statement; the snapshot's id.
pub async fn record_snapshot(
    client: &impl GenericClient,
    snapshot: &NewSnapshot<'_>,
) -> Result<i64, StoreError> {
    let symbols: Vec<&str> = snapshot
        .positions
        .iter()
        .map(|p| p.symbol.as_str())
        .collect();
    let quantities: Vec<Decimal> = snapshot.positions.iter().map(|p| p.quantity).collect();
    let costs: Vec<Option<Decimal>> = snapshot.positions.iter().map(|p| p.average_cost).collect();
    let raws: Vec<&Value> = snapshot.positions.iter().map(|p| &p.raw).collect();
    let count = i32::try_from(snapshot.positions.len()).unwrap_or(i32::MAX);
    let row = client
        .query_one(
            "WITH s AS ( \
                 INSERT INTO position_snapshots (broker, account, as_of, positions_count, \
                     request_payload_id, response_payload_id, requested_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $11) RETURNING id), \
             p AS ( \
                 INSERT INTO broker_positions (snapshot_id, broker, account, symbol, quantity, \
                     average_cost, as_of, raw) \
                 SELECT s.id, $1, $2, x.symbol, x.quantity, x.cost, $3, x.raw \
                 FROM s, unnest($7::text[], $8::numeric[], $9::numeric[], $10::jsonb[]) \
                     AS x(symbol, quantity, cost, raw)) \
             SELECT id FROM s",
            &[
                &snapshot.broker,
                &snapshot.account,
                &snapshot.as_of,
                &count,
                &snapshot.request_payload_id,
                &snapshot.response_payload_id,
                &symbols,
                &quantities,
                &costs,
                &raws,
                &snapshot.requested_at,
            ],
        )
        .await
        .map_err(StoreError::new("recording a position snapshot"))?;
    Ok(row.get(0))
}

/// The positions of the newest snapshot of `account` at `broker` (empty when flat or never
/// asked), with that snapshot's id.
pub async fn latest_positions(
    client: &impl GenericClient,
    broker: &str,
    account: &str,
) -> Result<Option<(i64, Vec<PositionRow>)>, StoreError> {
    let Some(snapshot) = client
        .query_opt(
            "SELECT id FROM position_snapshots WHERE broker = $1 AND account = $2 \
             ORDER BY id DESC LIMIT 1",
            &[&broker, &account],
        )
        .await
        .map_err(StoreError::new("reading the latest position snapshot"))?
    else {
        return Ok(None);
    };
    let id: i64 = snapshot.get(0);
    let rows = client
        .query(
            "SELECT snapshot_id, symbol, quantity, average_cost, as_of FROM broker_positions \
             WHERE snapshot_id = $1 ORDER BY symbol",
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a snapshot's positions"))?;
    let positions = rows
        .iter()
        .map(|r| {
            Ok(PositionRow {
                snapshot_id: r.try_get(0)?,
                symbol: r.try_get(1)?,
                quantity: r.try_get(2)?,
                average_cost: r.try_get(3)?,
                as_of: r.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading a snapshot's positions"))?;
    Ok(Some((id, positions)))
}
