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
    /// Run a data job as one logged ingestion run: the run is started, the job gets
    /// TRADEGATE_INGESTION_RUN_ID, TRADEGATE_API_URL and TRADEGATE_INGESTION_URL to post API
    /// calls and records to, and its last stdout line must be a JSON summary
    /// {"fetched":N,"created":N,"updated":N,"skipped":N}. Exit 0 with a summary completes the
    /// run; a non-zero exit, a signal, no summary or the timeout fails it. Exits 0 when the run
    /// completed, else with the job's status (124 on timeout).
    Ingest {
        /// The task name, e.g. congress.daily
        #[arg(long)]
        task: String,
        /// The data source, e.g. quiverquant
        #[arg(long)]
        source: String,
        /// Seconds before the job is stopped and the run failed (default:
        /// ingestion.job_timeout_secs)
        #[arg(long)]
        timeout: Option<u64>,
        /// The job and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
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
