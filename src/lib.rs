//! The `tradegate` binary's library: configuration, PostgreSQL bootstrap, migrations, the HTTP
//! API and the assembly of the running gateway. The actors live in `tradegate-actors`.

pub mod api;
pub mod app;
pub mod commands;
pub mod config;
pub mod database;
pub mod migrate;
pub mod output;
pub mod postgres;
pub mod report;
pub mod sim;
pub mod telemetry;
