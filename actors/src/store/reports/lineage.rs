//! A decision's lineage: the data it was made on, its payloads, executions, events and log rows.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{DECISION_LINE, DecisionLine, decision_line};
use crate::store::StoreError;

/// A stored API payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayloadView {
    /// Its id
    pub id: i64,
    /// ApiRequest or ApiResponse
    pub kind: String,
    /// Where it went or came from
    pub source: String,
    /// When
    pub captured_at: DateTime<Utc>,
    /// The document
    pub payload: Value,
}

/// One API call of an ingestion run, with both payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallView {
    /// The endpoint
    pub endpoint: String,
    /// HTTP method
    pub method: Option<String>,
    /// HTTP status
    pub http_status: Option<i32>,
    /// How long it took
    pub duration_ms: Option<i32>,
    /// When it was logged
    pub at: DateTime<Utc>,
    /// The request
    pub request: Option<PayloadView>,
    /// The response
    pub response: Option<PayloadView>,
}

/// An ingestion run as lineage shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// The run
    pub run_id: Uuid,
    /// Task
    pub task: String,
    /// Source
    pub source: String,
    /// running, completed, failed
    pub status: String,
    /// Started
    pub started_at: DateTime<Utc>,
    /// When its data became available
    pub completed_at: Option<DateTime<Utc>>,
    /// Records fetched
    pub records_fetched: i32,
}

/// One event of the decision's order, from any of the trails, in time order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// When
    pub at: DateTime<Utc>,
    /// decision, execution, broker_event, tradelog
    pub trail: String,
    /// What happened
    pub what: String,
    /// The native document, where there is one
    pub body: Option<Value>,
}

/// The execution of a decision with both payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionView {
    /// The execution's id
    pub execution_id: Uuid,
    /// Its status
    pub status: String,
    /// The broker
    pub broker: String,
    /// The broker's order id
    pub broker_order_id: Option<String>,
    /// HTTP status of the submission
    pub http_status: Option<i32>,
    /// The broker's error code
    pub error_code: Option<String>,
    /// The broker's error message
    pub error_message: Option<String>,
    /// Filled quantity
    pub filled_quantity: Decimal,
    /// Average fill price
    pub filled_avg_price: Option<Decimal>,
    /// When it was sent
    pub submitted_at: Option<DateTime<Utc>>,
    /// The request as sent
    pub request: Option<PayloadView>,
    /// The response as received
    pub response: Option<PayloadView>,
}

/// "What data did we have when we made this trade": the decision and everything it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lineage {
    /// The decision
    pub decision: DecisionLine,
    /// Its primary signal (type, id)
    pub primary_signal: Option<(String, String)>,
    /// The run that proves the primary data was there, and when
    pub primary_run: Option<RunView>,
    /// The API calls of that run with their payloads
    pub primary_run_calls: Vec<CallView>,
    /// The runs completed within the lineage window before the decision (from its rationale)
    pub lineage_runs: Value,
    /// Whether the primary run completed before the decision was made
    pub data_available_before_decision: Option<bool>,
    /// The execution, if the order was sent
    pub execution: Option<ExecutionView>,
    /// Decision, execution, broker events and trade-log events for the order, in time order
    pub timeline: Vec<TimelineEntry>,
    /// What was read from the imported day archives (`tradegate audit import`) because the
    /// hot tables no longer hold it
    pub from_archive: Vec<String>,
}

pub(super) async fn payload(
    client: &impl GenericClient,
    id: Option<i64>,
) -> Result<Option<PayloadView>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    let row = client
        .query_opt(
            // a payload deleted from the hot table after its day was archived is read from
            // the imported archive
            "SELECT id, type, source, captured_at, payload FROM ( \
                 SELECT id, type, source, captured_at, payload, 0 AS o FROM api_payloads \
                 WHERE id = $1 \
                 UNION ALL SELECT id, type, source, captured_at, payload, 1 \
                 FROM archive.api_payloads WHERE id = $1) p ORDER BY o LIMIT 1",
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading a payload"))?;
    Ok(row.map(|r| PayloadView {
        id: r.get(0),
        kind: r.get(1),
        source: r.get(2),
        captured_at: r.get(3),
        payload: r.get(4),
    }))
}

/// The day archive that holds payload `id`, by `audit_archives`' id ranges.
async fn archived_in(client: &impl GenericClient, id: i64) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            "SELECT dir FROM audit_archives \
             WHERE $1 BETWEEN payload_first_id AND payload_last_id ORDER BY day LIMIT 1",
            &[&id],
        )
        .await
        .map_err(StoreError::new("finding a payload's archive"))?;
    Ok(row.map(|r| r.get(0)))
}

/// The lineage of `decision_id`; `None` when there is no such decision.
pub async fn lineage(
    client: &impl GenericClient,
    decision_id: Uuid,
) -> Result<Option<Lineage>, StoreError> {
    // the hot tables first, then the imported archive
    let mut from_archive = Vec::new();
    let mut found = None;
    for schema in ["", "archive."] {
        found = client
            .query_opt(
                &format!(
                    "SELECT {DECISION_LINE}, d.primary_signal_type, d.primary_signal_id, \
                            d.primary_ingestion_run_id, d.id, e.execution_id, e.broker, \
                            e.error_code, e.submitted_at, e.api_request_payload_id, \
                            e.api_response_payload_id, d.executed_at, d.failed_at, \
                            d.cancelled_at, \
                            greatest(d.updated_at, e.updated_at, \
                                     (SELECT max(recorded_at) FROM {schema}broker_order_events o \
                                      WHERE o.trade_decision_id = d.id)) \
                     FROM {schema}trade_decisions d \
                     LEFT JOIN {schema}trade_executions e ON e.trade_decision_id = d.id \
                     WHERE d.decision_id = $1"
                ),
                &[&decision_id],
            )
            .await
            .map_err(StoreError::new("reading a decision"))?;
        if found.is_some() {
            if !schema.is_empty() {
                from_archive.push("the decision and its execution".to_string());
            }
            break;
        }
    }
    let Some(row) = found else {
        return Ok(None);
    };
    let decision = decision_line(&row);
    let last_change: DateTime<Utc> = row
        .get::<_, Option<DateTime<Utc>>>(33)
        .unwrap_or(decision.created_at);
    let primary_signal = row
        .get::<_, Option<String>>(20)
        .zip(row.get::<_, Option<String>>(21));
    let run_pk: Option<i64> = row.get(22);
    let decision_pk: i64 = row.get(23);
    let primary_run = match run_pk {
        None => None,
        Some(pk) => client
            .query_opt(
                "SELECT run_id, task_name, data_source, status, started_at, completed_at, \
                        records_fetched FROM ( \
                     SELECT *, 0 AS o FROM data_ingestion_runs WHERE id = $1 \
                     UNION ALL SELECT *, 1 FROM archive.data_ingestion_runs WHERE id = $1) r \
                 ORDER BY o LIMIT 1",
                &[&pk],
            )
            .await
            .map_err(StoreError::new("reading the primary run"))?
            .map(|r| RunView {
                run_id: r.get(0),
                task: r.get(1),
                source: r.get(2),
                status: r.get(3),
                started_at: r.get(4),
                completed_at: r.get(5),
                records_fetched: r.get(6),
            }),
    };
    let mut primary_run_calls = Vec::new();
    if let Some(pk) = run_pk {
        let calls = client
            .query(
                "SELECT DISTINCT ON (id) endpoint, http_method, http_status_code, duration_ms, \
                        created_at, api_request_payload_id, api_response_payload_id \
                 FROM (SELECT * FROM api_call_logs WHERE data_ingestion_run_id = $1 \
                       UNION ALL SELECT * FROM archive.api_call_logs \
                       WHERE data_ingestion_run_id = $1) c ORDER BY id",
                &[&pk],
            )
            .await
            .map_err(StoreError::new("reading the run's API calls"))?;
        for c in &calls {
            primary_run_calls.push(CallView {
                endpoint: c.get(0),
                method: c.get(1),
                http_status: c.get(2),
                duration_ms: c.get(3),
                at: c.get(4),
                request: payload(client, c.get(5)).await?,
                response: payload(client, c.get(6)).await?,
            });
        }
    }
    let (request, response) =
        tokio::try_join!(payload(client, row.get(28)), payload(client, row.get(29)))?;
    // a payload past retention whose day archive is not imported: where it is
    for (what, id, view) in [
        ("request", row.get::<_, Option<i64>>(28), &request),
        ("response", row.get::<_, Option<i64>>(29), &response),
    ] {
        if let (Some(id), None) = (id, view) {
            from_archive.push(match archived_in(client, id).await? {
                Some(dir) => format!(
                    "the {what} payload {id} is in the day archive {dir}, not imported (tradegate audit import)"
                ),
                None => format!("the {what} payload {id} is in no table and no recorded archive"),
            });
        }
    }
    let execution = match row.get::<_, Option<Uuid>>(24) {
        None => None,
        Some(execution_id) => Some(ExecutionView {
            execution_id,
            status: decision.execution_status.clone().unwrap_or_default(),
            broker: row.get(25),
            broker_order_id: decision.broker_order_id.clone(),
            http_status: decision.http_status,
            error_code: row.get(26),
            error_message: decision.error_message.clone(),
            filled_quantity: decision.filled_quantity.unwrap_or_default(),
            filled_avg_price: decision.filled_avg_price,
            submitted_at: row.get(27),
            request,
            response,
        }),
    };
    let mut timeline = vec![TimelineEntry {
        at: decision.created_at,
        trail: "decision".into(),
        what: "decision committed (pending)".into(),
        body: None,
    }];
    for (i, what) in [
        (30, "decision executed"),
        (31, "decision failed"),
        (32, "decision cancelled"),
    ] {
        if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(i) {
            timeline.push(TimelineEntry {
                at,
                trail: "decision".into(),
                what: what.into(),
                body: None,
            });
        }
    }
    if let (Some(e), Some(at)) = (&execution, execution.as_ref().and_then(|e| e.submitted_at)) {
        timeline.push(TimelineEntry {
            at,
            trail: "execution".into(),
            what: format!("submitted to {}: {}", e.broker, e.status),
            body: None,
        });
    }
    let events = async {
        client
            .query(
                // the hot table and the imported archive, each event once
                "SELECT DISTINCT ON (id) coalesce(event_at, recorded_at), event, order_status, \
                        body, archived \
                 FROM (SELECT *, false AS archived FROM broker_order_events \
                       WHERE trade_decision_id = $1 \
                       UNION ALL SELECT *, true FROM archive.broker_order_events \
                       WHERE trade_decision_id = $1) o \
                 ORDER BY id, archived",
                &[&decision_pk],
            )
            .await
            .map_err(StoreError::new("reading the order's broker events"))
    };
    let logged = async {
        client
            .query(
                // past the hot window the order's rows are in the imported archive
                "SELECT DISTINCT ON (id) local_ts_us, event_type, body, archived \
                 FROM (SELECT id, local_ts_us, event_type, body, false AS archived \
                       FROM tradelog \
                       WHERE cl_ord_id = $1 AND local_ts_us >= $2 AND local_ts_us < $3 \
                       UNION ALL SELECT id, local_ts_us, event_type, body, true \
                       FROM archive.tradelog \
                       WHERE cl_ord_id = $1 AND local_ts_us >= $2 AND local_ts_us < $3) l \
                 ORDER BY id, archived",
                // only the days the order lived are searched (the log is partitioned by day): from
                // a minute before its decision to a week after its last recorded change (a refused
                // cancel or replace changes no row but is logged)
                &[
                    &decision_id.to_string(),
                    &(decision.created_at.timestamp_micros() - 60_000_000),
                    &(last_change.timestamp_micros() + 7 * 86_400_000_000),
                ],
            )
            .await
            .map_err(StoreError::new("reading the order's trade-log events"))
    };
    let (events, logged) = tokio::try_join!(events, logged)?;
    for (rows, at, what) in [
        (&events, 4, "broker event"),
        (&logged, 3, "trade-log event"),
    ] {
        let archived = rows.iter().filter(|r| r.get::<_, bool>(at)).count();
        if archived > 0 {
            from_archive.push(format!(
                "{archived} {what}{}",
                if archived == 1 { "" } else { "s" }
            ));
        }
    }
    for e in &events {
        let status: Option<String> = e.get(2);
        timeline.push(TimelineEntry {
            at: e.get(0),
            trail: "broker_event".into(),
            what: match status {
                Some(s) => format!("{} ({s})", e.get::<_, String>(1)),
                None => e.get(1),
            },
            body: Some(e.get(3)),
        });
    }
    for l in &logged {
        let us: i64 = l.get(0);
        timeline.push(TimelineEntry {
            at: DateTime::from_timestamp_micros(us).unwrap_or_default(),
            trail: "tradelog".into(),
            what: event_name(l.get(1)).to_string(),
            body: Some(l.get(2)),
        });
    }
    timeline.sort_by_key(|t| t.at);
    let data_available_before_decision = primary_run
        .as_ref()
        .map(|r| r.completed_at.is_some_and(|c| c <= decision.created_at));
    Ok(Some(Lineage {
        lineage_runs: decision.rationale["data_lineage"]["ingestion_runs"].clone(),
        decision,
        primary_signal,
        primary_run,
        primary_run_calls,
        data_available_before_decision,
        execution,
        timeline,
        from_archive,
    }))
}

/// The name of a trade-log event type code.
fn event_name(code: i16) -> &'static str {
    match code {
        10 => "request_order_new",
        11 => "request_order_cancel",
        12 => "request_order_amend",
        13 => "request_cancel_all",
        20 => "api_response",
        30 => "api_event_execution",
        31 => "api_event_order_update",
        32 => "api_event_trade_lite",
        90 => "connectivity_info",
        _ => "unknown",
    }
}
