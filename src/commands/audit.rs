//! `tradegate audit lifecycle`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use tradegate_actors::store::reports::{Range, order_lifecycle};

use crate::config::Config;
use crate::database::with_database;

/// `tradegate audit lifecycle (--day D | --from D --to D) [--out FILE]`: the order lifecycle
/// events of the days, one JSON object per line, to `out` or standard output; how many on
/// standard error.
pub async fn lifecycle(
    config: &Config,
    day: Option<NaiveDate>,
    range: Option<(NaiveDate, NaiveDate)>,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let (first, last) = match (day, range) {
        (Some(day), None) => (day, day),
        (None, Some((from, to))) if from <= to => (from, to),
        (None, Some((from, to))) => bail!("--from {from} is after --to {to}"),
        _ => bail!("name a day (--day D) or a range (--from D --to D)"),
    };
    let start = first.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = last.and_time(chrono::NaiveTime::MIN).and_utc() + chrono::Duration::days(1);
    let events = with_database(config, async |database| {
        let client = database.connect().await?;
        Ok(order_lifecycle(
            &client,
            Range {
                from: start,
                to: end,
            },
        )
        .await?)
    })
    .await?;
    let mut text = String::with_capacity(events.len() * 400);
    for event in &events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    match out {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing the events")?,
    }
    eprintln!("{} lifecycle event(s) from {first} to {last}", events.len());
    Ok(())
}
