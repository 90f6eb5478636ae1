//! The `tradegate` binary.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tradegate::config::Config;
use tradegate::telemetry;

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
            cli::Command::Audit {
                command:
                    cli::AuditCommand::Verify {
                        archive: Some(dir),
                        format,
                        ..
                    },
            } => {
                return tradegate::commands::audit::verify_archive(&config, &dir, format).await;
            }
            cli::Command::Audit {
                command:
                    cli::AuditCommand::Verify {
                        from, to, format, ..
                    },
            } => {
                return tradegate::commands::audit::verify(&config, from, to, format).await;
            }
            cli::Command::Audit {
                command: cli::AuditCommand::Import { dir, format },
            } => {
                return tradegate::commands::audit::import(&config, &dir, format).await;
            }
            cli::Command::Audit {
                command: cli::AuditCommand::Export { day, dir },
            } => tradegate::commands::audit::export(&config, day, dir.as_deref()).await,
            cli::Command::Audit {
                command: cli::AuditCommand::Seal { format },
            } => tradegate::commands::audit::seal(&config, format).await,
            cli::Command::Ingest {
                task,
                source,
                timeout,
                command,
            } => {
                let args = tradegate::commands::ingest::IngestArgs {
                    task,
                    source,
                    timeout: timeout.map(std::time::Duration::from_secs),
                    command,
                };
                return tradegate::commands::ingest::run(&config, args)
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
                    (Some(file), _) => Some(tradegate::commands::ibkr::FlexSource::File(file)),
                    (None, true) => Some(tradegate::commands::ibkr::FlexSource::WebService),
                    (None, false) => None,
                };
                if let Some(source) = source {
                    return tradegate::commands::ibkr::flex_command(
                        &config, accounts, source, format,
                    )
                    .await;
                }
                return tradegate::commands::ibkr::sync_command(
                    &config,
                    accounts,
                    lookback_days,
                    format,
                )
                .await;
            }
            cli::Command::SeedData { days, scale } => {
                tradegate::commands::seed::seed_command(&config, days, scale).await
            }
            cli::Command::Purge {
                payload_days,
                format,
            } => tradegate::commands::report::purge_command(&config, payload_days, format).await,
            cli::Command::Reconcile { account, format } => {
                tradegate::commands::reconcile::reconcile_command(&config, account, format).await
            }
            cli::Command::Report { command } => {
                let (request, format) = command.into_request()?;
                tradegate::commands::report::report_command(&config, request, format).await
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
                tradegate::commands::ibkr::trades_list(&config, filter, format).await
            }
            cli::Command::Trades {
                command: cli::TradesCommand::Show { id, format },
            } => tradegate::commands::ibkr::trades_show(&config, id, format).await,
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
                tradegate::commands::sim::sim_tws(
                    listen,
                    accounts,
                    executions,
                    seed,
                    master_client_id,
                )
                .await
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
                tradegate::commands::sim::sim_alpaca(listen, config).await
            }
            cli::Command::Halt {
                reduce_only,
                reason,
                gateway,
            } => {
                let state = if reduce_only { "reduce_only" } else { "halted" };
                tradegate::commands::kill_switch::kill_switch(&config, &gateway, state, reason)
                    .await
            }
            cli::Command::Resume { reason, gateway } => {
                tradegate::commands::kill_switch::kill_switch(&config, &gateway, "active", reason)
                    .await
            }
            cli::Command::Run => tradegate::commands::run::run(&config).await,
            cli::Command::Migrate => tradegate::commands::migrate::migrate_command(&config).await,
            cli::Command::Demo { .. } => tradegate::commands::demo::demo(&config).await,
            cli::Command::Audit {
                command:
                    cli::AuditCommand::Lifecycle {
                        day,
                        from,
                        to,
                        timezone,
                        out,
                    },
            } => {
                tradegate::commands::audit::lifecycle(
                    &config,
                    (day, from.zip(to)),
                    &timezone,
                    out.as_deref(),
                )
                .await
            }
            cli::Command::Tradelog {
                command: cli::TradelogCommand::Export { day, out },
            } => {
                tradegate::commands::tradelog::export_trade_log(&config, day, out.as_deref()).await
            }
            cli::Command::Tradelog {
                command: cli::TradelogCommand::Load { events, rate, seed },
            } => tradegate::commands::load::run(&config, events, rate, seed).await,
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
