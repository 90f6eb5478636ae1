//! Loading a day archive back and checking it: its files against the manifest, its journal
//! entries against its seals (and those against the database's seals and the roots kept in
//! `seal_dir`), and every archived row against its newest journaled hash. Into the `archive`
//! schema (`tradegate audit import`, committed only when everything checks), or into
//! temporary tables that are dropped (`tradegate audit verify --archive`).

use std::path::{Component, Path};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures_util::SinkExt;
use parquet::file::reader::{FileReader, SerializedFileReader};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::columns::{self, Column, copy_text};
use super::{Manifest, ManifestTable, file_sha256, read_manifest};
use crate::store::StoreError;
use crate::store::audit::verify::{ENTRY_HASH, KeptRoot, SETUP};
use crate::store::audit::{COVERED, Finding, FindingKind, ROW_HASH, VerifyReport, hex};
use crate::store::setup::quote_ident;

/// Where an archive is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportTarget {
    /// The `archive` schema, kept when the archive checks
    Archive,
    /// Temporary tables, dropped after the check
    Check,
}

/// Why an archive could not be loaded at all (what it holds that is wrong is a finding).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A statement failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifest cannot be read
    #[error("{0}")]
    Manifest(String),
    /// The day is in the archive schema already
    #[error("{0} is imported already (archive.days has it)")]
    AlreadyImported(chrono::NaiveDate),
    /// The archive holds what this version cannot store
    #[error("{0}")]
    Incompatible(String),
    /// A file cannot be read
    #[error("reading {path}: {message}")]
    Read {
        /// The file
        path: String,
        /// Why
        message: String,
    },
}

/// Findings listed per check.
const PER_CHECK: i64 = 20;

/// Loads the archive in `dir` into `target` and checks it; the manifest and what was found.
/// With [`ImportTarget::Archive`] the rows are kept only when nothing was found.
pub async fn load_and_check(
    client: &mut Client,
    dir: &Path,
    target: ImportTarget,
    kept_roots: &[KeptRoot],
) -> Result<(Manifest, VerifyReport), ImportError> {
    let manifest = read_manifest(dir).map_err(ImportError::Manifest)?;
    let mut report = VerifyReport::default();
    let loadable = check_files(dir, &manifest, &mut report)?;
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("starting the import"))?;
    tx.batch_execute(&format!(
        "{SETUP}; SET LOCAL tradegate.archive_import = 'on'"
    ))
    .await
    .map_err(StoreError::new("starting the import"))?;
    let schema = match target {
        ImportTarget::Archive => {
            let imported = tx
                .query_opt(
                    "SELECT 1 FROM archive.days WHERE day = $1",
                    &[&manifest.day],
                )
                .await
                .map_err(StoreError::new("reading archive.days"))?;
            if imported.is_some() {
                return Err(ImportError::AlreadyImported(manifest.day));
            }
            "archive"
        }
        ImportTarget::Check => {
            for table in super::archived_tables() {
                tx.batch_execute(&format!(
                    "CREATE TEMP TABLE {t} (LIKE archive.{t}) ON COMMIT DROP",
                    t = quote_ident(table)
                ))
                .await
                .map_err(StoreError::new("making the check's tables"))?;
            }
            "pg_temp"
        }
    };
    for table in &manifest.tables {
        load_table(&tx, dir, schema, table, &loadable).await?;
    }
    check_seals(&tx, schema, &manifest, kept_roots, &mut report).await?;
    for table in &manifest.tables {
        check_rows(&tx, schema, &manifest, table, &mut report).await?;
    }
    match target {
        ImportTarget::Archive if report.is_clean() => {
            let text = serde_json::to_value(&manifest).unwrap_or_default();
            tx.execute(
                "INSERT INTO archive.days (day, source, manifest) VALUES ($1, $2, $3)",
                &[&manifest.day, &dir.display().to_string(), &text],
            )
            .await
            .map_err(StoreError::new("recording the imported day"))?;
            tx.commit()
                .await
                .map_err(StoreError::new("committing the import"))?;
        }
        _ => tx
            .rollback()
            .await
            .map_err(StoreError::new("ending the check"))?,
    }
    Ok((manifest, report))
}

fn archive_finding(key: &str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Archive,
        table: "archive".into(),
        key: key.to_string(),
        detail,
    }
}

/// Each file's SHA-256 and row count against the manifest; the files that can be loaded.
fn check_files(
    dir: &Path,
    manifest: &Manifest,
    report: &mut VerifyReport,
) -> Result<Vec<String>, ImportError> {
    let mut loadable = Vec::new();
    for table in &manifest.tables {
        if table.rows != table.files.iter().map(|f| f.rows).sum::<u64>() {
            report.found(archive_finding(
                &table.table,
                "the manifest's row count differs from its files' counts".into(),
            ));
        }
        for file in &table.files {
            let inside = Path::new(&file.path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                return Err(ImportError::Manifest(format!(
                    "the manifest names {:?}, outside the archive",
                    file.path
                )));
            }
            let path = dir.join(&file.path);
            match file_sha256(&path) {
                Err(e) => {
                    report.found(archive_finding(
                        &file.path,
                        format!("the file the manifest names cannot be read: {e}"),
                    ));
                    continue;
                }
                Ok(sha) if sha != file.sha256 => report.found(archive_finding(
                    &file.path,
                    "its SHA-256 differs from the manifest's: the file was changed".into(),
                )),
                Ok(_) => {}
            }
            let rows = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| SerializedFileReader::new(f).map_err(|e| e.to_string()))
                .map(|r| r.metadata().file_metadata().num_rows())
                .map_err(|message| ImportError::Read {
                    path: file.path.clone(),
                    message,
                })?;
            if u64::try_from(rows).ok() != Some(file.rows) {
                report.found(archive_finding(
                    &file.path,
                    format!("it holds {rows} rows where the manifest says {}", file.rows),
                ));
            }
            loadable.push(file.path.clone());
        }
    }
    Ok(loadable)
}

/// COPYs every file of `table` into `schema.table`.
async fn load_table(
    tx: &tokio_postgres::Transaction<'_>,
    dir: &Path,
    schema: &str,
    table: &ManifestTable,
    loadable: &[String],
) -> Result<(), ImportError> {
    if !super::archived_tables().any(|t| t == table.table) {
        return Err(ImportError::Incompatible(format!(
            "the archive holds a table {:?} that this version does not archive",
            table.table
        )));
    }
    let known = columns::columns(tx, Some(schema), &table.table).await?;
    for c in &table.columns {
        if !known.iter().any(|k| k.name == c.name) {
            return Err(ImportError::Incompatible(format!(
                "{}.{} is in the archive but not in this version's archive schema",
                table.table, c.name
            )));
        }
    }
    let names: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let copy = format!(
        "COPY {}.{} ({}) FROM STDIN",
        quote_ident(schema),
        quote_ident(&table.table),
        names.join(", ")
    );
    for file in table.files.iter().filter(|f| loadable.contains(&f.path)) {
        let sink = tx
            .copy_in(&copy)
            .await
            .map_err(StoreError::new("loading an archived table"))?;
        futures_util::pin_mut!(sink);
        // the file is decoded on a blocking thread, a megabyte of COPY text at a time
        let (send, mut receive) = tokio::sync::mpsc::channel::<Result<Bytes, ImportError>>(4);
        let path = dir.join(&file.path);
        let columns = table.columns.clone();
        let name = file.path.clone();
        let reader = tokio::task::spawn_blocking(move || decode(&path, &name, &columns, &send));
        while let Some(chunk) = receive.recv().await {
            sink.send(chunk?)
                .await
                .map_err(StoreError::new("loading an archived table"))?;
        }
        reader.await.map_err(|e| ImportError::Read {
            path: file.path.clone(),
            message: e.to_string(),
        })?;
        sink.as_mut()
            .finish()
            .await
            .map_err(StoreError::new("loading an archived table"))?;
    }
    Ok(())
}

/// Reads `path`'s rows as COPY text, in chunks sent to `send` (an error ends it).
fn decode(
    path: &Path,
    name: &str,
    columns: &[Column],
    send: &tokio::sync::mpsc::Sender<Result<Bytes, ImportError>>,
) {
    let fail = |message: String| ImportError::Read {
        path: name.to_string(),
        message,
    };
    let run = || -> Result<(), ImportError> {
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let reader = SerializedFileReader::new(file).map_err(|e| fail(e.to_string()))?;
        let kinds: Vec<_> = columns.iter().map(Column::kind).collect();
        let mut chunk = String::with_capacity(1 << 20);
        for row in reader.get_row_iter(None).map_err(|e| fail(e.to_string()))? {
            let row = row.map_err(|e| fail(e.to_string()))?;
            let mut fields = row.get_column_iter();
            for (i, (column, kind)) in columns.iter().zip(&kinds).enumerate() {
                let (field_name, field) = fields
                    .next()
                    .ok_or_else(|| fail(format!("a row lacks column {}", column.name)))?;
                if *field_name != column.name {
                    return Err(fail(format!(
                        "column {} where the manifest has {}",
                        field_name, column.name
                    )));
                }
                if i > 0 {
                    chunk.push('\t');
                }
                copy_text(&mut chunk, &column.name, *kind, field)
                    .map_err(|e| fail(e.to_string()))?;
            }
            chunk.push('\n');
            if chunk.len() >= 1 << 20 {
                let full = std::mem::replace(&mut chunk, String::with_capacity(1 << 20));
                if send.blocking_send(Ok(Bytes::from(full))).is_err() {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() {
            let _ = send.blocking_send(Ok(Bytes::from(chunk)));
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = send.blocking_send(Err(e));
    }
}

/// The archive's seals: each one's root from its journal entries, the chain, the database's
/// seals of the same ids, the day seal the manifest names and the roots kept elsewhere.
async fn check_seals(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    manifest: &Manifest,
    kept_roots: &[KeptRoot],
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let s = quote_ident(schema);
    let rows = tx
        .query(
            &format!(
                "SELECT s.id, s.prev_root, s.root, s.entries, \
                        (SELECT pg_catalog.string_agg({ENTRY_HASH}, ''::bytea ORDER BY j.seq) \
                         FROM {s}.audit_journal j WHERE j.seal_id = s.id), \
                        (SELECT count(*) FROM {s}.audit_journal j WHERE j.seal_id = s.id), \
                        h.root \
                 FROM {s}.audit_seals s LEFT JOIN audit_seals h ON h.id = s.id ORDER BY s.id"
            ),
            &[],
        )
        .await
        .map_err(StoreError::new("hashing the archived journal"))?;
    let mut day_seal_seen = false;
    for row in &rows {
        let id: i64 = row.get(0);
        let prev: Option<Vec<u8>> = row.get(1);
        let root: Vec<u8> = row.get(2);
        let entries: i64 = row.get(3);
        let hashes: Option<Vec<u8>> = row.get(4);
        let present: i64 = row.get(5);
        let database: Option<Vec<u8>> = row.get(6);
        report.seals += 1;
        report.seals_checked += 1;
        let mut digest = Sha256::new();
        if let Some(prev) = &prev {
            digest.update(prev);
        }
        digest.update(hashes.unwrap_or_default());
        if digest.finalize().as_slice() != root.as_slice() || present != entries {
            report.found(Finding {
                kind: FindingKind::Seal,
                table: "audit_seals".into(),
                key: id.to_string(),
                detail: format!(
                    "the archive's journal entries ({present} of {entries}) do not hash to the archived seal's root"
                ),
            });
        }
        if database.as_ref().is_some_and(|d| d != &root) {
            report.found(Finding {
                kind: FindingKind::Seal,
                table: "audit_seals".into(),
                key: id.to_string(),
                detail: "the archived seal's root differs from the database's seal".into(),
            });
        }
        let root_hex = hex(&root);
        if id == manifest.day_seal.id {
            day_seal_seen = true;
            if root_hex != manifest.day_seal.root {
                report.found(archive_finding(
                    MANIFEST_KEY,
                    format!("the day seal's root differs from the manifest's ({id})"),
                ));
            }
        }
        for kept in kept_roots.iter().filter(|k| k.seal_id == id) {
            report.kept_roots_checked += 1;
            if kept.root.to_ascii_lowercase() != root_hex {
                report.found(Finding {
                    kind: FindingKind::KeptRoot,
                    table: "audit_seals".into(),
                    key: id.to_string(),
                    detail: format!(
                        "the archived seal's root differs from the one kept in {}",
                        kept.source
                    ),
                });
            }
        }
    }
    if !day_seal_seen {
        report.found(archive_finding(
            MANIFEST_KEY,
            format!(
                "the archive lacks the day seal the manifest names ({})",
                manifest.day_seal.id
            ),
        ));
    }
    let orphans: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.audit_journal j \
                 WHERE j.seal_id IS NULL OR j.seal_id NOT IN (SELECT id FROM {s}.audit_seals)"
            ),
            &[],
        )
        .await
        .map_err(StoreError::new("reading the archived journal"))?
        .get(0);
    if orphans > 0 {
        report.found(archive_finding(
            "audit_journal",
            format!("{orphans} archived journal entries name no archived seal"),
        ));
    }
    Ok(())
}

const MANIFEST_KEY: &str = "manifest.json";

/// Every archived row of `table` against its newest journaled version (in the archive, the
/// database's journal and the archives imported before), and the rows the day's journal
/// inserted that the archive lacks.
async fn check_rows(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    manifest: &Manifest,
    table: &ManifestTable,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let Some(covered) = COVERED.iter().find(|c| c.table == table.table) else {
        return Ok(());
    };
    let s = quote_ident(schema);
    let t = quote_ident(&table.table);
    let hash = if covered.hash == ROW_HASH {
        // the row as exported: a column added since is not part of it
        let cols: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect();
        format!(
            "pg_catalog.sha256(pg_catalog.textsend(ROW({})::text))",
            cols.join(", ")
        )
    } else {
        covered.hash.to_string()
    };
    let key = covered.key;
    let journal = if schema == "archive" {
        "SELECT seq, at, table_name, op, keys, hashes FROM archive.audit_journal \
         UNION ALL SELECT seq, at, table_name, op, keys, hashes FROM audit_journal"
            .to_string()
    } else {
        format!(
            "SELECT seq, at, table_name, op, keys, hashes FROM {s}.audit_journal \
             UNION ALL SELECT seq, at, table_name, op, keys, hashes FROM audit_journal \
             UNION ALL SELECT seq, at, table_name, op, keys, hashes FROM archive.audit_journal"
        )
    };
    let rows = tx
        .query(
            &format!(
                "WITH present AS (SELECT {key} AS key, {hash} AS hash FROM {s}.{t} t), \
                 newest AS ( \
                     SELECT DISTINCT ON (u.key) u.key, u.hash, j.seq \
                     FROM ({journal}) j \
                     CROSS JOIN LATERAL unnest(j.keys, j.hashes) AS u(key, hash) \
                     WHERE j.table_name = $1 AND j.op IN ('I', 'U') \
                       AND u.key IN (SELECT key FROM present) \
                     ORDER BY u.key, j.seq DESC) \
                 SELECT p.key, n.seq, (SELECT count(*) FROM present), count(*) OVER () \
                 FROM present p LEFT JOIN newest n ON n.key = p.key \
                 WHERE n.hash IS DISTINCT FROM p.hash \
                 ORDER BY n.seq NULLS FIRST, p.key LIMIT $2"
            ),
            &[&table.table, &PER_CHECK],
        )
        .await
        .map_err(StoreError::new("checking archived rows"))?;
    let mut found = 0;
    for row in &rows {
        let key: String = row.get(0);
        let seq: Option<i64> = row.get(1);
        found = row.get(3);
        report.found(match seq {
            None => Finding {
                kind: FindingKind::Inserted,
                table: table.table.clone(),
                key,
                detail: "in the archive, but no journal entry has it: added to the archive".into(),
            },
            Some(seq) => Finding {
                kind: FindingKind::Altered,
                table: table.table.clone(),
                key,
                detail: format!(
                    "altered in the archive: it differs from its newest journaled version (entry {seq})"
                ),
            },
        });
    }
    report.findings_total += found - i64::try_from(rows.len()).unwrap_or(0);
    let count: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {s}.{t}"), &[])
        .await
        .map_err(StoreError::new("counting archived rows"))?
        .get(0);
    report.tables.push(crate::store::audit::verify::TableCheck {
        table: table.table.clone(),
        rows: count,
        findings: found,
    });
    if u64::try_from(count).ok() != Some(table.rows) {
        report.found(archive_finding(
            &table.table,
            format!(
                "{count} rows were loaded where the manifest lists {}",
                table.rows
            ),
        ));
    }
    // rows the day's journal inserted that the archive lacks (id-keyed tables). A row written
    // in a transaction that began before midnight is journaled just after it but belongs to
    // the day before: the first minutes of the day are left to the manifest's counts.
    if key != "t.id::text" {
        return Ok(());
    }
    let from: DateTime<Utc> = manifest
        .day
        .and_hms_opt(0, 10, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default();
    let to = from - Duration::minutes(10) + Duration::days(1);
    let missing = tx
        .query(
            &format!(
                "WITH present AS (SELECT t.id FROM {s}.{t} t), \
                 bounds AS (SELECT min(id) AS lo, max(id) AS hi FROM present), \
                 journaled AS ( \
                     SELECT DISTINCT u.key::bigint AS id, j.seq \
                     FROM {s}.audit_journal j CROSS JOIN LATERAL unnest(j.keys) AS u(key) \
                     WHERE j.table_name = $1 AND j.op = 'I' AND j.at >= $2 AND j.at < $3 \
                       AND u.key ~ '^[0-9]+$') \
                 SELECT g.id, g.seq, count(*) OVER () FROM journaled g, bounds b \
                 WHERE g.id BETWEEN b.lo AND b.hi \
                   AND NOT EXISTS (SELECT 1 FROM present p WHERE p.id = g.id) \
                   AND NOT EXISTS (SELECT 1 FROM ({journal}) d \
                                   WHERE d.table_name = $1 AND d.op = 'D' \
                                     AND g.id::text = ANY (d.keys)) \
                 ORDER BY g.seq, g.id LIMIT $4"
            ),
            &[&table.table, &from, &to, &PER_CHECK],
        )
        .await
        .map_err(StoreError::new("checking the archive for removed rows"))?;
    let mut total = 0;
    for row in &missing {
        let id: i64 = row.get(0);
        let seq: i64 = row.get(1);
        total = row.get(2);
        report.found(Finding {
            kind: FindingKind::Deleted,
            table: table.table.clone(),
            key: id.to_string(),
            detail: format!(
                "journal entry {seq} inserted it on the archived day, but the archive lacks it"
            ),
        });
    }
    report.findings_total += total - i64::try_from(missing.len()).unwrap_or(0);
    Ok(())
}
