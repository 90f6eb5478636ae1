//! External orders (`external_orders`): orders a broker lists for an account that no decision
//! of the gateway explains. An order is explained when its client order id names a decision on
//! record, or its id (or the id of the order it replaced) is one an execution of the gateway
//! holds.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// An order as a broker listed it, with what the look-up needs read out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedOrder {
    /// The broker's id
    pub broker_order_id: String,
    /// The client order id it carries
    pub client_order_id: Option<String>,
    /// The decision that client order id names, when it names one in the gateway's form
    pub decision: Option<uuid::Uuid>,
    /// The order it replaced
    pub replaces: Option<String>,
    /// The instrument
    pub symbol: Option<String>,
    /// buy or sell
    pub side: Option<String>,
    /// Its quantity
    pub quantity: Option<Decimal>,
    /// What of it filled
    pub filled_quantity: Option<Decimal>,
    /// market, limit, ...
    pub order_type: Option<String>,
    /// The broker's status
    pub status: String,
    /// When it was submitted
    pub submitted_at: Option<DateTime<Utc>>,
    /// The order as listed
    pub raw: Value,
}

/// An external order recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalOrder {
    /// Its row
    pub id: i64,
    /// The broker's id
    pub broker_order_id: String,
    /// The instrument
    pub symbol: Option<String>,
    /// The broker's status, as last listed
    pub status: String,
    /// Whether this listing found it (false: found before, its state brought up to date)
    pub new: bool,
}

/// Records the orders of `listed` that nothing on record explains (new ones inserted, known
/// ones brought up to date); those, in the order given.
pub async fn record_unexplained(
    client: &impl GenericClient,
    broker: &str,
    account: &str,
    listed: &[ListedOrder],
) -> Result<Vec<ExternalOrder>, StoreError> {
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&ListedOrder) -> Option<&str>| -> Vec<Option<&str>> {
        listed.iter().map(f).collect()
    };
    let ids: Vec<&str> = listed.iter().map(|o| o.broker_order_id.as_str()).collect();
    let decisions: Vec<Option<uuid::Uuid>> = listed.iter().map(|o| o.decision).collect();
    let replaces = col(|o| o.replaces.as_deref());
    let client_ids = col(|o| o.client_order_id.as_deref());
    let symbols = col(|o| o.symbol.as_deref());
    let sides = col(|o| o.side.as_deref());
    let types = col(|o| o.order_type.as_deref());
    let statuses: Vec<&str> = listed.iter().map(|o| o.status.as_str()).collect();
    let quantities: Vec<Option<Decimal>> = listed.iter().map(|o| o.quantity).collect();
    let filled: Vec<Option<Decimal>> = listed.iter().map(|o| o.filled_quantity).collect();
    let submitted: Vec<Option<DateTime<Utc>>> = listed.iter().map(|o| o.submitted_at).collect();
    let raws: Vec<&Value> = listed.iter().map(|o| &o.raw).collect();
    let rows = client
        .query(
            "WITH u AS ( \
                 SELECT * FROM unnest($3::text[], $4::uuid[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::text[], \
                     $12::text[], $13::timestamptz[], $14::jsonb[]) WITH ORDINALITY \
                     AS u(id, decision, replaces, client_id, symbol, side, qty, filled, \
                          otype, status, submitted, raw, n)), \
             x AS ( \
                 SELECT u.* FROM u \
                 WHERE NOT EXISTS (SELECT 1 FROM trade_decisions d \
                                   WHERE d.decision_id = u.decision AND d.account = $2) \
                   AND NOT EXISTS (SELECT 1 FROM trade_executions e \
                                   WHERE e.broker_order_id = u.id OR e.broker_order_id = u.replaces)) \
             INSERT INTO external_orders AS o (broker, account, broker_order_id, client_order_id, \
                 symbol, side, quantity, filled_quantity, order_type, status, submitted_at, raw) \
             SELECT $1, $2, id, client_id, symbol, side, qty, filled, otype, status, submitted, \
                    raw FROM x ORDER BY n \
             ON CONFLICT (broker, account, broker_order_id) DO UPDATE \
                 SET status = EXCLUDED.status, filled_quantity = EXCLUDED.filled_quantity, \
                     raw = EXCLUDED.raw, last_seen_at = now() \
             RETURNING o.id, o.broker_order_id, o.symbol, o.status, (o.xmax = 0)",
            &[
                &broker,
                &account,
                &ids,
                &decisions,
                &replaces,
                &client_ids,
                &symbols,
                &sides,
                &quantities,
                &filled,
                &types,
                &statuses,
                &submitted,
                &raws,
            ],
        )
        .await
        .map_err(StoreError::new("recording external orders"))?;
    Ok(rows
        .iter()
        .map(|r| ExternalOrder {
            id: r.get(0),
            broker_order_id: r.get(1),
            symbol: r.get(2),
            status: r.get(3),
            new: r.get(4),
        })
        .collect())
}

/// An external order as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalOrderRow {
    /// Its row
    pub id: i64,
    /// The broker
    pub broker: String,
    /// The account
    pub account: String,
    /// The broker's id
    pub broker_order_id: String,
    /// Its client order id
    pub client_order_id: Option<String>,
    /// The instrument
    pub symbol: Option<String>,
    /// buy or sell
    pub side: Option<String>,
    /// Its quantity
    pub quantity: Option<Decimal>,
    /// What of it filled, as last listed
    pub filled_quantity: Option<Decimal>,
    /// Its status, as last listed
    pub status: String,
    /// When it was submitted
    pub submitted_at: Option<DateTime<Utc>>,
    /// When the gateway found it
    pub first_seen_at: DateTime<Utc>,
    /// When it was last listed
    pub last_seen_at: DateTime<Utc>,
}

/// The external orders found over a range (by when they were found), newest first.
pub async fn recent(
    client: &impl GenericClient,
    account: Option<&str>,
    range: super::reports::Range,
    limit: i64,
) -> Result<Vec<ExternalOrderRow>, StoreError> {
    let rows = client
        .query(
            "SELECT id, broker, account, broker_order_id, client_order_id, symbol, side, \
                    quantity, filled_quantity, status, submitted_at, first_seen_at, last_seen_at \
             FROM external_orders \
             WHERE first_seen_at >= $1 AND first_seen_at < $2 \
               AND ($3::text IS NULL OR account = $3) \
             ORDER BY id DESC LIMIT $4",
            &[&range.from, &range.to, &account, &limit],
        )
        .await
        .map_err(StoreError::new("reading external orders"))?;
    rows.iter()
        .map(|r| {
            Ok(ExternalOrderRow {
                id: r.try_get(0)?,
                broker: r.try_get(1)?,
                account: r.try_get(2)?,
                broker_order_id: r.try_get(3)?,
                client_order_id: r.try_get(4)?,
                symbol: r.try_get(5)?,
                side: r.try_get(6)?,
                quantity: r.try_get(7)?,
                filled_quantity: r.try_get(8)?,
                status: r.try_get(9)?,
                submitted_at: r.try_get(10)?,
                first_seen_at: r.try_get(11)?,
                last_seen_at: r.try_get(12)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::new("reading external orders"))
}
