//! `tradegate halt|resume|reduce-only`: the kill switch, through the running gateway's API (so
//! the OrderRouter switches at once).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::config::Config;

/// How a command reaches the running gateway.
#[derive(Clone, clap::Args)]
pub struct GatewayCall {
    /// The gateway's API (default: http://<api.listen>)
    #[arg(long)]
    pub api: Option<String>,
    /// An operator token (default: the local token file, [api] token_file)
    #[arg(long, env = "TRADEGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl std::fmt::Debug for GatewayCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCall")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The token a command sends to the running gateway: `--token` / `TRADEGATE_TOKEN`, else the
/// local operator token file that `tradegate run` keeps.
pub fn operator_token(config: &Config, given: Option<&str>) -> Result<String> {
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        return Ok(token.to_string());
    }
    let path = &config.api.token_file;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => bail!("the token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no operator token: give --token or TRADEGATE_TOKEN, or run this where `tradegate \
             run` keeps its token file ({} not found)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", path.display())),
    }
}

/// `tradegate halt` / `tradegate resume`: sets the kill switch of the running gateway; the
/// change is recorded under the token's name.
pub async fn kill_switch(
    config: &Config,
    gateway: &GatewayCall,
    state: &str,
    reason: Option<String>,
) -> Result<()> {
    let token = operator_token(config, gateway.token.as_deref())?;
    let tls = !config.api.tls_cert_file.as_os_str().is_empty();
    let base = gateway.api.clone().unwrap_or_else(|| {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", config.api.listen)
    });
    let url = format!("{}/api/v1/kill-switch", base.trim_end_matches('/'));
    // an https gateway is verified like a broker: the platform's roots, SSL_CERT_FILE and
    // [tls] extra_ca_file
    let http = if url.starts_with("https://") {
        tradegate_actors::tls::ClientTls::from_env(&config.tls)?
            .http()
            .build()
            .context("building the HTTPS client")?
    } else {
        tradegate_actors::tls::local_http()
    };
    let response = http
        .post(&url)
        .bearer_auth(&token)
        .timeout(Duration::from_secs(30))
        .json(&json!({"state": state, "reason": reason}))
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
    println!(
        "kill switch: {} (recorded under {})",
        body["state"].as_str().unwrap_or(state),
        body["changed_by"].as_str().unwrap_or("?")
    );
    Ok(())
}
