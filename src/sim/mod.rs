//! Simulated venues that speak the real protocols on loopback.

pub mod tws;
