//! Retention of stored API payloads, in batches: past the retention window, a payload goes when
//! nothing refers to it any more, and, referenced or not, once its day is archived
//! (`audit_archives`: the archive's manifest still on disk, unchanged, listing at least the
//! day's payloads). What referred to it keeps its id; `audit_archives` says which day archive
//! holds it, and `tradegate audit import` reads it back.

use chrono::{DateTime, NaiveDate, Utc};
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

/// Purges every payload past `before` that may go (unreferenced, or of an archived day),
/// `batch` at a time (each batch its own transaction, so the table is never locked for long);
/// the total deleted.
pub async fn purge_payloads(
    client: &impl GenericClient,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    let mut total = purge_archived_payloads(client, before, batch).await?;
    loop {
        let n = purge_payload_batch(client, before, batch.max(1)).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Deletes the payloads of every archived day that ended before `before`, referenced or not,
/// when its archive can be trusted to hold them: the manifest is where `audit_archives` says,
/// with the SHA-256 recorded at export, and lists at least as many payloads of the day as the
/// table still has. A day whose archive is missing or changed keeps its payloads (a warning
/// says why). The total deleted.
pub async fn purge_archived_payloads(
    client: &impl GenericClient,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    let days = client
        .query(
            "SELECT day, dir, manifest_sha256, payloads FROM audit_archives \
             WHERE payloads_purged_at IS NULL \
               AND day + 1 <= ($1::timestamptz AT TIME ZONE 'UTC')::date ORDER BY day",
            &[&before],
        )
        .await
        .map_err(StoreError::new("reading the archived days"))?;
    let mut total = 0;
    for row in &days {
        let day: NaiveDate = row.get(0);
        let dir: String = row.get(1);
        let recorded: String = row.get(2);
        let archived: i64 = row.get(3);
        let from = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default();
        let to = from + chrono::Duration::days(1);
        let manifest = std::path::Path::new(&dir).join(super::audit::archive::MANIFEST);
        let trusted = match super::audit::archive::file_sha256(&manifest) {
            Ok(sha) if sha == recorded => None,
            Ok(_) => Some("its manifest changed since the export"),
            Err(_) => Some("its manifest cannot be read"),
        };
        let hot: i64 = client
            .query_one(
                "SELECT count(*) FROM api_payloads WHERE created_at >= $1 AND created_at < $2",
                &[&from, &to],
            )
            .await
            .map_err(StoreError::new("counting a day's payloads"))?
            .get(0);
        let trusted = trusted.or((hot > archived)
            .then_some("the table has more of the day's payloads than the archive lists"));
        if let Some(why) = trusted {
            tracing::warn!(%day, dir, why, "keeping an archived day's payloads: the archive cannot be trusted to hold them");
            continue;
        }
        loop {
            let n = client
                .execute(
                    "DELETE FROM api_payloads WHERE id IN ( \
                         SELECT id FROM api_payloads \
                         WHERE created_at >= $1 AND created_at < $2 LIMIT $3)",
                    &[&from, &to, &batch.max(1)],
                )
                .await
                .map_err(StoreError::new("purging an archived day's payloads"))?;
            total += n;
            if n == 0 {
                break;
            }
        }
        client
            .execute(
                "UPDATE audit_archives SET payloads_purged_at = now() WHERE day = $1",
                &[&day],
            )
            .await
            .map_err(StoreError::new("recording a purged day"))?;
        tracing::info!(%day, dir, "deleted an archived day's payloads past retention");
    }
    Ok(total)
}
