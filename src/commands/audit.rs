//! `tradegate audit lifecycle`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use tradegate_actors::store::reports::{Range, each_lifecycle_event, local_day};

use crate::config::Config;
use crate::database::with_database;

/// `tradegate audit lifecycle (--day D | --from D --to D) [--timezone Z] [--out FILE]`: the
/// order lifecycle events of the trade dates (each from midnight to midnight in `timezone`),
/// one JSON object per line, to `out` (written whole or not at all: a temporary file renamed
/// into place) or standard output; how many on standard error.
pub async fn lifecycle(
    config: &Config,
    (day, range): (Option<NaiveDate>, Option<(NaiveDate, NaiveDate)>),
    timezone: &str,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let zone: chrono_tz::Tz = timezone
        .parse()
        .map_err(|_| anyhow::anyhow!("--timezone {timezone:?} is not an IANA time zone"))?;
    let (first, last) = match (day, range) {
        (Some(day), None) => (day, day),
        (None, Some((from, to))) if from <= to => (from, to),
        (None, Some((from, to))) => bail!("--from {from} is after --to {to}"),
        _ => bail!("name a day (--day D) or a range (--from D --to D)"),
    };
    let range = Range {
        from: local_day(first, zone).from,
        to: local_day(last, zone).to,
    };
    // each event written as it arrives: a day of any size is never held whole
    let events = with_database(config, async |database| {
        let client = database.connect().await?;
        let write = async |w: &mut dyn Write| -> Result<u64> {
            let n = each_lifecycle_event(&client, range, |line| {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")
            })
            .await?;
            w.flush()?;
            Ok(n)
        };
        match out {
            Some(path) => {
                let partial = path.with_extension("partial");
                let file = std::fs::File::create(&partial)
                    .with_context(|| format!("creating {}", partial.display()))?;
                let mut buffered = std::io::BufWriter::new(file);
                let n = write(&mut buffered)
                    .await
                    .with_context(|| format!("writing {}", partial.display()))?;
                buffered
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|file| file.sync_all())
                    .with_context(|| format!("writing {}", partial.display()))?;
                std::fs::rename(&partial, path)
                    .with_context(|| format!("renaming {} into place", partial.display()))?;
                Ok(n)
            }
            None => {
                let stdout = std::io::stdout();
                let mut buffered = std::io::BufWriter::new(stdout.lock());
                write(&mut buffered).await.context("writing the events")
            }
        }
    })
    .await?;
    eprintln!(
        "{} lifecycle event(s) from {first} to {last} ({zone})",
        events
    );
    Ok(())
}
