//! Retention of stored API payloads: old ones go, in batches, except any still referenced by a
//! kept row (an execution's request or response, an API call log's or a position snapshot's
//! request or response). The
//! foreign keys would refuse such a delete anyway; the query never tries it.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;

/// Deletes at most `batch` payloads captured before `before` and referenced by nothing; how
/// many were deleted. Call until it returns 0.
pub async fn purge_payload_batch(
    client: &impl GenericClient,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM api_payloads WHERE id IN ( \
                 SELECT p.id FROM api_payloads p \
                 WHERE p.captured_at < $1 \
                   AND NOT EXISTS (SELECT 1 FROM trade_executions e \
                                   WHERE e.api_request_payload_id = p.id) \
                   AND NOT EXISTS (SELECT 1 FROM trade_executions e \
                                   WHERE e.api_response_payload_id = p.id) \
                   AND NOT EXISTS (SELECT 1 FROM api_call_logs c \
                                   WHERE c.api_request_payload_id = p.id) \
                   AND NOT EXISTS (SELECT 1 FROM api_call_logs c \
                                   WHERE c.api_response_payload_id = p.id) \
                   AND NOT EXISTS (SELECT 1 FROM position_snapshots s \
                                   WHERE s.request_payload_id = p.id) \
                   AND NOT EXISTS (SELECT 1 FROM position_snapshots s \
                                   WHERE s.response_payload_id = p.id) \
                 ORDER BY p.captured_at LIMIT $2)",
            &[&before, &batch],
        )
        .await
        .map_err(StoreError::new("purging old API payloads"))
}

/// Purges every unreferenced payload captured before `before`, `batch` at a time (each batch
/// its own transaction, so the table is never locked for long); the total deleted.
pub async fn purge_payloads(
    client: &impl GenericClient,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = purge_payload_batch(client, before, batch.max(1)).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}
