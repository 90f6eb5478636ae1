//! The audit reports over HTTP (the same reports as `tradegate report ...`, as JSON):
//!
//! - `GET /api/v1/reports/symbol/{symbol}?from=YYYY-MM-DD&to=YYYY-MM-DD&limit=N`
//! - `GET /api/v1/reports/decision/{decision_id}`
//! - `GET /api/v1/reports/order/{decision_id or broker_order_id}`
//! - `GET /api/v1/reports/strategy?name=&from=&to=`
//! - `GET /api/v1/reports/failures?from=&to=`
//! - `GET /api/v1/reports/daily?date=YYYY-MM-DD`
//!
//! Days are UTC and `to` is included; without `to`, today; without `from`, the 365 days
//! ending with `to`. A malformed parameter is 400, an unknown decision or order 404.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use serde::Deserialize;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use crate::report::{ReportError, ReportRequest, day_range, produce, symbol};

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/reports/symbol/{symbol}", get(symbol_report))
        .route("/api/v1/reports/decision/{id}", get(decision_report))
        .route("/api/v1/reports/order/{id}", get(order_report))
        .route("/api/v1/reports/strategy", get(strategy_report))
        .route("/api/v1/reports/failures", get(failures_report))
        .route("/api/v1/reports/daily", get(daily_report))
}

/// Query parameters (all optional; which apply depends on the report).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    name: Option<String>,
    date: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
}

fn date(name: &str, text: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    text.map(|t| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map_err(|_| bad(format!("{name}={t:?} is not a date (YYYY-MM-DD)")))
    })
    .transpose()
}

fn params(
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Params, ApiError> {
    query.map(|Query(p)| p).map_err(|e| bad(e.body_text()))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            ReportError::Invalid(m) => bad(m),
            ReportError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                e.to_string(),
            ),
        }
    }
}

async fn answer(state: &ApiState, request: ReportRequest) -> Result<Response, ApiError> {
    let client = state.pool.get().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            format!("no database connection: {e}"),
        )
    })?;
    let report = produce(&**client, &request).await?;
    Ok(axum::Json(report.to_json()).into_response())
}

fn range(p: &Params) -> Result<tradegate_actors::store::reports::Range, ApiError> {
    Ok(day_range(
        date("from", p.from.as_deref())?,
        date("to", p.to.as_deref())?,
    )?)
}

async fn symbol_report(
    State(state): State<ApiState>,
    Path(s): Path<String>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let request = ReportRequest::Symbol {
        symbol: symbol(&s)?,
        range: range(&p)?,
        limit: p.limit.unwrap_or(100),
    };
    answer(&state, request).await
}

async fn decision_report(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| bad(format!("{id:?} is not a decision id")))?;
    answer(&state, ReportRequest::Decision(id)).await
}

async fn order_report(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    answer(&state, ReportRequest::Order(id)).await
}

async fn strategy_report(
    State(state): State<ApiState>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let request = ReportRequest::Strategy {
        range: range(&p)?,
        name: p.name,
    };
    answer(&state, request).await
}

async fn failures_report(
    State(state): State<ApiState>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    answer(&state, ReportRequest::Failures(range(&p)?)).await
}

async fn daily_report(
    State(state): State<ApiState>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query)?;
    let day = date("date", p.date.as_deref())?.unwrap_or_else(|| chrono::Utc::now().date_naive());
    answer(&state, ReportRequest::Daily(day)).await
}
