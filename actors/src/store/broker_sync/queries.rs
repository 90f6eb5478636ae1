//! The trades' read queries: trades listed and read, and a trade's fills.

use tokio_postgres::{GenericClient, Row};

use crate::domain::{BrokerFill, BrokerTrade, TradeFilter};
use crate::store::StoreError;

pub(super) const TRADE_COLUMNS: &str = "id, account_id, ib_perm_id, order_ref, ib_order_id, client_id, \
    symbol, sec_type, side, exchange, currency, trade_date, status, total_quantity, avg_price, \
    total_commission, first_executed_at, last_executed_at, fetched_at, created_at, updated_at";

pub(super) fn trade_from_row(row: &Row) -> BrokerTrade {
    BrokerTrade {
        id: row.get(0),
        account_id: row.get(1),
        ib_perm_id: row.get(2),
        order_ref: row.get(3),
        ib_order_id: row.get(4),
        client_id: row.get(5),
        symbol: row.get(6),
        sec_type: row.get(7),
        side: row.get(8),
        exchange: row.get(9),
        currency: row.get(10),
        trade_date: row.get(11),
        status: row.get(12),
        total_quantity: row.get(13),
        avg_price: row.get(14),
        total_commission: row.get(15),
        first_executed_at: row.get(16),
        last_executed_at: row.get(17),
        fetched_at: row.get(18),
        created_at: row.get(19),
        updated_at: row.get(20),
    }
}

/// Trades matching `filter` (validated by the caller), most recently executed first.
pub async fn list_trades(
    client: &impl GenericClient,
    filter: &TradeFilter,
) -> Result<Vec<BrokerTrade>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TRADE_COLUMNS} FROM broker_trades \
                 WHERE ($1::text IS NULL OR account_id = $1) \
                   AND ($2::text IS NULL OR status = $2) \
                   AND ($3::text IS NULL OR symbol = $3) \
                 ORDER BY last_executed_at DESC NULLS LAST, id DESC LIMIT $4"
            ),
            &[
                &filter.account_id,
                &filter.status,
                &filter.symbol,
                &i64::from(filter.limit()),
            ],
        )
        .await
        .map_err(StoreError::new("listing trades"))?;
    Ok(rows.iter().map(trade_from_row).collect())
}

/// One trade by id.
pub async fn get_trade(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<BrokerTrade>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {TRADE_COLUMNS} FROM broker_trades WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a trade"))?;
    Ok(row.as_ref().map(trade_from_row))
}

/// A trade's fills (canonical and superseded), in execution order.
pub async fn list_trade_fills(
    client: &impl GenericClient,
    trade_id: i64,
) -> Result<Vec<BrokerFill>, StoreError> {
    let rows = client
        .query(
            "SELECT id, trade_id, account_id, exec_id, exec_id_base, exec_revision, is_canonical, \
                    ib_perm_id, ib_order_id, order_ref, client_id, symbol, side, exchange, \
                    currency, liquidity, executed_at, quantity, price, commission, \
                    commission_currency, realized_pnl, raw, fetched_at \
             FROM broker_fills WHERE trade_id = $1 \
             ORDER BY executed_at, exec_id_base, exec_revision",
            &[&trade_id],
        )
        .await
        .map_err(StoreError::new("listing a trade's fills"))?;
    Ok(rows
        .iter()
        .map(|row| BrokerFill {
            id: row.get(0),
            trade_id: row.get(1),
            account_id: row.get(2),
            exec_id: row.get(3),
            exec_id_base: row.get(4),
            exec_revision: row.get(5),
            is_canonical: row.get(6),
            ib_perm_id: row.get(7),
            ib_order_id: row.get(8),
            order_ref: row.get(9),
            client_id: row.get(10),
            symbol: row.get(11),
            side: row.get(12),
            exchange: row.get(13),
            currency: row.get(14),
            liquidity: row.get(15),
            executed_at: row.get(16),
            quantity: row.get(17),
            price: row.get(18),
            commission: row.get(19),
            commission_currency: row.get(20),
            realized_pnl: row.get(21),
            raw: row.get(22),
            fetched_at: row.get(23),
        })
        .collect())
}
