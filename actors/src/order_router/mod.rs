//! The OrderRouter: validation and pre-trade risk checks ([`risk`]), the decision outbox with
//! group commit, routing to broker sessions; the strategies' connections ([`hub`]) and the
//! in-process handle for strategies written in Rust ([`client`]).

mod actor;
pub mod client;
pub mod config;
pub mod hub;
pub mod risk;

pub use actor::{NAME, OrderRouter, OrderRouterArgs, OrderRouterMessage, OrderRouterState};
pub use client::{OrderRouterClient, StrategyHandle};
pub use config::{OrdersConfig, RiskLimits, StrategyConfig};
pub use hub::{StrategyHub, Subscription};
