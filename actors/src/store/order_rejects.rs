//! Orders refused before any decision (`order_rejects`): what was sent, the code, the message.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreError;

/// One refused order, as `order_rejects` keeps it.
#[derive(Debug, Clone)]
pub struct RejectRecord {
    /// The order as sent
    pub order: crate::domain::OrderRequest,
    /// The account it would have gone to, when known
    pub account: Option<String>,
    /// Why
    pub reject: crate::domain::OrderReject,
    /// When
    pub rejected_at: DateTime<Utc>,
}

impl RejectRecord {
    /// `order`, refused now with `reject`.
    pub fn now(
        order: &crate::domain::OrderRequest,
        account: Option<String>,
        reject: crate::domain::OrderReject,
    ) -> Self {
        Self {
            order: order.clone(),
            account,
            reject,
            rejected_at: Utc::now(),
        }
    }
}

/// Longest name a refusal record keeps, in characters.
const STORED_NAME_MAX: usize = 256;

/// `text` without NUL characters (PostgreSQL stores none) and at most [`STORED_NAME_MAX`]
/// characters long.
fn storable_name(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .take(STORED_NAME_MAX)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().count() > STORED_NAME_MAX {
        clean.push('…');
    }
    clean
}

/// `value` with every NUL character in its strings and keys replaced.
fn storable_json(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), storable_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Stores refused orders, in one transaction.
pub async fn insert_rejects(
    client: &mut tokio_postgres::Client,
    rejects: &[RejectRecord],
) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("beginning an order-rejects batch"))?;
    let statement = tx
        .prepare(
            "INSERT INTO order_rejects (strategy_name, strategy_version, account, symbol, side, \
                 quantity, order_type, limit_price, stop_price, signal_strength, reason_code, \
                 reason_message, request, rejected_at, notional) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .await
        .map_err(StoreError::new("preparing an order reject"))?;
    for r in rejects {
        let o = &r.order;
        // an order is refused, among other things, for text the database cannot store: its
        // record keeps it storable (NUL characters replaced, names cut to a length that fits)
        let request = storable_json(serde_json::to_value(o).unwrap_or(Value::Null));
        let account = r.account.as_deref().map(storable_name);
        tx.execute(
            &statement,
            &[
                &storable_name(&o.strategy),
                &storable_name(&o.strategy_version),
                &account,
                &storable_name(&o.symbol),
                &o.side.as_str(),
                &o.qty,
                &o.order_type.as_str(),
                &o.limit_price,
                &o.stop_price,
                &o.signal_strength,
                &r.reject.code,
                &r.reject.message.replace('\0', "\u{FFFD}"),
                &request,
                &r.rejected_at,
                &o.notional,
            ],
        )
        .await
        .map_err(StoreError::new("storing an order reject"))?;
    }
    tx.commit()
        .await
        .map_err(StoreError::new("committing order rejects"))?;
    Ok(())
}
