//! Tamper evidence over a real PostgreSQL: a trail written by the gateway's key (seeded days,
//! legitimate status changes, every covered table) verifies clean; then, table by table, each
//! of an edit, a delete and an insert made behind the gateway's back (with the triggers
//! switched off, as a superuser could; and with them on) is found and named by `audit verify`,
//! as are a removed or altered journal entry, a rewritten seal and a day root kept elsewhere
//! that no longer matches.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use tokio_postgres::{Client, NoTls};
use tradegate_actors::store::audit::seals::{self, SealKind};
use tradegate_actors::store::audit::verify::{self, KeptRoot};
use tradegate_actors::store::audit::{COVERED, FindingKind, VerifyOptions, WriterKey, writer};

use common::{TestDb, with_dbname};

/// A connection without the writer key: someone with database access, not the gateway.
async fn foreign(conninfo: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A writer-key connection (this process's key is installed first).
async fn gateway_connection(conninfo: &str) -> Client {
    writer::install(WriterKey::random());
    tradegate_actors::store::connect(conninfo, Duration::from_secs(10))
        .await
        .unwrap()
}

async fn verify_db(conninfo: &str) -> verify::VerifyReport {
    let mut client = foreign(conninfo).await;
    let mut second = foreign(conninfo).await;
    verify::verify(&mut client, Some(&mut second), &VerifyOptions::default())
        .await
        .unwrap()
}

/// The trail of the test: two seeded days (runs, records, decisions, payloads, executions,
/// broker events, refusals, IBKR trades and fills, trade-log rows), an API call, an operator
/// action, a state correction and a decision taken from pending to executed, all sealed.
async fn write_trail(db: &TestDb) {
    let mut client = gateway_connection(&db.conninfo).await;
    writer::register(&mut client).await.unwrap();
    assert!(writer::is_writer(&client).await.unwrap());
    let today = Utc::now().date_naive();
    tradegate_actors::store::ensure_tradelog_partitions(&client, today - chrono::Days::new(3), 5)
        .await
        .unwrap();
    for back in [2, 1] {
        let day = today - chrono::Days::new(back);
        tradegate_actors::store::seed::seed_day(&mut client, day, 20, 1)
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO api_call_logs (data_ingestion_run_id, endpoint, http_method, \
                 http_status_code, duration_ms) \
             SELECT id, '/v1/bulk/congresstrading', 'GET', 200, 12 FROM data_ingestion_runs \
             ORDER BY id LIMIT 2;
             INSERT INTO operator_actions (actor, action, target, reason) \
             VALUES ('ops', 'kill_switch.set', 'kill_switch', 'test');",
        )
        .await
        .unwrap();
    // a decision as the order path takes it: pending, then executed with its execution
    let id: i64 = client
        .query_one(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
                 symbol, side, quantity, order_type, limit_price, time_in_force, \
                 decision_rationale, status) \
             SELECT gen_random_uuid(), strategy_name, strategy_version, account, symbol, side, \
                    quantity, order_type, limit_price, time_in_force, decision_rationale, \
                    'pending' \
             FROM trade_decisions ORDER BY id LIMIT 1 RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "UPDATE trade_decisions SET status = 'executed', executed_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO order_state_corrections (entity, trade_decision_id, from_status, \
                 to_status, reason) VALUES ('decision', $1, 'pending', 'executed', 'test')",
            &[&id],
        )
        .await
        .unwrap();
    let sealed = seals::seal(&client, SealKind::Interval, None)
        .await
        .unwrap()
        .expect("a seal");
    assert_eq!(sealed.id, 1);
    assert!(sealed.rows > 100, "{sealed:?}");
    assert!(
        seals::seal(&client, SealKind::Interval, None)
            .await
            .unwrap()
            .is_none()
    );
}

/// What one tamper does to `table`, as SQL (the key of its victim row is `key`).
fn tamper_sql(table: &str, kind: FindingKind, key_sql: &str) -> String {
    let victim = format!("(SELECT min(k) FROM (SELECT {key_sql} AS k FROM {table} t) v)");
    match kind {
        FindingKind::Altered => {
            let set = match table {
                "tradelog" => "symbol = 'EVIL'",
                "data_ingestion_run_records" => "operation = 'skipped'",
                "audit_writers" => "registered_at = registered_at - interval '1 day'",
                "operator_actions" | "order_state_corrections" => "reason = 'nothing happened'",
                "order_rejects" => "rejected_at = rejected_at + interval '1 second'",
                "broker_order_events" => "qty = qty + 1",
                _ => "created_at = created_at + interval '1 microsecond'",
            };
            format!("UPDATE {table} t SET {set} WHERE {key_sql} = {victim}")
        }
        FindingKind::Deleted => format!("DELETE FROM {table} t WHERE {key_sql} = {victim}"),
        _ => {
            let patch = match table {
                "tradelog" => {
                    "jsonb_build_object('id', 900000001, 'event_id', gen_random_uuid())".to_string()
                }
                "data_ingestion_run_records" => "jsonb_build_object('record_id', 'forged')".into(),
                "audit_writers" => "jsonb_build_object('id', 900000001, 'key_sha256', \
                     '\\x' || repeat('ab', 32))"
                    .into(),
                "broker_order_events" => {
                    "jsonb_build_object('id', 900000001, 'event_key', 'forged')".into()
                }
                "broker_fills" => "jsonb_build_object('id', 900000001, 'exec_id', 'forged.01', \
                     'exec_id_base', 'forged')"
                    .into(),
                "broker_trades" => {
                    "jsonb_build_object('id', 900000001, 'ib_perm_id', 900000001)".into()
                }
                "trade_decisions" => {
                    "jsonb_build_object('id', 900000001, 'decision_id', gen_random_uuid())".into()
                }
                "trade_executions" => {
                    "jsonb_build_object('id', 900000001, 'execution_id', gen_random_uuid(), \
                     'trade_decision_id', (SELECT max(id) FROM trade_decisions))"
                        .into()
                }
                "data_ingestion_runs" => {
                    "jsonb_build_object('id', 900000001, 'run_id', gen_random_uuid())".into()
                }
                _ => "jsonb_build_object('id', 900000001)".into(),
            };
            let columns = format!(
                "(SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped \
                 AND attgenerated = '')"
            );
            // a copy of an existing row under a new key, every column given (identity too)
            format!(
                "DO $$ DECLARE cols TEXT := {columns}; BEGIN \
                 EXECUTE format('INSERT INTO {table} (%s) OVERRIDING SYSTEM VALUE \
                     SELECT %s FROM jsonb_populate_record(NULL::{table}, \
                     (SELECT to_jsonb(t) FROM {table} t LIMIT 1) || %s) r', \
                     cols, cols, quote_literal(({patch})::text)); END $$"
            )
        }
    }
}

/// A database copied from `template` for one case, dropped afterwards.
struct Copy {
    admin: String,
    name: String,
    conninfo: String,
}

impl Copy {
    async fn of(template: &TestDb, label: &str) -> Self {
        let admin = with_dbname(&template.conninfo, "postgres");
        let name = format!("tg_tamper_{label}_{}", uuid::Uuid::new_v4().simple());
        let source = template_name(&template.conninfo);
        foreign(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {source}"))
            .await
            .unwrap();
        Self {
            conninfo: with_dbname(&template.conninfo, &name),
            admin,
            name,
        }
    }

    async fn drop(self) {
        foreign(&self.admin)
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

fn template_name(conninfo: &str) -> String {
    conninfo
        .split_whitespace()
        .find_map(|p| p.strip_prefix("dbname="))
        .map(str::to_string)
        .or_else(|| {
            conninfo
                .rsplit('/')
                .next()
                .map(|s| s.split('?').next().unwrap_or(s).to_string())
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_behind_the_gateways_back_is_found_and_an_untouched_trail_verifies() {
    let db = TestDb::new().await;
    write_trail(&db).await;

    // untouched: clean, every covered table checked, legitimate status changes included
    let clean = verify_db(&db.conninfo).await;
    assert!(clean.is_clean(), "{:#?}", clean.findings);
    assert_eq!(clean.seals_checked, 1);
    assert_eq!(clean.unsealed_entries, 0);
    for t in &clean.tables {
        assert!(t.rows > 0, "no rows of {} were checked", t.table);
    }

    // rows written after the last seal are unsealed, not tampering
    {
        let client = gateway_connection(&db.conninfo).await;
        client
            .batch_execute(
                "INSERT INTO operator_actions (actor, action, reason) VALUES ('ops', 'x', 'later')",
            )
            .await
            .unwrap();
        let later = verify_db(&db.conninfo).await;
        assert!(later.is_clean(), "{:#?}", later.findings);
        assert_eq!((later.unsealed_entries, later.unsealed_rows), (1, 1));
        seals::seal(&client, SealKind::Interval, None)
            .await
            .unwrap()
            .unwrap();
    }

    // each table: edit, delete and insert with the triggers off; an insert with them on
    let mut cases = 0;
    for covered in COVERED {
        let table = covered.table;
        for kind in [
            FindingKind::Altered,
            FindingKind::Deleted,
            FindingKind::Inserted,
        ] {
            let copy = Copy::of(&db, &format!("{kind:?}").to_lowercase()).await;
            let client = foreign(&copy.conninfo).await;
            client
                .batch_execute(&format!(
                    "SET session_replication_role = replica; {}",
                    tamper_sql(table, kind, covered.key)
                ))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{kind:?} on {table}: {}",
                        tradegate_actors::store::describe(&e)
                    )
                });
            let report = verify_db(&copy.conninfo).await;
            assert!(!report.is_clean(), "{kind:?} on {table} went unnoticed");
            let first = &report.findings[0];
            assert_eq!(
                (first.kind, first.table.as_str()),
                (kind, table),
                "{kind:?} on {table}: {:#?}",
                report.findings
            );
            drop(client);
            copy.drop().await;
            cases += 1;
        }
        // with the triggers on: journaled, as a session without the writer key
        let copy = Copy::of(&db, "foreign").await;
        let client = foreign(&copy.conninfo).await;
        match client
            .batch_execute(&tamper_sql(table, FindingKind::Inserted, covered.key))
            .await
        {
            Ok(()) => {
                let report = verify_db(&copy.conninfo).await;
                assert!(
                    report
                        .findings
                        .iter()
                        .any(|f| f.kind == FindingKind::ForeignWrite && f.table == table),
                    "a foreign insert into {table}: {:#?}",
                    report.findings
                );
            }
            // tables whose history the database itself refuses to change
            Err(e) => assert!(
                e.code()
                    .is_some_and(|c| c.code().starts_with("42") || c.code().starts_with("23")),
                "{table}: {e}"
            ),
        }
        drop(client);
        copy.drop().await;
    }
    assert_eq!(cases, 3 * COVERED.len());

    // the journal and the seals themselves
    for (label, sql, expect) in [
        (
            "journal_delete",
            "SET session_replication_role = replica; \
             DELETE FROM audit_journal WHERE seq = (SELECT max(seq) FROM audit_journal WHERE seal_id = 1)",
            FindingKind::Seal,
        ),
        (
            "journal_edit",
            "SET session_replication_role = replica; \
             UPDATE audit_journal SET writer = NOT writer WHERE seq = (SELECT min(seq) FROM audit_journal)",
            FindingKind::Seal,
        ),
        (
            "seal_root",
            "SET session_replication_role = replica; \
             UPDATE audit_seals SET root = sha256('forged') WHERE id = 1",
            FindingKind::Seal,
        ),
    ] {
        let copy = Copy::of(&db, label).await;
        foreign(&copy.conninfo)
            .await
            .batch_execute(sql)
            .await
            .unwrap();
        let report = verify_db(&copy.conninfo).await;
        assert_eq!(
            report.findings.first().map(|f| f.kind),
            Some(expect),
            "{label}: {:#?}",
            report.findings
        );
        copy.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_trail_is_found_by_the_day_root_kept_elsewhere() {
    let db = TestDb::new().await;
    write_trail(&db).await;
    let client = gateway_connection(&db.conninfo).await;
    let yesterday = Utc::now().date_naive() - chrono::Days::new(1);
    let day = seals::seal(&client, SealKind::Day, Some(yesterday))
        .await
        .unwrap()
        .expect("a day seal");
    // one day seal per day
    assert!(
        seals::seal(&client, SealKind::Day, Some(yesterday))
            .await
            .unwrap()
            .is_none()
    );

    // the day file, as the Reporter writes it, read back by verify
    let dir = common::scratch_dir("seals");
    let file = tradegate_actors::reporter::seals::day_file(&dir, yesterday);
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({
            "day": yesterday, "seal_id": day.id, "root": day.root, "sealed_at": day.sealed_at
        }))
        .unwrap(),
    )
    .unwrap();
    let kept = tradegate_actors::reporter::seals::kept_roots(&dir).unwrap();
    assert_eq!(kept.len(), 1);
    let mut options = VerifyOptions {
        kept_roots: kept,
        ..VerifyOptions::default()
    };
    let mut reader = foreign(&db.conninfo).await;
    let report = verify::verify(&mut reader, None, &options).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.kept_roots_checked, 1);

    // someone rewrote the whole chain consistently: only the kept root shows it
    options.kept_roots = vec![KeptRoot {
        source: "elsewhere".into(),
        seal_id: day.id,
        root: "00".repeat(32),
    }];
    let report = verify::verify(&mut reader, None, &options).await.unwrap();
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!(report.findings[0].kind, FindingKind::KeptRoot);

    // a range: only what was written in it
    let ranged = VerifyOptions {
        from: NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc()),
        to: Some(Utc::now() - chrono::Duration::days(1)),
        kept_roots: Vec::new(),
    };
    let report = verify::verify(&mut reader, None, &ranged).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let all: i64 = verify_db(&db.conninfo).await.rows();
    assert!(
        report.rows() > 0 && report.rows() < all,
        "{} of {all}",
        report.rows()
    );
}

/// The trade log's hash covers every stored column: a column added later and left out of it
/// would be one a tamperer could change unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trade_log_hash_covers_every_stored_column() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'tradelog' AND table_schema = current_schema() \
               AND is_generated = 'NEVER' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(columns.len() > 20, "{columns:?}");
    let hash = tradegate_actors::store::audit::TRADELOG_HASH;
    for column in &columns {
        assert!(
            hash.contains(&format!("t.{column},")) || hash.contains(&format!("t.{column})")),
            "the trade log's hash leaves out {column}"
        );
    }
    // and the migration's trigger hashes the same columns
    let trigger: String = client
        .query_one(
            "SELECT prosrc FROM pg_proc WHERE proname = 'audit_journal_rows'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for column in &columns {
        assert!(
            trigger.contains(&format!("n.{column},")) || trigger.contains(&format!("n.{column})")),
            "the journal trigger's trade-log hash leaves out {column}"
        );
    }
}

/// Trade-log rows, journaled with their hashes as a COPY or INSERT writes them: before the seal
/// they are unsealed (not findings); one deleted behind the gateway's back before its seal is
/// reported as deleted, one edited after it as altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_log_rows_are_checked_before_and_after_their_seal() {
    let db = TestDb::new().await;
    let mut client = gateway_connection(&db.conninfo).await;
    writer::register(&mut client).await.unwrap();
    let today = Utc::now().date_naive();
    tradegate_actors::store::ensure_tradelog_partitions(&client, today, 2)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO tradelog (event_id, local_ts_us, event_type, symbol, body) \
             SELECT gen_random_uuid(), (extract(epoch FROM now()) * 1e6)::bigint + g, 10, 'AAPL', \
                    jsonb_build_object('n', g) \
             FROM generate_series(1, 500) g",
        )
        .await
        .unwrap();
    let before = verify_db(&db.conninfo).await;
    assert!(before.is_clean(), "{:#?}", before.findings);
    assert_eq!(
        before.unsealed_rows, 501,
        "the 500 rows and the writer's registration"
    );
    let victim: i64 = client
        .query_one("SELECT min(id) FROM tradelog", &[])
        .await
        .unwrap()
        .get(0);
    foreign(&db.conninfo)
        .await
        .batch_execute(&format!(
            "SET session_replication_role = replica; DELETE FROM tradelog WHERE id = {victim}"
        ))
        .await
        .unwrap();
    let unsealed = verify_db(&db.conninfo).await;
    assert_eq!(
        unsealed.findings.first().map(|f| (f.kind, f.key.clone())),
        Some((FindingKind::Deleted, victim.to_string())),
        "found before any seal: {:#?}",
        unsealed.findings
    );
    let sealed = seals::seal(&client, SealKind::Interval, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sealed.rows, 501);
    foreign(&db.conninfo)
        .await
        .batch_execute(&format!(
            "SET session_replication_role = replica; \
             UPDATE tradelog SET body = '{{\"n\": 0}}' WHERE id = {}",
            victim + 1
        ))
        .await
        .unwrap();
    let after = verify_db(&db.conninfo).await;
    assert_eq!(after.unsealed_entries, 0);
    assert_eq!(after.findings.len(), 2, "{:#?}", after.findings);
    assert!(
        after
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Altered && f.key == (victim + 1).to_string()),
        "{:#?}",
        after.findings
    );
}
