//! `tradegate reconcile`: a reconciliation asked for from the command line.

use anyhow::{Result, bail};

use crate::config::Config;
use crate::database::with_database;
use crate::output::Format;

/// `tradegate reconcile [--account ID]`: enqueues a `positions.sync` for each account (every
/// configured Alpaca and IBKR account without `--account`; a running gateway takes them and
/// reconciles the fresh snapshots), checks the windows whose fills are all on record now, and
/// prints what it did. Exits 1 when a break was found.
pub async fn reconcile_command(
    config: &Config,
    account: Option<String>,
    format: Format,
) -> Result<()> {
    let known: Vec<String> = config
        .alpaca
        .accounts
        .iter()
        .map(|a| a.name.clone())
        .chain(config.ibkr.all_accounts())
        .collect();
    let accounts = match account {
        Some(a) if known.contains(&a) => vec![a],
        Some(a) => bail!(
            "unknown account {a:?}: not in [alpaca] accounts or [ibkr] accounts ({})",
            known.join(", ")
        ),
        None => known,
    };
    if accounts.is_empty() {
        bail!("no accounts to reconcile: configure [alpaca] accounts or [ibkr] accounts");
    }
    let requested = with_database(config, async |database| {
        let mut client = database.connect().await?;
        // on record before anything is asked for
        tradegate_actors::store::operator_actions::record(
            &client,
            &tradegate_actors::domain::NewOperatorAction {
                by: &tradegate_actors::domain::Operator::local_command("reconcile"),
                action: "reconcile",
                target: None,
                previous: None,
                new: Some(serde_json::json!({ "accounts": &accounts })),
                reason: None,
            },
        )
        .await?;
        Ok(tradegate_actors::reconciliation::request(
            &mut client,
            &accounts,
            &config.reconcile,
            "command",
        )
        .await?)
    })
    .await?;
    let breaks: usize = requested.checked.iter().map(|c| c.breaks.len()).sum();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&requested)?),
        Format::Table => {
            for job in &requested.jobs {
                println!(
                    "positions.sync job {} {} for {}",
                    job.job.id,
                    if job.created {
                        "enqueued"
                    } else {
                        "already pending"
                    },
                    job.job.dedupe_key
                );
            }
            for c in &requested.checked {
                println!(
                    "{} {}: snapshots {} -> {}: {} symbols, {} fills, {} break(s)",
                    c.window.broker,
                    c.window.account,
                    c.window.from.id,
                    c.window.to.id,
                    c.symbols_checked,
                    c.fills_considered,
                    c.breaks.len()
                );
                for b in &c.breaks {
                    println!(
                        "  break {}: broker {} -> {}, fills on record add {} ({} uncertain)",
                        b.symbol,
                        b.broker_before.normalize(),
                        b.broker_after.normalize(),
                        b.expected_change.normalize(),
                        b.uncertain_change.normalize()
                    );
                }
            }
            if requested.checked.is_empty() {
                println!("no window ready to check (the gateway reconciles the new snapshots)");
            }
        }
    }
    if breaks > 0 {
        std::process::exit(1);
    }
    Ok(())
}
