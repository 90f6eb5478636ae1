//! `tradegate audit lifecycle`, `audit verify`, `audit seal`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use tradegate_actors::store::reports::{Range, each_lifecycle_event, local_day};

use crate::config::Config;
use crate::database::{with_database, with_database_as_reader};
use crate::output::Format;
use tradegate_actors::reporter::seals as sealing;
use tradegate_actors::store::audit::{self, Seal, SealKind, VerifyOptions, VerifyReport, archive};

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
    let events = with_database_as_reader(config, async |database| {
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

/// `tradegate audit verify [--from D] [--to D]`: the exit code (0 clean, 1 something found).
pub async fn verify(
    config: &Config,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    format: Format,
) -> Result<u8> {
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        bail!("--from {from} is after --to {to}");
    }
    let midnight = |day: NaiveDate| day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let kept_roots = sealing::kept_roots(&config.audit.seal_dir).map_err(|e| anyhow::anyhow!(e))?;
    let options = VerifyOptions {
        from: from.and_then(midnight),
        to: to.and_then(|d| d.succ_opt()).and_then(midnight),
        kept_roots,
    };
    let started = std::time::Instant::now();
    let report = with_database_as_reader(config, async |database| {
        // two connections in one snapshot: the trade log is checked beside the rest
        let mut client = database.connect().await?;
        let mut second = database.connect().await?;
        Ok(audit::verify::verify(&mut client, Some(&mut second), &options).await?)
    })
    .await?;
    let took = started.elapsed();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print_report(&report, took),
    }
    Ok(u8::from(!report.is_clean()))
}

fn print_report(report: &VerifyReport, took: std::time::Duration) {
    println!("{:<28} {:>12} {:>9}", "table", "rows", "findings");
    for t in &report.tables {
        println!("{:<28} {:>12} {:>9}", t.table, t.rows, t.findings);
    }
    println!(
        "{} row(s) and {} of {} seal(s) recomputed, {} kept day root(s) compared, in {:.1}s",
        report.rows(),
        report.seals_checked,
        report.seals,
        report.kept_roots_checked,
        took.as_secs_f64()
    );
    if report.unsealed_entries > 0 {
        println!(
            "unsealed: {} row version(s) in {} journal entr{} written after the last seal (checked, not yet sealed)",
            report.unsealed_rows,
            report.unsealed_entries,
            if report.unsealed_entries == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
    if report.is_clean() {
        println!(
            "the trail verifies: nothing was altered, deleted or inserted behind the gateway's back"
        );
        return;
    }
    if let Some(first) = report.findings.first() {
        println!("FIRST: {} {}: {}", first.table, first.key, first.detail);
    }
    for f in report.findings.iter().skip(1) {
        println!("       {} {}: {}", f.table, f.key, f.detail);
    }
    let listed = report.findings.len() as i64;
    if report.findings_total > listed {
        println!("       ... and {} more", report.findings_total - listed);
    }
    println!(
        "the trail does NOT verify: {} finding(s)",
        report.findings_total
    );
}

/// `tradegate audit export --day D [--dir DIR]`.
pub async fn export(config: &Config, day: NaiveDate, dir: Option<&Path>) -> Result<()> {
    let export_dir = dir.unwrap_or(&config.tradelog.export_dir);
    let manifest = with_database_as_reader(config, async |database| {
        let mut client = database.connect().await?;
        Ok(archive::export_day(&mut client, day, export_dir, None).await?)
    })
    .await?;
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    let files: usize = manifest.tables.iter().map(|t| t.files.len()).sum();
    for t in manifest.tables.iter().filter(|t| t.rows > 0) {
        println!(
            "{:<28} {:>12} row(s) in {} file(s)",
            t.table,
            t.rows,
            t.files.len()
        );
    }
    println!(
        "exported {day}: {rows} row(s) in {files} Parquet file(s) to {}, day seal {} root {}",
        archive::day_dir(export_dir, day).display(),
        manifest.day_seal.id,
        manifest.day_seal.root
    );
    Ok(())
}

/// `tradegate audit import DIR`: the exit code (0 imported, 1 the archive does not check).
pub async fn import(config: &Config, dir: &Path, format: Format) -> Result<u8> {
    load_archive(config, dir, archive::ImportTarget::Archive, format).await
}

/// `tradegate audit verify --archive DIR`: the exit code.
pub async fn verify_archive(config: &Config, dir: &Path, format: Format) -> Result<u8> {
    load_archive(config, dir, archive::ImportTarget::Check, format).await
}

async fn load_archive(
    config: &Config,
    dir: &Path,
    target: archive::ImportTarget,
    format: Format,
) -> Result<u8> {
    let kept_roots = sealing::kept_roots(&config.audit.seal_dir).map_err(|e| anyhow::anyhow!(e))?;
    let started = std::time::Instant::now();
    let body = async |database: &crate::database::Database| {
        let mut client = database.connect().await?;
        Ok(archive::load_and_check(&mut client, dir, target, &kept_roots).await?)
    };
    // only the writer may load the archive schema; a check loads temporary tables
    let (manifest, report) = match target {
        archive::ImportTarget::Archive => with_database(config, body).await?,
        archive::ImportTarget::Check => with_database_as_reader(config, body).await?,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            print_report(&report, started.elapsed());
            match (target, report.is_clean()) {
                (archive::ImportTarget::Archive, true) => println!(
                    "imported {} into the archive schema: the lineage and symbol reports find it there",
                    manifest.day
                ),
                (archive::ImportTarget::Archive, false) => {
                    println!(
                        "nothing was imported: the archive of {} does not check",
                        manifest.day
                    )
                }
                (archive::ImportTarget::Check, _) => {}
            }
        }
    }
    Ok(u8::from(!report.is_clean()))
}

/// `tradegate audit seal`.
pub async fn seal(config: &Config, format: Format) -> Result<()> {
    let seals = with_database(config, async |database| {
        let client = database.connect().await?;
        Ok(sealing::run(&client, &config.audit, SealKind::Interval).await?)
    })
    .await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&seals)?),
        Format::Table if seals.is_empty() => println!("nothing to seal: every entry is sealed"),
        Format::Table => print_seals(&seals),
    }
    Ok(())
}

fn print_seals(seals: &[Seal]) {
    for s in seals {
        println!(
            "seal {} ({}{}) at {}: {} entries, {} row versions, root {}",
            s.id,
            s.kind.as_str(),
            s.day.map(|d| format!(" {d}")).unwrap_or_default(),
            s.sealed_at.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
            s.entries,
            s.rows,
            s.root
        );
    }
}
