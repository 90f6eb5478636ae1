//! Generated activity for measuring the reports (`tradegate seed-data`): one day at a time,
//! set-based `INSERT ... SELECT` inside PostgreSQL, one transaction per day.

use chrono::NaiveDate;
use tokio_postgres::Client;

use super::StoreError;

/// What one seeded day wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeededDay {
    /// Decisions (and about as many executions)
    pub decisions: i64,
    /// API payloads
    pub payloads: i64,
    /// Trade-log events
    pub tradelog_events: i64,
    /// Ingestion runs
    pub ingestion_runs: i64,
}

/// Generates `day` with `decisions` decisions at `scale` (see `tradegate seed-data`), in one
/// transaction without waiting for its commit to be flushed.
pub async fn seed_day(
    client: &mut Client,
    day: NaiveDate,
    decisions: i64,
    scale: i64,
) -> Result<SeededDay, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("starting a seeded day"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = off; SET LOCAL jit = off")
        .await
        .map_err(StoreError::new("setting up a seeded day"))?;
    let stats = tx
        .query_one(SEED_DAY, &[&day, &decisions, &scale])
        .await
        .map_err(StoreError::new("seeding a day"))?;
    tx.execute(FINISH_RUNS, &[&day])
        .await
        .map_err(StoreError::new("finishing a seeded day's runs"))?;
    tx.commit()
        .await
        .map_err(StoreError::new("committing a seeded day"))?;
    Ok(SeededDay {
        decisions: stats.get(0),
        payloads: stats.get(1),
        tradelog_events: stats.get(2),
        ingestion_runs: stats.get(3),
    })
}

/// `VACUUM (ANALYZE)` of the whole database: statistics and the visibility map, as
/// autovacuum would have them after a real year.
pub async fn vacuum_analyze(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute("VACUUM (ANALYZE)")
        .await
        .map_err(StoreError::new("vacuuming the seeded database"))
}

/// One day: `$1` the day, `$2` decisions, `$3` the scale. Answers (decisions, payloads,
/// trade-log events, ingestion runs).
const SEED_DAY: &str = "
WITH day AS (SELECT $1::date::timestamptz AS t0),
runs AS (
    INSERT INTO data_ingestion_runs (run_id, task_name, data_source, started_at, metadata)
    SELECT gen_random_uuid(), 'quiver.' || (ARRAY['congress', 'lobbying', 'insiders'])[1 + h % 3],
           'quiverquant', t0 + make_interval(hours => h, mins => 2), '{\"seeded\": true}'
    FROM day, generate_series(0, 23) h
    RETURNING id, started_at),
records AS (
    INSERT INTO data_ingestion_run_records (data_ingestion_run_id, record_type, record_id,
        operation, symbol, occurred_at, created_at)
    SELECT r.id, 'QuiverTrade', 'qt-' || to_char($1::date, 'YYYYMMDD') || '-' || g,
           'created', 'S' || lpad((g % 500)::text, 3, '0'),
           r.started_at - interval '2 days', r.started_at + interval '1 minute'
    FROM generate_series(1, $2::bigint) g
    JOIN (SELECT id, started_at, row_number() OVER (ORDER BY started_at) - 1 AS h FROM runs) r
      ON r.h = g % 24
    RETURNING data_ingestion_run_id, record_id, symbol, created_at),
decisions AS (
    INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, symbol,
        side, quantity, order_type, limit_price, time_in_force, primary_signal_type,
        primary_signal_id, primary_ingestion_run_id, decision_rationale, signal_strength,
        status, failure_reason, created_at, executed_at, failed_at, cancelled_at, updated_at)
    SELECT gen_random_uuid(),
           (ARRAY['congress', 'momentum', 'meanrev', 'lobbying', 'insiders'])[1 + x.n % 5],
           '1.' || (x.n % 3), 'paper', x.symbol,
           CASE WHEN x.n % 3 = 0 THEN 'sell' ELSE 'buy' END, 1 + x.n % 50, 'limit',
           100 + (x.n % 1000) / 10.0, 'day', 'QuiverTrade', x.record_id,
           x.data_ingestion_run_id,
           jsonb_build_object('reason', 'seeded', 'data_lineage',
               jsonb_build_object('window_secs', 86400, 'ingestion_runs',
                   jsonb_build_array(jsonb_build_object('run', x.data_ingestion_run_id)))),
           (x.n % 100) / 100.0,
           x.status,
           CASE x.status WHEN 'failed' THEN
               (ARRAY['403 insufficient buying power', '422 invalid order', 'timeout: no answer',
                      '500 internal error', 'not_received_by_broker', 'rejected by broker',
                      '429 rate limited'])[1 + x.n % 7] END,
           x.at,
           CASE WHEN x.status = 'executed' THEN x.at + interval '40 milliseconds' END,
           CASE WHEN x.status = 'failed' THEN x.at + interval '40 milliseconds' END,
           CASE WHEN x.status = 'cancelled' THEN x.at + interval '5 minutes' END,
           x.at + CASE WHEN x.status = 'cancelled' THEN interval '5 minutes'
                       ELSE interval '40 milliseconds' END
    FROM (SELECT row_number() OVER () AS n, r.*,
                 r.created_at + make_interval(secs => (row_number() OVER ()) % 3600) AS at,
                 CASE WHEN (row_number() OVER ()) % 50 < 40 THEN 'executed'
                      WHEN (row_number() OVER ()) % 50 < 47 THEN 'failed'
                      ELSE 'cancelled' END AS status
          FROM records r) x
    RETURNING id, decision_id, symbol, side, quantity, status, failure_reason, created_at),
requests AS (
    INSERT INTO api_payloads (type, payload, source, captured_at)
    SELECT 'ApiRequest',
           jsonb_build_object('endpoint', '/v2/orders', 'method', 'POST', 'body',
               jsonb_build_object('client_order_id', d.decision_id, 'symbol', d.symbol,
                   'qty', d.quantity::text, 'side', d.side, 'type', 'limit')),
           'alpaca', d.created_at
    FROM decisions d WHERE d.failure_reason IS DISTINCT FROM 'not_received_by_broker'
    RETURNING id, (payload #>> '{body,client_order_id}')::uuid AS decision_id),
responses AS (
    INSERT INTO api_payloads (type, payload, source, captured_at)
    SELECT 'ApiResponse',
           CASE WHEN d.status = 'failed' THEN
               jsonb_build_object('status', left(d.failure_reason, 3), 'client_order_id',
                   d.decision_id, 'message', d.failure_reason)
           ELSE jsonb_build_object('status', 200, 'client_order_id', d.decision_id, 'id',
                   md5(d.decision_id::text), 'status_text', 'accepted') END,
           'alpaca', d.created_at + interval '30 milliseconds'
    FROM decisions d WHERE d.failure_reason IS DISTINCT FROM 'not_received_by_broker'
    RETURNING id, (payload ->> 'client_order_id')::uuid AS decision_id),
executions AS (
    INSERT INTO trade_executions (trade_decision_id, execution_id, broker, status,
        api_request_payload_id, api_response_payload_id, broker_order_id, http_status_code,
        error_code, error_message, filled_quantity, filled_avg_price, submitted_at, filled_at,
        rejected_at, cancelled_at, created_at, updated_at)
    SELECT d.id, gen_random_uuid(), 'alpaca',
           CASE d.status WHEN 'executed' THEN 'filled' WHEN 'cancelled' THEN 'cancelled'
                ELSE 'rejected' END,
           q.id, p.id,
           CASE WHEN d.status <> 'failed' THEN md5(d.decision_id::text) END,
           CASE WHEN d.status <> 'failed' THEN 200
                WHEN d.failure_reason LIKE 'timeout%' OR d.failure_reason = 'rejected by broker'
                    THEN NULL
                ELSE left(d.failure_reason, 3)::int END,
           CASE WHEN d.failure_reason LIKE '403%' THEN '40310000'
                WHEN d.failure_reason LIKE '422%' THEN '42210000'
                WHEN d.failure_reason LIKE 'timeout%' THEN 'timeout' END,
           CASE WHEN d.status = 'failed' THEN d.failure_reason END,
           CASE WHEN d.status = 'executed' THEN d.quantity ELSE 0 END,
           CASE WHEN d.status = 'executed' THEN 100 + (abs(hashtext(d.symbol)) % 1000) / 10.0 END,
           d.created_at + interval '5 milliseconds',
           CASE WHEN d.status = 'executed' THEN d.created_at + interval '40 milliseconds' END,
           CASE WHEN d.status = 'failed' THEN d.created_at + interval '40 milliseconds' END,
           CASE WHEN d.status = 'cancelled' THEN d.created_at + interval '5 minutes' END,
           d.created_at + interval '30 milliseconds',
           d.created_at + CASE WHEN d.status = 'cancelled' THEN interval '5 minutes'
                               ELSE interval '40 milliseconds' END
    FROM decisions d
    JOIN requests q ON q.decision_id = d.decision_id
    JOIN responses p ON p.decision_id = d.decision_id
    RETURNING id),
fills AS (
    INSERT INTO broker_order_events (broker, account, event_key, trade_decision_id,
        broker_order_id, event, order_status, qty, price, event_at, recorded_at, body)
    SELECT 'alpaca', 'paper', gen_random_uuid()::text, d.id, md5(d.decision_id::text), 'fill',
           'filled', d.quantity, 100 + (abs(hashtext(d.symbol)) % 1000) / 10.0,
           d.created_at + interval '40 milliseconds', d.created_at + interval '41 milliseconds',
           jsonb_build_object('event', 'fill', 'order', jsonb_build_object('client_order_id',
               d.decision_id, 'symbol', d.symbol))
    FROM decisions d WHERE d.status = 'executed'
    RETURNING id),
log AS (
    INSERT INTO tradelog (event_id, local_ts_us, event_type, cl_ord_id, native_ord_id,
        account_id, symbol, source, body)
    SELECT gen_random_uuid(),
           (extract(epoch FROM d.created_at) * 1000000)::bigint + k * 1000,
           (ARRAY[10, 20, 31, 31, 30, 31, 20, 31, 30, 31])[k], d.decision_id::text,
           md5(d.decision_id::text), 'paper', d.symbol, 'alpaca',
           jsonb_build_object('k', k, 'client_order_id', d.decision_id)
    FROM decisions d, generate_series(1, 10) k
    RETURNING 1),
rejects AS (
    INSERT INTO order_rejects (strategy_name, strategy_version, account, symbol, side, quantity,
        order_type, reason_code, reason_message, request, rejected_at)
    SELECT (ARRAY['congress', 'momentum', 'meanrev', 'lobbying', 'insiders'])[1 + g % 5], '1.0',
           'paper', 'S' || lpad((g * 7 % 500)::text, 3, '0'), 'buy', 1, 'limit',
           (ARRAY['risk.max_qty', 'risk.max_notional', 'risk.duplicate', 'risk.rate_limit'])[1 + g % 4],
           'refused by a pre-trade check', '{}', t0 + make_interval(secs => g * 61 % 86400)
    FROM day, generate_series(1, 14 * $3::bigint) g
    RETURNING 1),
trades AS (
    INSERT INTO broker_trades (account_id, ib_perm_id, symbol, side, status, total_quantity,
        avg_price, first_executed_at, last_executed_at, trade_date, fetched_at)
    SELECT 'DU1', (extract(epoch FROM t0)::bigint / 86400) * 100000 + g,
           'S' || lpad((g * 13 % 500)::text, 3, '0'), 'buy', 'filled', 10, 101.5,
           t0 + make_interval(hours => 14, secs => g), t0 + make_interval(hours => 14, secs => g),
           t0::date, t0 + interval '1 day'
    FROM day, generate_series(1, 20 * $3::bigint) g
    RETURNING id, ib_perm_id, symbol, first_executed_at),
ibkr AS (
    INSERT INTO broker_fills (trade_id, account_id, exec_id, exec_id_base, ib_perm_id, symbol,
        side, executed_at, quantity, price, raw, fetched_at)
    SELECT t.id, 'DU1', lpad(to_hex(t.ib_perm_id), 12, '0') || '.01', lpad(to_hex(t.ib_perm_id), 12, '0'),
           t.ib_perm_id, t.symbol, 'buy', t.first_executed_at, 10, 101.5, '{}', now()
    FROM trades t
    RETURNING 1)
SELECT (SELECT count(*) FROM decisions),
       (SELECT count(*) FROM requests) + (SELECT count(*) FROM responses),
       (SELECT count(*) FROM log),
       (SELECT count(*) FROM runs)
       + 0 * ((SELECT count(*) FROM executions) + (SELECT count(*) FROM fills)
              + (SELECT count(*) FROM rejects) + (SELECT count(*) FROM ibkr))";

/// Ends the day's seeded runs (`$1` the day): one in 48 failed, one in 24 fetched nothing, the
/// others completed with their records counted. (A separate statement: the day's insert cannot
/// see its own new rows.)
const FINISH_RUNS: &str = "
UPDATE data_ingestion_runs r SET
    status = CASE WHEN x.h = 22 THEN 'failed' ELSE 'completed' END,
    completed_at = CASE WHEN x.h = 22 THEN NULL ELSE r.started_at + interval '3 minutes' END,
    failed_at = CASE WHEN x.h = 22 THEN r.started_at + interval '3 minutes' END,
    error_message = CASE WHEN x.h = 22 THEN 'upstream 503' END,
    records_fetched = CASE WHEN x.h = 23 THEN 0 ELSE x.n END,
    records_created = CASE WHEN x.h = 23 THEN 0 ELSE x.n END
FROM (SELECT i.id, row_number() OVER (ORDER BY i.started_at) - 1 AS h,
             (SELECT count(*) FROM data_ingestion_run_records c
              WHERE c.data_ingestion_run_id = i.id)::int AS n
      FROM data_ingestion_runs i
      WHERE i.started_at >= $1::date::timestamptz
        AND i.started_at < $1::date::timestamptz + interval '1 day'
        AND i.status = 'running' AND i.metadata @> '{\"seeded\": true}') x
WHERE r.id = x.id";
