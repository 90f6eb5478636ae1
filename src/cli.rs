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
    /// The unified trade log.
    Tradelog {
        /// What to do with it
        #[command(subcommand)]
        command: TradelogCommand,
    },
}

/// `tradegate tradelog ...`
#[derive(Debug, Subcommand)]
pub enum TradelogCommand {
    /// Write one UTC day of the trade log to a gzip-compressed JSONL file
    /// (`tradelog-YYYY-MM-DD.jsonl.gz`, one JSON object per row).
    Export {
        /// The day, YYYY-MM-DD (UTC)
        #[arg(long)]
        day: chrono::NaiveDate,
        /// Directory to write to (default: tradelog.export_dir)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Start the gateway and push synthetic execution events through the trade log (to size
    /// a deployment or exercise it under faults); prints the writer's statistics as JSON.
    Load {
        /// How many events
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events per second; 0 pushes as fast as possible
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seed of the event ids (`tradegate::load::event_id(seed, i)`)
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}
