//! The OrderRouter: validation and pre-trade risk checks ([`risk`]), the decision outbox with
//! group commit, routing to broker sessions; and the in-process handle for strategies written
//! in Rust ([`client`]). The strategies' connections are the [`crate::strategy_hub`], which
//! the router and the broker sessions both push to.

mod actor;
mod amend;
pub mod client;
pub mod config;
pub mod error;
mod messages;
mod outbox;
pub mod risk;

pub use actor::{NAME, OrderRouter, OrderRouterArgs, OrderRouterState};
pub use client::{OrderRouterClient, StrategyHandle};
pub use config::{OrdersConfig, RiskLimits, StrategyConfig};
pub use error::RouterError;
pub use messages::OrderRouterMessage;
