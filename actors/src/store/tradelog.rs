//! SQL of the trade log: batched writes (binary COPY, multi-row INSERT, deduplicating replay),
//! daily partitions and their export.

use std::collections::BTreeSet;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate};
use futures_util::{StreamExt, pin_mut};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, GenericClient, Statement, Transaction};

use super::StoreError;
use crate::domain::{RawJson, TradeLogEvent};

/// The columns every write path fills, in order.
const COLUMNS: &str = "event_id, local_ts_us, exchange_ts_us, event_type, req_id, cl_ord_id, \
    native_ord_id, market_id, account_id, symbol, exec_type, ord_status, side, is_taker, last_px, \
    last_qty, leaves_qty, ord_px, ord_qty, fee, response_status, error_code, error_message, \
    source, body, response_meta";
const COLUMN_COUNT: usize = 26;
const TYPES: [Type; COLUMN_COUNT] = [
    Type::UUID,
    Type::INT8,
    Type::INT8,
    Type::INT2,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::BOOL,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::INT2,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
];
/// Rows per multi-row INSERT statement (26 parameters each, well under the 65535 limit).
const INSERT_CHUNK: usize = 200;
/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

impl ToSql for RawJson {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte followed by the JSON text
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.as_str().as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// The values of an event that are not stored as they are in the struct.
struct Row {
    event_type: i16,
    side: Option<i16>,
}

impl Row {
    fn of(e: &TradeLogEvent) -> Self {
        Self {
            event_type: e.event_type.code(),
            side: e.side.map(i16::from),
        }
    }
}

/// The 26 values of one event, in [`COLUMNS`] order.
fn values<'a>(e: &'a TradeLogEvent, row: &'a Row) -> [&'a (dyn ToSql + Sync); COLUMN_COUNT] {
    [
        &e.event_id,
        &e.local_ts_us,
        &e.exchange_ts_us,
        &row.event_type,
        &e.req_id,
        &e.cl_ord_id,
        &e.native_ord_id,
        &e.market_id,
        &e.account_id,
        &e.symbol,
        &e.exec_type,
        &e.ord_status,
        &row.side,
        &e.is_taker,
        &e.last_px,
        &e.last_qty,
        &e.leaves_qty,
        &e.ord_px,
        &e.ord_qty,
        &e.fee,
        &e.response_status,
        &e.error_code,
        &e.error_message,
        &e.source,
        &e.body,
        &e.response_meta,
    ]
}

/// Binary `COPY` of `events` into `table` (`tradelog` or the replay staging table) inside `tx`.
pub async fn copy_events(
    tx: &Transaction<'_>,
    table: &str,
    events: &[TradeLogEvent],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({COLUMNS}) FROM STDIN BINARY"))
        .await?;
    // The writer lives in its own block so that it is finished (or dropped) before the
    // transaction is used again.
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    pin_mut!(writer);
    for e in events {
        let row = Row::of(e);
        writer.as_mut().write(&values(e, &row)).await?;
    }
    writer.finish().await
}

fn insert_sql(rows: usize, on_conflict_do_nothing: bool) -> String {
    let mut sql = format!("INSERT INTO tradelog ({COLUMNS}) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..COLUMN_COUNT {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", r * COLUMN_COUNT + c + 1));
        }
        sql.push(')');
    }
    if on_conflict_do_nothing {
        sql.push_str(" ON CONFLICT (event_id, local_ts_us) DO NOTHING");
    }
    sql
}

/// Prepared multi-row `INSERT`s of `events` inside `tx`; with `dedupe`, rows whose event id is
/// already stored are skipped. Returns the rows inserted.
pub async fn insert_events(
    tx: &Transaction<'_>,
    events: &[TradeLogEvent],
    dedupe: bool,
) -> Result<u64, tokio_postgres::Error> {
    let mut inserted = 0;
    let mut prepared: Option<(usize, Statement)> = None;
    for chunk in events.chunks(INSERT_CHUNK) {
        let statement = match &prepared {
            Some((len, st)) if *len == chunk.len() => st.clone(),
            _ => {
                let st = tx.prepare(&insert_sql(chunk.len(), dedupe)).await?;
                prepared = Some((chunk.len(), st.clone()));
                st
            }
        };
        let rows: Vec<Row> = chunk.iter().map(Row::of).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMN_COUNT);
        for (e, row) in chunk.iter().zip(&rows) {
            params.extend_from_slice(&values(e, row));
        }
        inserted += tx.execute(&statement, &params).await?;
    }
    Ok(inserted)
}

/// The deduplicating path used for replays: binary `COPY` into a session-local staging table,
/// then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` on the event id. A batch whose earlier
/// commit outcome was unknown is therefore never doubled. Returns the rows inserted.
pub async fn replay_events(
    tx: &Transaction<'_>,
    events: &[TradeLogEvent],
) -> Result<u64, tokio_postgres::Error> {
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS tradelog_replay_staging
             (LIKE tradelog INCLUDING DEFAULTS EXCLUDING CONSTRAINTS EXCLUDING GENERATED)
             ON COMMIT DELETE ROWS",
    )
    .await?;
    copy_events(tx, "tradelog_replay_staging", events).await?;
    tx.execute(
        &format!(
            "INSERT INTO tradelog ({COLUMNS}) SELECT {COLUMNS} FROM tradelog_replay_staging
             ON CONFLICT (event_id, local_ts_us) DO NOTHING"
        ),
        &[],
    )
    .await
}

/// The UTC days `events` fall on.
pub fn days_of(events: &[TradeLogEvent]) -> BTreeSet<NaiveDate> {
    events
        .iter()
        .filter_map(|e| day_of_us(e.local_ts_us))
        .collect()
}

/// The UTC day of a microsecond timestamp.
pub fn day_of_us(ts_us: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(ts_us.div_euclid(DAY_US) * DAY_US).map(|t| t.date_naive())
}

/// Every daily partition of `tradelog` with its day, oldest first.
pub async fn list_partitions(
    client: &impl GenericClient,
) -> Result<Vec<(NaiveDate, String)>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'tradelog'::regclass
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(StoreError::new("listing tradelog partitions"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let day = NaiveDate::parse_from_str(name.strip_prefix("tradelog_p")?, "%Y%m%d").ok()?;
            Some((day, name))
        })
        .collect())
}

/// Rows in the partition of `day`; `None` when there is no such partition.
pub async fn partition_row_count(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Option<i64>, StoreError> {
    let exists = client
        .query_one(
            "SELECT to_regclass(tradelog_partition_name($1)) IS NOT NULL",
            &[&day],
        )
        .await
        .map_err(StoreError::new("looking up a tradelog partition"))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    table_row_count(client, &partition_name(day))
        .await
        .map(Some)
}

/// Rows in a table of the trade log (a partition or a retired partition).
pub async fn table_row_count(client: &impl GenericClient, table: &str) -> Result<i64, StoreError> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", quote(table)), &[])
        .await
        .map_err(StoreError::new("counting a trade-log table"))?;
    Ok(row.get(0))
}

/// The partition name of `day` (`tradelog_pYYYYMMDD`).
pub fn partition_name(day: NaiveDate) -> String {
    format!("tradelog_p{}", day.format("%Y%m%d"))
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Streams the rows of `table` (a partition or a retired partition) as JSON objects (one per
/// row, every column), in time order, to `sink`; returns how many.
pub async fn export_table_rows(
    client: &Client,
    table: &str,
    mut sink: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<u64, ExportError> {
    let sql = format!(
        "SELECT row_to_json(t)::text FROM {} t ORDER BY local_ts_us, event_id",
        quote(table)
    );
    let stream = client
        .query_raw(&sql, std::iter::empty::<i32>())
        .await
        .map_err(|e| ExportError::Db(StoreError::new("exporting trade-log rows")(e)))?;
    pin_mut!(stream);
    let mut rows = 0;
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| ExportError::Db(StoreError::new("reading trade-log rows")(e)))?;
        sink(row.get::<_, &str>(0)).map_err(ExportError::Io)?;
        rows += 1;
    }
    Ok(rows)
}

/// Retires `day`'s partition: detaches it from `tradelog` (journaling its rows as retired) and
/// renames it to
/// `tradelog_retired_pYYYYMMDD_<suffix>`, in one short transaction. New events for that day
/// then get a fresh partition, and the retired table can be exported at leisure. Returns the
/// retired table's name.
pub async fn retire_partition(
    client: &mut Client,
    day: NaiveDate,
    suffix: i64,
) -> Result<String, StoreError> {
    let name = partition_name(day);
    let retired = format!("tradelog_retired_p{}_{suffix}", day.format("%Y%m%d"));
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("retiring a trade-log partition"))?;
    // the journal learns that its rows left the table on purpose (audit verify would report
    // them deleted otherwise); DETACH locks the partition against new rows first
    tx.batch_execute(&format!(
        "ALTER TABLE tradelog DETACH PARTITION {}; \
         INSERT INTO audit_journal (table_name, op, writer, keys) \
         SELECT 'tradelog', 'R', false, array_agg(id::text) FROM {} GROUP BY id / 100000; \
         ALTER TABLE {} RENAME TO {}",
        quote(&name),
        quote(&name),
        quote(&name),
        quote(&retired)
    ))
    .await
    .map_err(StoreError::new("detaching a trade-log partition"))?;
    tx.commit()
        .await
        .map_err(StoreError::new("retiring a trade-log partition"))?;
    Ok(retired)
}

/// Retired partitions waiting for export and drop, oldest day first: (day, table).
pub async fn list_retired(
    client: &impl GenericClient,
) -> Result<Vec<(NaiveDate, String)>, StoreError> {
    let rows = client
        .query(
            "SELECT relname::text FROM pg_class
             WHERE relkind = 'r' AND relname LIKE 'tradelog\\_retired\\_p%'
               AND relnamespace = current_schema()::regnamespace
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(StoreError::new("listing retired trade-log partitions"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let digits = name.strip_prefix("tradelog_retired_p")?.get(..8)?;
            Some((NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?, name))
        })
        .collect())
}

/// Drops a retired partition (after its export).
pub async fn drop_retired(client: &impl GenericClient, table: &str) -> Result<(), StoreError> {
    if !table.starts_with("tradelog_retired_p") {
        return Ok(());
    }
    client
        .batch_execute(&format!("DROP TABLE {}", quote(table)))
        .await
        .map_err(StoreError::new("dropping a retired trade-log partition"))
}

/// An export that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the rows failed.
    #[error(transparent)]
    Db(StoreError),
    /// Writing the file failed.
    #[error("writing the export: {0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_days_of_microsecond_timestamps() {
        // 2031-01-31 00:00:00 UTC
        let midnight = 1_927_584_000_000_000;
        assert_eq!(day_of_us(midnight), NaiveDate::from_ymd_opt(2031, 1, 31));
        assert_eq!(
            day_of_us(midnight - 1),
            NaiveDate::from_ymd_opt(2031, 1, 30)
        );
        assert_eq!(day_of_us(-1), NaiveDate::from_ymd_opt(1969, 12, 31));
    }

    #[test]
    fn insert_statements_number_their_parameters() {
        let sql = insert_sql(2, true);
        assert!(sql.contains("($1,$2,"));
        assert!(sql.contains("$26),($27,$28"));
        assert!(sql.ends_with("$52) ON CONFLICT (event_id, local_ts_us) DO NOTHING"));
    }
}
