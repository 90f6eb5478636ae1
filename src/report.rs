//! The audit reports for people: `tradegate report
//! symbol|decision|order|strategy|failures|daily|actions|reconciliation`
//! as readable tables or JSON, and the same reports for the HTTP API. The queries are in
//! `tradegate_actors::store::reports`.

use anyhow::Result;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use tradegate_actors::domain::OperatorAction;
use tradegate_actors::store::StoreError;
use tradegate_actors::store::reconciliation::{self, Reconciliations};
use tradegate_actors::store::reports::{
    self, Count, DailySummary, FailureAnalysis, Lineage, OrderFailure, Outcomes, Range,
    StrategyLine, SymbolActivity,
};
use uuid::Uuid;

use crate::output::opt;

/// Which report, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    /// A symbol's activity over a range
    Symbol {
        /// The symbol
        symbol: String,
        /// The range
        range: Range,
        /// At most this many rows per list
        limit: i64,
    },
    /// A decision's lineage
    Decision(Uuid),
    /// Why an order failed: a decision id or a broker order id
    Order(String),
    /// Strategy performance (one strategy when named)
    Strategy {
        /// The strategy
        name: Option<String>,
        /// The range
        range: Range,
    },
    /// Failure analysis over a range
    Failures(Range),
    /// One day's summary
    Daily(NaiveDate),
    /// What operators changed over a range, newest first
    Actions {
        /// The range
        range: Range,
        /// At most this many
        limit: i64,
    },
    /// The position windows reconciled and the breaks found over a range, newest first
    Reconciliation {
        /// The range
        range: Range,
        /// Only this account
        account: Option<String>,
        /// At most this many of each
        limit: i64,
    },
}

/// A produced report.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `report symbol`
    Symbol(Box<SymbolActivity>),
    /// `report decision`
    Decision(Box<Lineage>),
    /// `report order`
    Order(Box<OrderFailure>),
    /// `report strategy`
    Strategy(Vec<StrategyLine>),
    /// `report failures`
    Failures(FailureAnalysis),
    /// `report daily`
    Daily(DailySummary),
    /// `report actions`, newest first
    Actions(Vec<OperatorAction>),
    /// `report reconciliation`, newest first
    Reconciliation(Reconciliations),
}

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The decision or order does not exist
    #[error("{0}")]
    NotFound(String),
    /// A parameter is wrong
    #[error("{0}")]
    Invalid(String),
    /// The database failed
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The range `[from, to]` in whole UTC days; without `to`, today; without `from`, the year
/// (365 days) ending with `to`.
pub fn day_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Range, ReportError> {
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = from.unwrap_or(to - Duration::days(364));
    Range::days(from, to).map_err(ReportError::Invalid)
}

/// A symbol as reports take it: trimmed, upper case, not empty.
pub fn symbol(text: &str) -> Result<String, ReportError> {
    let s = text.trim().to_ascii_uppercase();
    if s.is_empty() || s.len() > 32 {
        return Err(ReportError::Invalid(format!("{text:?} is not a symbol")));
    }
    Ok(s)
}

/// Produces `request` on `client`.
pub async fn produce(
    client: &impl GenericClient,
    request: &ReportRequest,
) -> Result<Report, ReportError> {
    Ok(match request {
        ReportRequest::Symbol {
            symbol,
            range,
            limit,
        } => Report::Symbol(Box::new(
            reports::symbol_activity(client, symbol, *range, (*limit).clamp(1, 10_000)).await?,
        )),
        ReportRequest::Decision(id) => Report::Decision(Box::new(
            reports::lineage(client, *id)
                .await?
                .ok_or_else(|| ReportError::NotFound(format!("no decision {id}")))?,
        )),
        ReportRequest::Order(id) => Report::Order(Box::new(
            reports::order_failure(client, id).await?.ok_or_else(|| {
                ReportError::NotFound(format!(
                    "no order {id:?} (neither a decision id nor a broker order id)"
                ))
            })?,
        )),
        ReportRequest::Strategy { name, range } => {
            Report::Strategy(reports::strategy_performance(client, name.as_deref(), *range).await?)
        }
        ReportRequest::Failures(range) => {
            Report::Failures(reports::failure_analysis(client, *range).await?)
        }
        ReportRequest::Daily(day) => Report::Daily(reports::daily_summary(client, *day).await?),
        ReportRequest::Actions { range, limit } => Report::Actions(
            tradegate_actors::store::operator_actions::list(
                client,
                &tradegate_actors::store::operator_actions::ActionFilter {
                    since: Some(range.from),
                    until: Some(range.to),
                    limit: (*limit).clamp(1, 10_000),
                    ..Default::default()
                },
            )
            .await?,
        ),
        ReportRequest::Reconciliation {
            range,
            account,
            limit,
        } => Report::Reconciliation(
            reconciliation::recent(
                client,
                account.as_deref(),
                *range,
                (*limit).clamp(1, 10_000),
            )
            .await?,
        ),
    })
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let value = match self {
            Self::Symbol(r) => serde_json::to_value(r),
            Self::Decision(r) => serde_json::to_value(r),
            Self::Order(r) => serde_json::to_value(r),
            Self::Strategy(r) => serde_json::to_value(r),
            Self::Failures(r) => serde_json::to_value(r),
            Self::Daily(r) => serde_json::to_value(r),
            Self::Actions(r) => serde_json::to_value(r),
            Self::Reconciliation(r) => serde_json::to_value(r),
        };
        value.unwrap_or(Value::Null)
    }

    /// The report as readable text.
    pub fn to_text(&self) -> String {
        match self {
            Self::Symbol(r) => symbol_text(r),
            Self::Decision(r) => lineage_text(r),
            Self::Order(r) => order_text(r),
            Self::Strategy(r) => strategy_text(r),
            Self::Failures(r) => failures_text(r),
            Self::Daily(r) => daily_text(r),
            Self::Actions(r) if r.is_empty() => "no operator actions\n".into(),
            Self::Actions(r) => actions_text(r),
            Self::Reconciliation(r) => reconciliation_text(r),
        }
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(w.saturating_sub(cell.chars().count())));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn time(t: &chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn counts_text(title: &str, counts: &[Count]) -> String {
    if counts.is_empty() {
        return format!("{title}: none\n");
    }
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|c| vec![c.key.clone(), c.count.to_string()])
        .collect();
    format!("{title}:\n{}", table(&["", "count"], &rows))
}

fn outcomes_text(o: &Outcomes) -> String {
    format!(
        "decisions {}: executed {}, failed {}, cancelled {}, pending {}; success rate {}\n",
        o.decisions,
        o.executed,
        o.failed,
        o.cancelled,
        o.pending,
        o.success_rate.map_or_else(
            || "-".into(),
            |r| format!("{}%", (r * rust_decimal::Decimal::from(100)).normalize())
        ),
    )
}

fn symbol_text(r: &SymbolActivity) -> String {
    let mut out = format!(
        "{} from {} to {} (UTC)\n",
        r.symbol,
        time(&r.range.from),
        time(&r.range.to)
    );
    if !r.archived_days.is_empty() {
        let days: Vec<String> = r.archived_days.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "from the imported day archives: {} ({} trade-log event(s) of the symbol)\n",
            days.join(", "),
            r.archived_tradelog_events
        ));
    }
    out.push_str(&outcomes_text(&r.summary));
    out.push_str(&counts_text("failures by reason", &r.failure_breakdown));
    out.push_str(&counts_text("refused before a decision", &r.rejects));
    out.push_str(&format!(
        "\ndata ingested: {} record(s){}\n",
        r.data_ingested_total,
        if r.data_ingested.len() < usize::try_from(r.data_ingested_total).unwrap_or(0) {
            format!(", newest {} shown", r.data_ingested.len())
        } else {
            String::new()
        }
    ));
    let rows: Vec<Vec<String>> = r
        .data_ingested
        .iter()
        .map(|d| {
            vec![
                time(&d.ingested_at),
                format!("{} {}", d.record_type, d.record_id),
                d.operation.clone(),
                format!("{} ({})", d.task, d.source),
                d.available_at
                    .as_ref()
                    .map_or_else(|| d.run_status.clone(), time),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            &["ingested", "record", "operation", "run", "available at"],
            &rows,
        ));
    }
    out.push_str(&format!("\ndecisions: {} shown\n", r.decisions.len()));
    let rows: Vec<Vec<String>> = r
        .decisions
        .iter()
        .map(|d| {
            vec![
                time(&d.created_at),
                d.decision_id.to_string(),
                format!("{} {}", d.strategy, d.strategy_version),
                format!("{} {}", d.side, qty_text(d.quantity)),
                d.status.clone(),
                opt(&d.execution_status),
                d.filled_avg_price
                    .map_or_else(|| "-".into(), |p| p.normalize().to_string()),
                d.error_message
                    .clone()
                    .or(d.failure_reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "created",
                "decision",
                "strategy",
                "order",
                "status",
                "execution",
                "avg price",
                "error",
            ],
            &rows,
        ));
    }
    out.push_str(&format!("\nfills: {} shown\n", r.fills.len()));
    let rows: Vec<Vec<String>> = r
        .fills
        .iter()
        .map(|f| {
            vec![
                f.at.as_ref().map_or_else(|| "-".into(), time),
                f.broker.clone(),
                f.account.clone(),
                f.reference.clone(),
                opt(&f.side),
                f.quantity
                    .map_or_else(|| "-".into(), |q| q.normalize().to_string()),
                f.price
                    .map_or_else(|| "-".into(), |p| p.normalize().to_string()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "at",
                "broker",
                "account",
                "reference",
                "side",
                "qty",
                "price",
            ],
            &rows,
        ));
    }
    out
}

fn lineage_text(l: &Lineage) -> String {
    let d = &l.decision;
    let mut out = format!(
        "decision {} ({}): {} {} {} {} by {} {}, {}\n",
        d.decision_id,
        time(&d.created_at),
        d.side,
        qty_text(d.quantity),
        d.symbol,
        d.order_type,
        d.strategy,
        d.strategy_version,
        d.status
    );
    if let Some((kind, id)) = &l.primary_signal {
        out.push_str(&format!("primary signal: {kind} {id}\n"));
    }
    match &l.primary_run {
        Some(run) => out.push_str(&format!(
            "primary ingestion run: {} {} ({}), {}; data available at {}{}\n",
            run.run_id,
            run.task,
            run.source,
            run.status,
            run.completed_at.as_ref().map_or_else(|| "-".into(), time),
            match l.data_available_before_decision {
                Some(true) => ", before the decision",
                Some(false) => ", NOT before the decision",
                None => "",
            }
        )),
        None => out.push_str("primary ingestion run: none named\n"),
    }
    for c in &l.primary_run_calls {
        out.push_str(&format!(
            "  API call {} {} -> {} ({} ms) at {}\n",
            opt(&c.method),
            c.endpoint,
            opt(&c.http_status),
            opt(&c.duration_ms),
            time(&c.at)
        ));
    }
    let runs = l.lineage_runs.as_array().map_or(0, Vec::len);
    out.push_str(&format!("runs completed in the lineage window: {runs}\n"));
    match &l.execution {
        Some(e) => out.push_str(&format!(
            "execution {} at {}: {}, broker order {}, HTTP {}, filled {} at {}{}\n",
            e.execution_id,
            e.broker,
            e.status,
            opt(&e.broker_order_id),
            opt(&e.http_status),
            e.filled_quantity.normalize(),
            opt(&e.filled_avg_price),
            e.error_message
                .as_ref()
                .map_or_else(String::new, |m| format!(", error: {m}"))
        )),
        None => out.push_str("execution: none (the order was not sent)\n"),
    }
    out.push_str("\ntimeline:\n");
    let rows: Vec<Vec<String>> = l
        .timeline
        .iter()
        .map(|t| {
            vec![
                t.at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                t.trail.clone(),
                t.what.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["at (UTC)", "trail", "what"], &rows));
    if !l.from_archive.is_empty() {
        out.push_str(&format!(
            "from the imported day archive (past the hot window): {}\n",
            l.from_archive.join(", ")
        ));
    }
    out
}

fn order_text(o: &OrderFailure) -> String {
    let mut out = format!(
        "decision {} ({}): {}{}\n",
        o.decision_id,
        o.symbol,
        o.decision_status,
        o.reason.as_ref().map_or_else(String::new, |r| format!(
            ", reason {r} ({})",
            o.side.as_deref().unwrap_or("")
        ))
    );
    out.push_str(&format!(
        "execution: {}, broker order {}, HTTP {}, error code {}\nerror message: {}\n",
        opt(&o.execution_status),
        opt(&o.broker_order_id),
        opt(&o.http_status),
        opt(&o.error_code),
        o.error_message
            .clone()
            .or(o.failure_reason.clone())
            .unwrap_or_else(|| "-".into())
    ));
    if let Some(p) = &o.response {
        out.push_str(&format!(
            "response payload {} ({}):\n{}\n",
            p.id,
            time(&p.captured_at),
            serde_json::to_string_pretty(&p.payload).unwrap_or_default()
        ));
    }
    out
}

fn strategy_text(lines: &[StrategyLine]) -> String {
    if lines.is_empty() {
        return "no decisions or refused orders in the range\n".into();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let o = &l.outcomes;
            vec![
                l.strategy.clone(),
                l.version.clone(),
                o.decisions.to_string(),
                o.executed.to_string(),
                o.failed.to_string(),
                o.success_rate.map_or_else(
                    || "-".into(),
                    |r| format!("{}%", (r * rust_decimal::Decimal::from(100)).normalize()),
                ),
                l.risk_rejects.to_string(),
                l.cancels.to_string(),
                l.broker_rejects.to_string(),
                l.api_errors.to_string(),
            ]
        })
        .collect();
    format!(
        "signal side: risk rejects, cancels; execution side: broker rejects, API errors\n{}",
        table(
            &[
                "strategy",
                "version",
                "decisions",
                "executed",
                "failed",
                "success",
                "risk rejects",
                "cancels",
                "broker rejects",
                "api errors",
            ],
            &rows,
        )
    )
}

fn failures_text(f: &FailureAnalysis) -> String {
    let mut out = format!(
        "failed decisions from {} to {} (UTC): {}\n",
        time(&f.range.from),
        time(&f.range.to),
        f.failures
    );
    out.push_str(&counts_text("by reason", &f.by_reason));
    out.push_str(&counts_text("by symbol", &f.by_symbol));
    out.push_str(&counts_text("by ISO weekday (1 = Monday)", &f.by_weekday));
    out.push_str(&counts_text("by weekday and UTC hour", &f.by_weekday_hour));
    out.push_str(&counts_text(
        "refused before a decision, by code",
        &f.rejects_by_code,
    ));
    out
}

fn daily_text(d: &DailySummary) -> String {
    let mut out = format!("{} (UTC)\n", d.day);
    out.push_str(&outcomes_text(&d.decisions));
    out.push_str(&counts_text("executions by status", &d.executions));
    out.push_str(&counts_text("failures by reason", &d.failures));
    out.push_str(&counts_text("refused before a decision", &d.rejects));
    out.push_str(&counts_text("ingestion runs", &d.ingestion_runs));
    out.push_str(&format!(
        "completed runs with no records: {}\n",
        d.zero_record_runs
    ));
    let breaks: i64 = d.reconciliation_breaks.iter().map(|c| c.count).sum();
    out.push_str(&format!(
        "reconciliation: {} window(s) checked, {breaks} break(s)\n",
        d.reconciled_windows
    ));
    if breaks > 0 {
        out.push_str(&counts_text(
            "reconciliation breaks",
            &d.reconciliation_breaks,
        ));
    }
    out.push_str(&format!("operator actions: {}\n", d.operator_actions.len()));
    if !d.operator_actions.is_empty() {
        out.push_str(&actions_text(&d.operator_actions));
    }
    out
}

/// Operator actions as a table.
fn actions_text(actions: &[OperatorAction]) -> String {
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                a.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                a.actor.clone(),
                a.peer.clone().unwrap_or_default(),
                a.action.clone(),
                a.target.clone().unwrap_or_default(),
                json(&a.previous),
                json(&a.new),
                a.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "at (UTC)", "who", "from", "action", "target", "before", "after", "reason",
        ],
        &rows,
    )
}

fn reconciliation_text(r: &Reconciliations) -> String {
    let at = |t: &chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
    let num = |d: &rust_decimal::Decimal| d.normalize().to_string();
    let mut out = format!(
        "{} window(s) checked, {} break(s), {} external order(s)\n",
        r.runs.len(),
        r.breaks.len(),
        r.external_orders.len()
    );
    if !r.external_orders.is_empty() {
        out.push_str("\nexternal orders (at the broker, placed outside the gateway)\n");
        let opt = |s: &Option<String>| s.clone().unwrap_or_default();
        let rows: Vec<Vec<String>> = r
            .external_orders
            .iter()
            .map(|o| {
                vec![
                    at(&o.first_seen_at),
                    format!("{} {}", o.broker, o.account),
                    o.broker_order_id.clone(),
                    opt(&o.symbol),
                    opt(&o.side),
                    o.quantity.as_ref().map(num).unwrap_or_default(),
                    o.filled_quantity.as_ref().map(num).unwrap_or_default(),
                    o.status.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "found (UTC)",
                "account",
                "order",
                "symbol",
                "side",
                "qty",
                "filled",
                "status",
            ],
            &rows,
        ));
    }
    if !r.breaks.is_empty() {
        out.push_str("\nbreaks\n");
        let rows: Vec<Vec<String>> = r
            .breaks
            .iter()
            .map(|b| {
                vec![
                    at(&b.detected_at),
                    format!("{} {}", b.broker, b.account),
                    b.symbol.clone(),
                    format!("{} .. {}", at(&b.window_start), at(&b.window_end)),
                    format!("{} -> {}", num(&b.broker_before), num(&b.broker_after)),
                    num(&b.broker_change),
                    num(&b.expected_change),
                    num(&b.uncertain_change),
                    b.fills_considered.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "found (UTC)",
                "account",
                "symbol",
                "window",
                "broker",
                "change",
                "fills add",
                "uncertain",
                "fills",
            ],
            &rows,
        ));
    }
    if !r.runs.is_empty() {
        out.push_str("\nwindows\n");
        let rows: Vec<Vec<String>> = r
            .runs
            .iter()
            .map(|w| {
                vec![
                    at(&w.checked_at),
                    format!("{} {}", w.broker, w.account),
                    format!("{} -> {}", w.from_snapshot_id, w.to_snapshot_id),
                    format!("{} .. {}", at(&w.window_start), at(&w.window_end)),
                    w.symbols_checked.to_string(),
                    w.fills_considered.to_string(),
                    w.breaks_count.to_string(),
                    w.trigger.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "checked (UTC)",
                "account",
                "snapshots",
                "window",
                "symbols",
                "fills",
                "breaks",
                "trigger",
            ],
            &rows,
        ));
    }
    out
}

/// A decision's quantity, or `notional` for a dollar order (its amount is in the decision).
fn qty_text(quantity: Option<rust_decimal::Decimal>) -> String {
    quantity.map_or_else(|| "notional".into(), |q| q.normalize().to_string())
}
