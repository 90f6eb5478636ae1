//! `tradegate demo`: everything embedded (a private PostgreSQL, the simulated venues, the
//! actors, the API), a walk through what the gateway does, then a clean stop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::net::TcpListener;
use tradegate_actors::domain::{
    ApiCall, IngestionRun, NewRun, RawJson, RecordOperation, RunRecord, TradeLogEvent,
};

use tradegate_actors::ibkr_syncer::IbkrSyncClient;
use tradegate_actors::ingestion_logger::{self, IngestionClient};

use crate::app::{Running, check_health};
use crate::config::Config;
use crate::database::DatabaseOrigin;
use crate::postgres::ClusterStart;

/// `tradegate demo`: everything embedded, end to end, then a clean stop.
pub async fn demo(config: &Config) -> Result<()> {
    let started = Instant::now();
    println!("tradegate demo");
    // the simulated TWS, and the gateway's IBKR syncers pointed at it (synced on request here)
    let tws_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot open the simulated TWS on 127.0.0.1")?;
    let tws_addr = tws_listener.local_addr()?;
    let demo_accounts = vec!["DU0000001".to_string(), "DU0000002".to_string()];
    let scenario = crate::sim::tws_scenario::generate(&crate::sim::tws_scenario::Generate {
        accounts: demo_accounts.clone(),
        executions: 120,
        seed: 7,
        end: Utc::now() - chrono::Duration::minutes(1),
        span: chrono::Duration::days(3),
    });
    let served = scenario.executions.len();
    let _tws = crate::sim::tws::spawn(tws_listener, scenario);
    // the simulated Alpaca venue, and the gateway's session and a sample strategy on it
    let venue_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot open the simulated Alpaca venue on 127.0.0.1")?;
    let venue_addr = venue_listener.local_addr()?;
    let _venue =
        crate::sim::alpaca::spawn(venue_listener, crate::sim::alpaca::SimConfig::default());
    let mut config = config.clone();
    config.alpaca.accounts = vec![tradegate_actors::alpaca_session::AlpacaAccountConfig {
        name: "demo".into(),
        base_url: format!("http://{venue_addr}"),
        ..Default::default()
    }];
    config.alpaca_keys.insert(
        "demo".into(),
        tradegate_actors::alpaca_session::Credentials::new("SIMKEY", "SIMSECRET"),
    );
    config.orders.risk.max_qty = Some(rust_decimal::Decimal::from(1000));
    config.ibkr.accounts = demo_accounts.clone();
    config.ibkr.host = tws_addr.ip().to_string();
    config.ibkr.port = tws_addr.port();
    config.ibkr.sync_interval_secs = 0;
    let config = &config;
    let running = Running::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    match running.database().origin() {
        DatabaseOrigin::Url => println!(
            "  database:   {} (from configuration)",
            running.database().display_target()
        ),
        DatabaseOrigin::Embedded(kind) => println!(
            "  database:   private PostgreSQL cluster in {} ({})",
            running
                .database()
                .relocated_to()
                .unwrap_or(&config.database.data_dir)
                .display(),
            match kind {
                ClusterStart::Initialized => "initialized now",
                ClusterStart::Started => "reused, started",
                ClusterStart::AlreadyRunning => "reused, already running",
            }
        ),
    }
    if running.migrations().applied.is_empty() {
        println!("  migrations: up to date");
    } else {
        println!(
            "  migrations: applied {}",
            running.migrations().applied.join(", ")
        );
    }
    running.trade_log().log(TradeLogEvent::connectivity(
        "demo",
        None,
        RawJson::from_value(&serde_json::json!({"event": "demo_started"})),
    ));
    let stats = running.flush_trade_log().await?;
    println!(
        "  trade log:  {} events written in {} batches, {} spilled, {} replayed",
        stats.written, stats.batches, stats.spilled, stats.replayed
    );
    let run = demo_ingestion_run().await?;
    println!(
        "  ingestion:  run {} of {} {}: {} records fetched, API call logged",
        run.run_id, run.task_name, run.status, run.counts.fetched
    );
    println!("  ibkr:       simulated TWS on {tws_addr}, {served} executions");
    let syncs = IbkrSyncClient::new(config.ibkr.sync_call_timeout());
    for account in &demo_accounts {
        let first = syncs.sync(account, None).await?;
        let again = syncs.sync(account, None).await?;
        let (c, r) = (&first.counts, &again.counts);
        println!(
            "              {account}: fetched {}, inserted {}, {} superseded by corrections, \
             {} trades; re-sync: {} unchanged, {} writes",
            c.fetched_executions_count,
            c.inserted_executions_count,
            c.canonical_changes_count,
            c.touched_trades_count,
            r.unchanged_executions_count,
            r.writes()
        );
        anyhow::ensure!(r.writes() == 0, "the re-sync of {account} wrote rows");
    }
    println!("  alpaca:     simulated venue on {venue_addr}");
    let aapl = demo_strategy(&running, run.run_id).await?;
    demo_reports(&running, aapl).await?;
    let health = check_health(running.api_addr()).await;
    let stopped = match health {
        Ok(health) => {
            println!("  api:        http://{}", running.api_addr());
            println!(
                "  health:     {} (database ok: {}, latency {} ms)",
                health.status, health.database.ok, health.database.latency_ms
            );
            println!(
                "  actors:     gateway {}, {} children",
                if health.actors.gateway {
                    "running"
                } else {
                    "not answering"
                },
                health.actors.children.len()
            );
            for child in &health.actors.children {
                println!(
                    "              - {} {}",
                    child["name"].as_str().unwrap_or("?"),
                    child["state"].as_str().unwrap_or("?")
                );
            }
            let status = health.status.clone();
            let cluster_stopped = running.stop().await?;
            anyhow::ensure!(status == "ok", "the gateway reported {status}");
            Ok(cluster_stopped)
        }
        Err(e) => {
            let _ = running.stop().await;
            Err(e)
        }
    };
    let cluster_stopped = stopped?;
    println!(
        "  stopped cleanly after {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if cluster_stopped {
            " (private cluster stopped)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The sample strategy: one batch of four orders through the whole order path — one refused
/// by a risk check, one rejected by the venue for buying power, two filled — then the
/// decisions and executions as stored.
async fn demo_strategy(running: &Running, data_run: uuid::Uuid) -> Result<uuid::Uuid> {
    use rust_decimal::Decimal;
    use tradegate_actors::domain::{OrderRequest, OrderType, PrimarySignal, Side, TimeInForce};
    use tradegate_actors::order_router::StrategyHandle;
    let order = |symbol: &str, qty: i64, limit: Option<i64>, strength: &str| OrderRequest {
        strategy: "demo".into(),
        strategy_version: "1.0".into(),
        account: None,
        symbol: symbol.into(),
        side: Side::Buy,
        qty: Some(Decimal::from(qty)),
        notional: None,
        order_type: if limit.is_some() {
            OrderType::Limit
        } else {
            OrderType::Market
        },
        limit_price: limit.map(Decimal::from),
        stop_price: None,
        time_in_force: TimeInForce::Day,
        signal_strength: strength.parse().ok(),
        primary_signal: None,
        primary_ingestion_run_id: None,
        rationale: Some(serde_json::json!({"source": "demo"})),
        reference_price: None,
    };
    let mut strategy = StrategyHandle::connect(running.hub(), "demo");
    // the AAPL order rests on the price the demo's ingestion run brought in
    let aapl = OrderRequest {
        primary_signal: Some(PrimarySignal {
            signal_type: "Price".into(),
            id: "demo-AAPL".into(),
        }),
        primary_ingestion_run_id: Some(data_run),
        ..order("AAPL", 10, None, "0.9")
    };
    let outcomes = strategy
        .submit_batch(vec![
            aapl,
            order("NVDA", 5000, None, "0.8"),
            order("TSLA", 900, Some(200), "0.7"),
            order("MSFT", 5, None, "0.6"),
        ])
        .await
        .map_err(|r| anyhow::anyhow!("the batch was refused: {r}"))?;
    let accepted: Vec<uuid::Uuid> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    let client = running.database().connect().await?;
    let settled = async {
        loop {
            let open = tradegate_actors::store::orders::unsettled_count(&client, &accepted).await?;
            if open == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settled)
        .await
        .context("the demo orders did not settle within 30 s")??;
    println!(
        "  strategy:   batch of {} orders, strongest signal first",
        outcomes.len()
    );
    for outcome in &outcomes {
        if let Err(r) = outcome {
            println!(
                "              refused before any decision: {} ({})",
                r.code, r.message
            );
        }
    }
    let rows =
        tradegate_actors::store::reports::recent_decisions(&client, accepted.len() as i64).await?;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for row in rows.iter().rev() {
        println!(
            "              {} {} {} {}: decision {}, execution {}{}{}",
            row.symbol,
            row.side,
            or_dash(row.qty.map(|q| q.to_string())),
            row.decision_id,
            row.status,
            or_dash(row.execution_status.clone()),
            row.filled_avg_price
                .map(|p| format!(" at {p}"))
                .unwrap_or_default(),
            row.error_message
                .as_deref()
                .map(|m| format!(
                    " (HTTP {}: {m})",
                    or_dash(row.http_status.map(|s| s.to_string()))
                ))
                .unwrap_or_default(),
        );
    }
    let filled = rows
        .iter()
        .filter(|r| r.execution_status.as_deref() == Some("filled"))
        .count();
    let refused = rows.iter().filter(|r| r.status == "failed").count();
    anyhow::ensure!(
        filled == 2 && refused == 1 && outcomes.iter().filter(|o| o.is_err()).count() == 1,
        "the demo batch did not end as expected (2 filled, 1 rejected by the venue, 1 by risk)"
    );
    outcomes[0]
        .as_ref()
        .copied()
        .map_err(|r| anyhow::anyhow!("the AAPL order was refused: {r}"))
}

/// The end of the walk-through: what an auditor asks afterwards, answered from the trail.
async fn demo_reports(running: &Running, aapl: uuid::Uuid) -> Result<()> {
    use crate::report::{ReportRequest, day_range, produce};
    let client = running.database().connect().await?;
    let today = Utc::now().date_naive();
    let indent = |text: String| {
        text.lines()
            .map(|l| format!("              {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let symbol = produce(
        &client,
        &ReportRequest::Symbol {
            symbol: "AAPL".into(),
            range: day_range(Some(today), Some(today))?,
            limit: 5,
        },
    )
    .await?;
    println!("  report:     tradegate report symbol AAPL --from {today} --to {today}");
    println!("{}", indent(symbol.to_text()));
    let lineage = produce(&client, &ReportRequest::Decision(aapl)).await?;
    println!("  report:     tradegate report decision {aapl}");
    println!("{}", indent(lineage.to_text()));
    // the order the venue refused (buying power)
    let failed = tradegate_actors::store::orders::latest_failed_decision(&client).await?;
    if let Some(failed) = failed {
        let order = produce(&client, &ReportRequest::Order(failed.to_string())).await?;
        println!("  report:     tradegate report order {failed}");
        println!("{}", indent(order.to_text()));
    }
    Ok(())
}

/// One small ingestion run through the IngestionLogger, as a data job would log it.
async fn demo_ingestion_run() -> Result<IngestionRun> {
    let ingestion = IngestionClient::new(ingestion_logger::NAME);
    let run = ingestion
        .start_run(NewRun::new("demo.prices", "demo"))
        .await?;
    let call: ApiCall = serde_json::from_value(serde_json::json!({
        "endpoint": "/v1/prices",
        "params": {"symbols": "AAPL,MSFT"},
        "status_code": 200,
        "response_body": {"AAPL": "185.12", "MSFT": "411.30"},
        "duration_ms": 12
    }))?;
    ingestion.record_api_calls(run.run_id, vec![call]).await?;
    let records = ["AAPL", "MSFT"]
        .into_iter()
        .map(|symbol| {
            RunRecord::new("Price", format!("demo-{symbol}"), RecordOperation::Created)
                .with_symbol(symbol)
        })
        .collect();
    ingestion.record_records(run.run_id, records).await?;
    Ok(ingestion.complete(run.run_id, None).await?)
}
