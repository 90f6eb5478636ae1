//! The kill switch: its one row, and every change kept in `operator_actions`.

use tokio_postgres::GenericClient;

use super::StoreError;
use crate::domain::KillSwitch;

/// The kill switch's state and why it was last changed.
pub async fn kill_switch(
    client: &impl GenericClient,
) -> Result<(KillSwitch, Option<String>), StoreError> {
    let row = client
        .query_one("SELECT state, reason FROM kill_switch WHERE id", &[])
        .await
        .map_err(StoreError::new("reading the kill switch"))?;
    Ok((
        KillSwitch::parse(row.get(0)).unwrap_or(KillSwitch::Halted),
        row.get(1),
    ))
}

/// Sets the kill switch and, in the same statement, keeps the change in `operator_actions`
/// under `by` (the state before and after, and the reason); `false`: its row is missing and
/// nothing changed.
pub async fn set_kill_switch(
    client: &impl GenericClient,
    state: KillSwitch,
    reason: Option<&str>,
    by: &crate::domain::Operator,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "WITH before AS (SELECT state, reason FROM kill_switch WHERE id FOR UPDATE), \
                  changed AS (UPDATE kill_switch SET state = $1, reason = $2, changed_by = $3, \
                                  changed_at = now() WHERE id RETURNING state) \
             INSERT INTO operator_actions (actor, peer, action, target, previous, new, reason) \
             SELECT $3, $4, 'kill_switch.set', 'kill_switch', \
                    jsonb_build_object('state', before.state, 'reason', before.reason), \
                    jsonb_build_object('state', changed.state), $2 \
             FROM before, changed",
            &[&state.as_str(), &reason, &by.name, &by.peer],
        )
        .await
        .map_err(StoreError::new("setting the kill switch"))?;
    Ok(n == 1)
}
