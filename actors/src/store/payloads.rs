//! API payloads (`api_payloads`): every request and response stored as sent or received.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use super::StoreError;
use super::db::Db;
use crate::domain::{ApiPayload, ApiPayloadKind};

/// Stores one API request or response; returns its id.
pub async fn insert_payload(
    client: &impl GenericClient,
    payload: &ApiPayload,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO api_payloads (type, payload, source, captured_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[
                &payload.kind.as_str(),
                &payload.payload,
                &payload.source,
                &payload.captured_at,
            ],
        )
        .await
        .map_err(StoreError::new("storing an API payload"))?;
    Ok(row.get(0))
}

/// Stores several payloads in one statement; their ids, in the order given.
pub async fn insert_payloads(
    db: &impl Db,
    payloads: &[ApiPayload],
) -> Result<Vec<i64>, StoreError> {
    if payloads.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<&str> = payloads.iter().map(|p| p.kind.as_str()).collect();
    let bodies: Vec<&Value> = payloads.iter().map(|p| &p.payload).collect();
    let sources: Vec<&str> = payloads.iter().map(|p| p.source.as_str()).collect();
    let captured: Vec<DateTime<Utc>> = payloads.iter().map(|p| p.captured_at).collect();
    // rows are inserted in ordinality order, so identity values rise with it: the ids sorted
    // ascending are the ids of the payloads in the order given
    let rows = db
        .client()
        .query(
            &db.statement(
                "INSERT INTO api_payloads (type, payload, source, captured_at) \
             SELECT k, p, s, c FROM unnest($1::text[], $2::jsonb[], $3::text[], \
                 $4::timestamptz[]) WITH ORDINALITY AS u(k, p, s, c, n) ORDER BY n \
             RETURNING id",
                &[
                    Type::TEXT_ARRAY,
                    Type::JSONB_ARRAY,
                    Type::TEXT_ARRAY,
                    Type::TIMESTAMPTZ_ARRAY,
                ],
            )
            .await
            .map_err(StoreError::new("preparing the payloads insert"))?,
            &[&kinds, &bodies, &sources, &captured],
        )
        .await
        .map_err(StoreError::new("storing API payloads"))?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// One stored payload.
pub async fn get_payload(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<ApiPayload>, StoreError> {
    let row = client
        .query_opt(
            "SELECT type, source, payload, captured_at FROM api_payloads WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(StoreError::new("reading an API payload"))?;
    Ok(row.map(|row| ApiPayload {
        // the CHECK constraint admits only the two type names
        kind: ApiPayloadKind::parse(row.get(0)).unwrap_or(ApiPayloadKind::ApiResponse),
        source: row.get(1),
        payload: row.get(2),
        captured_at: row.get(3),
    }))
}
