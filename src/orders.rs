//! The order-path commands: `tradegate halt|resume` (through the running gateway's API, so the
//! OrderRouter switches at once) and `tradegate sim alpaca`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::sim::alpaca::{self, SimAlpaca, SimConfig};

/// `tradegate halt` / `tradegate resume`: sets the kill switch of the running gateway.
pub async fn kill_switch(
    config: &Config,
    api: Option<String>,
    state: &str,
    reason: Option<String>,
) -> Result<()> {
    let base = api.unwrap_or_else(|| format!("http://{}", config.api.listen));
    let url = format!("{}/api/v1/kill-switch", base.trim_end_matches('/'));
    let response = tradegate_actors::tls::local_http()
        .post(&url)
        .timeout(Duration::from_secs(30))
        .json(&json!({"state": state, "reason": reason, "changed_by": "cli"}))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url} (is `tradegate run` up?)"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the gateway refused ({status}): {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    println!("kill switch: {}", body["state"].as_str().unwrap_or(state));
    Ok(())
}

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
