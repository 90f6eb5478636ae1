//! Ingestion endpoints, so data jobs in any language can log their runs:
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `POST /api/v1/ingestion/runs` | `{"task","source","metadata"?}` | 201, the run |
//! | `GET /api/v1/ingestion/runs?task=&source=&status=&limit=` | | the runs, newest first |
//! | `GET /api/v1/ingestion/runs/{run_id}` | | the run |
//! | `POST /api/v1/ingestion/runs/{run_id}/api-calls` | one call or an array of calls | 201, `{"calls":[ids]}` |
//! | `POST /api/v1/ingestion/runs/{run_id}/records` | `{"records":[...]}` or an array | `{"received","inserted","duplicates"}` |
//! | `POST /api/v1/ingestion/runs/{run_id}/complete` | counts, or nothing to count the records | the run |
//! | `POST /api/v1/ingestion/runs/{run_id}/fail` | `{"error","details"?}` | the run |
//!
//! Errors are `{"code","message"}`: 400 malformed JSON, 404 unknown run, 409 a finished run,
//! 422 invalid input, 503 the audit database is unavailable.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tradegate_actors::domain::{ApiCall, NewRun, RunCounts, RunRecord, RunStatus};
use tradegate_actors::ingestion_logger::{IngestionError, RunFilter};
use uuid::Uuid;

use super::ApiState;
use super::error::{Answer, ApiError, json_answer, parse_body};

/// Largest request body the ingestion batch endpoints accept (a 100,000-record batch fits).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Runs listed when no limit is given, and the most that can be asked for.
const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 10_000;

/// The ingestion routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/ingestion/runs", post(start_run).get(list_runs))
        .route("/api/v1/ingestion/runs/{run_id}", get(get_run))
        // only the batch endpoints take bodies past [api] max_body_bytes
        .route(
            "/api/v1/ingestion/runs/{run_id}/api-calls",
            post(api_calls).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route(
            "/api/v1/ingestion/runs/{run_id}/records",
            post(records).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route("/api/v1/ingestion/runs/{run_id}/complete", post(complete))
        .route("/api/v1/ingestion/runs/{run_id}/fail", post(fail))
}

impl From<IngestionError> for ApiError {
    fn from(e: IngestionError) -> Self {
        let status = match e {
            IngestionError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngestionError::UnknownRun(_) => StatusCode::NOT_FOUND,
            IngestionError::IllegalTransition { .. } | IngestionError::RunFinished { .. } => {
                StatusCode::CONFLICT
            }
            IngestionError::Store(_) | IngestionError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// Parses `T` from a JSON value; `what` names it in the error.
fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

fn parse_run_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("run id {text:?} is not a UUID: {e}"),
        )
    })
}

async fn start_run(State(state): State<ApiState>, body: Bytes) -> Answer {
    let run: NewRun = parse_body(&body)?;
    json_answer(StatusCode::CREATED, state.ingestion.start_run(run).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    task: Option<String>,
    source: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn list_runs(State(state): State<ApiState>, Query(query): Query<ListQuery>) -> Answer {
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            RunStatus::parse(text)
                .ok_or_else(|| ApiError::invalid("status must be running, completed or failed"))?,
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::invalid(format!(
            "limit must be from 1 to {MAX_LIST_LIMIT}"
        )));
    }
    let filter = RunFilter {
        task: query.task,
        source: query.source,
        status,
        limit,
    };
    json_answer(StatusCode::OK, state.ingestion.list(filter).await?)
}

async fn get_run(State(state): State<ApiState>, Path(run_id): Path<String>) -> Answer {
    let run_id = parse_run_id(&run_id)?;
    match state.ingestion.get(run_id).await? {
        Some(run) => json_answer(StatusCode::OK, run),
        None => Err(IngestionError::UnknownRun(run_id).into()),
    }
}

async fn api_calls(
    State(state): State<ApiState>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Answer {
    let run_id = parse_run_id(&run_id)?;
    let calls = match parse_body::<Value>(&body)? {
        value @ Value::Array(_) => from_value::<Vec<ApiCall>>(value, "API calls")?,
        value => vec![from_value::<ApiCall>(value, "API call")?],
    };
    let ids = state.ingestion.record_api_calls(run_id, calls).await?;
    json_answer(StatusCode::CREATED, json!({ "calls": ids }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsBody {
    records: Vec<RunRecord>,
}

async fn records(State(state): State<ApiState>, Path(run_id): Path<String>, body: Bytes) -> Answer {
    let run_id = parse_run_id(&run_id)?;
    let records = match parse_body::<Value>(&body)? {
        value @ Value::Array(_) => from_value::<Vec<RunRecord>>(value, "records")?,
        value => from_value::<RecordsBody>(value, "records batch")?.records,
    };
    json_answer(
        StatusCode::OK,
        state.ingestion.record_records(run_id, records).await?,
    )
}

async fn complete(
    State(state): State<ApiState>,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Answer {
    let run_id = parse_run_id(&run_id)?;
    let counts: Option<RunCounts> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_body(&body)?
    };
    json_answer(
        StatusCode::OK,
        state.ingestion.complete(run_id, counts).await?,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    error: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

async fn fail(State(state): State<ApiState>, Path(run_id): Path<String>, body: Bytes) -> Answer {
    let run_id = parse_run_id(&run_id)?;
    let body: FailBody = parse_body(&body)?;
    json_answer(
        StatusCode::OK,
        state
            .ingestion
            .fail(run_id, body.error, body.details)
            .await?,
    )
}
