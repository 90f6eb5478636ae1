//! Day archives over a real PostgreSQL: a sealed day exported as Parquet reads back in pyarrow
//! (a reader that is not ours) with the database's rows; trade-log retention archives the day
//! before it drops the partition; the archive imports into the read-only `archive` schema,
//! where a decision past the hot window still has its trade-log events in its lineage and the
//! symbol report names the archived day; an archive changed after its export (even with its
//! manifest rewritten to match) is found and not imported.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use tokio_postgres::{Client, NoTls};
use tradegate_actors::store::audit::archive::{self, ImportError, ImportTarget, Manifest};
use tradegate_actors::store::audit::seals::{self, SealKind};
use tradegate_actors::store::audit::{FindingKind, VerifyReport, WriterKey, writer};
use tradegate_actors::store::reports::{self, Range};
use tradegate_actors::trade_log_writer::{TradeLogConfig, run_maintenance};

use common::{TestDb, python, scratch_dir};

async fn gateway_connection(conninfo: &str) -> Client {
    writer::install(WriterKey::random());
    let mut client = tradegate_actors::store::connect(conninfo, Duration::from_secs(10))
        .await
        .unwrap();
    writer::register(&mut client).await.unwrap();
    client
}

async fn foreign(conninfo: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Yesterday (UTC), seeded and sealed.
async fn sealed_day(client: &mut Client) -> NaiveDate {
    let day = Utc::now().date_naive() - Days::new(1);
    tradegate_actors::store::ensure_tradelog_partitions(client, day - Days::new(1), 4)
        .await
        .unwrap();
    tradegate_actors::store::seed::seed_day(client, day, 20, 1)
        .await
        .unwrap();
    seals::seal(client, SealKind::Interval, None)
        .await
        .unwrap()
        .expect("a seal");
    day
}

async fn pyarrow() -> PathBuf {
    tokio::task::spawn_blocking(|| python::with_module("pyarrow", "pyarrow==18.1.0"))
        .await
        .unwrap()
}

async fn read_with_pyarrow(python: &Path, dir: &Path) -> serde_json::Value {
    python::run_json(
        python,
        "parquet_rows.py",
        &["read".into(), dir.display().to_string()],
    )
    .await
}

/// The database's rows of the day, each as pyarrow's reading gives it: `(table, rows)`.
async fn database_rows(
    client: &Client,
    manifest: &Manifest,
    table: &str,
) -> Vec<serde_json::Value> {
    let entry = manifest.tables.iter().find(|t| t.table == table).unwrap();
    let exprs: Vec<String> = entry
        .columns
        .iter()
        .map(|c| {
            let col = format!("t.\"{}\"", c.name);
            match c.typname.as_str() {
                "int2" | "int4" | "int8" | "bool" | "_text" => col,
                "timestamptz" => format!("(extract(epoch FROM {col}) * 1000000)::int8"),
                "date" => format!("({col} - DATE '1970-01-01')"),
                "bytea" => format!("encode({col}, 'hex')"),
                "_bytea" => format!(
                    "ARRAY(SELECT encode(x, 'hex') FROM unnest({col}) WITH ORDINALITY u(x, o) \
                     ORDER BY o)"
                ),
                _ => format!("{col}::text"),
            }
        })
        .collect();
    let filter = match table {
        "tradelog" => "t.local_ts_us >= (extract(epoch FROM $1::date::timestamptz) * 1e6)::int8 \
            AND t.local_ts_us < (extract(epoch FROM ($1::date + 1)::timestamptz) * 1e6)::int8"
            .to_string(),
        _ => {
            let at = tradegate_actors::store::audit::COVERED
                .iter()
                .find(|c| c.table == table)
                .unwrap()
                .written_at;
            format!("t.{at} >= $1::date::timestamptz AND t.{at} < ($1::date + 1)::timestamptz")
        }
    };
    client
        .batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT coalesce(json_agg(json_build_array({}) ORDER BY 1), '[]')::text \
                 FROM {table} t WHERE {filter}",
                exprs.join(", ")
            ),
            &[&manifest.day],
        )
        .await
        .unwrap();
    let mut rows: Vec<serde_json::Value> = serde_json::from_str(row.get(0)).unwrap();
    rows.sort_by_key(|r| r[0].to_string());
    rows
}

fn findings_of(report: &VerifyReport, kind: FindingKind, table: &str) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.kind == kind && f.table == table)
        .count()
}

#[tokio::test]
async fn a_day_archive_reads_back_in_pyarrow_and_answers_lineage_past_the_hot_window() {
    let db = TestDb::new().await;
    let mut client = gateway_connection(&db.conninfo).await;
    let day = sealed_day(&mut client).await;
    let python = pyarrow().await;

    // exported by hand: every table's rows of the day, as the database holds them
    let by_hand = scratch_dir("archive-by-hand");
    let manifest = archive::export_day(&mut client, day, &by_hand, None)
        .await
        .unwrap();
    assert_eq!(manifest.day, day);
    let dir = archive::day_dir(&by_hand, day);
    assert!(dir.join("manifest.json").exists());
    assert!(
        !dir.with_extension("partial").exists(),
        "the partial directory is renamed into place"
    );
    let read = read_with_pyarrow(&python, &dir).await;
    for table in [
        "trade_decisions",
        "trade_executions",
        "broker_order_events",
        "order_rejects",
        "data_ingestion_run_records",
        "tradelog",
    ] {
        let expected = database_rows(&client, &manifest, table).await;
        assert!(!expected.is_empty(), "{table} has rows of the day");
        let got = read[table].as_array().unwrap();
        assert_eq!(got.len(), expected.len(), "{table}: row count");
        assert_eq!(got, &expected, "{table}: pyarrow reads the database's rows");
        let listed = manifest.tables.iter().find(|t| t.table == table).unwrap();
        assert_eq!(
            listed.rows as usize,
            expected.len(),
            "{table}: manifest count"
        );
    }
    assert!(
        !read["audit_journal"].as_array().unwrap().is_empty()
            && !read["audit_seals"].as_array().unwrap().is_empty(),
        "the journal and seals that cover the day are archived"
    );
    let seal_root: Vec<u8> = client
        .query_one(
            "SELECT root FROM audit_seals WHERE id = $1",
            &[&manifest.day_seal.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        manifest.day_seal.root,
        tradegate_actors::store::audit::hex(&seal_root)
    );
    // a day is exported once
    assert!(matches!(
        archive::export_day(&mut client, day, &by_hand, None).await,
        Err(archive::ExportError::Exists(_))
    ));

    // retention: the day's partition leaves the hot table, archived first
    let exports = scratch_dir("archive-retention");
    let config = TradeLogConfig {
        hot_days: 1,
        export_dir: exports.clone(),
        ..TradeLogConfig::default()
    };
    let report = run_maintenance(&db.conninfo, &config, day + Days::new(2))
        .await
        .unwrap();
    // (with the empty partition of the day before, made ahead)
    assert_eq!(report.dropped, vec![day - Days::new(1), day]);
    assert!(
        report
            .archived
            .contains(&(day, archive::day_dir(&exports, day))),
        "{report:?}"
    );
    let retained = read_with_pyarrow(&python, &archive::day_dir(&exports, day)).await;
    assert_eq!(
        retained["tradelog"], read["tradelog"],
        "the retention archive holds the dropped partition's rows"
    );
    let hot: i64 = client
        .query_one("SELECT count(*) FROM tradelog", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hot, 0, "the partition was dropped");

    // a decision of the day with trade-log events: before the import, its timeline lost them
    let decision: uuid::Uuid = client
        .query_one(
            "SELECT decision_id FROM trade_decisions WHERE created_at >= $1::date::timestamptz \
             AND created_at < ($1::date + 1)::timestamptz AND status = 'executed' \
             ORDER BY id LIMIT 1",
            &[&day],
        )
        .await
        .unwrap()
        .get(0);
    let before = reports::lineage(&client, decision).await.unwrap().unwrap();
    assert!(before.timeline.iter().all(|t| t.trail != "tradelog"));
    assert!(before.from_archive.is_empty());

    let (_, checked) = archive::load_and_check(
        &mut client,
        &archive::day_dir(&exports, day),
        ImportTarget::Archive,
        &[],
    )
    .await
    .unwrap();
    assert!(checked.is_clean(), "{:?}", checked.findings);
    assert!(checked.rows() > 0 && checked.seals_checked > 0);
    let after = reports::lineage(&client, decision).await.unwrap().unwrap();
    let logged = after
        .timeline
        .iter()
        .filter(|t| t.trail == "tradelog")
        .count();
    assert!(
        logged > 0,
        "the archive's trade-log events are in the timeline"
    );
    assert!(
        after
            .from_archive
            .iter()
            .any(|s| s == &format!("{logged} trade-log events")),
        "{:?}",
        after.from_archive
    );
    let symbol = after.decision.symbol.clone();
    let from = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let activity = reports::symbol_activity(
        &client,
        &symbol,
        Range {
            from,
            to: from + chrono::Duration::days(1),
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(activity.archived_days, vec![day]);
    assert!(activity.archived_tradelog_events >= logged as i64);

    // imported once; read-only for everyone, the writer included
    assert!(matches!(
        archive::load_and_check(&mut client, &dir, ImportTarget::Archive, &[]).await,
        Err(ImportError::AlreadyImported(d)) if d == day
    ));
    for who in [foreign(&db.conninfo).await, client] {
        let err = who
            .execute("UPDATE archive.trade_decisions SET status = 'failed'", &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        let err = who
            .execute("DELETE FROM archive.tradelog", &[])
            .await
            .unwrap_err();
        let message = err.as_db_error().map(|e| e.message().to_string());
        assert!(
            message.as_deref().is_some_and(|m| m.contains("read-only")),
            "{message:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[tokio::test]
async fn a_changed_archive_is_found_and_not_imported() {
    let db = TestDb::new().await;
    let mut client = gateway_connection(&db.conninfo).await;
    let day = sealed_day(&mut client).await;
    let python = pyarrow().await;
    let exports = scratch_dir("archive-tamper");
    archive::export_day(&mut client, day, &exports, None)
        .await
        .unwrap();
    let clean = archive::day_dir(&exports, day);
    let (_, report) = archive::load_and_check(&mut client, &clean, ImportTarget::Check, &[])
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);

    // a decision's status rewritten, the file's hash in the manifest updated to match
    let altered = exports.join("altered");
    copy_dir(&clean, &altered);
    python::run_json(
        &python,
        "parquet_rows.py",
        &[
            "alter".into(),
            altered.display().to_string(),
            "trade_decisions".into(),
            "status".into(),
            "cancelled".into(),
        ],
    )
    .await;
    let (_, report) = archive::load_and_check(&mut client, &altered, ImportTarget::Check, &[])
        .await
        .unwrap();
    assert_eq!(
        findings_of(&report, FindingKind::Altered, "trade_decisions"),
        1,
        "{:?}",
        report.findings
    );
    assert_eq!(report.findings_total, 1, "{:?}", report.findings);
    // nothing of it is imported
    let (_, report) = archive::load_and_check(&mut client, &altered, ImportTarget::Archive, &[])
        .await
        .unwrap();
    assert!(!report.is_clean());
    let kept: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM archive.trade_decisions) + \
                    (SELECT count(*) FROM archive.days)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "an archive that does not check is not imported");

    // a file that no longer matches its manifest, and a manifest that names another root
    let edited = exports.join("edited");
    copy_dir(&clean, &edited);
    edit_manifest(&edited, |m| {
        m["tables"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t["table"] == "order_rejects")
            .unwrap()["files"][0]["sha256"] = "00".repeat(32).into();
        m["day_seal"]["root"] = "ab".repeat(32).into();
    });
    let (_, report) = archive::load_and_check(&mut client, &edited, ImportTarget::Check, &[])
        .await
        .unwrap();
    assert_eq!(
        findings_of(&report, FindingKind::Archive, "archive"),
        2,
        "{:?}",
        report.findings
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.key == "order_rejects.parquet" && f.detail.contains("SHA-256"))
    );

    // a journal entry of the archive changed: its seal no longer hashes
    let journal = exports.join("journal");
    copy_dir(&clean, &journal);
    python::run_json(
        &python,
        "parquet_rows.py",
        &[
            "alter".into(),
            journal.display().to_string(),
            "audit_journal".into(),
            "table_name".into(),
            "tampered".into(),
        ],
    )
    .await;
    let (_, report) = archive::load_and_check(&mut client, &journal, ImportTarget::Check, &[])
        .await
        .unwrap();
    assert!(
        findings_of(&report, FindingKind::Seal, "audit_seals") >= 1,
        "{:?}",
        report.findings
    );

    // a missing manifest is a clear error
    let empty = exports.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = archive::load_and_check(&mut client, &empty, ImportTarget::Check, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

/// One simulated day of load: `n` payloads (about 2 KB each) written on `day`, half of them
/// referenced by API call logs.
async fn day_of_payloads(client: &Client, run: i64, day: NaiveDate, n: i64) {
    let noon = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
    client
        .execute(
            "WITH p AS ( \
                 INSERT INTO api_payloads (type, payload, source, captured_at, created_at) \
                 SELECT CASE WHEN g % 2 = 0 THEN 'ApiRequest' ELSE 'ApiResponse' END, \
                        jsonb_build_object('n', g, 'pad', repeat('x', 2000)), \
                        'https://data.example/v1/bulk', $2::timestamptz + g * interval '1 second', \
                        $2::timestamptz + g * interval '1 second' \
                 FROM generate_series(1, $3::bigint) g RETURNING id, type) \
             INSERT INTO api_call_logs (data_ingestion_run_id, api_request_payload_id, endpoint, \
                 http_method, http_status_code, created_at) \
             SELECT $1, id, '/v1/bulk', 'GET', 200, $2 FROM p \
             WHERE type = 'ApiRequest' AND id % 4 = 0",
            &[&run, &noon, &n],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn archived_payloads_past_retention_go_and_the_table_stays_within_the_window() {
    let db = TestDb::new().await;
    let mut client = gateway_connection(&db.conninfo).await;
    let run: i64 = client
        .query_one(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at) \
             VALUES (gen_random_uuid(), 'bulk', 'example', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let exports = scratch_dir("archive-retention-load");
    const PER_DAY: i64 = 200;
    const WINDOW: i64 = 3;
    let first = Utc::now().date_naive() - Days::new(20);
    let mut sizes = Vec::new();
    // twelve days of continuous load, each day archived, then retention as of its end
    for k in 0..12_i64 {
        let day = first + Days::new(k as u64);
        day_of_payloads(&client, run, day, PER_DAY).await;
        seals::seal(&client, SealKind::Interval, None)
            .await
            .unwrap();
        let manifest = archive::export_day(&mut client, day, &exports, None)
            .await
            .unwrap();
        let listed = manifest
            .tables
            .iter()
            .find(|t| t.table == "api_payloads")
            .unwrap()
            .rows;
        assert_eq!(listed, PER_DAY as u64);
        let now = (day + Days::new(1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
        let before = now - chrono::Duration::days(WINDOW);
        tradegate_actors::store::retention::purge_payloads(&client, before, 64)
            .await
            .unwrap();
        let held: i64 = client
            .query_one("SELECT count(*) FROM api_payloads", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            held,
            (k + 1).min(WINDOW) * PER_DAY,
            "day {k}: only the window's payloads are kept, referenced or not"
        );
        client.batch_execute("VACUUM api_payloads").await.unwrap();
        let size: i64 = client
            .query_one("SELECT pg_total_relation_size('api_payloads')", &[])
            .await
            .unwrap()
            .get(0);
        sizes.push(size);
    }
    // the table's storage levels off: the last days take no more room than the first full window
    let full = sizes[WINDOW as usize];
    assert!(
        sizes[WINDOW as usize..].iter().all(|&s| s <= full * 3 / 2),
        "api_payloads keeps growing: {sizes:?}"
    );
    // the references stay, and say which archive holds their payload
    let (referenced, dir): (i64, Option<String>) = {
        let row = client
            .query_one(
                "SELECT c.api_request_payload_id, a.dir FROM api_call_logs c \
                 LEFT JOIN audit_archives a \
                   ON c.api_request_payload_id BETWEEN a.payload_first_id AND a.payload_last_id \
                 ORDER BY c.id LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let dir = PathBuf::from(dir.expect("the first day's archive holds its payloads"));
    assert_eq!(
        dir,
        std::fs::canonicalize(archive::day_dir(&exports, first)).unwrap()
    );
    let gone: i64 = client
        .query_one(
            "SELECT count(*) FROM api_payloads WHERE id = $1",
            &[&referenced],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "a referenced payload of an archived day goes");
    // ...and the archive reads it back
    let (_, report) = archive::load_and_check(&mut client, &dir, ImportTarget::Archive, &[])
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let back: i64 = client
        .query_one(
            "SELECT count(*) FROM archive.api_payloads WHERE id = $1",
            &[&referenced],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, 1);

    // a day whose archive changed after its export keeps its payloads
    let day = first + Days::new(12);
    day_of_payloads(&client, run, day, PER_DAY).await;
    seals::seal(&client, SealKind::Interval, None)
        .await
        .unwrap();
    archive::export_day(&mut client, day, &exports, None)
        .await
        .unwrap();
    edit_manifest(&archive::day_dir(&exports, day), |m| {
        m["exported_at"] = "2000-01-01T00:00:00Z".into();
    });
    let far = (day + Days::new(30))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    tradegate_actors::store::retention::purge_payloads(&client, far, 64)
        .await
        .unwrap();
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM api_payloads WHERE created_at >= $1::date::timestamptz",
            &[&day],
        )
        .await
        .unwrap()
        .get(0);
    // (unreferenced payloads past retention go whatever the archive, as they always did)
    assert_eq!(
        kept,
        PER_DAY / 4,
        "an archive that changed is not trusted with the day's referenced payloads"
    );

    // every delete was the gateway's: the trail verifies
    let mut a = foreign(&db.conninfo).await;
    let mut b = foreign(&db.conninfo).await;
    seals::seal(&client, SealKind::Interval, None)
        .await
        .unwrap();
    let verified = tradegate_actors::store::audit::verify::verify(
        &mut a,
        Some(&mut b),
        &tradegate_actors::store::audit::VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert!(verified.is_clean(), "{:?}", verified.findings);
}
