//! Sealing the journal: each seal chains every entry committed since the one before
//! (`root = sha256(prev_root || entry hashes in order)`), at an interval, at the end of each
//! UTC day, and when the gateway stops.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::store::StoreError;

/// Why a seal was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SealKind {
    /// The interval came round
    Interval,
    /// A UTC day ended
    Day,
    /// The gateway stopped cleanly
    Stop,
}

impl SealKind {
    /// Its name in `audit_seals.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interval => "interval",
            Self::Day => "day",
            Self::Stop => "stop",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "day" => Self::Day,
            "stop" => Self::Stop,
            _ => Self::Interval,
        }
    }
}

/// One seal, as `GET /api/v1/audit/seals` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seal {
    /// Its number in the chain, from 1
    pub id: i64,
    /// Why it was written
    pub kind: SealKind,
    /// The UTC day a day seal closes
    pub day: Option<NaiveDate>,
    /// When
    pub sealed_at: DateTime<Utc>,
    /// The root of the seal before it (hex), none for the first
    pub prev_root: Option<String>,
    /// Its root (hex)
    pub root: String,
    /// Journal entries it covers (one per statement and table)
    pub entries: i64,
    /// Row versions those entries hold
    pub rows: i64,
    /// The first and last journal entries it covers
    pub first_seq: Option<i64>,
    /// See `first_seq`
    pub last_seq: Option<i64>,
    /// When the first and last of them were written
    pub first_at: Option<DateTime<Utc>>,
    /// See `first_at`
    pub last_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, kind, day, sealed_at, prev_root, root, entries, rows, first_seq, \
    last_seq, first_at, last_at";

fn seal_of(row: &tokio_postgres::Row) -> Seal {
    let prev: Option<Vec<u8>> = row.get(4);
    let root: Vec<u8> = row.get(5);
    Seal {
        id: row.get(0),
        kind: SealKind::parse(row.get(1)),
        day: row.get(2),
        sealed_at: row.get(3),
        prev_root: prev.as_deref().map(super::hex),
        root: super::hex(&root),
        entries: row.get(6),
        rows: row.get(7),
        first_seq: row.get(8),
        last_seq: row.get(9),
        first_at: row.get(10),
        last_at: row.get(11),
    }
}

/// Seals every committed entry not sealed yet; the new seal, or `None` when an interval seal
/// found nothing to seal (day and stop seals are written even then; a day seal for a day that
/// has one already is not).
pub async fn seal(
    client: &impl GenericClient,
    kind: SealKind,
    day: Option<NaiveDate>,
) -> Result<Option<Seal>, StoreError> {
    let row = client
        .query_one("SELECT audit_seal($1, $2)", &[&kind.as_str(), &day])
        .await
        .map_err(StoreError::new("sealing the audit journal"))?;
    let Some(id) = row.get::<_, Option<i64>>(0) else {
        return Ok(None);
    };
    let row = client
        .query_one(
            &format!("SELECT {COLUMNS} FROM audit_seals WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading the new seal"))?;
    Ok(Some(seal_of(&row)))
}

/// Seals, newest first: at most `limit`, with ids below `before` when given.
pub async fn list(
    client: &impl GenericClient,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Seal>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM audit_seals WHERE $1::bigint IS NULL OR id < $1 \
                 ORDER BY id DESC LIMIT $2"
            ),
            &[&before, &limit],
        )
        .await
        .map_err(StoreError::new("listing seals"))?;
    Ok(rows.iter().map(seal_of).collect())
}

/// The newest day seal's day.
pub async fn newest_day(client: &impl GenericClient) -> Result<Option<NaiveDate>, StoreError> {
    let row = client
        .query_one("SELECT max(day) FROM audit_seals", &[])
        .await
        .map_err(StoreError::new("reading the newest day seal"))?;
    Ok(row.get(0))
}

/// The day seal of `day`.
pub async fn day_seal(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Option<Seal>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM audit_seals WHERE day = $1"),
            &[&day],
        )
        .await
        .map_err(StoreError::new("reading a day seal"))?;
    Ok(row.as_ref().map(seal_of))
}

/// The first day with journal entries, when there is one.
pub async fn first_journal_day(
    client: &impl GenericClient,
) -> Result<Option<NaiveDate>, StoreError> {
    let row = client
        .query_opt(
            "SELECT (at AT TIME ZONE 'UTC')::date FROM audit_journal ORDER BY seq LIMIT 1",
            &[],
        )
        .await
        .map_err(StoreError::new("reading the journal's first day"))?;
    Ok(row.map(|r| r.get(0)))
}
