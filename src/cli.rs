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
    /// print what runs, stop cleanly and exit 0. The walk-through is on stdout; the actors'
    /// logs are kept to warnings unless --verbose (or RUST_LOG) asks for more.
    Demo {
        /// Show the actors' logs at [log] level (default info) beside the walk-through
        #[arg(long)]
        verbose: bool,
    },
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
    /// Sync IBKR executions now (see also the gateway's scheduled syncs).
    Sync {
        /// What to sync
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Reconcile positions with the brokers: enqueue a positions.sync for each account (the
    /// running gateway records fresh snapshots and reconciles them) and check now every window
    /// whose fills are all on record. Exits 1 when a break was found.
    Reconcile {
        /// Only this account (default: every Alpaca and IBKR account)
        #[arg(long)]
        account: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Audit reports: a symbol's activity, a decision's lineage, why an order failed, strategy
    /// performance, failure patterns, a day's summary. Tables by default, --format json.
    Report {
        /// Which report
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Retention now: purge API payloads older than [reporter] payload_retention_days (those
    /// nothing refers to, and, referenced or not, those of an archived day whose archive is
    /// still on disk, unchanged), then the trade log's partition retention (old days exported
    /// to compressed JSONL and archived as Parquet, checked, then dropped).
    Purge {
        /// Purge payloads older than this many days instead
        #[arg(long)]
        payload_days: Option<u32>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Generate realistic activity to measure the reports on: ingestion runs and records,
    /// decisions, executions, payloads, fills, refused orders and trade-log events over 500
    /// symbols, for the days ending yesterday (UTC). Per day at scale 1: 274 decisions, 548
    /// payloads, 2,740 trade-log events, 24 ingestion runs; --days 365 --scale 10 is about a
    /// million decisions and ten million trade-log events.
    SeedData {
        /// How many days
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Multiplier of the daily volume (1 to 1000)
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// The IBKR trades synced from TWS (parents aggregated from canonical fills).
    Trades {
        /// What to show
        #[command(subcommand)]
        command: TradesCommand,
    },
    /// Simulated venues on loopback.
    Sim {
        /// Which venue
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Halt trading (kill switch): the running gateway refuses every new order
    /// (`risk.halted`), or with --reduce-only every order that does not reduce a position.
    /// The state is kept in the database and survives restarts.
    Halt {
        /// Only accept orders that reduce a position
        #[arg(long)]
        reduce_only: bool,
        /// Why (kept with the state)
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        gateway: tradegate::commands::kill_switch::GatewayCall,
    },
    /// Resume trading (kill switch active again).
    Resume {
        /// Why (kept with the state)
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        gateway: tradegate::commands::kill_switch::GatewayCall,
    },
    /// The audit trail for regulators and compliance desks.
    Audit {
        /// What to do with it
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The unified trade log.
    Tradelog {
        /// What to do with it
        #[command(subcommand)]
        command: TradelogCommand,
    },
}

/// `tradegate audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Every event of every order's life over a trade date or a range of them, one JSON
    /// object per line, oldest first: refusals, new orders, routes to the broker, cancel
    /// requests, and what the broker reported (accepted, fills, modifications, cancels,
    /// rejects), with the gateway's and the broker's ids and each event's time to the
    /// microsecond (UTC).
    Lifecycle {
        /// One trade date, YYYY-MM-DD
        #[arg(long, conflicts_with_all = ["from", "to"])]
        day: Option<chrono::NaiveDate>,
        /// The first trade date of a range
        #[arg(long, requires = "to")]
        from: Option<chrono::NaiveDate>,
        /// The last trade date of a range, included
        #[arg(long, requires = "from")]
        to: Option<chrono::NaiveDate>,
        /// The zone whose midnights bound a trade date (US desks and FINRA CAT use Eastern
        /// time)
        #[arg(long, default_value = "America/New_York")]
        timezone: String,
        /// Write to this file instead of standard output
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check that nobody changed the trail: recompute every covered row's hash and every
    /// seal's root, compare the day roots kept in [audit] seal_dir, and name the first row
    /// altered, deleted or inserted behind the gateway's back. Exits 0 when the trail verifies
    /// (rows written after the last seal are reported as unsealed, not as tampering), 1 when
    /// something was found. Runs beside a running gateway or alone, read-only.
    Verify {
        /// Only rows written, journal entries and seals made from this UTC day on
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// ...up to this UTC day, included
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Check this day archive (a directory `audit export` wrote) instead of the database's
        /// trail: its files against its manifest, its journal against its seals, every row
        /// against its journaled hash. Nothing is loaded.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        archive: Option<PathBuf>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Write one sealed UTC day of the trail as Parquet into [tradelog] export_dir
    /// (`audit-YYYY-MM-DD/`): one file per table (the trade log one per market and account),
    /// the journal entries and seals that cover the day, and `manifest.json` with each file's
    /// rows and SHA-256 and the day seal's root. Read-only.
    Export {
        /// The UTC day, YYYY-MM-DD (it must have its day seal)
        #[arg(long)]
        day: chrono::NaiveDate,
        /// Write under this directory instead of [tradelog] export_dir
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load an exported day (a directory `audit export` wrote) into the read-only `archive`
    /// schema, where the lineage and symbol reports find it. The archive is checked first
    /// (files against the manifest, the journal against its seals and the roots kept in
    /// [audit] seal_dir, every row against its journaled hash); nothing is loaded unless it
    /// checks, and the exit code is 1 then.
    Import {
        /// The archive directory
        dir: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Seal the audit journal now (the running gateway seals every [audit]
    /// seal_interval_secs, at the end of each UTC day and when it stops); prints the seals
    /// written.
    Seal {
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
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
        /// Seed of the event ids (`tradegate::commands::load::event_id(seed, i)`)
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// `tradegate sync ...`
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Fetch each account's executions over the look-back window from TWS and store them
    /// (idempotent: a re-sync of the same window writes nothing). Connects as API client
    /// `[ibkr] cli_client_id`. With --flex-file or --flex, backfill from an IB Flex report
    /// instead (fills older than TWS serves; applied through the same path). Exits 0 when every
    /// account synced, 1 otherwise.
    Ibkr {
        /// An account to sync (repeatable); default: every account in [ibkr] accounts (with a
        /// Flex report: every account it lists)
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Days to look back (default: ibkr.lookback_days)
        #[arg(long, conflicts_with_all = ["flex_file", "flex"])]
        lookback_days: Option<u32>,
        /// Import the executions of this Flex Query report (IB's XML: an Activity Flex Query
        /// with Trades at the Execution level, or a Trade Confirmation Flex Query)
        #[arg(long, conflicts_with = "flex")]
        flex_file: Option<std::path::PathBuf>,
        /// Fetch the report of [ibkr.flex] query_id from IB's Flex Web Service (token from
        /// TRADEGATE_IBKR_FLEX_TOKEN) and import it
        #[arg(long)]
        flex: bool,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
}

/// A date range in whole UTC days.
#[derive(Debug, Clone, clap::Args)]
pub struct DaysArgs {
    /// First day, YYYY-MM-DD (default: 364 days before --to)
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Last day, YYYY-MM-DD, included (default: today, UTC)
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
}

/// `tradegate report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// All of a symbol's activity: data ingested (and when it became available), decisions
    /// with their rationale and executions, fills from Alpaca and IBKR, refused orders, and a
    /// summary with the failure breakdown.
    Symbol {
        /// The symbol
        symbol: String,
        /// The range
        #[command(flatten)]
        days: DaysArgs,
        /// At most this many rows per list (the summary counts everything)
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// A decision's lineage: its primary signal, the ingestion run that proves the data was
    /// there and when, that run's API calls, the execution with its payloads, and every
    /// trail's events for the order in time order.
    Decision {
        /// The decision id
        id: uuid::Uuid,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Why an order failed: status, error message, HTTP status and the full response payload.
    Order {
        /// A decision id or a broker order id
        id: String,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Per strategy and version: decisions, executed, failed, success rate, with signal-side
    /// outcomes (risk rejects, cancels) apart from execution-side failures.
    Strategy {
        /// Only this strategy
        name: Option<String>,
        /// The range
        #[command(flatten)]
        days: DaysArgs,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Failures grouped by normalized reason, by symbol, by weekday and UTC hour.
    Failures {
        /// The range
        #[command(flatten)]
        days: DaysArgs,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// One day's decisions, executions, failures and ingestion runs.
    Daily {
        /// The day, YYYY-MM-DD (default: today, UTC)
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// The position windows reconciled with the fills on record, and the breaks found (a
    /// broker's position that changed by other than its fills), newest first.
    Reconciliation {
        /// Only this account
        #[arg(long)]
        account: Option<String>,
        /// The range
        #[command(flatten)]
        days: DaysArgs,
        /// At most this many windows and breaks
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// What operators changed (kill switch, sync triggers, jobs, purges): who (the token's
    /// name), when, from where, the value before and after, and the reason; newest first.
    Actions {
        /// The range
        #[command(flatten)]
        days: DaysArgs,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
}

/// `tradegate trades ...`
#[derive(Debug, Subcommand)]
pub enum TradesCommand {
    /// List trades, most recently executed first.
    List {
        /// Only this account
        #[arg(long)]
        account: Option<String>,
        /// Only this status (filled, partial, cancelled, unknown)
        #[arg(long)]
        status: Option<String>,
        /// Only this symbol
        #[arg(long)]
        symbol: Option<String>,
        /// At most this many (1 to 1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
    /// Show one trade with its executions (canonical and superseded revisions).
    Show {
        /// The trade id
        id: i64,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: tradegate::output::Format,
    },
}

/// `tradegate sim ...`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// A simulated Alpaca venue (Trading API v2 orders and account, the trade_updates stream
    /// in binary frames): fills market orders at --price, limit orders when marketable,
    /// rejects with Alpaca's error shapes, 429 past --rate-limit requests a minute. Faults
    /// are switched with POST /sim/control. Runs until Ctrl-C.
    Alpaca {
        /// Where to listen
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The key id clients must send (APCA-API-KEY-ID)
        #[arg(long, default_value = "SIMKEY")]
        key_id: String,
        /// The secret clients must send (APCA-API-SECRET-KEY)
        #[arg(long, default_value = "SIMSECRET")]
        secret_key: String,
        /// Buying power
        #[arg(long, default_value = "100000")]
        buying_power: rust_decimal::Decimal,
        /// Price of every symbol
        #[arg(long, default_value = "100")]
        price: rust_decimal::Decimal,
        /// Fill in two partial fills
        #[arg(long)]
        partial_fills: bool,
        /// Requests per minute before 429 (0: no limit)
        #[arg(long, default_value_t = 200)]
        rate_limit: u32,
    },
    /// A simulated TWS (the socket API, text protocol) serving generated executions: partial
    /// fills, corrections (.01 -> .02), perm id 0 with and without an order ref, several
    /// accounts. Runs until Ctrl-C.
    Tws {
        /// Where to listen
        #[arg(long, default_value = "127.0.0.1:7497")]
        listen: std::net::SocketAddr,
        /// The login's accounts, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "DU0000001,DU0000002")]
        accounts: Vec<String>,
        /// How many executions to serve
        #[arg(long, default_value_t = 500)]
        executions: usize,
        /// Seed of the generator
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// TWS's Master API client ID: a session of another id sees only the executions its
        /// own client placed, as a real TWS does (default: every session sees everything)
        #[arg(long)]
        master_client_id: Option<i64>,
    },
}

impl ReportCommand {
    /// The report asked for and how to print it; a bad symbol or range is an error here.
    pub fn into_request(
        self,
    ) -> Result<
        (tradegate::report::ReportRequest, tradegate::output::Format),
        tradegate::report::ReportError,
    > {
        use tradegate::report::{ReportRequest, day_range, symbol};
        Ok(match self {
            Self::Symbol {
                symbol: s,
                days,
                limit,
                format,
            } => (
                ReportRequest::Symbol {
                    symbol: symbol(&s)?,
                    range: day_range(days.from, days.to)?,
                    limit,
                },
                format,
            ),
            Self::Decision { id, format } => (ReportRequest::Decision(id), format),
            Self::Order { id, format } => (ReportRequest::Order(id), format),
            Self::Strategy { name, days, format } => (
                ReportRequest::Strategy {
                    name,
                    range: day_range(days.from, days.to)?,
                },
                format,
            ),
            Self::Failures { days, format } => (
                ReportRequest::Failures(day_range(days.from, days.to)?),
                format,
            ),
            Self::Actions {
                days,
                limit,
                format,
            } => (
                ReportRequest::Actions {
                    range: day_range(days.from, days.to)?,
                    limit,
                },
                format,
            ),
            Self::Reconciliation {
                account,
                days,
                limit,
                format,
            } => (
                ReportRequest::Reconciliation {
                    range: day_range(days.from, days.to)?,
                    account,
                    limit,
                },
                format,
            ),
            Self::Daily { date, format } => (
                ReportRequest::Daily(date.unwrap_or_else(|| chrono::Utc::now().date_naive())),
                format,
            ),
        })
    }
}
