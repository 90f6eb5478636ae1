//! IBKR test data: an execution as the gateway tests describe one.

use chrono::Utc;
use rust_decimal::Decimal;
use tradegate_actors::ibkr_syncer::tws::{Contract, Execution, TwsTime};

/// A sell of `shares` MSFT at `cents` by client 1, three hours ago (in IB's UTC form).
pub fn msft_sale(exec_id: &str, account: &str, perm_id: i64, shares: i64, cents: i64) -> Execution {
    let at = Utc::now() - chrono::Duration::hours(3);
    Execution {
        order_id: 3,
        contract: Contract {
            symbol: "MSFT".into(),
            sec_type: "STK".into(),
            currency: "USD".into(),
            ..Contract::default()
        },
        exec_id: exec_id.into(),
        time: TwsTime::parse(&at.format("%Y%m%d-%H:%M:%S").to_string()).unwrap(),
        account: account.into(),
        exchange: "ISLAND".into(),
        side: "SLD".into(),
        shares: Decimal::from(shares),
        price: Decimal::new(cents, 2),
        perm_id,
        client_id: 1,
        cum_qty: Decimal::from(shares),
        avg_price: Decimal::new(cents, 2),
        ..Execution::default()
    }
}
