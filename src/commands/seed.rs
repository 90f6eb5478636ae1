//! `tradegate seed-data --days N --scale K`: a realistic stretch of activity generated inside
//! PostgreSQL (set-based `INSERT ... SELECT`, one transaction per day), so anyone can measure
//! the reports on a year of data.
//!
//! Per day at scale 1, over 500 symbols (`S000` ... `S499`) and five strategies:
//! 24 ingestion runs (one fails, one fetches nothing) with 274 run records (one per
//! decision's primary signal), 274 decisions (about 80% executed, 14% failed for the usual
//! reasons, 6% cancelled), their executions with request and response payloads (2 per
//! decision), a fill event per executed order, 10 trade-log events per decision, 14 refused
//! orders and 20 IBKR fills. Scale 10 over 365 days is about 1 million decisions and executions,
//! 2 million payloads and 10 million trade-log events.

use std::io::IsTerminal;

use anyhow::Result;
use chrono::{Duration, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use tradegate_actors::store::seed;

use crate::config::Config;
use crate::database::with_database;

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedReport {
    /// Days generated
    pub days: u32,
    /// The first and last day
    pub first_day: Option<NaiveDate>,
    /// ...
    pub last_day: Option<NaiveDate>,
    /// Decisions (and about as many executions)
    pub decisions: i64,
    /// API payloads
    pub payloads: i64,
    /// Trade-log events
    pub tradelog_events: i64,
    /// Ingestion runs
    pub ingestion_runs: i64,
}

/// Generates `days` days ending yesterday (UTC) at `scale`, reporting progress to `progress`.
pub async fn seed(
    client: &mut Client,
    days: u32,
    scale: u32,
    mut progress: impl FnMut(u32, NaiveDate),
) -> Result<SeedReport> {
    anyhow::ensure!(days >= 1, "--days must be at least 1");
    anyhow::ensure!(
        (1..=1000).contains(&scale),
        "--scale must be from 1 to 1000"
    );
    let last = Utc::now().date_naive() - Duration::days(1);
    let first = last - Duration::days(i64::from(days) - 1);
    tradegate_actors::store::ensure_tradelog_partitions(
        &*client,
        first,
        i32::try_from(days).unwrap_or(i32::MAX),
    )
    .await?;
    let per_day = 274 * i64::from(scale);
    let mut report = SeedReport {
        days,
        first_day: Some(first),
        last_day: Some(last),
        ..SeedReport::default()
    };
    for i in 0..days {
        let day = first + Duration::days(i64::from(i));
        let seeded = seed::seed_day(client, day, per_day, i64::from(scale)).await?;
        report.decisions += seeded.decisions;
        report.payloads += seeded.payloads;
        report.tradelog_events += seeded.tradelog_events;
        report.ingestion_runs += seeded.ingestion_runs;
        progress(i + 1, day);
    }
    // as autovacuum would have by now on a real year: statistics and the visibility map
    seed::vacuum_analyze(client).await?;
    Ok(report)
}

/// `tradegate seed-data`.
pub async fn seed_command(config: &Config, days: u32, scale: u32) -> Result<()> {
    let report = with_database(config, async |database| {
        let mut client = database.connect().await?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(u64::from(days));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} days {msg} ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let report = seed(&mut client, days, scale, |_, day| {
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(day.to_string());
            }
        })
        .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(report)
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
