//! The subcommands of the `tradegate` binary, one file each (the CLI's arguments are in
//! `cli.rs`; what the commands share lives beside this folder: the database, the output
//! formats, the running gateway in `app`).

pub mod audit;
pub mod demo;
pub mod ibkr;
pub mod ingest;
pub mod kill_switch;
pub mod load;
pub mod migrate;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod seed;
pub mod sim;
pub mod tradelog;
