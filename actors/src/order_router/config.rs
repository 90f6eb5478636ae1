//! `[orders]`: the strategies allowed to connect, their tokens and accounts, and the pre-trade
//! risk limits (global, overridden per strategy).

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Pre-trade risk limits. Unset limits do not apply; a strategy's own value replaces the global.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskLimits {
    /// Largest quantity of one order
    pub max_qty: Option<Decimal>,
    /// Largest notional of one order: quantity x limit price, else stop price; a market order
    /// is valued at its reference price (the order's `reference_price`, else the last fill
    /// price recorded for the symbol) and refused (`risk.no_reference_price`) without one
    pub max_notional: Option<Decimal>,
    /// Price collar: a limit or stop price farther than this fraction from the reference price
    /// is refused (`risk.price_collar`), e.g. 0.10 for 10 %; no reference known: not checked
    pub max_price_deviation: Option<Decimal>,
    /// Only these symbols may be traded (empty: any)
    pub allow_symbols: Option<Vec<String>>,
    /// These symbols may not be traded
    pub deny_symbols: Option<Vec<String>>,
    /// Orders per second a strategy may send (a rolling second)
    pub max_orders_per_sec: Option<u32>,
    /// An order equal to one the same strategy sent within this many milliseconds is refused
    /// (same account, symbol, side, quantity, type and prices); 0: off
    pub duplicate_window_ms: Option<u64>,
}

impl RiskLimits {
    /// `self` with each limit `over` sets replaced.
    pub fn overridden_by(&self, over: &RiskLimits) -> RiskLimits {
        RiskLimits {
            max_qty: over.max_qty.or(self.max_qty),
            max_notional: over.max_notional.or(self.max_notional),
            max_price_deviation: over.max_price_deviation.or(self.max_price_deviation),
            allow_symbols: over
                .allow_symbols
                .clone()
                .or_else(|| self.allow_symbols.clone()),
            deny_symbols: over
                .deny_symbols
                .clone()
                .or_else(|| self.deny_symbols.clone()),
            max_orders_per_sec: over.max_orders_per_sec.or(self.max_orders_per_sec),
            duplicate_window_ms: over.duplicate_window_ms.or(self.duplicate_window_ms),
        }
    }

    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        for (key, value) in [
            ("max_qty", self.max_qty),
            ("max_notional", self.max_notional),
            ("max_price_deviation", self.max_price_deviation),
        ] {
            if value.is_some_and(|v| v <= Decimal::ZERO) {
                return Err((format!("{at}.{key}"), "must be positive".into()));
            }
        }
        if self.max_orders_per_sec == Some(0) {
            return Err((
                format!("{at}.max_orders_per_sec"),
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        Ok(())
    }
}

/// `[orders.strategies.<name>]`
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    /// The bearer token (prefer `token_env`: tokens are credentials)
    pub token: String,
    /// Name of the environment variable holding the token
    pub token_env: String,
    /// The account its orders go to when an order names none (default: `orders.default_account`)
    pub account: String,
    /// Its own risk limits, replacing the global ones they set
    pub risk: RiskLimits,
}

impl fmt::Debug for StrategyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyConfig")
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("token_env", &self.token_env)
            .field("account", &self.account)
            .field("risk", &self.risk)
            .finish()
    }
}

impl StrategyConfig {
    /// The token: from `token_env` when named (and set), else `token`.
    pub fn resolved_token(&self) -> Option<String> {
        if !self.token_env.is_empty() {
            return std::env::var(&self.token_env)
                .ok()
                .filter(|t| !t.is_empty());
        }
        (!self.token.is_empty()).then(|| self.token.clone())
    }
}

/// `[orders]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    /// The account of orders that name none and whose strategy has none (default: the first
    /// Alpaca account)
    pub default_account: String,
    /// Decisions written in one commit at most (concurrent submissions share commits)
    pub max_commit_batch: usize,
    /// Orders in one `submit_batch` at most
    pub max_batch_orders: usize,
    /// Global risk limits
    pub risk: RiskLimits,
    /// The strategies that may connect, by name
    pub strategies: BTreeMap<String, StrategyConfig>,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            default_account: String::new(),
            max_commit_batch: 512,
            max_batch_orders: 500,
            risk: RiskLimits::default(),
            strategies: BTreeMap::new(),
        }
    }
}

impl OrdersConfig {
    /// The limits that apply to `strategy`.
    pub fn limits_for(&self, strategy: &str) -> RiskLimits {
        match self.strategies.get(strategy) {
            Some(s) => self.risk.overridden_by(&s.risk),
            None => self.risk.clone(),
        }
    }

    /// The strategy a bearer token belongs to.
    pub fn strategy_for_token(&self, token: &str) -> Option<&str> {
        if token.is_empty() {
            return None;
        }
        self.strategies
            .iter()
            .find(|(_, s)| {
                s.resolved_token()
                    .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
            })
            .map(|(name, _)| name.as_str())
    }

    /// Checks values that parse but cannot work: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_commit_batch == 0 {
            return Err((
                "orders.max_commit_batch".into(),
                "must be at least 1".into(),
            ));
        }
        if self.max_batch_orders == 0 {
            return Err((
                "orders.max_batch_orders".into(),
                "must be at least 1".into(),
            ));
        }
        self.risk.validate("orders.risk")?;
        for (name, s) in &self.strategies {
            let at = format!("orders.strategies.{name}");
            if s.token.is_empty() && s.token_env.is_empty() {
                return Err((format!("{at}.token"), "set token or token_env".into()));
            }
            s.risk.validate(&format!("{at}.risk"))?;
        }
        Ok(())
    }
}

// Tokens are compared without an early exit, so response timing says nothing about a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
