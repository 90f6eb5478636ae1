//! The daily summary delivered by a running gateway, over real HTTP and PostgreSQL: at
//! `[reporter] daily_summary_at` (a short clock here: due at once) the Reporter builds the
//! day's summary, stores it and POSTs it to the webhook in Slack's form; a delivery the webhook
//! refuses is tried again; a restart sends nothing twice. The payload purge runs at start.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tradegate::app::Running;
use tradegate::config::Config;
use tradegate_actors::reporter::WebhookFormat;

use common::{TestDb, scratch_dir, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A webhook on loopback that keeps every body and refuses the first with a 500.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/hook/T0SECRET42",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                let mut kept = keep.lock().unwrap();
                kept.push(v);
                if kept.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // the path stands for the secret a Slack webhook's URL is
    let url = format!("http://{}/hook/T0SECRET42", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn summaries(received: &Mutex<Vec<Value>>) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("tradegate daily summary"))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_summary_is_sent_at_its_time_once_a_day_also_after_a_restart_and_the_purge_runs_at_start()
 {
    let db = TestDb::new().await;
    let client = db.client().await;
    // something for the summary to tell
    client
        .execute(
            "INSERT INTO alerts (kind, severity, message) VALUES ('test.summary', 'info', 'x')",
            &[],
        )
        .await
        .unwrap();
    // a payload past retention (unreferenced) and a fresh one: the purge at start takes the
    // first, at once rather than a whole retention interval later
    for days in [800, 1] {
        client
            .execute(
                "INSERT INTO api_payloads (type, payload, source, captured_at) \
                 VALUES ('ApiRequest', '{\"endpoint\": \"/x\", \"method\": \"GET\"}', 'test', \
                         now() - make_interval(days => $1))",
                &[&days],
            )
            .await
            .unwrap();
    }
    let (url, received) = webhook().await;
    let mut config = Config::default();
    config.database.url = db.conninfo.clone();
    config.tradelog.spill_dir = scratch_dir("daily-summary").join("spill");
    common::api::secure(&mut config);
    config.reporter.webhook_url = Some(url);
    config.reporter.webhook_format = WebhookFormat::Slack;
    // a short clock: the summary of the day (UTC) is due from midnight on, checked every second
    config.reporter.daily_summary_at = "00:00".into();
    config.reporter.daily_summary_timezone = "UTC".into();
    config.reporter.daily_summary_check_secs = 1;
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let purged = wait_until(WAIT, || async {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM api_payloads WHERE source = 'test'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (left == 1).then_some(())
    })
    .await;
    assert!(
        purged.is_some(),
        "the purge at start took the old payload, and only it"
    );
    // the refusal is kept with the summary, without the webhook's URL (a credential)
    let refused: String = wait_until(WAIT, || async {
        client
            .query_opt(
                "SELECT last_error FROM daily_summaries WHERE last_error IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    })
    .await
    .expect("the refused delivery on record");
    assert!(refused.contains("500"), "{refused}");
    assert!(!refused.contains("T0SECRET42"), "{refused}");
    // the first delivery is refused, the next one taken
    let sent = wait_until(WAIT, || async {
        let s = summaries(&received);
        (s.len() == 2).then_some(s)
    })
    .await
    .expect("the summary delivered after one refusal");
    assert_eq!(sent[0], sent[1], "the same summary, sent again");
    let today = chrono::Utc::now().date_naive();
    let text = sent[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("tradegate daily summary {today}\n")),
        "{text}"
    );
    assert!(text.contains("alerts: test.summary 1"), "{text}");
    assert_eq!(
        sent[1].as_object().unwrap().len(),
        1,
        "Slack's form: text alone"
    );
    // the webhook has the summary before the Reporter records the delivery: wait for it
    let row = wait_until(WAIT, || async {
        client
            .query_opt(
                "SELECT day, attempts, delivered_at IS NOT NULL, last_error, text, \
                        summary->'alerts'->0->>'key' FROM daily_summaries \
                 WHERE delivered_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
    })
    .await
    .expect("the delivery on record");
    assert_eq!(row.get::<_, chrono::NaiveDate>(0), today);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Option<String>>(3), None);
    assert_eq!(row.get::<_, String>(4), text);
    assert_eq!(
        row.get::<_, Option<String>>(5).as_deref(),
        Some("test.summary")
    );
    running.stop().await.unwrap();

    // a restart the same day sends nothing again
    let running = Running::start(&config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(summaries(&received).len(), 2, "once per day");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM daily_summaries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    running.stop().await.unwrap();
}
