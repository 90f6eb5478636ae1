//! `cargo bench --bench reconcile`: one Alpaca account with 5,000 symbols and 100,000 fills
//! (`TRADEGATE_BENCH_FILLS` overrides) between two position snapshots, in a private, durable
//! cluster. Each round reconciles the window (positions of both snapshots, the fills summed by
//! symbol with the uncertain ones apart, the comparison, the run and its break recorded with
//! the break's alert) and, as its floor, reads those fills bare (the rows of the window's fill
//! events with their symbol and side, every one to the client). The second snapshot differs
//! from the fills in one symbol, so every round must find exactly that one break.
//!
//! Last line: `reconcile: <n> symbols, <m> fills in <t> ms (read floor <f> ms)`, medians of
//! the rounds.

// Rates and ratios of timings are statistics, not money.
#![allow(clippy::float_arithmetic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use tradegate_actors::reconciliation::{ReconcileConfig, reconcile};

#[path = "support/mod.rs"]
mod support;

const ACCOUNT: &str = "bench";
const SYMBOLS: i32 = 5_000;
const ROUNDS: usize = 5;

fn main() {
    let fills: i32 = std::env::var("TRADEGATE_BENCH_FILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(fills.max(1)));
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The account's decisions, executions and fill events, and two snapshots around them (the
/// second off by one share in `S0007`).
async fn generate(client: &tokio_postgres::Client, fills: i32) {
    let t0 = Utc::now() - chrono::Duration::hours(2);
    let end = t0 + chrono::Duration::milliseconds(i64::from(fills) + 1);
    client
        .execute(
            "INSERT INTO trade_decisions (decision_id, strategy_name, strategy_version, account, \
                 symbol, side, quantity, order_type, time_in_force, status, created_at) \
             SELECT gen_random_uuid(), 'bench', '1', $1, \
                    'S' || lpad((i % $3)::text, 4, '0'), \
                    CASE WHEN i % 3 = 0 THEN 'sell' ELSE 'buy' END, (i % 7) + 1, 'market', \
                    'day', 'executed', $2::timestamptz + i * interval '1 millisecond' \
             FROM generate_series(1, $4::int) i",
            &[&ACCOUNT, &t0, &SYMBOLS, &fills],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO trade_executions (trade_decision_id, execution_id, status, \
                 broker_order_id, filled_quantity, filled_avg_price, submitted_at, filled_at) \
             SELECT id, gen_random_uuid(), 'filled', 'o' || id, quantity, 100, created_at, \
                    created_at + interval '1 millisecond' \
             FROM trade_decisions WHERE account = $1",
            &[&ACCOUNT],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO broker_order_events (broker, account, event_key, trade_decision_id, \
                 broker_order_id, event, order_status, qty, price, event_at, body) \
             SELECT 'alpaca', $1, 'fill:' || id, id, 'o' || id, 'fill', 'filled', quantity, \
                    100, created_at + interval '1 millisecond', '{}' \
             FROM trade_decisions WHERE account = $1",
            &[&ACCOUNT],
        )
        .await
        .unwrap();
    let payload = |kind: &str| {
        format!(
            "INSERT INTO api_payloads (type, payload, source, captured_at) \
             VALUES ('{kind}', '{{\"endpoint\": \"/v2/positions\"}}', 'alpaca', now()) \
             RETURNING id"
        )
    };
    for (requested, answered, off) in [
        (
            t0 - chrono::Duration::seconds(10),
            t0 - chrono::Duration::seconds(9),
            false,
        ),
        (
            end + chrono::Duration::seconds(9),
            end + chrono::Duration::seconds(10),
            true,
        ),
    ] {
        let request: i64 = client
            .query_one(&payload("ApiRequest"), &[])
            .await
            .unwrap()
            .get(0);
        let response: i64 = client
            .query_one(&payload("ApiResponse"), &[])
            .await
            .unwrap()
            .get(0);
        // every symbol starts at 1,000 shares; the second snapshot holds what the fills make
        client
            .execute(
                "WITH s AS ( \
                     INSERT INTO position_snapshots (broker, account, requested_at, as_of, \
                         positions_count, request_payload_id, response_payload_id) \
                     VALUES ('alpaca', $1, $2, $3, $4, $5, $6) RETURNING id, as_of), \
                 q AS ( \
                     SELECT 'S' || lpad(k::text, 4, '0') AS symbol, 1000::numeric AS quantity \
                     FROM generate_series(0, $4 - 1) k), \
                 net AS ( \
                     SELECT symbol, sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS n \
                     FROM trade_decisions WHERE account = $1 GROUP BY symbol) \
                 INSERT INTO broker_positions (snapshot_id, broker, account, symbol, quantity, \
                     average_cost, as_of, raw) \
                 SELECT s.id, 'alpaca', $1, q.symbol, \
                        q.quantity + CASE WHEN $7 THEN COALESCE(net.n, 0) \
                                          + CASE WHEN q.symbol = 'S0007' THEN 1 ELSE 0 END \
                                          ELSE 0 END, \
                        100, s.as_of, '{}' \
                 FROM s, q LEFT JOIN net ON net.symbol = q.symbol",
                &[
                    &ACCOUNT,
                    &requested,
                    &answered,
                    &SYMBOLS,
                    &request,
                    &response,
                    &off,
                ],
            )
            .await
            .unwrap();
    }
    client.execute("ANALYZE", &[]).await.unwrap();
}

async fn run(fills: i32) {
    let (mut cluster, _, mut client, _) =
        support::bench_database("bench-reconcile", Vec::new()).await;
    generate(&client, fills).await;
    let config = ReconcileConfig {
        tolerance_ms: 1000,
        settle_ms: 0,
    };
    let mut checks = Vec::new();
    let mut floors = Vec::new();
    for round in 0..ROUNDS {
        // the bare read of the window's fills
        let started = Instant::now();
        let rows = client
            .query(
                "SELECT d.symbol, d.side, e.qty, e.event_at FROM broker_order_events e \
                 JOIN trade_decisions d ON d.id = e.trade_decision_id \
                 WHERE e.broker = 'alpaca' AND e.account = $1 AND e.event = 'fill'",
                &[&ACCOUNT],
            )
            .await
            .unwrap();
        floors.push(started.elapsed());
        assert_eq!(rows.len(), fills as usize);
        drop(rows);

        let started = Instant::now();
        let done = reconcile(&mut client, Some("alpaca"), Some(ACCOUNT), &config, "bench")
            .await
            .unwrap();
        checks.push(started.elapsed());
        assert_eq!(done.len(), 1, "one window");
        let w = &done[0];
        assert_eq!(w.symbols_checked, SYMBOLS as usize);
        assert_eq!(w.fills_considered, i64::from(fills));
        assert_eq!(w.breaks.len(), 1, "round {round}: {:?}", w.breaks);
        assert_eq!(w.breaks[0].symbol, "S0007");
        // the window again, next round
        client
            .batch_execute(
                "DELETE FROM reconciliation_breaks; DELETE FROM reconciliation_runs; \
                 DELETE FROM alerts WHERE kind = 'reconcile.position_break'",
            )
            .await
            .unwrap();
        println!(
            "round {round}: reconcile {:.1} ms, read floor {:.1} ms",
            ms(checks[round]),
            ms(floors[round])
        );
    }
    let (check, floor) = (median(checks), median(floors));
    println!(
        "ratio reconcile / read floor: {:.2}",
        check.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "reconcile: {SYMBOLS} symbols, {fills} fills in {:.0} ms (read floor {:.0} ms)",
        ms(check),
        ms(floor)
    );
    drop(client);
    let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
}
