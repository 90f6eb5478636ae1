//! The `tradegate` binary's library: configuration, PostgreSQL bootstrap, migrations, the HTTP
//! API and the assembly of the running gateway. The actors live in `tradegate-actors`.

pub mod api;
pub mod app;
pub mod config;
pub mod ibkr;
pub mod ingest;
pub mod load;
pub mod migrate;
pub mod orders;
pub mod postgres;
pub mod report;
pub mod seed;
pub mod sim;
pub mod telemetry;
