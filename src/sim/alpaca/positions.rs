//! Positions: `GET /v2/positions`, the net of the fills the venue made (it starts flat), each
//! with its average entry price, valued at the symbol's current price; and the switch that
//! changes a position without a fill (a trade made elsewhere), for tests.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::SimAlpaca;
use super::http::with_headers;
use super::state::VenueState;

/// One symbol's holding: its signed quantity and what it cost (signed as the quantity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Holding {
    /// Shares, negative when short
    pub(super) qty: Decimal,
    /// Cost basis, of the quantity's sign
    pub(super) cost: Decimal,
}

impl Holding {
    /// The holding after a fill of `signed` shares (negative: sold) at `price`: a fill that
    /// adds to the position adds its cost; one that reduces it keeps the average entry price;
    /// one that crosses zero starts the new side at the fill's price.
    pub(super) fn fill(self, signed: Decimal, price: Decimal) -> Self {
        let qty = self.qty + signed;
        let cost = if self.qty.is_zero() || self.qty.is_sign_positive() == signed.is_sign_positive()
        {
            self.cost + signed * price
        } else if qty.is_zero() {
            Decimal::ZERO
        } else if qty.is_sign_positive() == self.qty.is_sign_positive() {
            self.cost * qty / self.qty
        } else {
            qty * price
        };
        Self { qty, cost }
    }

    /// The average entry price (zero when flat).
    pub(super) fn avg_entry_price(self) -> Decimal {
        if self.qty.is_zero() {
            Decimal::ZERO
        } else {
            (self.cost / self.qty).round_dp(8)
        }
    }
}

/// The position of `symbol` as Alpaca's `Position` definition has it.
fn position_json(symbol: &str, holding: Holding, price: Decimal) -> Value {
    let text = |d: Decimal| d.normalize().to_string();
    let market_value = holding.qty * price;
    let pl = market_value - holding.cost;
    let plpc = if holding.cost.is_zero() {
        Decimal::ZERO
    } else {
        (pl / holding.cost.abs()).round_dp(4)
    };
    json!({
        "asset_id": Uuid::new_v5(&Uuid::NAMESPACE_OID, symbol.as_bytes()),
        "symbol": symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": true,
        "avg_entry_price": text(holding.avg_entry_price()),
        "qty": text(holding.qty),
        "qty_available": text(holding.qty),
        "side": if holding.qty.is_sign_negative() { "short" } else { "long" },
        "market_value": text(market_value),
        "cost_basis": text(holding.cost),
        "unrealized_pl": text(pl),
        "unrealized_plpc": text(plpc),
        "unrealized_intraday_pl": text(pl),
        "unrealized_intraday_plpc": text(plpc),
        "current_price": text(price),
        "lastday_price": text(price),
        "change_today": "0",
    })
}

impl VenueState {
    /// Every open position, by symbol.
    pub(super) fn positions_json(&self) -> Vec<Value> {
        let mut symbols: Vec<&String> = self
            .holdings
            .iter()
            .filter(|(_, h)| !h.qty.is_zero())
            .map(|(s, _)| s)
            .collect();
        symbols.sort();
        symbols
            .into_iter()
            .map(|s| position_json(s, self.holdings[s], self.price(s)))
            .collect()
    }
}

/// `GET /v2/positions`.
pub(super) async fn list_positions(State(sim): State<SimAlpaca>, headers: HeaderMap) -> Response {
    let rl = match super::http::gate(&sim, &headers, "GET", "/v2/positions", None) {
        Ok(rl) => rl,
        Err(r) => return r,
    };
    let body = sim.lock().positions_json();
    with_headers(axum::Json(body).into_response(), rl)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_average_entry_price_follows_the_fills() {
        let h = Holding::default().fill(d("10"), d("100"));
        let h = h.fill(d("10"), d("110"));
        assert_eq!((h.qty, h.avg_entry_price()), (d("20"), d("105")));
        // a sale keeps the average
        let h = h.fill(d("-5"), d("120"));
        assert_eq!((h.qty, h.avg_entry_price()), (d("15"), d("105")));
        // crossing zero starts the short at the fill's price
        let h = h.fill(d("-20"), d("90"));
        assert_eq!((h.qty, h.avg_entry_price()), (d("-5"), d("90")));
        let h = h.fill(d("5"), d("80"));
        assert_eq!((h.qty, h.cost), (d("0"), d("0")));
    }
}
