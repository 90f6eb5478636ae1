//! `tradegate sim alpaca|tws`: the simulated venues on their own, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use tokio::net::TcpListener;

use crate::sim::alpaca::{self, SimAlpaca, SimConfig};
use crate::sim::tws_scenario::{Generate, generate};

/// `tradegate sim alpaca`: serves a simulated venue until Ctrl-C.
pub async fn sim_alpaca(listen: SocketAddr, config: SimConfig) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "simulated Alpaca listening on {addr}: base URL http://{addr}, stream ws://{addr}/stream, \
         key id {}",
        config.key_id
    );
    let sim = SimAlpaca::new(config);
    alpaca::serve(listener, sim, crate::app::shutdown_signal()).await?;
    Ok(())
}

/// `tradegate sim tws`: serves a generated scenario until Ctrl-C or SIGTERM.
pub async fn sim_tws(
    listen: SocketAddr,
    accounts: Vec<String>,
    executions: usize,
    seed: u64,
    master_client_id: Option<i64>,
) -> Result<()> {
    if accounts.is_empty() {
        bail!("--accounts needs at least one account id");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let scenario = generate(&Generate {
        accounts: accounts.clone(),
        executions,
        seed,
        end: Utc::now() - chrono::Duration::minutes(1),
        span: chrono::Duration::days(5),
    });
    let served = scenario.executions.len();
    let scenario = crate::sim::tws::Scenario {
        master_client_id,
        ..scenario
    };
    let _shared = crate::sim::tws::spawn(listener, scenario);
    println!(
        "simulated TWS listening on {addr}: accounts {}, {served} executions (seed {seed}){}",
        accounts.join(","),
        master_client_id.map_or_else(String::new, |id| format!(", master client id {id}"))
    );
    crate::app::shutdown_signal().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
