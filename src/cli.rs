//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tradegate: a trading gateway with a complete, durable audit trail.
#[derive(Debug, Parser)]
#[command(name = "tradegate", version, about)]
pub struct Cli {
    /// Configuration file; without it ./config.toml is used when present, else the defaults.
    #[arg(long, global = true, env = "TRADEGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until Ctrl-C or SIGTERM.
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Start everything embedded (a private PostgreSQL, the actors, the API), check health,
    /// print what runs, stop cleanly and exit 0.
    Demo,
}
