//! Writing one UTC day of the trail as Parquet, in one read-only snapshot.
//!
//! A row belongs to the day it was written (`created_at`, `recorded_at`, ... as verify's
//! ranges use; the trade log by `local_ts_us`, its partition key), as it is at export time.
//! The journal entries in the archive are those of every seal that covers a moment of the day
//! (whole seals, so their roots can be recomputed from the archive alone), with those seals.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use futures_util::{StreamExt, pin_mut};
use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::columns::{self, Column, ColumnBuf, Values};
use super::{FORMAT, MANIFEST, Manifest, ManifestFile, ManifestSeal, ManifestTable, day_dir};
use crate::store::StoreError;
use crate::store::audit::{COVERED, hex, verify};
use crate::store::setup::quote_ident;

/// Rows per Parquet row group.
const GROUP_ROWS: usize = 50_000;

/// Why a day could not be exported (nothing is left behind but a `.partial` directory, which
/// the next export replaces).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A statement failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The day is not sealed yet
    #[error(
        "{0} is not sealed yet: a day is sealed after it ends (the running gateway does it, or `tradegate audit seal`), and only a sealed day is archived"
    )]
    NotSealed(NaiveDate),
    /// The archive exists already
    #[error("{} exists already: a day is exported once (remove it to export the day again)", .0.display())]
    Exists(PathBuf),
    /// Writing a file failed
    #[error("writing {}: {message}", path.display())]
    Write {
        /// The file
        path: PathBuf,
        /// Why
        message: String,
    },
}

fn write_error(path: &Path) -> impl Fn(String) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |message| ExportError::Write {
        path: path.clone(),
        message,
    }
}

/// Exports `day` into `export_dir/audit-DAY/` and returns its manifest. The trade log is read
/// from `tradelog_table` when given (a partition already detached for retention).
pub async fn export_day(
    client: &mut Client,
    day: NaiveDate,
    export_dir: &Path,
    tradelog_table: Option<&str>,
) -> Result<Manifest, ExportError> {
    let dir = day_dir(export_dir, day);
    if dir.join(MANIFEST).exists() {
        return Err(ExportError::Exists(dir));
    }
    let tx = verify::start(client, None).await?;
    let from = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let to = from + chrono::Duration::days(1);
    // the day's own seal, or (a day that ended while nothing sealed days) the first seal made
    // after it; either way nothing journaled before its end may be unsealed
    let unsealed: i64 = tx
        .query_one(
            "SELECT count(*) FROM audit_journal WHERE seal_id IS NULL AND at < $1",
            &[&to],
        )
        .await
        .map_err(StoreError::new("reading the journal"))?
        .get(0);
    if unsealed > 0 {
        return Err(ExportError::NotSealed(day));
    }
    let seal = tx
        .query_opt(
            "SELECT id, root FROM audit_seals WHERE day = $1 OR sealed_at >= $2 \
             ORDER BY day = $1 DESC NULLS LAST, id LIMIT 1",
            &[&day, &to],
        )
        .await
        .map_err(StoreError::new("reading the day seal"))?
        .ok_or(ExportError::NotSealed(day))?;
    let day_seal = ManifestSeal {
        id: seal.get(0),
        root: hex(&seal.get::<_, Vec<u8>>(1)),
    };
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| write_error(&partial)(e.to_string()))?;
    let day_seals = format!(
        "SELECT s.id FROM audit_seals s \
         WHERE (s.first_at < $2 AND s.last_at >= $1) OR s.day = $3 OR s.id = {}",
        day_seal.id
    );
    let mut tables = Vec::new();
    for table in super::archived_tables() {
        let source = match (table, tradelog_table) {
            ("tradelog", Some(retired)) => retired,
            _ => table,
        };
        let columns = columns::columns(&tx, None, source).await?;
        let filter = match table {
            "tradelog" => "t.local_ts_us >= (extract(epoch FROM $1::timestamptz) * 1000000)::int8 \
                 AND t.local_ts_us < (extract(epoch FROM $2::timestamptz) * 1000000)::int8 \
                 AND $3::date IS NOT NULL"
                .to_string(),
            "audit_journal" => format!("t.seal_id IN ({day_seals})"),
            "audit_seals" => format!("t.id IN ({day_seals})"),
            _ => {
                let written_at = COVERED
                    .iter()
                    .find(|c| c.table == table)
                    .map(|c| c.written_at)
                    .unwrap_or("created_at");
                format!("t.{written_at} >= $1 AND t.{written_at} < $2 AND $3::date IS NOT NULL")
            }
        };
        let selects: Vec<String> = columns.iter().map(Column::select).collect();
        let sql = format!(
            "SELECT {} FROM {} t WHERE {filter}",
            selects.join(", "),
            quote_ident(source)
        );
        let written = write_table(&tx, &sql, (&from, &to, &day), &partial, table, &columns).await?;
        tables.push(ManifestTable {
            table: table.to_string(),
            rows: written.iter().map(|f| f.rows).sum(),
            columns,
            files: written,
        });
    }
    tx.commit()
        .await
        .map_err(StoreError::new("ending the export"))?;
    let manifest = Manifest {
        format: FORMAT.to_string(),
        day,
        exported_at: Utc::now(),
        day_seal,
        tables,
    };
    let path = partial.join(MANIFEST);
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| write_error(&path)(e.to_string()))?;
    write_synced(&path, &text).map_err(|e| write_error(&path)(e.to_string()))?;
    std::fs::rename(&partial, &dir).map_err(|e| write_error(&dir)(e.to_string()))?;
    if let Ok(parent) = File::open(export_dir) {
        let _ = parent.sync_all();
    }
    let kept_at = std::fs::canonicalize(&dir).unwrap_or(dir);
    record(
        client,
        &manifest,
        &kept_at,
        &super::super::hex(&Sha256::digest(&text)),
    )
    .await?;
    Ok(manifest)
}

/// Records the archive in `audit_archives` (what lets retention delete the day's payloads).
async fn record(
    client: &Client,
    manifest: &Manifest,
    dir: &Path,
    manifest_sha256: &str,
) -> Result<(), StoreError> {
    let payloads = manifest
        .tables
        .iter()
        .find(|t| t.table == "api_payloads")
        .map_or(0, |t| t.rows);
    let from = manifest
        .day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default();
    client
        .execute(
            "INSERT INTO audit_archives (day, dir, manifest_sha256, payloads, payload_first_id, \
                 payload_last_id) \
             SELECT $1, $2, $3, $4, min(id), max(id) FROM api_payloads \
             WHERE created_at >= $5 AND created_at < $5 + interval '1 day' \
             ON CONFLICT (day) DO UPDATE SET dir = EXCLUDED.dir, \
                 manifest_sha256 = EXCLUDED.manifest_sha256, payloads = EXCLUDED.payloads, \
                 payload_first_id = coalesce(audit_archives.payload_first_id, \
                                             EXCLUDED.payload_first_id), \
                 payload_last_id = coalesce(audit_archives.payload_last_id, \
                                            EXCLUDED.payload_last_id), \
                 exported_at = now()",
            &[
                &manifest.day,
                &dir.display().to_string(),
                &manifest_sha256,
                &i64::try_from(payloads).unwrap_or(i64::MAX),
                &from,
            ],
        )
        .await
        .map_err(StoreError::new("recording the day archive"))?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

type Params<'a> = (
    &'a chrono::DateTime<Utc>,
    &'a chrono::DateTime<Utc>,
    &'a NaiveDate,
);

/// Streams `sql`'s rows into the table's file (the trade log's into one per market and
/// account) and returns the files written.
async fn write_table(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    (from, to, day): Params<'_>,
    dir: &Path,
    table: &str,
    columns: &[Column],
) -> Result<Vec<ManifestFile>, ExportError> {
    let params: [&(dyn ToSql + Sync); 3] = [from, to, day];
    let stream = tx
        .query_raw(sql, params)
        .await
        .map_err(StoreError::new("reading rows to archive"))?;
    pin_mut!(stream);
    let split = (table == "tradelog").then(|| {
        let at = |name: &str| columns.iter().position(|c| c.name == name);
        (at("market_id"), at("account_id"))
    });
    let mut files: HashMap<String, FileWriter> = HashMap::new();
    while let Some(row) = stream.next().await {
        let row = row.map_err(StoreError::new("reading rows to archive"))?;
        let rel = match split {
            Some((market, account)) => {
                let market = market
                    .and_then(|i| row.get::<_, Option<i64>>(i))
                    .map_or_else(|| "__null__".to_string(), |m| m.to_string());
                let account = account
                    .and_then(|i| row.get::<_, Option<String>>(i))
                    .map_or_else(|| "__null__".to_string(), |a| path_safe(&a));
                format!("tradelog/market_id={market}/account_id={account}/tradelog.parquet")
            }
            None => format!("{table}.parquet"),
        };
        let file = match files.get_mut(&rel) {
            Some(file) => file,
            None => {
                let file = FileWriter::create(dir, &rel, columns)?;
                files.entry(rel).or_insert(file)
            }
        };
        file.push(&row)?;
    }
    let mut written = Vec::new();
    for (_, file) in files {
        written.push(file.finish()?);
    }
    written.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(written)
}

/// An account id as a path component: letters, digits, '-', '_' and '.' kept, anything else
/// as `%XX`.
fn path_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One Parquet file being written.
struct FileWriter {
    rel: String,
    path: PathBuf,
    writer: SerializedFileWriter<BufWriter<File>>,
    bufs: Vec<ColumnBuf>,
    pending: usize,
    rows: u64,
}

impl FileWriter {
    fn create(dir: &Path, rel: &str, columns: &[Column]) -> Result<Self, ExportError> {
        let path = dir.join(rel);
        let fail = write_error(&path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        let fields: Vec<String> = columns.iter().map(Column::parquet_field).collect();
        let schema = parse_message_type(&format!("message schema {{ {} }}", fields.join(" ")))
            .map_err(|e| fail(e.to_string()))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("tradegate {}", env!("CARGO_PKG_VERSION")))
            .build();
        let file = File::create(&path).map_err(|e| fail(e.to_string()))?;
        let writer =
            SerializedFileWriter::new(BufWriter::new(file), Arc::new(schema), Arc::new(properties))
                .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            rel: rel.to_string(),
            bufs: columns.iter().map(|c| ColumnBuf::new(c.kind())).collect(),
            path,
            writer,
            pending: 0,
            rows: 0,
        })
    }

    fn push(&mut self, row: &tokio_postgres::Row) -> Result<(), ExportError> {
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            buf.push(row, i)
                .map_err(StoreError::new("reading a row to archive"))?;
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending >= GROUP_ROWS {
            self.flush()
                .map_err(|e| write_error(&self.path)(e.to_string()))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        let mut bufs = self.bufs.iter_mut();
        while let Some(mut column) = group.next_column()? {
            let buf = bufs
                .next()
                .ok_or_else(|| ParquetError::General("more columns than the schema".into()))?;
            let def = Some(&buf.def[..]);
            let rep = buf.is_list().then_some(&buf.rep[..]);
            match (column.untyped(), &buf.values) {
                (ColumnWriter::Int32ColumnWriter(w), Values::I32(v)) => {
                    w.write_batch(v, def, rep)?;
                }
                (ColumnWriter::Int64ColumnWriter(w), Values::I64(v)) => {
                    w.write_batch(v, def, rep)?;
                }
                (ColumnWriter::BoolColumnWriter(w), Values::Bool(v)) => {
                    w.write_batch(v, def, rep)?;
                }
                (ColumnWriter::ByteArrayColumnWriter(w), Values::Bytes(v)) => {
                    w.write_batch(v, def, rep)?;
                }
                _ => return Err(ParquetError::General("a column of another type".into())),
            }
            column.close()?;
            buf.clear();
        }
        group.close()?;
        self.pending = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<ManifestFile, ExportError> {
        let fail = write_error(&self.path);
        self.flush().map_err(|e| fail(e.to_string()))?;
        let buffered = self.writer.into_inner().map_err(|e| fail(e.to_string()))?;
        let file = buffered
            .into_inner()
            .map_err(|e| fail(e.error().to_string()))?;
        file.sync_all().map_err(|e| fail(e.to_string()))?;
        Ok(ManifestFile {
            sha256: super::file_sha256(&self.path).map_err(|e| fail(e.to_string()))?,
            path: self.rel,
            rows: self.rows,
        })
    }
}
