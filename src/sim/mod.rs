//! Simulated venues that speak the real protocols on loopback.

pub mod alpaca;
pub mod flex;
pub mod tls;
pub mod tws;
pub mod tws_scenario;
