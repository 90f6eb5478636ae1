//! Faults with an oracle. A seeded soak: the gateway runs as a real process (`tradegate run`)
//! against the simulated Alpaca venue and, through the PostgreSQL fault proxy, its own
//! cluster. Two strategies send a seeded mix of orders (market, limits that rest, limits that
//! fill later, stops, dollar orders, batches, cancels, replaces), while a seeded scheduler
//! breaks things: stream drops (with the market moving meanwhile), duplicate deliveries,
//! answers slower than the request timeout, 500s, 429s, answers cut mid-body, database outages
//! and lost COMMIT answers, SIGKILL and clean restarts (with fills while no gateway runs),
//! partial fills. When the faults stop and the gateway has settled, the oracle (the venue's own
//! record) must hold: every venue order has its decision and one execution equal to it, no
//! decision is pending, no client order id was sent twice, every event delivered is recorded
//! once, the trade log has no holes and keeps each order's events in receipt order, and no
//! strategy was told of more fills than were made. A violation prints the seed and the
//! timeline of the order.
//!
//! CI runs the regression seeds and a fixed set (`CI_SEEDS`, a few seconds each). A long run:
//! `TRADEGATE_CHAOS_SECONDS=3600 TRADEGATE_CHAOS_SEED=7 cargo test --test chaos -- --nocapture`
//! (`TRADEGATE_CHAOS_SEED` alone reruns one seed at the CI length).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tradegate::sim::alpaca::{Faults, SimAlpaca, SimConfig};
use tradegate_actors::alpaca_session::mapping::{decimal, decision_of, execution_status};

use common::orders::{start_gateway_process, start_venue};
use common::pgproxy::PgProxy;
use common::writer::OwnCluster;

/// Seeds that once found a bug, with the seconds they ran: they always run.
/// - 1 (15 s): a replace whose answer was lost left the execution on the replaced order, and
///   the replaced order's last event moved the execution's status.
///
/// Seed 7 of an hour-long run found, after 742 s, a gateway restarted while a COMMIT's answer
/// was lost exit at its migration check instead of starting; too long a run for CI, it is
/// kept as its own test (`a_connection_lost_while_migrating_at_start_is_tried_again`).
const REGRESSION_SEEDS: &[(u64, u64)] = &[(1, 15)];
/// The fixed seeds CI runs.
const CI_SEEDS: &[u64] = &[2, 3, 4];
/// Seconds of faults per CI seed.
const CI_SECONDS: u64 = 20;
const SYMBOLS: [&str; 2] = ["AAPL", "MSFT"];

/// What happened, in order: faults, orders sent, answers.
#[derive(Default)]
struct Timeline(Mutex<Vec<(DateTime<Utc>, String)>>);

impl Timeline {
    fn note(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((Utc::now(), what.into()));
    }

    fn entries(&self) -> Vec<(DateTime<Utc>, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// The gateway process and where its API listens.
struct Gateway {
    child: Child,
}

struct World {
    seed: u64,
    db: OwnCluster,
    proxy: PgProxy,
    venue: SimAlpaca,
    config: std::path::PathBuf,
    addr: watch::Sender<Option<SocketAddr>>,
    timeline: Arc<Timeline>,
    /// When the gateway was killed or restarted (events delivered around then may be lost
    /// from the socket or the trade log's memory queue, by design of SIGKILL: an event is on
    /// disk or stored within the batch age plus the writer's 3 s write timeout, so the oracle
    /// forgives 4 s around each)
    restarts: Mutex<Vec<DateTime<Utc>>>,
}

impl World {
    async fn start(seed: u64) -> (Self, Gateway) {
        let label = format!("chaos-{seed}");
        let db = OwnCluster::start(&label).await;
        let proxy = PgProxy::start(&db.socket_dir()).await;
        let (venue, base_url) = start_venue(SimConfig {
            rate_limit_per_min: 0,
            // buying power never runs out, however long the run
            buying_power: Decimal::from(1_000_000_000_000u64),
            ..SimConfig::default()
        })
        .await;
        let dir = common::scratch_dir(&label);
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[database]
url = "{db}"
[api]
listen = "127.0.0.1:0"
[tradelog]
spill_dir = "{spill}"
[alpaca]
request_timeout_ms = 1000
recovery_grace_secs = 2
reconnect_max_backoff_secs = 1
[[alpaca.accounts]]
name = "paper"
base_url = "{base_url}"
key_id_env = "SIM_KEY"
secret_key_env = "SIM_SECRET"
[orders.strategies.alpha]
token = "alpha-token"
[orders.strategies.beta]
token = "beta-token"
"#,
                db = proxy.conninfo("tg"),
                spill = dir.join("spill").display()
            ),
        )
        .unwrap();
        let (addr, _) = watch::channel(None);
        let world = Self {
            seed,
            db,
            proxy,
            venue,
            config,
            addr,
            timeline: Arc::default(),
            restarts: Mutex::default(),
        };
        let gateway = world.launch().await;
        (world, gateway)
    }

    async fn launch(&self) -> Gateway {
        let (child, addr) = start_gateway_process(&self.config, &[]).await;
        self.addr.send_replace(Some(addr));
        self.timeline.note(format!("gateway running at {addr}"));
        Gateway { child }
    }

    async fn kill(&self, gateway: Gateway, clean: bool) {
        let mut child = gateway.child;
        self.addr.send_replace(None);
        self.restarts.lock().unwrap().push(Utc::now());
        if clean {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                self.timeline.note("a clean stop took over 30 s: killed");
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        } else {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.timeline.note(if clean {
            "gateway stopped (SIGTERM)"
        } else {
            "gateway killed (SIGKILL)"
        });
    }

    fn faults(&self, change: impl FnOnce(&mut Faults), what: &str) {
        let mut faults = self.venue.faults();
        change(&mut faults);
        self.venue.set_faults(faults);
        self.timeline.note(what);
    }

    fn move_price(&self, rng: &mut StdRng) {
        let symbol = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
        let cents = rng.random_range(9_400..10_400);
        let price = Decimal::new(cents, 2);
        self.venue.set_price(symbol, price);
        self.timeline.note(format!("{symbol} moves to {price}"));
    }

    fn partial_fill(&self, rng: &mut StdRng) {
        let open = self.venue.open_client_ids();
        if open.is_empty() {
            return;
        }
        let cl = &open[rng.random_range(0..open.len())];
        let Some(order) = self.venue.order_by_client_id(cl) else {
            return;
        };
        let left = decimal(order.get("qty")).unwrap_or_default()
            - decimal(order.get("filled_qty")).unwrap_or_default();
        if left < Decimal::ONE || order["notional"].is_string() {
            return;
        }
        let price = Decimal::new(rng.random_range(9_500..10_500), 2);
        if self.venue.fill_part(cl, Decimal::ONE, price) {
            self.timeline
                .note(format!("{cl}: 1 filled at {price} by a counterparty"));
        }
    }
}

/// One fault, chosen by the seed, held for a bounded time.
async fn fault(world: &World, gateway: Gateway, rng: &mut StdRng) -> Gateway {
    match rng.random_range(0..12) {
        0 => {
            let hold = rng.random_range(200..1_500);
            world.faults(|f| f.stream_down = true, "stream down");
            tokio::time::sleep(Duration::from_millis(hold / 2)).await;
            world.move_price(rng);
            world.partial_fill(rng);
            tokio::time::sleep(Duration::from_millis(hold / 2)).await;
            world.faults(|f| f.stream_down = false, "stream up");
        }
        1 => {
            world.faults(|f| f.duplicate_events = true, "every event delivered twice");
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
            world.faults(|f| f.duplicate_events = false, "single deliveries");
        }
        2 => {
            world.faults(
                |f| f.delay_ms = 1_500,
                "answers 1.5 s late (past the 1 s request timeout)",
            );
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_200))).await;
            world.faults(|f| f.delay_ms = 0, "answers on time");
        }
        3 => {
            let n = rng.random_range(1..4);
            world.faults(
                |f| f.fail_next = n,
                &format!("the next {n} requests answer 500"),
            );
        }
        4 => {
            let n = rng.random_range(1..4);
            world.faults(
                |f| f.throttle_next = n,
                &format!("the next {n} requests answer 429"),
            );
        }
        5 => {
            world.faults(
                |f| f.cut_next_submissions = 1,
                "the next submission's answer breaks mid-body",
            );
        }
        6 => {
            world.timeline.note("database down");
            world.proxy.go_down().await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_500))).await;
            if rng.random_bool(0.5) {
                world.move_price(rng);
            }
            world.proxy.set_down(false);
            world.timeline.note("database up");
        }
        7 => {
            world.proxy.cut_next_commit();
            world.timeline.note("the next COMMIT's answer is lost");
        }
        8 | 9 => {
            let clean = rng.random_bool(0.4);
            world.kill(gateway, clean).await;
            // the market goes on while no gateway runs
            if rng.random_bool(0.7) {
                world.move_price(rng);
                world.partial_fill(rng);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            return world.launch().await;
        }
        10 => world.move_price(rng),
        _ => world.partial_fill(rng),
    }
    gateway
}

/// What a strategy learned from the gateway.
#[derive(Default)]
struct Told {
    /// decision -> fills told (qty)
    fills: HashMap<String, Vec<Decimal>>,
    acked: usize,
    refused: usize,
}

fn order(rng: &mut StdRng, strategy: &str, id: &str) -> Value {
    let symbol = SYMBOLS[rng.random_range(0..SYMBOLS.len())];
    let qty = rng.random_range(1..6).to_string();
    let mut o = match rng.random_range(0..10) {
        0..=3 => json!({"order_type": "market", "time_in_force": "day", "qty": qty}),
        4 | 5 => json!({"order_type": "limit", "time_in_force": "gtc", "qty": qty,
            "limit_price": Decimal::new(rng.random_range(9_000..9_600), 2).to_string()}),
        6 | 7 => json!({"order_type": "limit", "time_in_force": "day", "qty": qty,
            "limit_price": Decimal::new(rng.random_range(9_700..10_000), 2).to_string()}),
        8 => json!({"order_type": "stop", "time_in_force": "gtc", "qty": qty,
            "stop_price": Decimal::new(rng.random_range(11_000..12_000), 2).to_string()}),
        _ => json!({"order_type": "market", "time_in_force": "day",
            "notional": Decimal::new(rng.random_range(10_000..40_000), 2).to_string()}),
    };
    o["type"] = json!("submit_order");
    o["request_id"] = json!(id);
    o["strategy"] = json!(strategy);
    o["strategy_version"] = json!("chaos");
    o["symbol"] = json!(symbol);
    o["side"] = json!("buy");
    o["reference_price"] = json!("100");
    o
}

/// A strategy for the whole run: (re)connects to wherever the gateway listens, sends a seeded
/// mix, and keeps what it is told.
async fn strategy(
    name: &'static str,
    seed: u64,
    addr: watch::Receiver<Option<SocketAddr>>,
    stop: Arc<AtomicBool>,
    timeline: Arc<Timeline>,
) -> Told {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut rng = StdRng::seed_from_u64(seed);
    let told = Arc::new(Mutex::new(Told::default()));
    let known: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(at) = *addr.borrow() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut request = format!("ws://{at}/v1/strategy")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {name}-token").parse().unwrap(),
        );
        let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(request),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let reader = {
            let (told, known, timeline) = (told.clone(), known.clone(), timeline.clone());
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let decision = v["decision_id"].as_str().unwrap_or("").to_string();
                    match v["type"].as_str() {
                        Some("ack") if !decision.is_empty() => {
                            told.lock().unwrap().acked += 1;
                            known.lock().unwrap().push(decision.clone());
                            timeline.note(format!("{decision}: acked ({})", v["request_id"]));
                        }
                        Some("reject") => told.lock().unwrap().refused += 1,
                        Some("fill") => {
                            if let Some(q) = decimal(v.get("qty")) {
                                told.lock()
                                    .unwrap()
                                    .fills
                                    .entry(decision.clone())
                                    .or_default()
                                    .push(q);
                            }
                            timeline.note(format!("{decision}: told of a fill of {}", v["qty"]));
                        }
                        _ => {}
                    }
                }
            })
        };
        loop {
            if stop.load(Ordering::SeqCst) || addr.borrow().is_none_or(|a| a != at) {
                break;
            }
            n += 1;
            let id = format!("{name}-{n}");
            let message = match rng.random_range(0..20) {
                0..=13 => order(&mut rng, name, &id),
                14 | 15 => json!({"type": "submit_batch", "request_id": id,
                    "orders": (0..rng.random_range(2..4)).map(|i| {
                        let mut o = order(&mut rng, name, &format!("{id}.{i}"));
                        o.as_object_mut().unwrap().remove("type");
                        o.as_object_mut().unwrap().remove("request_id");
                        o
                    }).collect::<Vec<_>>()}),
                16 | 17 => match pick(&mut rng, &known) {
                    Some(d) => json!({"type": "cancel_order", "request_id": id, "decision_id": d}),
                    None => continue,
                },
                _ => match pick(&mut rng, &known) {
                    Some(d) => json!({"type": "replace_order", "request_id": id, "decision_id": d,
                        "qty": rng.random_range(1..8).to_string()}),
                    None => continue,
                },
            };
            if sink.send(Message::text(message.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..80))).await;
        }
        let _ = sink.close().await;
        reader.abort();
    }
    std::mem::take(&mut *told.lock().unwrap())
}

fn pick(rng: &mut StdRng, known: &Mutex<Vec<String>>) -> Option<String> {
    let known = known.lock().unwrap();
    (!known.is_empty()).then(|| known[rng.random_range(0..known.len())].clone())
}

/// A run of `seconds` of faults with `seed`; the oracle's violations (empty: it held).
async fn run(seed: u64, seconds: u64) -> Vec<String> {
    let (world, mut gateway) = World::start(seed).await;
    let stop = Arc::new(AtomicBool::new(false));
    let strategies: Vec<_> = [("alpha", 1), ("beta", 2)]
        .into_iter()
        .map(|(name, k)| {
            tokio::spawn(strategy(
                name,
                seed * 1_000 + k,
                world.addr.subscribe(),
                stop.clone(),
                world.timeline.clone(),
            ))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut faults, mut restarts) = (0u32, 0u32);
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        let before = world.restarts.lock().unwrap().len();
        gateway = fault(&world, gateway, &mut rng).await;
        faults += 1;
        if world.restarts.lock().unwrap().len() > before {
            restarts += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut told = Vec::new();
    for s in strategies {
        told.push(s.await.unwrap());
    }
    // the faults stop; the market moves once more with everything up
    world.venue.set_faults(Faults::default());
    world.proxy.disarm();
    world.proxy.set_down(false);
    world.timeline.note("faults stop");
    let client = world.db.client().await;
    let settled = common::wait_until(Duration::from_secs(90), || async {
        let violations = oracle(&world, &client, &told).await;
        violations.is_empty().then_some(())
    })
    .await;
    let violations = if settled.is_some() {
        Vec::new()
    } else {
        oracle(&world, &client, &told).await
    };
    let orders = world.venue.orders().len();
    let acked: usize = told.iter().map(|t| t.acked).sum();
    let refused: usize = told.iter().map(|t| t.refused).sum();
    println!(
        "chaos seed {seed}: {seconds} s, {orders} venue orders, {acked} acked, {refused} \
         refused, {faults} faults, {restarts} restarts, {} violations",
        violations.len()
    );
    world.kill(gateway, true).await;
    violations
        .into_iter()
        .map(|v| format!("seed {}: {v}", world.seed))
        .collect()
}

/// The venue's record against the gateway's; each violation with its order's timeline.
async fn oracle(world: &World, client: &tokio_postgres::Client, told: &[Told]) -> Vec<String> {
    let mut violations = Vec::new();
    let timeline = world.timeline.entries();
    let history = |cl: &str| -> String {
        let mut lines: Vec<String> = timeline
            .iter()
            .filter(|(_, what)| what.contains(cl) || !what.contains(':'))
            .map(|(at, what)| format!("  {} {what}", at.format("%H:%M:%S%.3f")))
            .collect();
        for e in world
            .venue
            .emitted()
            .iter()
            .filter(|e| e.client_order_id.starts_with(cl))
        {
            lines.push(format!(
                "  {} venue emitted {} ({} listening)",
                e.at.format("%H:%M:%S%.3f"),
                e.event,
                e.listeners
            ));
        }
        lines.sort();
        lines.join("\n")
    };
    // the venue's orders, by decision: the live order of a replace chain is the one not replaced
    let mut by_decision: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in world.venue.orders() {
        let cl = o["client_order_id"].as_str().unwrap_or("");
        match decision_of(cl) {
            Some(d) => by_decision.entry(d.to_string()).or_default().push(o),
            None => violations.push(format!("venue order {cl} is not a decision's")),
        }
    }
    let rows = client
        .query(
            "SELECT d.decision_id::text, d.status, d.failure_reason, e.status, \
                 e.filled_quantity, e.filled_avg_price, e.broker_order_id, \
                 (SELECT count(*) FROM trade_executions x WHERE x.trade_decision_id = d.id) \
             FROM trade_decisions d LEFT JOIN trade_executions e ON e.trade_decision_id = d.id",
            &[],
        )
        .await
        .unwrap();
    let mut recorded = HashMap::new();
    for r in &rows {
        let decision: String = r.get(0);
        let status: String = r.get(1);
        if status == "pending" {
            violations.push(format!(
                "decision {decision} is pending\n{}",
                history(&decision)
            ));
        }
        if r.get::<_, i64>(7) > 1 {
            violations.push(format!("decision {decision} has several executions"));
        }
        recorded.insert(decision, r);
    }
    for (decision, orders) in &by_decision {
        let Some(r) = recorded.get(decision) else {
            violations.push(format!("venue order of {decision} has no decision"));
            continue;
        };
        let live: Vec<&Value> = orders
            .iter()
            .filter(|o| o["replaced_by"].is_null())
            .collect();
        let [live] = live.as_slice() else {
            violations.push(format!(
                "decision {decision}: {} live venue orders",
                live.len()
            ));
            continue;
        };
        let filled = decimal(live.get("filled_qty")).unwrap_or_default();
        // a working order with fills is a partial fill, whatever a replacement's status says
        let status = execution_status(live["status"].as_str().unwrap_or("")).map(|s| {
            if matches!(s, "submitted" | "accepted") && filled > Decimal::ZERO {
                "partial_fill".to_string()
            } else {
                s.to_string()
            }
        });
        let want = (
            status,
            filled,
            decimal(live.get("filled_avg_price")),
            live["id"].as_str().map(str::to_string),
        );
        let got = (
            r.get::<_, Option<String>>(3),
            r.get::<_, Option<Decimal>>(4).unwrap_or_default(),
            r.get::<_, Option<Decimal>>(5),
            r.get::<_, Option<String>>(6),
        );
        if want != got {
            violations.push(format!(
                "decision {decision}: the venue holds {want:?}, the gateway recorded {got:?}\n{}",
                history(decision)
            ));
        }
    }
    for (decision, r) in &recorded {
        if !by_decision.contains_key(decision) {
            let (status, reason): (String, Option<String>) = (r.get(1), r.get(2));
            if status != "failed" || reason.is_none() {
                violations.push(format!(
                    "decision {decision} never reached the venue but is {status} ({reason:?})\n{}",
                    history(decision)
                ));
            }
        }
    }
    // no client order id sent twice
    let mut posts: HashMap<String, usize> = HashMap::new();
    for r in world.venue.requests() {
        if r.method == "POST"
            && let Some(cl) = r.client_order_id
        {
            *posts.entry(cl).or_default() += 1;
        }
    }
    for (cl, n) in posts.iter().filter(|(_, n)| **n > 1) {
        violations.push(format!("{cl} was sent {n} times\n{}", history(cl)));
    }
    // every event is the venue's, and every event delivered while the gateway ran is on record
    let emitted = world.venue.emitted();
    // the venue keeps its newest events only: keys older than the oldest kept are not judged
    let oldest = emitted.first().map(|e| e.at);
    let keys: HashSet<String> = client
        .query(
            "SELECT event_key FROM broker_order_events WHERE event_at >= $1",
            &[&oldest.unwrap_or_else(Utc::now)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let emitted_ids: HashSet<&str> = emitted.iter().map(|e| e.execution_id.as_str()).collect();
    for key in keys.iter().filter(|k| !k.starts_with("recovered:")) {
        if !emitted_ids.contains(key.as_str()) {
            violations.push(format!("event {key} was never emitted by the venue"));
        }
    }
    let logged: HashSet<String> = client
        .query(
            "SELECT body->'data'->>'execution_id' FROM tradelog WHERE event_type = 31 \
             AND source = 'alpaca' AND body->'data'->>'execution_id' IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let restarts = world.restarts.lock().unwrap().clone();
    let near_restart = |at: DateTime<Utc>| {
        restarts
            .iter()
            .any(|r| (at - *r).num_milliseconds().abs() < 4_000)
    };
    for e in emitted
        .iter()
        .filter(|e| e.listeners > 0 && !near_restart(e.at))
    {
        if !logged.contains(&e.execution_id) {
            violations.push(format!(
                "event {} ({} of {}) was delivered but is not on the trade log\n{}",
                e.execution_id,
                e.event,
                e.client_order_id,
                history(&e.client_order_id)
            ));
        }
    }
    // the trade log has no holes
    let gaps: i64 = client
        .query_one(
            "SELECT count(*) FROM tradelog WHERE event_type = 90 AND body ? 'gap'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if gaps > 0 {
        violations.push(format!("the trade log has {gaps} gap rows"));
    }
    // each order's pushed events in receipt order: the broker's timestamps never go back
    let out_of_order: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT exchange_ts_us, lag(exchange_ts_us) OVER \
                 (PARTITION BY cl_ord_id ORDER BY local_ts_us, id) AS before FROM tradelog \
                 WHERE event_type = 31 AND source = 'alpaca' AND error_code IS NULL \
                   AND body->>'recovered' IS NULL) t WHERE exchange_ts_us < before",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if out_of_order > 0 {
        violations.push(format!(
            "{out_of_order} pushed events are on the trade log out of receipt order"
        ));
    }
    // no strategy was told of more shares than were filled
    for t in told {
        for (decision, fills) in &t.fills {
            let told_qty: Decimal = fills.iter().copied().sum();
            let filled = recorded
                .get(decision)
                .and_then(|r| r.get::<_, Option<Decimal>>(4))
                .unwrap_or_default();
            if told_qty > filled {
                violations.push(format!(
                    "decision {decision}: the strategy was told of {told_qty} filled, {filled} were\n{}",
                    history(decision)
                ));
            }
        }
    }
    violations
}

/// The runs to make: `(seed, seconds)`.
fn runs() -> Vec<(u64, u64)> {
    let seconds = std::env::var("TRADEGATE_CHAOS_SECONDS")
        .ok()
        .and_then(|s| u64::from_str(&s).ok());
    match std::env::var("TRADEGATE_CHAOS_SEED")
        .ok()
        .and_then(|s| u64::from_str(&s).ok())
    {
        Some(seed) => vec![(seed, seconds.unwrap_or(CI_SECONDS))],
        None => REGRESSION_SEEDS
            .iter()
            .copied()
            .chain(
                CI_SEEDS
                    .iter()
                    .map(|seed| (*seed, seconds.unwrap_or(CI_SECONDS))),
            )
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_faults_end_with_every_broker_order_on_record_exactly_once() {
    let mut violations = Vec::new();
    for (seed, seconds) in runs() {
        violations.extend(run(seed, seconds).await);
    }
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
