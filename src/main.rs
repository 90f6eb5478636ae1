//! The `tradegate` binary.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tradegate::config::Config;
use tradegate::{app, telemetry};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // the demo tells its story on stdout; the actors' logs would drown it unless asked for
    let level = match cli.command {
        cli::Command::Demo { verbose: false } => "warn",
        _ => config.log.level.as_str(),
    };
    telemetry::init_logging(level);
    tradegate_actors::gateway::install_panic_hook();
    // one rustls crypto provider for the whole process, before any client is built
    let _ = tradegate_actors::tls::provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let done = match cli.command {
            cli::Command::Ingest {
                task,
                source,
                timeout,
                command,
            } => {
                let args = tradegate::ingest::IngestArgs {
                    task,
                    source,
                    timeout: timeout.map(std::time::Duration::from_secs),
                    command,
                };
                return tradegate::ingest::run(&config, args)
                    .await
                    .map(|outcome| outcome.exit_code);
            }
            cli::Command::Sync {
                command:
                    cli::SyncCommand::Ibkr {
                        accounts,
                        lookback_days,
                        flex_file,
                        flex,
                        format,
                    },
            } => {
                let source = match (flex_file, flex) {
                    (Some(file), _) => Some(tradegate::ibkr::FlexSource::File(file)),
                    (None, true) => Some(tradegate::ibkr::FlexSource::WebService),
                    (None, false) => None,
                };
                if let Some(source) = source {
                    return tradegate::ibkr::flex_command(&config, accounts, source, format).await;
                }
                return tradegate::ibkr::sync_command(&config, accounts, lookback_days, format)
                    .await;
            }
            cli::Command::SeedData { days, scale } => {
                tradegate::seed::seed_command(&config, days, scale).await
            }
            cli::Command::Purge {
                payload_days,
                format,
            } => tradegate::report::purge_command(&config, payload_days, format).await,
            cli::Command::Report { command } => {
                use tradegate::report::{ReportRequest, day_range, symbol};
                let (request, format) = match command {
                    cli::ReportCommand::Symbol {
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
                    cli::ReportCommand::Decision { id, format } => {
                        (ReportRequest::Decision(id), format)
                    }
                    cli::ReportCommand::Order { id, format } => (ReportRequest::Order(id), format),
                    cli::ReportCommand::Strategy { name, days, format } => (
                        ReportRequest::Strategy {
                            name,
                            range: day_range(days.from, days.to)?,
                        },
                        format,
                    ),
                    cli::ReportCommand::Failures { days, format } => (
                        ReportRequest::Failures(day_range(days.from, days.to)?),
                        format,
                    ),
                    cli::ReportCommand::Actions {
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
                    cli::ReportCommand::Daily { date, format } => (
                        ReportRequest::Daily(
                            date.unwrap_or_else(|| chrono::Utc::now().date_naive()),
                        ),
                        format,
                    ),
                };
                tradegate::report::report_command(&config, request, format).await
            }
            cli::Command::Trades {
                command:
                    cli::TradesCommand::List {
                        account,
                        status,
                        symbol,
                        limit,
                        format,
                    },
            } => {
                let filter = tradegate_actors::domain::TradeFilter {
                    account_id: account,
                    status,
                    symbol,
                    limit: Some(limit),
                };
                tradegate::ibkr::trades_list(&config, filter, format).await
            }
            cli::Command::Trades {
                command: cli::TradesCommand::Show { id, format },
            } => tradegate::ibkr::trades_show(&config, id, format).await,
            cli::Command::Sim {
                command:
                    cli::SimCommand::Tws {
                        listen,
                        accounts,
                        executions,
                        seed,
                        master_client_id,
                    },
            } => {
                tradegate::ibkr::sim_tws(listen, accounts, executions, seed, master_client_id).await
            }
            cli::Command::Sim {
                command:
                    cli::SimCommand::Alpaca {
                        listen,
                        key_id,
                        secret_key,
                        buying_power,
                        price,
                        partial_fills,
                        rate_limit,
                    },
            } => {
                let config = tradegate::sim::alpaca::SimConfig {
                    key_id,
                    secret_key,
                    buying_power,
                    default_price: price,
                    partial_fills,
                    rate_limit_per_min: rate_limit,
                    ..Default::default()
                };
                tradegate::orders::sim_alpaca(listen, config).await
            }
            cli::Command::Halt {
                reduce_only,
                reason,
                gateway,
            } => {
                let state = if reduce_only { "reduce_only" } else { "halted" };
                tradegate::orders::kill_switch(&config, &gateway, state, reason).await
            }
            cli::Command::Resume { reason, gateway } => {
                tradegate::orders::kill_switch(&config, &gateway, "active", reason).await
            }
            cli::Command::Run => app::run(&config).await,
            cli::Command::Migrate => app::migrate_command(&config).await,
            cli::Command::Demo { .. } => app::demo(&config).await,
            cli::Command::Tradelog {
                command: cli::TradelogCommand::Export { day, out },
            } => app::export_trade_log(&config, day, out.as_deref()).await,
            cli::Command::Tradelog {
                command: cli::TradelogCommand::Load { events, rate, seed },
            } => tradegate::load::run(&config, events, rate, seed).await,
        };
        done.map(|()| 0)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
