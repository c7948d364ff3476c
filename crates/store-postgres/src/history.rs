//! The tick history: append (trimming to `TICKS_KEPT` per connector, and keeping the
//! newest tick beside the connector) and read newest first.

use connector_runner::protocol::{TICKS_KEPT, TickRow, to_i64};
use connector_runner::{StoreError, TickRecord};
use tokio_postgres::Client;

use crate::{backend, relaxed_transaction};

pub(crate) async fn record(client: &mut Client, tick: &TickRecord) -> Result<(), StoreError> {
    let summary = serde_json::to_string(tick)
        .map_err(|e| StoreError::backend("cannot encode the tick", e))?;
    let tx = relaxed_transaction(client).await?;
    tx.execute(
        "INSERT INTO connectord.ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows, \
         source_bytes, sink_bytes, duration_ms, error, runner_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &tick.connector_id,
            &tick.scheduled_for_ms,
            &tick.started_at_ms,
            &tick.outcome.as_str(),
            &to_i64(tick.rows),
            &to_i64(tick.source_bytes),
            &to_i64(tick.sink_bytes),
            &to_i64(tick.duration_ms),
            &tick.error,
            &tick.runner_id,
        ],
    )
    .await
    .map_err(backend("cannot record the tick"))?;
    tx.execute(
        "UPDATE connectord.connectors SET last_tick = $2 WHERE id = $1",
        &[&tick.connector_id, &summary],
    )
    .await
    .map_err(backend("cannot record the connector's last tick"))?;
    tx.execute(
        "DELETE FROM connectord.ticks WHERE connector_id = $1 AND id <= \
         (SELECT id FROM connectord.ticks WHERE connector_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[&tick.connector_id, &TICKS_KEPT],
    )
    .await
    .map_err(backend("cannot prune the tick history"))?;
    tx.commit().await.map_err(backend("cannot commit"))
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
