//! `tradegate audit verify`: recomputes every covered row's hash and every seal's root, inside
//! one read-only snapshot, with expressions of its own (not functions stored in the database,
//! which whoever altered the rows could have altered too), and names what differs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, pin_mut};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::{COVERED, Covered};
use crate::store::StoreError;

/// The hash of journal entry `j` (the seal function's expression).
pub(super) const ENTRY_HASH: &str = "pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.concat_ws('|', \
    j.seq, (extract(epoch FROM j.at) * 1000000)::bigint, j.table_name, j.op, j.writer, \
    pg_catalog.to_jsonb(j.keys)::text), 'UTF8') \
    || coalesce((SELECT pg_catalog.string_agg(h, ''::bytea ORDER BY o) \
                 FROM pg_catalog.unnest(j.hashes) WITH ORDINALITY u(h, o)), ''::bytea))";

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only rows written, and journal entries and seals made, at or after this
    pub from: Option<DateTime<Utc>>,
    /// ...and before this
    pub to: Option<DateTime<Utc>>,
    /// Seal roots kept elsewhere (the day files), to compare with the database's
    pub kept_roots: Vec<KeptRoot>,
}

/// A seal's root as kept outside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRoot {
    /// Where it was read (a file name)
    pub source: String,
    /// The seal it names
    pub seal_id: i64,
    /// Its root (hex)
    pub root: String,
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A row differs from its newest journaled version
    Altered,
    /// A journaled row is gone
    Deleted,
    /// A row no journal entry knows (or one journaled as deleted)
    Inserted,
    /// A journal entry written by a session without the writer key
    ForeignWrite,
    /// The journal does not hash to a seal's root, or the chain of seals is broken
    Seal,
    /// A seal's root differs from the one kept outside the database
    KeptRoot,
    /// A day archive's files differ from its manifest, or its manifest from its seal
    Archive,
}

/// One thing verify found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What
    pub kind: FindingKind,
    /// The table (or `audit_seals` / `audit_journal`)
    pub table: String,
    /// The row's key, seal id or journal entry
    pub key: String,
    /// In words
    pub detail: String,
}

/// One table's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// The table
    pub table: String,
    /// Rows whose hash was recomputed
    pub rows: i64,
    /// Rows found altered, deleted or inserted
    pub findings: i64,
}

/// What verify found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Seals whose root was recomputed
    pub seals_checked: i64,
    /// Seals on record
    pub seals: i64,
    /// Journal entries not sealed yet (written after the last seal: not tampering)
    pub unsealed_entries: i64,
    /// Row versions they hold
    pub unsealed_rows: i64,
    /// Kept roots compared
    pub kept_roots_checked: usize,
    /// Each covered table
    pub tables: Vec<TableCheck>,
    /// Everything found, in order (at most [`MAX_FINDINGS`]; `findings_total` counts all)
    pub findings: Vec<Finding>,
    /// How many findings there were
    pub findings_total: i64,
}

/// Findings kept in a report (more are counted).
pub const MAX_FINDINGS: usize = 100;
/// Findings listed per table and kind of check.
const PER_CHECK: i64 = 20;

impl VerifyReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings_total == 0
    }

    /// Rows whose hash was recomputed, over all tables.
    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    fn absorb(&mut self, part: VerifyReport) {
        self.findings_total += part.findings_total;
        let room = MAX_FINDINGS.saturating_sub(self.findings.len());
        self.findings.extend(part.findings.into_iter().take(room));
    }

    pub(crate) fn found(&mut self, finding: Finding) {
        self.findings_total += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(finding);
        }
    }
}

/// The session settings every hash is computed under, and the names it resolves.
pub(super) const SETUP: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; \
     SET LOCAL IntervalStyle = 'postgres'; SET LOCAL bytea_output = 'hex'; \
     SET LOCAL extra_float_digits = 1; SET LOCAL work_mem = '128MB'; \
     SELECT pg_catalog.set_config('search_path', \
         'pg_catalog, ' || pg_catalog.quote_ident(pg_catalog.current_schema()) || ', pg_temp', \
         true)";

/// A read-only snapshot transaction, in `snapshot` (an exported one) when given.
pub(super) async fn start<'a>(
    client: &'a mut Client,
    snapshot: Option<&str>,
) -> Result<tokio_postgres::Transaction<'a>, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(StoreError::new("starting the verification"))?;
    // the snapshot is set before anything else runs in the transaction
    let setup = match snapshot {
        Some(id) => format!("SET TRANSACTION SNAPSHOT {}; {SETUP}", quote_literal(id)),
        None => SETUP.to_string(),
    };
    tx.batch_execute(&setup)
        .await
        .map_err(StoreError::new("starting the verification"))?;
    Ok(tx)
}

/// Verifies the trail as of one snapshot. With a `second` connection, the trade log (most of
/// the rows) is checked on it at the same time as the other tables, in the same snapshot
/// (exported from the first).
pub async fn verify(
    client: &mut Client,
    second: Option<&mut Client>,
    options: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    let tx = start(client, None).await?;
    let (tx2, split) = match second {
        Some(second) => {
            let snapshot: String = tx
                .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
                .await
                .map_err(StoreError::new("sharing the verification's snapshot"))?
                .get(0);
            let tx2 = start(second, Some(&snapshot)).await?;
            (Some(tx2), true)
        }
        None => (None, false),
    };
    let mut report = VerifyReport::default();
    check_seals(&tx, options, &mut report).await?;
    check_foreign(&tx, options, &mut report).await?;
    let big = |c: &&Covered| split && c.table == "tradelog";
    let on_first = async {
        let mut parts = Vec::new();
        for covered in COVERED.iter().filter(|c| !big(c)) {
            parts.push((covered.table, check_table(&tx, covered, options).await?));
        }
        Ok::<_, StoreError>(parts)
    };
    let on_second = async {
        let mut parts = Vec::new();
        if let Some(tx2) = &tx2 {
            for covered in COVERED.iter().filter(big) {
                parts.push((covered.table, check_table(tx2, covered, options).await?));
            }
        }
        Ok::<_, StoreError>(parts)
    };
    let (first, second) = futures_util::future::join(on_first, on_second).await;
    let mut parts: Vec<_> = first?.into_iter().chain(second?).collect();
    // reported in COVERED's order, whichever connection checked the table
    parts.sort_by_key(|(table, _)| COVERED.iter().position(|c| c.table == *table));
    for (_, (check, part)) in parts {
        report.absorb(part);
        report.tables.push(check);
    }
    let row = tx
        .query_one(
            "SELECT count(*), coalesce(sum(cardinality(keys)), 0)::bigint \
             FROM audit_journal WHERE seal_id IS NULL",
            &[],
        )
        .await
        .map_err(StoreError::new("counting unsealed journal entries"))?;
    report.unsealed_entries = row.get(0);
    report.unsealed_rows = row.get(1);
    if let Some(tx2) = tx2 {
        tx2.commit()
            .await
            .map_err(StoreError::new("ending the verification"))?;
    }
    tx.commit()
        .await
        .map_err(StoreError::new("ending the verification"))?;
    Ok(report)
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct StoredSeal {
    prev_root: Option<Vec<u8>>,
    root: Vec<u8>,
    entries: i64,
    rows: i64,
    in_range: bool,
}

async fn check_seals(
    tx: &tokio_postgres::Transaction<'_>,
    options: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT id, prev_root, root, entries, rows, \
                    ($1::timestamptz IS NULL OR last_at IS NULL OR last_at >= $1) \
                    AND ($2::timestamptz IS NULL OR first_at IS NULL OR first_at < $2) \
             FROM audit_seals ORDER BY id",
            &[&options.from, &options.to],
        )
        .await
        .map_err(StoreError::new("reading the seals"))?;
    let mut seals: Vec<(i64, StoredSeal)> = Vec::with_capacity(rows.len());
    for row in &rows {
        seals.push((
            row.get(0),
            StoredSeal {
                prev_root: row.get(1),
                root: row.get(2),
                entries: row.get(3),
                rows: row.get(4),
                in_range: row.get(5),
            },
        ));
    }
    report.seals = i64::try_from(seals.len()).unwrap_or(i64::MAX);
    // the chain: 1, 2, 3, ... each naming the root before it
    let mut previous: Option<&[u8]> = None;
    for (i, (id, seal)) in seals.iter().enumerate() {
        let expected_id = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if *id != expected_id {
            report.found(seal_finding(
                *id,
                format!(
                    "the chain of seals skips from {} to {id}: a seal was removed",
                    expected_id - 1
                ),
            ));
            break;
        }
        if seal.prev_root.as_deref() != previous {
            report.found(seal_finding(
                *id,
                "does not name the root of the seal before it: the chain was rewritten".into(),
            ));
        }
        previous = Some(&seal.root);
    }
    // each seal's root, from its entries as they are now
    let index: HashMap<i64, usize> = seals
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let sql = format!(
        "SELECT j.seal_id, count(*), coalesce(sum(cardinality(j.keys)), 0)::bigint, \
                pg_catalog.string_agg({ENTRY_HASH}, ''::bytea ORDER BY j.seq) \
         FROM audit_journal j WHERE j.seal_id IS NOT NULL \
         GROUP BY j.seal_id ORDER BY j.seal_id"
    );
    let stream = tx
        .query_raw(&sql, std::iter::empty::<i32>())
        .await
        .map_err(StoreError::new("hashing the sealed journal"))?;
    pin_mut!(stream);
    let mut seen = vec![false; seals.len()];
    while let Some(row) = stream.next().await {
        let row = row.map_err(StoreError::new("hashing the sealed journal"))?;
        let seal_id: i64 = row.get(0);
        let entries: i64 = row.get(1);
        let versions: i64 = row.get(2);
        let hashes: Vec<u8> = row.get(3);
        let Some(&i) = index.get(&seal_id) else {
            report.found(Finding {
                kind: FindingKind::Seal,
                table: "audit_journal".into(),
                key: format!("seal {seal_id}"),
                detail: format!(
                    "{entries} journal entries name seal {seal_id}, which does not exist"
                ),
            });
            continue;
        };
        seen[i] = true;
        let seal = &seals[i].1;
        if !seal.in_range {
            continue;
        }
        report.seals_checked += 1;
        check_root(report, seal_id, seal, entries, versions, &hashes);
    }
    for (i, (id, seal)) in seals.iter().enumerate() {
        if !seen[i] && seal.in_range {
            report.seals_checked += 1;
            check_root(report, *id, seal, 0, 0, &[]);
        }
    }
    for kept in &options.kept_roots {
        report.kept_roots_checked += 1;
        match index.get(&kept.seal_id).map(|&i| &seals[i].1) {
            Some(seal) if super::hex(&seal.root) == kept.root.to_ascii_lowercase() => {}
            Some(_) => report.found(Finding {
                kind: FindingKind::KeptRoot,
                table: "audit_seals".into(),
                key: kept.seal_id.to_string(),
                detail: format!(
                    "its root differs from the one kept in {}: the trail was rewritten since",
                    kept.source
                ),
            }),
            None => report.found(Finding {
                kind: FindingKind::KeptRoot,
                table: "audit_seals".into(),
                key: kept.seal_id.to_string(),
                detail: format!(
                    "{} keeps the root of a seal the database no longer has",
                    kept.source
                ),
            }),
        }
    }
    Ok(())
}

fn check_root(
    report: &mut VerifyReport,
    id: i64,
    seal: &StoredSeal,
    entries: i64,
    rows: i64,
    hashes: &[u8],
) {
    let mut digest = Sha256::new();
    if let Some(prev) = &seal.prev_root {
        digest.update(prev);
    }
    digest.update(hashes);
    if digest.finalize().as_slice() == seal.root.as_slice() {
        return;
    }
    let what = if entries < seal.entries || rows < seal.rows {
        format!(
            "journal entries were removed ({entries} of {} entries, {rows} of {} row versions are left)",
            seal.entries, seal.rows
        )
    } else if entries > seal.entries || rows > seal.rows {
        format!(
            "journal entries were added ({entries} entries where {} were sealed)",
            seal.entries
        )
    } else {
        "a journal entry it covers was altered".into()
    };
    report.found(seal_finding(
        id,
        format!("its entries no longer hash to its root: {what}"),
    ));
}

fn seal_finding(id: i64, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Seal,
        table: "audit_seals".into(),
        key: id.to_string(),
        detail,
    }
}

async fn check_foreign(
    tx: &tokio_postgres::Transaction<'_>,
    options: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT seq, at, table_name, op, keys[1], cardinality(keys), count(*) OVER () \
             FROM audit_journal \
             WHERE NOT writer AND ($1::timestamptz IS NULL OR at >= $1) \
               AND ($2::timestamptz IS NULL OR at < $2) \
             ORDER BY seq LIMIT $3",
            &[&options.from, &options.to, &PER_CHECK],
        )
        .await
        .map_err(StoreError::new("finding foreign writes"))?;
    let mut listed = 0;
    let mut total = 0;
    for row in &rows {
        let seq: i64 = row.get(0);
        let at: DateTime<Utc> = row.get(1);
        let op: &str = row.get(3);
        let first: Option<String> = row.get(4);
        let n: i32 = row.get(5);
        total = row.get(6);
        let what = match op {
            "I" => "inserted",
            "U" => "updated",
            "D" => "deleted",
            _ => "retired",
        };
        report.found(Finding {
            kind: FindingKind::ForeignWrite,
            table: row.get(2),
            key: first.unwrap_or_default(),
            detail: format!(
                "{what} {n} row{} at {} by a session without the writer key (journal entry {seq})",
                if n == 1 { "" } else { "s" },
                at.format("%Y-%m-%d %H:%M:%S%.6f UTC")
            ),
        });
        listed += 1;
    }
    // the rest are counted, not listed
    report.findings_total += total - listed;
    Ok(())
}

async fn check_table(
    tx: &tokio_postgres::Transaction<'_>,
    covered: &Covered,
    options: &VerifyOptions,
) -> Result<(TableCheck, VerifyReport), StoreError> {
    let mut part = VerifyReport::default();
    let report = &mut part;
    let Covered {
        table,
        key,
        written_at,
        hash,
    } = *covered;
    let ranged = options.from.is_some() || options.to.is_some();
    // in a range: the rows written in it and every row a journal entry of it touched
    let (touched, present_filter, pair_filter) = if ranged {
        (
            "touched AS (SELECT DISTINCT u.key FROM audit_journal j \
                 CROSS JOIN LATERAL pg_catalog.unnest(j.keys) AS u(key) \
                 WHERE j.table_name = $1 AND ($2::timestamptz IS NULL OR j.at >= $2) \
                   AND ($3::timestamptz IS NULL OR j.at < $3)),"
                .to_string(),
            format!(
                "WHERE (($2::timestamptz IS NULL OR t.{written_at} >= $2) \
                   AND ($3::timestamptz IS NULL OR t.{written_at} < $3)) \
                   OR {key} IN (SELECT key FROM touched)"
            ),
            "AND (p.key IS NOT NULL OR n.key IN (SELECT key FROM touched))",
        )
    } else {
        (String::new(), String::new(), "")
    };
    let sql = format!(
        "WITH {touched} newest AS ( \
             SELECT DISTINCT ON (u.key) u.key, u.hash, j.op, j.seq \
             FROM audit_journal j \
             CROSS JOIN LATERAL unnest(j.keys, j.hashes) AS u(key, hash) \
             WHERE j.table_name = $1 ORDER BY u.key, j.seq DESC), \
         present AS (SELECT {key} AS key, {hash} AS hash FROM {table} t {present_filter}), \
         compared AS ( \
             SELECT coalesce(p.key, n.key) AS key, p.key IS NOT NULL AS here, n.seq, \
                 CASE WHEN p.key IS NULL THEN 'deleted' \
                      WHEN n.key IS NULL OR n.op IN ('D', 'R') THEN 'inserted' \
                      WHEN n.hash IS DISTINCT FROM p.hash THEN 'altered' END AS kind \
             FROM present p FULL JOIN newest n ON n.key = p.key \
             WHERE (p.key IS NOT NULL OR n.op IN ('I', 'U')) {pair_filter}) \
         SELECT count(*) FILTER (WHERE here), count(kind), \
             (array_agg(key ORDER BY seq NULLS LAST, key) FILTER (WHERE kind IS NOT NULL))[1:$4], \
             (array_agg(kind ORDER BY seq NULLS LAST, key) FILTER (WHERE kind IS NOT NULL))[1:$4], \
             (array_agg(seq ORDER BY seq NULLS LAST, key) FILTER (WHERE kind IS NOT NULL))[1:$4] \
         FROM compared"
    );
    let per_check = PER_CHECK as i32;
    let row = if ranged {
        tx.query_one(&sql, &[&table, &options.from, &options.to, &per_check])
            .await
    } else {
        // the same numbering, without the range's parameters
        let sql = sql.replace("$4", "$2");
        tx.query_one(&sql, &[&table, &per_check]).await
    }
    .map_err(StoreError::new("recomputing row hashes"))?;
    let rows: i64 = row.get(0);
    let found: i64 = row.get(1);
    let keys: Option<Vec<String>> = row.get(2);
    let kinds: Option<Vec<String>> = row.get(3);
    let seqs: Option<Vec<Option<i64>>> = row.get(4);
    let (keys, kinds, seqs) = (
        keys.unwrap_or_default(),
        kinds.unwrap_or_default(),
        seqs.unwrap_or_default(),
    );
    for ((key, kind), seq) in keys.into_iter().zip(kinds).zip(seqs) {
        let (kind, detail) = match kind.as_str() {
            "deleted" => (
                FindingKind::Deleted,
                format!(
                    "deleted behind the gateway's back (journal entry {} has it)",
                    seq.unwrap_or_default()
                ),
            ),
            "inserted" => (
                FindingKind::Inserted,
                match seq {
                    Some(seq) => format!(
                        "present although journal entry {seq} has it deleted: inserted behind the gateway's back"
                    ),
                    None => "inserted behind the gateway's back (no journal entry has it)".into(),
                },
            ),
            _ => (
                FindingKind::Altered,
                format!(
                    "altered behind the gateway's back: it differs from its newest journaled version (entry {})",
                    seq.unwrap_or_default()
                ),
            ),
        };
        report.found(Finding {
            kind,
            table: table.to_string(),
            key,
            detail,
        });
    }
    let listed_here = found.min(PER_CHECK);
    report.findings_total += found - listed_here;
    Ok((
        TableCheck {
            table: table.to_string(),
            rows,
            findings: found,
        },
        part,
    ))
}
