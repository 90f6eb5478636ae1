//! The schema: migrations are idempotent, every table exists with its constraints, and the
//! database itself refuses bad rows.

mod common;

use common::{TestDb, sqlstate};
use tokio_postgres::Client;

const CHECK_VIOLATION: &str = "23514";
const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";
const NO_PARTITION: &str = "23514";

/// Tables, columns, constraints and indexes, as text, for before/after comparisons.
async fn catalog(client: &Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
               FROM information_schema.columns WHERE table_schema = 'public'
             UNION ALL
             SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             UNION ALL
             SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
             UNION ALL
             SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn migrate_twice_applies_everything_once_and_then_changes_nothing() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let first = tradegate::migrate::run(&mut client).await.unwrap();
    assert_eq!(first.applied, tradegate::migrate::embedded());
    assert!(first.applied.len() >= 3);
    let before = catalog(&client).await;
    let second = tradegate::migrate::run(&mut client).await.unwrap();
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert_eq!(catalog(&client).await, before);
}

#[tokio::test]
async fn concurrent_migrations_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = db.client().await;
        tasks.push(tokio::spawn(async move {
            tradegate::migrate::run(&mut client).await.unwrap().applied
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap());
    }
    applied.sort();
    let mut expected = tradegate::migrate::embedded();
    expected.sort();
    assert_eq!(
        applied, expected,
        "every migration exactly once across all runners"
    );
}

#[tokio::test]
async fn every_table_exists_with_its_constraints_and_indexes() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type IN ('BASE TABLE')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in [
        "api_payloads",
        "data_ingestion_runs",
        "data_ingestion_run_records",
        "api_call_logs",
        "alerts",
        "trade_decisions",
        "trade_executions",
        "broker_trades",
        "broker_fills",
        "sync_runs",
        "jobs",
    ] {
        assert!(
            tables.contains(&table.to_string()),
            "missing table {table}: {tables:?}"
        );
    }
    // tradelog is declaratively partitioned by range on local_ts_us
    let strategy: String = client
        .query_one(
            "SELECT partstrat::text || ' ' || pg_get_partkeydef('tradelog'::regclass)
             FROM pg_partitioned_table WHERE partrelid = 'tradelog'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(strategy, "r RANGE (local_ts_us)");

    // a CHECK constraint guards every status/state column and every side
    let checks: Vec<String> = client
        .query(
            "SELECT conrelid::regclass::text || ': ' || pg_get_constraintdef(oid)
             FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let has_check = |table: &str, column: &str| {
        checks
            .iter()
            .any(|c| c.starts_with(&format!("{table}: ")) && c.contains(&format!("({column} ")))
    };
    for (table, column) in [
        ("api_payloads", "type"),
        ("data_ingestion_runs", "status"),
        ("data_ingestion_run_records", "operation"),
        ("alerts", "severity"),
        ("trade_decisions", "status"),
        ("trade_decisions", "side"),
        ("trade_decisions", "quantity"),
        ("trade_decisions", "order_type"),
        ("trade_decisions", "time_in_force"),
        ("trade_executions", "status"),
        ("trade_executions", "filled_quantity"),
        ("broker_trades", "status"),
        ("broker_trades", "side"),
        ("broker_trades", "total_quantity"),
        ("broker_fills", "side"),
        ("broker_fills", "quantity"),
        ("sync_runs", "status"),
        ("jobs", "status"),
        ("tradelog", "event_type"),
        ("tradelog", "last_qty"),
    ] {
        assert!(has_check(table, column), "no CHECK on {table}.{column}");
    }

    // money and quantities are NUMERIC, never floating point
    let floats: Vec<String> = client
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns
             WHERE table_schema = 'public' AND data_type IN ('real', 'double precision')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(floats.is_empty(), "floating point columns: {floats:?}");

    let indexes: Vec<String> = client
        .query(
            "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let index = |name: &str| {
        indexes
            .iter()
            .find(|i| i.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("missing index {name}"))
            .clone()
    };
    assert!(index("broker_trades_perm_id_uidx").contains("WHERE (ib_perm_id > 0)"));
    assert!(index("broker_trades_order_ref_uidx").contains("UNIQUE"));
    assert!(index("broker_trades_composite_uidx").contains("NULLS NOT DISTINCT"));
    assert!(index("broker_fills_one_canonical_uidx").contains("WHERE is_canonical"));
    assert!(index("broker_fills_exec_uidx").contains("(account_id, exec_id)"));
    // the spec's (account_id, exec_id_base, exec_revision) index is the revision constraint's
    assert!(
        index("broker_fills_revision_unique").contains("(account_id, exec_id_base, exec_revision)")
    );
    assert!(
        !indexes
            .iter()
            .any(|i| i.starts_with("broker_fills_base_revision_idx ")),
        "V6 dropped the duplicate"
    );
    assert!(index("broker_trades_account_last_idx").contains("last_executed_at DESC"));
    assert!(index("api_payloads_payload_gin").contains("USING gin"));
    assert!(index("trade_decisions_rationale_gin").contains("USING gin"));
    assert!(
        index("data_ingestion_run_records_pkey")
            .contains("UNIQUE INDEX data_ingestion_run_records_pkey ON public.data_ingestion_run_records USING btree (record_type, record_id, data_ingestion_run_id)")
    );
    assert!(index("data_ingestion_run_records_run_idx").contains("(data_ingestion_run_id)"));
    assert!(index("jobs_one_pending_uidx").contains("WHERE (status = 'pending'"));
    // the IBKR sync reserves ids from these sequences by name
    for table in ["broker_fills", "broker_trades"] {
        let sequence: String = client
            .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sequence, format!("public.{table}_id_seq"));
    }

    // foreign keys tie the audit chain together
    let fks: Vec<String> = client
        .query(
            "SELECT conrelid::regclass::text || ' -> ' || confrelid::regclass::text
             FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for fk in [
        "api_call_logs -> data_ingestion_runs",
        "trade_decisions -> data_ingestion_runs",
        "trade_executions -> trade_decisions",
        "sync_runs -> data_ingestion_runs",
    ] {
        assert!(
            fks.iter().any(|f| f == fk),
            "missing foreign key {fk}: {fks:?}"
        );
    }
    // a payload past retention lives in its day archive only (V22): nothing may keep it
    assert!(
        !fks.iter().any(|f| f.ends_with("-> api_payloads")),
        "{fks:?}"
    );
}

async fn insert_decision(
    client: &Client,
    status: &str,
    quantity: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account,
                 symbol, side, quantity, order_type, time_in_force, status)
             VALUES (gen_random_uuid(), 'momentum', '1.0', 'paper', 'AAPL', 'buy', $1::text::numeric,
                 'market', 'day', $2)",
            &[&quantity, &status],
        )
        .await
}

#[tokio::test]
async fn bad_statuses_are_refused_by_the_database() {
    let db = TestDb::new().await;
    let client = db.client().await;
    assert_eq!(insert_decision(&client, "pending", "10").await.unwrap(), 1);
    assert_eq!(
        sqlstate(insert_decision(&client, "sent", "10").await),
        CHECK_VIOLATION
    );

    let decision_id: i64 = client
        .query_one("SELECT id FROM trade_decisions", &[])
        .await
        .unwrap()
        .get(0);
    let execution = |status: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    "INSERT INTO trade_executions (trade_decision_id, execution_id, status)
                     VALUES ($1, gen_random_uuid(), $2)",
                    &[&decision_id, &status],
                )
                .await
        }
    };
    assert_eq!(sqlstate(execution("retrying").await), CHECK_VIOLATION);
    assert_eq!(execution("submitted").await.unwrap(), 1);
    // no retry: a second submission of the same decision is refused
    assert_eq!(sqlstate(execution("submitted").await), UNIQUE_VIOLATION);

    let bad = [
        "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, status, started_at)
         VALUES (gen_random_uuid(), 't', 's', 'paused', now())",
        "INSERT INTO broker_trades (account_id, status, fetched_at) VALUES ('DU1', 'open', now())",
        "INSERT INTO broker_trades (account_id, side, fetched_at) VALUES ('DU1', 'BOT', now())",
        "INSERT INTO api_payloads (type, payload, source, captured_at)
         VALUES ('ApiThing', '{}', 'alpaca', now())",
        "INSERT INTO jobs (job_type, status) VALUES ('trades.sync', 'queued')",
        "INSERT INTO alerts (kind, severity, message) VALUES ('x', 'loud', 'm')",
        "INSERT INTO sync_runs (account_id, status, window_start, window_end)
         VALUES ('DU1', 'done', now(), now())",
        "INSERT INTO tradelog (event_id, local_ts_us, event_type)
         VALUES (gen_random_uuid(), (extract(epoch FROM now()) * 1e6)::bigint, 99)",
    ];
    for sql in bad {
        assert_eq!(
            sqlstate(client.execute(sql, &[]).await),
            CHECK_VIOLATION,
            "{sql}"
        );
    }
}

#[tokio::test]
async fn negative_quantities_are_refused_by_the_database() {
    let db = TestDb::new().await;
    let client = db.client().await;
    assert_eq!(
        sqlstate(insert_decision(&client, "pending", "-5").await),
        CHECK_VIOLATION
    );
    assert_eq!(
        sqlstate(insert_decision(&client, "pending", "0").await),
        CHECK_VIOLATION
    );
    assert_eq!(
        insert_decision(&client, "pending", "0.000001")
            .await
            .unwrap(),
        1
    );

    let trade_id: i64 = client
        .query_one(
            "INSERT INTO broker_trades (account_id, ib_perm_id, fetched_at) VALUES ('DU1', 7, now())
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fill = |exec_id: &'static str, quantity: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    "INSERT INTO broker_fills (trade_id, account_id, exec_id, exec_id_base,
                         executed_at, quantity, price, raw, fetched_at)
                     VALUES ($1, 'DU1', $2, $2, now(), $3::text::numeric, 10, '{}', now())",
                    &[&trade_id, &exec_id, &quantity],
                )
                .await
        }
    };
    assert_eq!(sqlstate(fill("e1", "-1").await), CHECK_VIOLATION);
    assert_eq!(fill("e1", "1").await.unwrap(), 1);
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "UPDATE broker_trades SET total_quantity = -1 WHERE id = $1",
                    &[&trade_id]
                )
                .await
        ),
        CHECK_VIOLATION
    );
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "INSERT INTO tradelog (event_id, local_ts_us, event_type, last_qty)
                     VALUES (gen_random_uuid(), (extract(epoch FROM now()) * 1e6)::bigint, 30, -1)",
                    &[],
                )
                .await
        ),
        CHECK_VIOLATION
    );
}

#[tokio::test]
async fn only_one_canonical_fill_per_exec_id_base() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let trade_id: i64 = client
        .query_one(
            "INSERT INTO broker_trades (account_id, ib_perm_id, fetched_at) VALUES ('DU1', 42, now())
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fill = |account: &'static str, exec_id: &'static str, revision: i32, canonical: bool| {
        let client = &client;
        async move {
            client
                .execute(
                    "INSERT INTO broker_fills (trade_id, account_id, exec_id, exec_id_base,
                         exec_revision, is_canonical, executed_at, quantity, price, raw, fetched_at)
                     VALUES ($1, $2, $3, '0000e0d5.64305db8.01', $4, $5, now(), 100, 10.5, '{}', now())",
                    &[&trade_id, &account, &exec_id, &revision, &canonical],
                )
                .await
        }
    };
    assert_eq!(
        fill("DU1", "0000e0d5.64305db8.01.01", 1, true)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        sqlstate(fill("DU1", "0000e0d5.64305db8.01.02", 2, true).await),
        UNIQUE_VIOLATION
    );
    // the same exec id twice is refused too
    assert_eq!(
        sqlstate(fill("DU1", "0000e0d5.64305db8.01.01", 1, false).await),
        UNIQUE_VIOLATION
    );
    // a correction is accepted once the fill it corrects is demoted
    client
        .execute(
            "UPDATE broker_fills SET is_canonical = false WHERE exec_id = '0000e0d5.64305db8.01.01'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        fill("DU1", "0000e0d5.64305db8.01.02", 2, true)
            .await
            .unwrap(),
        1
    );
    // another account has its own canonical fill for the same base
    assert_eq!(
        fill("DU2", "0000e0d5.64305db8.01.01", 1, true)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn perm_ids_above_zero_are_unique_per_account() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let trade = |account: &'static str, perm_id: i64| {
        let client = &client;
        async move {
            client
                .execute(
                    "INSERT INTO broker_trades (account_id, ib_perm_id, order_ref, fetched_at)
                     VALUES ($1, $2, 'ref-' || gen_random_uuid(), now())",
                    &[&account, &perm_id],
                )
                .await
        }
    };
    assert_eq!(trade("DU1", 555).await.unwrap(), 1);
    assert_eq!(sqlstate(trade("DU1", 555).await), UNIQUE_VIOLATION);
    assert_eq!(trade("DU2", 555).await.unwrap(), 1);
    // perm id 0 means "unknown": many trades may have it
    assert_eq!(trade("DU1", 0).await.unwrap(), 1);
    assert_eq!(trade("DU1", 0).await.unwrap(), 1);

    // with perm id 0 the order ref identifies the trade
    let by_ref = "INSERT INTO broker_trades (account_id, ib_perm_id, order_ref, fetched_at)
                  VALUES ('DU1', 0, 'strategy-7', now())";
    assert_eq!(client.execute(by_ref, &[]).await.unwrap(), 1);
    assert_eq!(
        sqlstate(client.execute(by_ref, &[]).await),
        UNIQUE_VIOLATION
    );

    // and without either, the composite (account, client, order, symbol, side, UTC date)
    let composite = "INSERT INTO broker_trades (account_id, ib_perm_id, client_id, ib_order_id,
                         symbol, side, trade_date, fetched_at)
                     VALUES ('DU1', 0, 3, 17, 'AAPL', 'buy', '2026-11-20', now())";
    assert_eq!(client.execute(composite, &[]).await.unwrap(), 1);
    assert_eq!(
        sqlstate(client.execute(composite, &[]).await),
        UNIQUE_VIOLATION
    );
}

#[tokio::test]
async fn ingestion_runs_only_move_from_running_to_a_final_state() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let id: i64 = client
        .query_one(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at)
             VALUES (gen_random_uuid(), 'congress_daily', 'quiverquant', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // completed without its timestamp
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "UPDATE data_ingestion_runs SET status = 'completed' WHERE id = $1",
                    &[&id]
                )
                .await
        ),
        CHECK_VIOLATION
    );
    client
        .execute(
            "UPDATE data_ingestion_runs SET status = 'completed', completed_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    for sql in [
        "UPDATE data_ingestion_runs SET status = 'running', completed_at = NULL WHERE id = $1",
        "UPDATE data_ingestion_runs SET status = 'failed', completed_at = NULL, failed_at = now() WHERE id = $1",
        "UPDATE data_ingestion_runs SET records_fetched = 5 WHERE id = $1",
    ] {
        assert_eq!(
            sqlstate(client.execute(sql, &[&id]).await),
            CHECK_VIOLATION,
            "{sql}"
        );
    }
}

/// Run records reference their run through a statement-level check (V5) rather than a row-level
/// foreign key; it must refuse what the foreign key refused.
#[tokio::test]
async fn run_records_always_name_an_existing_run_and_runs_are_never_deleted() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let run: i64 = client
        .query_one(
            "INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at) \
             VALUES (gen_random_uuid(), 't', 's', now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let insert = |runs: &str| {
        format!(
            "INSERT INTO data_ingestion_run_records (data_ingestion_run_id, record_type, record_id, operation) \
             SELECT r, 'T', 'id-' || r, 'created' FROM unnest(ARRAY[{runs}]::bigint[]) AS r"
        )
    };
    assert_eq!(
        sqlstate(
            client
                .execute(&insert(&format!("{run}, 999999")), &[])
                .await
        ),
        FOREIGN_KEY_VIOLATION,
        "one row naming a missing run refuses the statement"
    );
    let kept: i64 = client
        .query_one("SELECT count(*) FROM data_ingestion_run_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "and nothing of it stays");
    client
        .execute(&insert(&run.to_string()), &[])
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            client
                .execute("DELETE FROM data_ingestion_runs WHERE id = $1", &[&run])
                .await
        ),
        "23514",
        "runs are history"
    );
    assert_eq!(
        sqlstate(
            client
                .execute("TRUNCATE data_ingestion_runs CASCADE", &[])
                .await
        ),
        "23514"
    );
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "UPDATE data_ingestion_run_records SET data_ingestion_run_id = 999999",
                    &[]
                )
                .await
        ),
        "23514",
        "a record never moves to another run"
    );
    // the same record in the same run is one row
    client
        .execute(
            &format!("{} ON CONFLICT DO NOTHING", insert(&run.to_string())),
            &[],
        )
        .await
        .unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM data_ingestion_run_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

/// Fills reference their parent trade through a statement-level check (V9) rather than a
/// row-level foreign key; it must refuse what the foreign key refused, for a plain insert, a
/// COPY and an update, and no trade can go away under its fills.
#[tokio::test]
async fn fills_always_name_an_existing_trade_and_trades_are_never_deleted() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let trade: i64 = client
        .query_one(
            "INSERT INTO broker_trades (account_id, ib_perm_id, fetched_at) VALUES ('DU1', 7, now())
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let insert = |trades: &str| {
        format!(
            "INSERT INTO broker_fills (trade_id, account_id, exec_id, exec_id_base, executed_at,
                 quantity, price, raw, fetched_at)
             SELECT t, 'DU1', 'e' || t, 'e' || t, now(), 1, 1, '{{}}', now()
             FROM unnest(ARRAY[{trades}]::bigint[]) AS t"
        )
    };
    assert_eq!(
        sqlstate(
            client
                .execute(&insert(&format!("{trade}, 999999")), &[])
                .await
        ),
        FOREIGN_KEY_VIOLATION,
        "one fill naming a missing trade refuses the statement"
    );
    let sink = client
        .copy_in::<_, &'static [u8]>(
            "COPY broker_fills (trade_id, account_id, exec_id, exec_id_base, executed_at, \
                 quantity, price, raw, fetched_at) FROM STDIN",
        )
        .await
        .unwrap();
    let row: &'static [u8] =
        b"999998\tDU1\tc.01\tc\t2026-01-02 10:00:00+00\t1\t1\t{}\t2026-01-02 10:00:00+00\n";
    let copied = async {
        use futures_util::SinkExt;
        let mut sink = std::pin::pin!(sink);
        sink.send(row).await?;
        sink.finish().await
    }
    .await;
    assert_eq!(
        sqlstate(copied),
        FOREIGN_KEY_VIOLATION,
        "a COPY naming a missing trade is refused"
    );
    let kept: i64 = client
        .query_one("SELECT count(*) FROM broker_fills", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "and nothing of either stays");
    client
        .execute(&insert(&trade.to_string()), &[])
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            client
                .execute("UPDATE broker_fills SET trade_id = 999999", &[])
                .await
        ),
        FOREIGN_KEY_VIOLATION,
        "a fill never moves to a missing trade"
    );
    for sql in [
        "DELETE FROM broker_trades",
        "TRUNCATE broker_trades CASCADE",
        "UPDATE broker_trades SET id = DEFAULT",
    ] {
        assert_eq!(
            sqlstate(client.execute(sql, &[]).await),
            CHECK_VIOLATION,
            "trades are history: {sql}"
        );
    }
    // an identity refuses a new id value by itself
    assert_eq!(
        sqlstate(
            client
                .execute("UPDATE broker_trades SET id = id + 1000", &[])
                .await
        ),
        "428C9"
    );
    // updates that leave the parent and the id alone are fine
    client
        .execute("UPDATE broker_trades SET status = 'filled'", &[])
        .await
        .unwrap();
    assert_eq!(
        client
            .execute("UPDATE broker_fills SET is_canonical = false", &[])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn foreign_keys_hold_the_audit_chain_together() {
    let db = TestDb::new().await;
    let client = db.client().await;
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "INSERT INTO trade_executions (trade_decision_id, execution_id, status)
                     VALUES (999999, gen_random_uuid(), 'submitted')",
                    &[],
                )
                .await
        ),
        FOREIGN_KEY_VIOLATION
    );
}

#[tokio::test]
async fn tradelog_partitions_are_created_ahead_and_rows_land_by_utc_day() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let created = tradegate_actors::store::ensure_tradelog_partitions(
        &client,
        chrono::NaiveDate::from_ymd_opt(2031, 1, 30).unwrap(),
        3,
    )
    .await
    .unwrap();
    assert_eq!(created, 3);
    // idempotent
    let again = tradegate_actors::store::ensure_tradelog_partitions(
        &client,
        chrono::NaiveDate::from_ymd_opt(2031, 1, 30).unwrap(),
        3,
    )
    .await
    .unwrap();
    assert_eq!(again, 0);

    // one microsecond either side of midnight UTC, 2031-01-31
    let midnight_us: i64 = 1_927_584_000_000_000;
    for ts in [midnight_us - 1, midnight_us] {
        client
            .execute(
                "INSERT INTO tradelog (event_id, local_ts_us, event_type) VALUES (gen_random_uuid(), $1, 90)",
                &[&ts],
            )
            .await
            .unwrap();
    }
    let placed: Vec<(String, String)> = client
        .query(
            "SELECT tableoid::regclass::text, to_char(local_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
             FROM tradelog ORDER BY local_ts_us",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        placed,
        vec![
            (
                "tradelog_p20310130".to_string(),
                "2031-01-30 23:59:59.999999".to_string()
            ),
            (
                "tradelog_p20310131".to_string(),
                "2031-01-31 00:00:00.000000".to_string()
            ),
        ]
    );
    // a day without a partition is refused, not silently stored elsewhere
    assert_eq!(
        sqlstate(
            client
                .execute(
                    "INSERT INTO tradelog (event_id, local_ts_us, event_type) VALUES (gen_random_uuid(), 1, 90)",
                    &[],
                )
                .await
        ),
        NO_PARTITION
    );
}

#[tokio::test]
async fn decisions_and_executions_move_only_along_their_state_machines() {
    let db = TestDb::new().await;
    let client = db.client().await;
    assert_eq!(insert_decision(&client, "pending", "5").await.unwrap(), 1);
    let decision: i64 = client
        .query_one("SELECT id FROM trade_decisions", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO trade_executions (trade_decision_id, execution_id, status)
             VALUES ($1, gen_random_uuid(), 'submitted')",
            &[&decision],
        )
        .await
        .unwrap();
    let set_decision = |status: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    "UPDATE trade_decisions SET status = $1 WHERE id = $2",
                    &[&status, &decision],
                )
                .await
        }
    };
    let set_execution = |status: &'static str, filled: &'static str| {
        let client = &client;
        async move {
            client
                .execute(
                    "UPDATE trade_executions SET status = $1, filled_quantity = $2::text::numeric
                     WHERE trade_decision_id = $3",
                    &[&status, &filled, &decision],
                )
                .await
        }
    };
    // legal: pending -> executed; submitted -> accepted -> partial_fill
    assert_eq!(set_decision("executed").await.unwrap(), 1);
    assert_eq!(set_execution("accepted", "0").await.unwrap(), 1);
    assert_eq!(set_execution("partial_fill", "2").await.unwrap(), 1);
    // illegal: back to pending, a partial fill moving back to submitted or to rejected
    assert_eq!(sqlstate(set_decision("pending").await), CHECK_VIOLATION);
    assert_eq!(
        sqlstate(set_execution("submitted", "2").await),
        CHECK_VIOLATION
    );
    assert_eq!(
        sqlstate(set_execution("rejected", "0").await),
        CHECK_VIOLATION
    );
    // filled is final
    assert_eq!(set_execution("filled", "5").await.unwrap(), 1);
    assert_eq!(
        sqlstate(set_execution("cancelled", "5").await),
        CHECK_VIOLATION
    );
    assert_eq!(
        sqlstate(set_execution("partial_fill", "5").await),
        CHECK_VIOLATION
    );
    // a cancelled decision is final
    assert_eq!(set_decision("cancelled").await.unwrap(), 1);
    assert_eq!(sqlstate(set_decision("executed").await), CHECK_VIOLATION);
    assert_eq!(sqlstate(set_decision("failed").await), CHECK_VIOLATION);
    let corrections: i64 = client
        .query_one("SELECT count(*) FROM order_state_corrections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(corrections, 0, "no correction among ordinary transitions");

    // a rejected execution never carries a fill; a fill turns it into a fill, as a correction
    assert_eq!(insert_decision(&client, "pending", "3").await.unwrap(), 1);
    let second: i64 = client
        .query_one("SELECT max(id) FROM trade_decisions", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "INSERT INTO trade_executions (trade_decision_id, execution_id, status)
             VALUES ($1, gen_random_uuid(), 'rejected')",
            &[&second],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE trade_decisions SET status = 'failed' WHERE id = $1",
            &[&second],
        )
        .await
        .unwrap();
    let fill_rejected = client
        .execute(
            "UPDATE trade_executions SET filled_quantity = 3 WHERE trade_decision_id = $1",
            &[&second],
        )
        .await;
    assert_eq!(sqlstate(fill_rejected), CHECK_VIOLATION);
    client
        .execute(
            "UPDATE trade_executions SET status = 'filled', filled_quantity = 3,
                 status_reason = 'the broker filled it'
             WHERE trade_decision_id = $1",
            &[&second],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE trade_decisions SET status = 'executed' WHERE id = $1",
            &[&second],
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT entity, from_status, to_status, reason FROM order_state_corrections
             WHERE trade_decision_id = $1 ORDER BY id",
            &[&second],
        )
        .await
        .unwrap();
    let kept: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        kept,
        vec![
            (
                "execution".to_string(),
                "rejected".to_string(),
                "filled".to_string(),
                "the broker filled it".to_string()
            ),
            (
                "decision".to_string(),
                "failed".to_string(),
                "executed".to_string(),
                "the broker contradicted the recorded state".to_string()
            ),
        ]
    );
}
