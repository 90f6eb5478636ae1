//! `cargo bench --bench order_path`: strategies on the WebSocket API submitting limit orders
//! through the whole order path (checks, outbox commit, AlpacaSession, simulated venue) on a
//! durable private cluster, to two venues in the same run: one over plain HTTP/WS and one over
//! verified TLS (`https`/`wss`, a CA generated for the run). Measures sustained orders per
//! second (every order acked and received by the venue) for each, alternating plain and TLS
//! twice, and the TLS/plain ratio; paced at 1,000 orders/s, the latency from the strategy's
//! send to the venue's receipt (and to the ack, once the decision committed); the TLS
//! handshakes the venue completed (connections are kept and reused) and their mean cost; in
//! the same run the floor: a bare single-row INSERT + COMMIT.
//! Environment: TRADEGATE_BENCH_ORDERS (default 5000), TRADEGATE_BENCH_CONNECTIONS (4),
//! TRADEGATE_BENCH_STATEMENTS (print the server's costliest statements of the paced phase; needs
//! pg_stat_statements preloaded through TRADEGATE_BENCH_PG_SETTINGS, see benches/support).
#![allow(clippy::float_arithmetic)] // statistics of timings, not money

#[path = "support/mod.rs"]
mod support;
#[path = "../tests/common/tls.rs"]
#[allow(dead_code)] // the test PKI's files are for tests that configure a listener
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate::sim::alpaca::{SimAlpaca, SimConfig};
use tradegate_actors::alpaca_session::{AlpacaAccountConfig, Credentials};
use tradegate_actors::order_router::StrategyConfig;

/// The strategy whose orders go to the plain venue, and the one whose go over TLS.
const PLAIN: &str = "plain";
const TLS: &str = "tls";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(
        env_or("TRADEGATE_BENCH_ORDERS", 5000),
        env_or("TRADEGATE_BENCH_CONNECTIONS", 4).max(1),
    ));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Sends `per_conn` orders on each connection, paced to `rate` orders/s overall (0: as fast as
/// possible); the send time of each request id, and its ack: the decision id and when the ack
/// arrived.
async fn drive(
    addr: SocketAddr,
    strategy: &'static str,
    connections: usize,
    per_conn: usize,
    rate: usize,
    tag: &str,
) -> (
    HashMap<String, DateTime<Utc>>,
    HashMap<String, (String, DateTime<Utc>)>,
) {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut request = format!("ws://{addr}/v1/strategy")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {strategy}-token").parse().unwrap(),
            );
            let (ws, _) = tokio_tungstenite::connect_async_with_config(
                request,
                Some(tradegate_actors::ws_client_config()),
                true,
            )
            .await
            .unwrap();
            let (mut tx, mut rx) = ws.split();
            let reader = tokio::spawn(async move {
                let mut acks = HashMap::new();
                while acks.len() < per_conn {
                    // the gateway pings (its first at once); only text frames are answers
                    let text = match rx.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => continue,
                    };
                    let v: Value = serde_json::from_str(text.as_str()).unwrap();
                    if v["type"] == "ack" || v["type"] == "reject" {
                        assert_eq!(v["type"], "ack", "{v}");
                        acks.insert(
                            v["request_id"].as_str().unwrap().to_string(),
                            (v["decision_id"].as_str().unwrap().to_string(), Utc::now()),
                        );
                    }
                }
                acks
            });
            let mut sent = HashMap::new();
            let interval =
                (rate > 0).then(|| Duration::from_secs_f64(connections as f64 / rate as f64));
            let start = Instant::now();
            for i in 0..per_conn {
                if let Some(interval) = interval {
                    let due = start + interval * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let id = format!("{tag}-{c}-{i}");
                // distinct prices keep the duplicate-order window out of the way
                let order = json!({"type": "submit_order", "request_id": id, "strategy": strategy,
                    "symbol": "AAPL", "side": "buy", "qty": "1", "order_type": "limit",
                    "limit_price": format!("1.{:04}", i % 10_000), "time_in_force": "day"});
                sent.insert(id, Utc::now());
                tx.send(Message::text(order.to_string())).await.unwrap();
            }
            let acks = reader.await.unwrap();
            (sent, acks)
        }));
    }
    let mut sent = HashMap::new();
    let mut acks = HashMap::new();
    for t in tasks {
        let (s, a) = t.await.unwrap();
        sent.extend(s);
        acks.extend(a);
    }
    (sent, acks)
}

/// The running totals (sum, count) of the histograms `names`, from the gateway's metrics.
fn totals(names: &[&str]) -> Vec<(f64, f64)> {
    let text = tradegate::telemetry::metrics_handle().render();
    let value = |key: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str())?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    names
        .iter()
        .map(|n| (value(format!("{n}_sum ")), value(format!("{n}_count "))))
        .collect()
}

/// Waits until the venue has every decision; their receipt times by decision id.
async fn receipts(
    venue: &SimAlpaca,
    acks: &HashMap<String, (String, DateTime<Utc>)>,
) -> HashMap<String, DateTime<Utc>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashMap<String, DateTime<Utc>> = venue
            .requests()
            .into_iter()
            .filter_map(|r| r.client_order_id.map(|c| (c, r.received_at)))
            .collect();
        if acks.values().all(|(d, _)| seen.contains_key(d)) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 60 s) until no decision is pending and the event count stops moving.
async fn settle(client: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1;
    while Instant::now() < deadline {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM trade_decisions WHERE status = 'pending'), \
                        (SELECT count(*) FROM broker_order_events)",
                &[],
            )
            .await
            .unwrap();
        let (pending, events): (i64, i64) = (row.get(0), row.get(1));
        if pending == 0 && events == last {
            return;
        }
        last = events;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(orders: usize, connections: usize) {
    let (_cluster, conninfo, client, dir) =
        support::bench_database("bench-order-path", Vec::new()).await;

    // the floor: one single-row INSERT + COMMIT round trip
    client
        .batch_execute(
            "CREATE TABLE floor (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v TEXT)",
        )
        .await
        .unwrap();
    let mut floor = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        client
            .batch_execute("BEGIN; INSERT INTO floor (v) VALUES ('x'); COMMIT")
            .await
            .unwrap();
        floor.push(t.elapsed().as_secs_f64() * 1e6);
    }
    floor.sort_by(f64::total_cmp);
    let floor_p50 = percentile(&floor, 0.5);
    // and a bare round trip, what any statement costs on this machine at least
    let mut trip = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        client.batch_execute("SELECT 1").await.unwrap();
        trip.push(t.elapsed().as_secs_f64() * 1e6);
    }
    trip.sort_by(f64::total_cmp);
    println!(
        "floors: INSERT + COMMIT p50 {floor_p50:.0} us, p99 {:.0} us; SELECT 1 round trip p50 {:.0} us, p99 {:.0} us",
        percentile(&floor, 0.99),
        percentile(&trip, 0.5),
        percentile(&trip, 0.99)
    );

    let venue_config = SimConfig {
        rate_limit_per_min: 0,
        buying_power: Decimal::from(1_000_000_000),
        ..SimConfig::default()
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let venue_addr = listener.local_addr().unwrap();
    let venue = tradegate::sim::alpaca::spawn(listener, venue_config.clone());
    let pki = tls::TestPki::new(&dir.join("pki"), "bench-ca");
    let (tls_venue, tls_url) = tls::start_tls_venue(venue_config, &pki.server).await;
    let mut config = Config::default();
    config.database.url = conninfo;
    config.database.pool_size = 16;
    config.log.level = "warn".into();
    config.tradelog.spill_dir = dir.join("spill");
    config.tls.extra_ca_file = pki.ca_file.clone();
    config.alpaca.accounts = vec![
        AlpacaAccountConfig {
            name: "paper".into(),
            base_url: format!("http://{venue_addr}"),
            ..AlpacaAccountConfig::default()
        },
        AlpacaAccountConfig {
            name: "paper-tls".into(),
            base_url: tls_url,
            ..AlpacaAccountConfig::default()
        },
    ];
    for (account, strategy) in [("paper", PLAIN), ("paper-tls", TLS)] {
        config
            .alpaca_keys
            .insert(account.into(), Credentials::new("SIMKEY", "SIMSECRET"));
        config.orders.strategies.insert(
            strategy.into(),
            StrategyConfig {
                token: format!("{strategy}-token"),
                account: account.into(),
                ..StrategyConfig::default()
            },
        );
    }
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = running.api_addr();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let legs = [(PLAIN, &venue), (TLS, &tls_venue)];

    // warm-up
    for (strategy, venue) in legs {
        let (_, warm) = drive(addr, strategy, connections, 50, 0, "warm").await;
        receipts(venue, &warm).await;
    }

    // sustained: as fast as the path allows, plain and TLS alternating twice
    let per_conn = orders.div_ceil(connections);
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..2 {
        for (strategy, venue) in legs {
            let tag = format!("max{round}");
            let started = Instant::now();
            let (sent, acks) = drive(addr, strategy, connections, per_conn, 0, &tag).await;
            let seen = receipts(venue, &acks).await;
            let first = sent.values().min().copied().unwrap();
            let last = acks
                .values()
                .filter_map(|(d, _)| seen.get(d))
                .max()
                .copied()
                .unwrap();
            let span = (last - first).to_std().unwrap_or(started.elapsed());
            let total = acks.len();
            let rate = total as f64 / span.as_secs_f64();
            println!(
                "sustained ({strategy}, round {}): {total} orders over {connections} connections \
                 in {:.3} s = {rate:.0} orders/s",
                round + 1,
                span.as_secs_f64()
            );
            rates.entry(strategy).or_default().push(rate);
            settle(&client).await;
        }
    }
    let mean_rate = |s: &str| rates[s].iter().sum::<f64>() / rates[s].len() as f64;
    let (throughput, tls_throughput) = (mean_rate(PLAIN), mean_rate(TLS));
    let requests = tls_venue.requests().len();
    println!(
        "sustained: plain {throughput:.0} orders/s, TLS {tls_throughput:.0} orders/s, TLS / plain \
         = {:.3} ({:+.1} %)",
        tls_throughput / throughput,
        (tls_throughput / throughput - 1.0) * 100.0
    );
    println!(
        "TLS handshakes: {} for {requests} requests (connections reused), mean {:.0} us each \
         (server side), {} refused",
        tls_venue.handshakes().completed(),
        tls_venue.handshakes().mean().as_secs_f64() * 1e6,
        tls_venue.handshakes().failed()
    );

    // let the burst's background work (outcomes, stream events, trade log) finish first, so
    // the latency below is that of a steady 1,000 orders/s, not of a drain
    settle(&client).await;
    let statements = std::env::var_os("TRADEGATE_BENCH_STATEMENTS").is_some();
    if statements {
        // needs TRADEGATE_BENCH_PG_SETTINGS="shared_preload_libraries=pg_stat_statements"
        client
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                 SELECT pg_stat_statements_reset()",
            )
            .await
            .unwrap();
    }

    // latency at 1,000 orders/s for 3 s; the outbox's own histograms, differenced around it,
    // say how much of it is waiting for the commit before and how much the commit itself
    let outbox = [
        "tradegate_outbox_wait_seconds",
        "tradegate_outbox_commit_seconds",
        "tradegate_outbox_commit_decisions",
    ];
    let mut paced = HashMap::new();
    for (strategy, venue) in legs {
        let before = totals(&outbox);
        let (sent, acks) = drive(
            addr,
            strategy,
            connections,
            3000 / connections,
            1000,
            "paced",
        )
        .await;
        let seen = receipts(venue, &acks).await;
        let micros = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_microseconds();
        let mut latencies: Vec<f64> = acks
            .iter()
            .filter_map(|(rid, (d, _))| Some(micros(*sent.get(rid)?, *seen.get(d)?)? as f64))
            .collect();
        let after = totals(&outbox);
        let mean = |i: usize| {
            let (sum, count) = (after[i].0 - before[i].0, after[i].1 - before[i].1);
            if count > 0.0 { sum / count } else { f64::NAN }
        };
        latencies.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let mut acked: Vec<f64> = acks
            .iter()
            .filter_map(|(rid, (_, at))| Some(micros(*sent.get(rid)?, *at)? as f64))
            .collect();
        acked.sort_by(f64::total_cmp);
        println!(
            "{strategy} at 1000 orders/s, send -> ack (decision committed): p50 {:.0} us, p99 {:.0} us",
            percentile(&acked, 0.5),
            percentile(&acked, 0.99)
        );
        println!(
            "{strategy} at 1000 orders/s, the outbox (means): waiting for the commit before {:.0} \
             us, the commit {:.0} us for {:.1} decisions",
            mean(0) * 1e6,
            mean(1) * 1e6,
            mean(2)
        );
        println!(
            "{strategy} latency at 1000 orders/s, send -> venue receipt: p50 {p50:.0} us, p99 \
             {p99:.0} us ({} orders); insert+commit floor p50 {floor_p50:.0} us; p50 / floor = {:.1}",
            latencies.len(),
            p50 / floor_p50
        );
        paced.insert(strategy, (p50, p99));
        settle(&client).await;
    }
    let (p50, p99) = paced[PLAIN];
    let (tls_p50, tls_p99) = paced[TLS];
    if statements {
        for line in tradegate::telemetry::metrics_handle().render().lines() {
            if line.contains("outbox") || line.contains("quantile=\"0.99\"") {
                println!("{line}");
            }
        }
        settle(&client).await;
        for row in client
            .query(
                "SELECT round(total_exec_time::numeric, 1)::text, calls, \
                        round((total_exec_time / calls)::numeric, 3)::text, \
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 140) \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25",
                &[],
            )
            .await
            .unwrap()
        {
            let (total, calls, mean, query): (String, i64, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            println!("{total:>10} ms {calls:>7} x {mean:>8} ms  {query}");
        }
    }
    running.stop().await.unwrap();
    println!(
        "order_path: {throughput:.0} orders/s, p50 {p50:.0} us, p99 {p99:.0} us, insert+commit floor p50 {floor_p50:.0} us"
    );
    println!(
        "order_path over TLS: {tls_throughput:.0} orders/s ({:.3} of plain), p50 {tls_p50:.0} us, p99 {tls_p99:.0} us",
        tls_throughput / throughput
    );
}
