//! Validation and pre-trade risk checks: everything decided from the order and the router's
//! own recent history, in memory (the reduce-only position comes from the caller).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::config::RiskLimits;
use crate::domain::{KillSwitch, OrderReject, OrderRequest, OrderType, RejectCode, Side};

/// The shape checks of the wire order that a decision's own validation
/// ([`NewDecision::validate`](crate::domain::NewDecision::validate): names, quantity, prices,
/// rationale) does not make: the symbol's form, and no limit price on an order type without one.
pub fn validate(order: &OrderRequest) -> Result<(), OrderReject> {
    let invalid = |m: String| Err(OrderReject::new(RejectCode::Invalid, m));
    let symbol = order.symbol.as_str();
    if symbol.is_empty()
        || symbol.len() > 32
        || !symbol
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '.' | '/' | '-'))
    {
        return invalid(format!(
            "symbol `{symbol}` is not valid (1 to 32 of A-Z, 0-9, '.', '/', '-')"
        ));
    }
    text_fits(order)?;
    if order.reference_price.is_some_and(|p| p <= Decimal::ZERO) {
        // a zero reference would value any market order at nothing
        return invalid("reference_price must be positive".into());
    }
    if order.order_type == OrderType::TrailingStop {
        // its trail_price / trail_percent are not part of the order message (yet): it could
        // only ever be refused by the broker
        return invalid("trailing_stop orders are not supported: send stop or stop_limit".into());
    }
    let takes_limit = matches!(order.order_type, OrderType::Limit | OrderType::StopLimit);
    if !takes_limit && order.limit_price.is_some() {
        return invalid(format!(
            "a {} order takes no limit_price",
            order.order_type.as_str()
        ));
    }
    let takes_stop = matches!(order.order_type, OrderType::Stop | OrderType::StopLimit);
    if !takes_stop && order.stop_price.is_some() {
        return invalid(format!(
            "a {} order takes no stop_price",
            order.order_type.as_str()
        ));
    }
    Ok(())
}

/// Longest strategy name, version, account and signal fields, in characters.
const TEXT_MAX: usize = 128;
/// Largest rationale, as JSON text.
const RATIONALE_MAX_BYTES: usize = 64 * 1024;

/// Refuses text the audit database would refuse (PostgreSQL stores no NUL character, in text
/// or in JSON) or that is too long to be a name, so that one order never fails the commit it
/// shares with other strategies' orders.
fn text_fits(order: &OrderRequest) -> Result<(), OrderReject> {
    let invalid = |m: String| Err(OrderReject::new(RejectCode::Invalid, m));
    let signal = order.primary_signal.as_ref();
    for (what, value) in [
        ("strategy", Some(order.strategy.as_str())),
        ("strategy_version", Some(order.strategy_version.as_str())),
        ("account", order.account.as_deref()),
        (
            "primary_signal.signal_type",
            signal.map(|s| s.signal_type.as_str()),
        ),
        ("primary_signal.id", signal.map(|s| s.id.as_str())),
    ] {
        let Some(value) = value else { continue };
        if value.contains('\0') {
            return invalid(format!("{what} contains a NUL character"));
        }
        if value.chars().count() > TEXT_MAX {
            return invalid(format!("{what} is longer than {TEXT_MAX} characters"));
        }
    }
    if let Some(rationale) = &order.rationale {
        if json_has_nul(rationale) {
            return invalid("rationale contains a NUL character".into());
        }
        let size = serde_json::to_vec(rationale).map_or(usize::MAX, |b| b.len());
        if size > RATIONALE_MAX_BYTES {
            return invalid(format!(
                "rationale is {size} bytes of JSON, above the limit of {RATIONALE_MAX_BYTES}"
            ));
        }
    }
    Ok(())
}

fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
        }
        _ => false,
    }
}

/// The kill switch's verdict: halted refuses everything; reduce-only accepts an order only when
/// it shrinks `position` (the account's net position in the symbol) without flipping it.
pub fn kill_switch(
    state: KillSwitch,
    order: &OrderRequest,
    position: Decimal,
) -> Result<(), OrderReject> {
    match state {
        KillSwitch::Active => Ok(()),
        KillSwitch::Halted => Err(OrderReject::new(
            RejectCode::Halted,
            "trading is halted (kill switch); nothing is sent",
        )),
        KillSwitch::ReduceOnly => {
            // a notional order's shares are known only once filled: it cannot be shown to reduce
            let reduces = order.qty.is_some_and(|qty| match order.side {
                Side::Sell => position > Decimal::ZERO && qty <= position,
                Side::Buy => position < Decimal::ZERO && qty <= -position,
            });
            if reduces {
                Ok(())
            } else {
                Err(OrderReject::new(
                    RejectCode::ReduceOnly,
                    format!(
                        "the kill switch is reduce-only and a {} of {} {} does not reduce the \
                         position of {position}",
                        order.side.as_str(),
                        order.size(),
                        order.symbol
                    ),
                ))
            }
        }
    }
}

/// Whether checking `order` against `limits` needs a reference price it does not carry (a
/// market order's notional, a priced order's collar): the caller looks the last one up.
pub fn needs_reference(order: &OrderRequest, limits: &RiskLimits) -> bool {
    order.reference_price.is_none()
        && match order.order_price() {
            // a notional order is its own value, but its shares (for max_qty) need a price; a
            // market order for shares needs one for its value
            None if order.notional.is_some() => limits.max_qty.is_some(),
            None => limits.max_notional.is_some(),
            Some(_) => limits.max_price_deviation.is_some(),
        }
}

/// The static limits: quantity, notional (a market order's at `reference`), the price collar
/// around `reference`, symbol lists. `reference` is the order's own reference price, else the
/// last recorded one.
pub fn limits(
    order: &OrderRequest,
    limits: &RiskLimits,
    reference: Option<Decimal>,
) -> Result<(), OrderReject> {
    if let (Some(max), Some(qty)) = (limits.max_qty, order.qty)
        && qty > max
    {
        return Err(OrderReject::new(
            RejectCode::MaxQty,
            format!("qty {qty} is above the limit of {max}"),
        ));
    }
    if let (Some(max), Some(notional)) = (limits.max_notional, order.notional)
        && notional > max
    {
        return Err(OrderReject::new(
            RejectCode::MaxNotional,
            format!("notional {notional} is above the limit of {max}"),
        ));
    }
    if let (Some(max), Some(notional)) = (limits.max_qty, order.notional) {
        // the shares a dollar order buys, at the reference price
        if let Some(r) = reference
            && notional.checked_div(r).is_none()
        {
            return Err(out_of_range(format!(
                "notional {notional} at the reference price {r}"
            )));
        }
        let Some(shares) = reference.and_then(|r| notional.checked_div(r)) else {
            return Err(OrderReject::new(
                RejectCode::NoReferencePrice,
                format!(
                    "a notional order of {} cannot be held to max_qty {max} without a \
                     reference_price (no fill price is recorded for it yet)",
                    order.symbol
                ),
            ));
        };
        if shares > max {
            return Err(OrderReject::new(
                RejectCode::MaxQty,
                format!(
                    "notional {notional} buys about {} shares, above the limit of {max}",
                    shares.round_dp(4)
                ),
            ));
        }
    }
    if let (Some(max), Some(qty)) = (limits.max_notional, order.qty) {
        let Some(price) = order.order_price().or(reference) else {
            return Err(OrderReject::new(
                RejectCode::NoReferencePrice,
                format!(
                    "a {} order of {} cannot be valued against max_notional {max}: send a \
                     reference_price (no fill price is recorded for it yet)",
                    order.order_type.as_str(),
                    order.symbol
                ),
            ));
        };
        // an overflow is refused with its own code (never a panic)
        let Some(notional) = qty.checked_mul(price) else {
            return Err(out_of_range(format!("qty {qty} at {price}")));
        };
        if notional > max {
            return Err(OrderReject::new(
                RejectCode::MaxNotional,
                format!("notional {notional} is above the limit of {max}"),
            ));
        }
    }
    if let (Some(band), Some(price), Some(reference)) =
        (limits.max_price_deviation, order.order_price(), reference)
        && reference > Decimal::ZERO
    {
        let Some(deviation) = price
            .checked_sub(reference)
            .and_then(|d| d.checked_div(reference))
            .map(|d| d.abs())
        else {
            return Err(out_of_range(format!(
                "price {price} against the reference price {reference}"
            )));
        };
        if deviation > band {
            let percent = |d: Decimal| {
                d.checked_mul(Decimal::ONE_HUNDRED).map_or_else(
                    || "an enormous".to_string(),
                    |p| p.round_dp(2).normalize().to_string(),
                )
            };
            return Err(OrderReject::new(
                RejectCode::PriceCollar,
                format!(
                    "price {price} is {}% from the reference price {reference}, beyond the \
                     collar of {}%",
                    percent(deviation),
                    percent(band)
                ),
            ));
        }
    }
    if let Some(allow) = &limits.allow_symbols
        && !allow.is_empty()
        && !allow.iter().any(|s| s == &order.symbol)
    {
        return Err(OrderReject::new(
            RejectCode::SymbolNotAllowed,
            format!("{} is not on the allow list", order.symbol),
        ));
    }
    if let Some(deny) = &limits.deny_symbols
        && deny.iter().any(|s| s == &order.symbol)
    {
        return Err(OrderReject::new(
            RejectCode::SymbolDenied,
            format!("{} is on the deny list", order.symbol),
        ));
    }
    Ok(())
}

fn out_of_range(what: String) -> OrderReject {
    OrderReject::new(
        RejectCode::OutOfRange,
        format!("{what} cannot be valued: the arithmetic overflows; nothing is sent"),
    )
}

/// What identifies "the same order" for the duplicate window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OrderKey {
    strategy: String,
    account: String,
    symbol: String,
    side: Side,
    qty: Option<Decimal>,
    notional: Option<Decimal>,
    order_type: OrderType,
    limit_price: Option<Decimal>,
    stop_price: Option<Decimal>,
}

/// The router's memory of recent orders: send times per strategy (rate limit) and recent order
/// keys (duplicate window). Lost on restart, which only forgets the last second or window.
#[derive(Debug, Default)]
pub struct RiskState {
    sent: HashMap<String, VecDeque<Instant>>,
    recent: HashMap<OrderKey, Instant>,
    last_sweep: Option<Instant>,
}

impl RiskState {
    /// Rate and duplicate checks for `order` going to `account` at `now`; on success the order
    /// is remembered.
    pub fn admit(
        &mut self,
        order: &OrderRequest,
        account: &str,
        limits: &RiskLimits,
        now: Instant,
    ) -> Result<(), OrderReject> {
        let window = Duration::from_secs(1);
        if let Some(max) = limits.max_orders_per_sec {
            let sent = self.sent.entry(order.strategy.clone()).or_default();
            while sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                sent.pop_front();
            }
            if sent.len() >= max as usize {
                return Err(OrderReject::new(
                    RejectCode::RateLimit,
                    format!(
                        "strategy {} sent {max} orders in the last second (the limit)",
                        order.strategy
                    ),
                ));
            }
        }
        let dup_window = limits
            .duplicate_window_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let key = OrderKey {
            strategy: order.strategy.clone(),
            account: account.to_string(),
            symbol: order.symbol.clone(),
            side: order.side,
            qty: order.qty,
            notional: order.notional,
            order_type: order.order_type,
            limit_price: order.limit_price,
            stop_price: order.stop_price,
        };
        if let Some(dup_window) = dup_window {
            if let Some(seen) = self.recent.get(&key)
                && now.duration_since(*seen) < dup_window
            {
                return Err(OrderReject::new(
                    RejectCode::Duplicate,
                    format!(
                        "the same order ({} {} {}) was sent {} ms ago, within the duplicate \
                         window of {} ms",
                        order.side.as_str(),
                        order.size(),
                        order.symbol,
                        now.duration_since(*seen).as_millis(),
                        dup_window.as_millis()
                    ),
                ));
            }
            self.recent.insert(key, now);
            self.sweep(now, dup_window);
        }
        if limits.max_orders_per_sec.is_some() {
            self.sent
                .entry(order.strategy.clone())
                .or_default()
                .push_back(now);
        }
        Ok(())
    }

    // forgets keys older than the window, at most once per second
    fn sweep(&mut self, now: Instant, window: Duration) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.recent.retain(|_, t| now.duration_since(*t) < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(
        order_type: &str,
        qty: i64,
        limit: Option<i64>,
        reference: Option<i64>,
    ) -> OrderRequest {
        serde_json::from_value(serde_json::json!({
            "strategy": "s", "symbol": "AAPL", "side": "buy", "qty": qty.to_string(),
            "order_type": order_type, "time_in_force": "day",
            "limit_price": limit.map(|p| p.to_string()),
            "reference_price": reference.map(|p| p.to_string()),
        }))
        .unwrap()
    }

    fn code(result: Result<(), OrderReject>) -> String {
        result.map_or_else(|r| r.code, |()| "ok".into())
    }

    #[test]
    fn market_orders_are_valued_at_their_reference_price() {
        let l = RiskLimits {
            max_notional: Some(Decimal::from(1000)),
            ..RiskLimits::default()
        };
        let market = order("market", 20, None, None);
        assert!(needs_reference(&market, &l));
        assert_eq!(
            code(limits(&market, &l, None)),
            RejectCode::NoReferencePrice
        );
        assert_eq!(code(limits(&market, &l, Some(Decimal::from(40)))), "ok");
        assert_eq!(
            code(limits(&market, &l, Some(Decimal::from(60)))),
            RejectCode::MaxNotional
        );
        // the strategy's own reference needs no look-up
        let referenced = order("market", 20, None, Some(60));
        assert!(!needs_reference(&referenced, &l));
        // without a notional limit nothing is needed
        assert!(!needs_reference(&market, &RiskLimits::default()));
        assert_eq!(code(limits(&market, &RiskLimits::default(), None)), "ok");
    }

    #[test]
    fn the_price_collar_refuses_prices_far_from_the_reference() {
        let l = RiskLimits {
            max_price_deviation: Some(Decimal::new(10, 2)),
            ..RiskLimits::default()
        };
        let reference = Some(Decimal::from(100));
        assert_eq!(
            code(limits(&order("limit", 1, Some(110), None), &l, reference)),
            "ok"
        );
        assert_eq!(
            code(limits(&order("limit", 1, Some(90), None), &l, reference)),
            "ok"
        );
        assert_eq!(
            code(limits(&order("limit", 1, Some(111), None), &l, reference)),
            RejectCode::PriceCollar
        );
        assert_eq!(
            code(limits(&order("limit", 1, Some(89), None), &l, reference)),
            RejectCode::PriceCollar
        );
        // a fat finger: 1000 for a 100 stock
        let fat = order("limit", 1, Some(1000), None);
        assert!(needs_reference(&fat, &l));
        assert_eq!(code(limits(&fat, &l, reference)), RejectCode::PriceCollar);
        // no reference known: the collar cannot apply
        assert_eq!(code(limits(&fat, &l, None)), "ok");
        // market orders have no price to collar
        assert!(!needs_reference(&order("market", 1, None, None), &l));
    }

    #[test]
    fn extreme_values_are_refused_never_a_panic() {
        let l = RiskLimits {
            max_notional: Some(Decimal::from(1000)),
            max_price_deviation: Some(Decimal::new(10, 2)),
            ..RiskLimits::default()
        };
        let mut huge = order("limit", 1, Some(10), None);
        huge.qty = Some(Decimal::MAX);
        assert_eq!(code(limits(&huge, &l, None)), RejectCode::OutOfRange);
        let tiny = Some(Decimal::new(1, 28));
        assert_eq!(
            code(limits(&order("limit", 1, Some(10), None), &l, tiny)),
            RejectCode::OutOfRange
        );
        // one share at the largest price is valued exactly (and far above the limit)
        let mut max_price = order("limit", 1, Some(10), None);
        max_price.limit_price = Some(Decimal::MAX);
        assert_eq!(
            code(limits(
                &max_price,
                &RiskLimits {
                    max_price_deviation: None,
                    ..l.clone()
                },
                None
            )),
            RejectCode::MaxNotional
        );
        // the order: 1000 at the largest price
        let mut fat = order("limit", 1000, Some(1), None);
        fat.limit_price = Some(Decimal::MAX);
        assert_eq!(
            code(limits(
                &fat,
                &RiskLimits {
                    max_notional: Some(Decimal::from(1000)),
                    ..RiskLimits::default()
                },
                None
            )),
            RejectCode::OutOfRange
        );
    }

    use proptest::prelude::*;

    /// Any decimal, the extremes and the tiniest often.
    fn any_decimal() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            Just(Decimal::MAX),
            Just(Decimal::MIN),
            Just(Decimal::new(1, 28)),
            Just(Decimal::ZERO),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<bool>(),
                0u32..=28
            )
                .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale)),
        ]
    }

    fn any_type() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("market"),
            Just("limit"),
            Just("stop"),
            Just("stop_limit")
        ]
    }

    proptest! {
        // every check the router runs on an order, and the broker body built from it, with
        // extreme decimals anywhere: a verdict (accepted or a coded refusal), never a panic
        #[test]
        fn extreme_decimals_get_a_verdict_never_a_panic(
            qty in any_decimal(),
            notional in proptest::option::of(any_decimal()),
            limit in any_decimal(),
            stop in any_decimal(),
            reference in proptest::option::of(any_decimal()),
            position in any_decimal(),
            max in any_decimal(),
            band in any_decimal(),
            order_type in any_type(),
        ) {
            let mut o = order(order_type, 1, None, None);
            if notional.is_some() {
                o.qty = None;
                o.notional = notional;
            } else {
                o.qty = Some(qty);
            }
            if matches!(order_type, "limit" | "stop_limit") {
                o.limit_price = Some(limit);
            }
            if matches!(order_type, "stop" | "stop_limit") {
                o.stop_price = Some(stop);
            }
            o.reference_price = reference;
            let l = RiskLimits {
                max_qty: Some(max),
                max_notional: Some(max),
                max_price_deviation: Some(band),
                max_orders_per_sec: Some(10),
                duplicate_window_ms: Some(1000),
                ..RiskLimits::default()
            };
            let verdicts = [
                validate(&o),
                kill_switch(KillSwitch::Active, &o, position),
                kill_switch(KillSwitch::ReduceOnly, &o, position),
                kill_switch(KillSwitch::Halted, &o, position),
                limits(&o, &l, reference),
                limits(&o, &l, None),
                RiskState::default().admit(&o, "acct", &l, Instant::now()),
            ];
            for verdict in verdicts {
                if let Err(r) = verdict {
                    prop_assert!(!r.code.is_empty() && !r.message.is_empty());
                }
            }
            let _ = needs_reference(&o, &l);
            let body = crate::alpaca_session::mapping::order_body(&o.to_decision("acct"));
            for key in ["qty", "notional", "limit_price", "stop_price"] {
                if let Some(v) = body.get(key) {
                    // the body's numbers read back exactly
                    prop_assert!(crate::alpaca_session::mapping::decimal(Some(v)).is_some());
                }
            }
        }
    }

    #[test]
    fn text_the_database_would_refuse_is_invalid() {
        let mut o = order("market", 1, None, None);
        o.strategy_version = "v1\0".into();
        assert_eq!(code(validate(&o)), RejectCode::Invalid);
        let mut o = order("market", 1, None, None);
        o.rationale = Some(serde_json::json!({"why": ["ok", {"deep": "a\u{0}b"}]}));
        let refused = validate(&o).unwrap_err();
        assert!(refused.message.contains("NUL"), "{refused:?}");
        let mut o = order("market", 1, None, None);
        o.primary_signal = Some(crate::domain::PrimarySignal {
            signal_type: "x".repeat(TEXT_MAX + 1),
            id: "1".into(),
        });
        assert_eq!(code(validate(&o)), RejectCode::Invalid);
        let mut o = order("market", 1, None, None);
        o.rationale = Some(serde_json::json!({"blob": "x".repeat(RATIONALE_MAX_BYTES)}));
        assert_eq!(code(validate(&o)), RejectCode::Invalid);
        let mut o = order("market", 1, None, None);
        o.rationale = Some(serde_json::json!({"why": "fine", "n": 1.5}));
        assert_eq!(code(validate(&o)), "ok");
    }

    #[test]
    fn prices_only_where_the_order_type_takes_them_and_no_trailing_stops() {
        let mut market = order("market", 1, None, None);
        market.stop_price = Some(Decimal::ONE);
        assert_eq!(code(validate(&market)), RejectCode::Invalid);
        assert_eq!(
            code(validate(&order("trailing_stop", 1, None, None))),
            RejectCode::Invalid
        );
        let mut stop = order("stop", 1, None, None);
        stop.stop_price = Some(Decimal::ONE);
        assert_eq!(code(validate(&stop)), "ok");
    }

    #[test]
    fn a_notional_order_is_held_to_max_qty_at_the_reference_price() {
        let l = RiskLimits {
            max_qty: Some(Decimal::from(10)),
            ..RiskLimits::default()
        };
        let mut dollars = order("market", 1, None, None);
        dollars.qty = None;
        dollars.notional = Some(Decimal::from(2000));
        assert!(needs_reference(&dollars, &l));
        assert_eq!(
            code(limits(&dollars, &l, None)),
            RejectCode::NoReferencePrice
        );
        assert_eq!(
            code(limits(&dollars, &l, Some(Decimal::from(100)))),
            RejectCode::MaxQty
        );
        assert_eq!(code(limits(&dollars, &l, Some(Decimal::from(250)))), "ok");
    }
}
