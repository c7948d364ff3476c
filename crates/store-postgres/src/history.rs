//! The tick history: how a tick ended (appended, trimmed to `TICKS_KEPT` per
//! connector, the newest kept beside the connector, with the bucket's lease and the
//! connector's status in the same statement) and read newest first.

use connector_runner::protocol::{LEASES_KEPT_MS, TICKS_KEPT, TickRow, to_i64};
use connector_runner::{StatusChange, StoreError, TickEnd, TickRecord};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::backend;

/// How a tick ended, in one statement (`connectord.end_tick`, relaxed): the bucket
/// done, the connector's status and newest tick, the history line, trimmed.
pub(crate) async fn end(client: &Client, end: TickEnd<'_>) -> Result<(), StoreError> {
    let tick = end.tick;
    let summary = serde_json::to_string(tick)
        .map_err(|e| StoreError::backend("cannot encode the tick", e))?;
    let (status, message) = match end.status {
        None => (None, None),
        Some(StatusChange::Succeeded) => (Some("succeeded"), None),
        Some(StatusChange::Failed(m)) => (Some("failed"), Some(m.as_str())),
        Some(StatusChange::Disabled(m)) => (Some("disabled"), Some(m.as_str())),
    };
    let done_token = end.done.map(|lease| lease.token);
    let recorded: bool = client
        .query_typed_one(
            "SELECT connectord.end_tick($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                (&tick.connector_id, Type::TEXT),
                (&tick.scheduled_for_ms, Type::INT8),
                (&done_token, Type::INT8),
                (&(tick.scheduled_for_ms - LEASES_KEPT_MS), Type::INT8),
                (&status, Type::TEXT),
                (&message, Type::TEXT),
                (&summary, Type::TEXT),
                (&tick.started_at_ms, Type::INT8),
                (&tick.outcome.as_str(), Type::TEXT),
                (&to_i64(tick.rows), Type::INT8),
                (&to_i64(tick.source_bytes), Type::INT8),
                (&to_i64(tick.sink_bytes), Type::INT8),
                (&to_i64(tick.duration_ms), Type::INT8),
                (&tick.error, Type::TEXT),
                (&tick.runner_id, Type::TEXT),
                (&TICKS_KEPT, Type::INT8),
            ],
        )
        .await
        .map_err(backend("cannot record the tick"))?
        .get(0);
    if recorded {
        Ok(())
    } else {
        Err(StoreError::connector_not_found(&tick.connector_id))
    }
}

pub(crate) async fn newest(
    client: &Client,
    connector_id: &str,
    limit: usize,
) -> Result<Vec<TickRecord>, StoreError> {
    client
        .query(
            "SELECT connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, sink_bytes, \
             duration_ms, error, runner_id FROM connectord.ticks WHERE connector_id = $1 \
             ORDER BY id DESC LIMIT $2",
            &[&connector_id, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(backend("cannot read the tick history"))?
        .iter()
        .map(|r| {
            TickRow {
                connector_id: r.get(0),
                scheduled_for_ms: r.get(1),
                started_at_ms: r.get(2),
                outcome: r.get(3),
                rows: r.get(4),
                source_bytes: r.get(5),
                sink_bytes: r.get(6),
                duration_ms: r.get(7),
                error: r.get(8),
                runner_id: r.get(9),
            }
            .into_record()
        })
        .collect()
}
