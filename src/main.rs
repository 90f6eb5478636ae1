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
    telemetry::init_logging(&config.log.level);
    tradegate_actors::gateway::install_panic_hook();
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
            cli::Command::Run => app::run(&config).await,
            cli::Command::Migrate => app::migrate_command(&config).await,
            cli::Command::Demo => app::demo(&config).await,
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
