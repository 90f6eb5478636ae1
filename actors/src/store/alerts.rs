//! Alerts (`alerts`): raised once per kind and dedupe key, read back for forwarding.

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// Raises an alert; with a dedupe key already raised for its kind, nothing happens and `None`
/// is returned.
pub async fn insert_alert(
    client: &impl GenericClient,
    alert: &NewAlert,
) -> Result<Option<i64>, StoreError> {
    let row = client
        .query_opt(
            "INSERT INTO alerts (kind, severity, message, details, dedupe_key) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING RETURNING id",
            &[
                &alert.kind,
                &alert.severity,
                &alert.message,
                &alert.details,
                &alert.dedupe_key,
            ],
        )
        .await
        .map_err(StoreError::new("raising an alert"))?;
    Ok(row.map(|r| r.get(0)))
}

/// An `alerts` row to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// e.g. `ingestion.zero_records`
    pub kind: String,
    /// info, warning or critical
    pub severity: &'static str,
    /// For a person
    pub message: String,
    /// Structured context
    pub details: Value,
    /// Raised at most once per (kind, dedupe key)
    pub dedupe_key: Option<String>,
}

/// The alerts other actors raised (zero-record ingestion runs, from the IngestionLogger;
/// reconciliation breaks, from the sessions and syncers) with
/// an id above `after`, oldest first: they are logged and counted where they are raised, and
/// the Reporter forwards them to the webhook.
pub async fn raised_elsewhere(
    client: &impl tokio_postgres::GenericClient,
    after: i64,
) -> Result<Vec<RaisedAlert>, StoreError> {
    let rows = client
        .query(
            "SELECT id, kind, message, details FROM alerts \
             WHERE id > $1 AND kind = ANY($2) ORDER BY id",
            &[
                &after,
                &[
                    crate::store::ingestion::ZERO_RECORDS_ALERT,
                    crate::reconciliation::BREAK_ALERT,
                    crate::reconciliation::EXTERNAL_ORDER_ALERT,
                    crate::reporter::daily::UNDELIVERED_ALERT,
                ]
                .as_slice(),
            ],
        )
        .await
        .map_err(StoreError::new("reading new alerts"))?;
    Ok(rows
        .iter()
        .map(|r| RaisedAlert {
            id: r.get(0),
            kind: r.get(1),
            message: r.get(2),
            details: r.get(3),
        })
        .collect())
}

/// The newest alert id (0 when there is none): where forwarding starts.
pub async fn newest_alert_id(
    client: &impl tokio_postgres::GenericClient,
) -> Result<i64, StoreError> {
    Ok(client
        .query_one("SELECT coalesce(max(id), 0) FROM alerts", &[])
        .await
        .map_err(StoreError::new("reading the newest alert"))?
        .get(0))
}

/// An alert that was raised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaisedAlert {
    /// Its row
    pub id: i64,
    /// Its kind
    pub kind: String,
    /// For a person
    pub message: String,
    /// Structured context
    pub details: serde_json::Value,
}
