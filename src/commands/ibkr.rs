//! The IBKR commands: `tradegate sync ibkr` (from TWS, or from a Flex report) and `tradegate
//! trades list|show`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tradegate_actors::domain::{BrokerFill, BrokerTrade, SyncReport, TradeFilter};
use tradegate_actors::ibkr_syncer::backfill::{Origin, import_report};
use tradegate_actors::ibkr_syncer::client::TwsSession;
use tradegate_actors::ibkr_syncer::flex::{decode_document, parse_report};
use tradegate_actors::ibkr_syncer::flex_service::{FlexClient, FlexToken};
use tradegate_actors::ibkr_syncer::{SessionConfig, SyncRequest, sync_account};
use tradegate_actors::store::broker_sync;

use crate::config::{Config, FLEX_TOKEN_ENV};
use crate::database::{with_database, with_database_as_reader};
use crate::output::{Format, opt};

fn print_report(report: &SyncReport) {
    let c = &report.counts;
    println!(
        "{}: fetched {}, inserted {}, updated {}, unchanged {}, canonical changes {}, trades touched {}, \
         refused {} (window {} .. {}, {} ms: fetch {}, normalize {}, store {}; sync run {}, ingestion run {})",
        report.account_id,
        c.fetched_executions_count,
        c.inserted_executions_count,
        c.updated_executions_count,
        c.unchanged_executions_count,
        c.canonical_changes_count,
        c.touched_trades_count,
        c.rejected_executions_count,
        report.window_start.format("%Y-%m-%d %H:%M:%S"),
        report.window_end.format("%Y-%m-%d %H:%M:%S"),
        report.duration_ms,
        report.fetch_ms,
        report.normalize_ms,
        report.store_ms,
        report.sync_run_id,
        report.ingestion_run_id,
    );
}

/// `tradegate sync ibkr`: syncs each account (the given ones, else every configured one) once,
/// as API client `[ibkr] cli_client_id`, one session per TWS the accounts are behind; exit 0
/// only if every sync completed.
pub async fn sync_command(
    config: &Config,
    accounts: Vec<String>,
    lookback_days: Option<u32>,
    format: Format,
) -> Result<u8> {
    let ibkr = &config.ibkr;
    let accounts = if accounts.is_empty() {
        ibkr.all_accounts()
    } else {
        accounts
    };
    if accounts.is_empty() {
        bail!("no IBKR accounts to sync: set [ibkr] accounts or pass --account");
    }
    if let Some(days) = lookback_days
        && !(1..=365).contains(&days)
    {
        bail!("--lookback-days must be 1 to 365, got {days}");
    }
    // accounts by the TWS they are behind, in the order given; an account not configured is
    // looked for behind [ibkr] host/port
    let mut sessions: Vec<(SessionConfig, Vec<String>)> = Vec::new();
    for account in &accounts {
        let session = ibkr.session_of(account).unwrap_or_else(|| SessionConfig {
            host: ibkr.host.clone(),
            port: ibkr.port,
            client_id: ibkr.client_id,
            zone: ibkr.zone(),
            accounts: Vec::new(),
        });
        match sessions
            .iter_mut()
            .find(|(s, _)| (&s.host, s.port) == (&session.host, session.port))
        {
            Some((_, list)) => list.push(account.clone()),
            None => sessions.push((session, vec![account.clone()])),
        }
    }
    with_database(config, async |database| {
        let pool = database.pool(2)?;
        let mut failed = 0u8;
        let mut reports = Vec::new();
        for (target, accounts) in &sessions {
            let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .with_context(|| format!("cannot resolve the TWS host {}", target.host))?
                .next()
                .with_context(|| format!("TWS host {} resolves to no address", target.host))?;
            let connect = || async {
                TwsSession::open(addr, ibkr.cli_client_id, ibkr.timeouts())
                    .await
                    .with_context(|| {
                        format!(
                            "cannot reach TWS at {addr} (as client {})",
                            ibkr.cli_client_id
                        )
                    })
            };
            let mut session = connect().await?;
            for account in accounts {
                let request = SyncRequest {
                    account_id: account.clone(),
                    lookback: chrono::Duration::days(i64::from(
                        lookback_days.unwrap_or(ibkr.lookback_days),
                    )),
                    zone: target.zone,
                };
                match sync_account(&pool, &mut session, &request).await {
                    Ok(report) => {
                        if format == Format::Table {
                            print_report(&report);
                        }
                        for warning in &report.warnings {
                            eprintln!("{account}: warning: {warning}");
                        }
                        reports.push(serde_json::to_value(&report)?);
                    }
                    Err(e) => {
                        failed = failed.saturating_add(1);
                        eprintln!("{account}: sync failed ({}): {e}", e.code());
                        reports.push(serde_json::json!({
                            "account_id": account,
                            "error": {"code": e.code(), "message": e.to_string()},
                        }));
                        if e.breaks_session() {
                            session = connect().await?;
                        }
                    }
                }
            }
        }
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        Ok(u8::from(failed > 0))
    })
    .await
}

/// Where `tradegate sync ibkr` takes a Flex report from.
#[derive(Debug, Clone)]
pub enum FlexSource {
    /// `--flex-file FILE`
    File(PathBuf),
    /// `--flex`: IB's Flex Web Service, `[ibkr.flex]`
    WebService,
}

/// `tradegate sync ibkr --flex-file FILE | --flex`: imports the executions of a Flex report
/// (each account it lists, or those given); exit 0 only if every account's import completed.
pub async fn flex_command(
    config: &Config,
    accounts: Vec<String>,
    source: FlexSource,
    format: Format,
) -> Result<u8> {
    let flex = &config.ibkr.flex;
    let (xml, origin) = match &source {
        FlexSource::File(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the Flex report {}", path.display()))?;
            let text = decode_document(&bytes)
                .map_err(|e| anyhow::anyhow!("{} ({}): {e}", path.display(), e.code()))?
                .into_owned();
            (text, Origin::File(path.display().to_string()))
        }
        FlexSource::WebService => {
            if flex.query_id.trim().is_empty() {
                bail!(
                    "--flex needs [ibkr.flex] query_id: the id of a Flex Query (Client Portal: Performance & Reports > Flex Queries)"
                );
            }
            let token = config.ibkr_flex_token.as_ref().with_context(|| {
                format!(
                    "--flex needs the Flex Web Service token in {FLEX_TOKEN_ENV} (Client \
                         Portal: Performance & Reports > Flex Queries > Flex Web Service \
                         Configuration)"
                )
            })?;
            let tls = tradegate_actors::tls::ClientTls::from_env(&config.tls)?;
            let client = FlexClient::for_config(&tls, flex, FlexToken::new(token.expose()))?;
            let xml = client
                .fetch()
                .await
                .map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?;
            (
                xml,
                Origin::WebService {
                    query_id: flex.query_id.trim().to_string(),
                },
            )
        }
    };
    let statements = parse_report(&xml).map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?;
    if statements.is_empty() {
        bail!("the Flex report holds no FlexStatement: nothing to import");
    }
    let listed = tradegate_actors::ibkr_syncer::backfill::report_accounts(&statements);
    for account in config.ibkr.all_accounts() {
        if !listed.contains(&account) && (accounts.is_empty() || accounts.contains(&account)) {
            eprintln!(
                "{account}: warning: the Flex report has no statement of this account (add it to \
                 the Flex Query, and list account ids, not aliases)"
            );
        }
    }
    let zone = flex.zone();
    with_database(config, async |database| {
        let pool = database.pool(2)?;
        let imports = import_report(&pool, &statements, zone, &accounts, &origin).await;
        if imports.is_empty() {
            bail!(
                "the Flex report lists no executions{}",
                if accounts.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", accounts.join(", "))
                }
            );
        }
        let mut failed = 0u8;
        let mut reports = Vec::new();
        for import in imports {
            let account = &import.account_id;
            match import.outcome {
                Ok(report) => {
                    if format == Format::Table {
                        print!("flex ");
                        print_report(&report);
                        if import.ignored_rows > 0 {
                            println!(
                                "{account}: {} rows of another level of detail (orders, lots, summaries) were not executions and were left out",
                                import.ignored_rows
                            );
                        }
                    }
                    for r in &report.rejected {
                        eprintln!("{account}: execution {} refused ({}): {}", r.exec_id, r.code, r.message);
                    }
                    for warning in &report.warnings {
                        eprintln!("{account}: warning: {warning}");
                    }
                    reports.push(serde_json::to_value(&report)?);
                }
                Err(e) => {
                    failed = failed.saturating_add(1);
                    eprintln!("{account}: Flex import failed ({}): {e}", e.code());
                    reports.push(serde_json::json!({
                        "account_id": account,
                        "error": {"code": e.code(), "message": e.to_string()},
                    }));
                }
            }
        }
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
        Ok(u8::from(failed > 0))
    })
    .await
}

fn print_trades(trades: &[BrokerTrade]) {
    println!(
        "{:>8}  {:<12} {:<8} {:<4} {:>12} {:>14} {:<8} {:<20} identity",
        "id", "account", "symbol", "side", "quantity", "avg price", "status", "last executed (UTC)"
    );
    for t in trades {
        let identity = match (&t.ib_perm_id, &t.order_ref) {
            (Some(perm), _) => format!("perm {perm}"),
            (None, Some(r)) => format!("ref {r}"),
            _ => format!(
                "client {} order {} {}",
                opt(&t.client_id),
                opt(&t.ib_order_id),
                opt(&t.trade_date)
            ),
        };
        println!(
            "{:>8}  {:<12} {:<8} {:<4} {:>12} {:>14} {:<8} {:<20} {identity}",
            t.id,
            t.account_id,
            opt(&t.symbol),
            opt(&t.side),
            t.total_quantity,
            opt(&t.avg_price),
            t.status,
            t.last_executed_at
                .map_or_else(|| "-".into(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string()),
        );
    }
}

fn print_fills(fills: &[BrokerFill]) {
    println!(
        "{:<28} {:>4} {:<9} {:<20} {:>10} {:>14} {:>10}",
        "exec id", "rev", "canonical", "executed (UTC)", "quantity", "price", "commission"
    );
    for f in fills {
        println!(
            "{:<28} {:>4} {:<9} {:<20} {:>10} {:>14} {:>10}",
            f.exec_id,
            f.exec_revision,
            if f.is_canonical { "yes" } else { "no" },
            f.executed_at.format("%Y-%m-%d %H:%M:%S"),
            f.quantity,
            f.price,
            opt(&f.commission),
        );
    }
}

/// `tradegate trades list`.
pub async fn trades_list(config: &Config, filter: TradeFilter, format: Format) -> Result<()> {
    filter.validate().map_err(anyhow::Error::msg)?;
    let trades = with_database_as_reader(config, async |database| {
        let client = database.connect().await?;
        Ok(broker_sync::list_trades(&client, &filter).await?)
    })
    .await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&trades)?),
        Format::Table if trades.is_empty() => println!("no trades match"),
        Format::Table => print_trades(&trades),
    }
    Ok(())
}

/// `tradegate trades show ID`: the trade and its fills (canonical and superseded).
pub async fn trades_show(config: &Config, id: i64, format: Format) -> Result<()> {
    let (trade, fills) = with_database_as_reader(config, async |database| {
        let client = database.connect().await?;
        let trade = broker_sync::get_trade(&client, id)
            .await?
            .with_context(|| format!("no trade {id}"))?;
        let fills = broker_sync::list_trade_fills(&client, id).await?;
        Ok((trade, fills))
    })
    .await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"trade": trade, "executions": fills})
            )?
        ),
        Format::Table => {
            print_trades(std::slice::from_ref(&trade));
            println!();
            print_fills(&fills);
        }
    }
    Ok(())
}
