//! The tick history: how a tick ended (appended, trimmed to `TICKS_KEPT` per
//! connector, the newest kept beside the connector, with the bucket's lease and the
//! connector's status in the same transaction) and read newest first.

use connector_runner::protocol::{TICKS_KEPT, TickRow, to_i64};
use connector_runner::{Lease, StatusChange, StoreError, TickRecord};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::backend;

/// How a tick ended, in one transaction: the connector's status and newest tick, the
/// bucket done (when it committed), the history line, trimmed. A connector that no
/// longer exists is [`StoreError::connector_not_found`] and nothing is written.
pub(crate) fn end(
    conn: &mut Connection,
    tick: &TickRecord,
    done: Option<&Lease>,
    status: Option<StatusChange>,
) -> Result<(), StoreError> {
    let summary = serde_json::to_string(tick)
        .map_err(|e| StoreError::backend("cannot encode the tick", e))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start a transaction"))?;
    if let Some(status) = status {
        crate::connectors::set_status(&tx, &tick.connector_id, status)?;
    }
    let changed = tx
        .execute(
            "UPDATE connectors SET last_tick = ?2 WHERE id = ?1",
            params![tick.connector_id, summary],
        )
        .map_err(backend("cannot record the connector's last tick"))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(&tick.connector_id));
    }
    if let Some(lease) = done {
        crate::leases::finish(&tx, lease)?;
    }
    tx.execute(
        "INSERT INTO ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, \
         sink_bytes, duration_ms, error, runner_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            tick.connector_id,
            tick.scheduled_for_ms,
            tick.started_at_ms,
            tick.outcome.as_str(),
            to_i64(tick.rows),
            to_i64(tick.source_bytes),
            to_i64(tick.sink_bytes),
            to_i64(tick.duration_ms),
            tick.error,
            tick.runner_id
        ],
    )
    .map_err(backend("cannot record the tick"))?;
    tx.execute(
        "DELETE FROM ticks WHERE connector_id = ?1 AND id <= \
         (SELECT id FROM ticks WHERE connector_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![tick.connector_id, TICKS_KEPT],
    )
    .map_err(backend("cannot prune the tick history"))?;
    tx.commit().map_err(backend("cannot commit the tick"))
}

pub(crate) fn newest(
    conn: &Connection,
    connector_id: &str,
    limit: usize,
) -> Result<Vec<TickRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, sink_bytes, \
             duration_ms, error, runner_id FROM ticks WHERE connector_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(backend("cannot read the tick history"))?;
    let rows = stmt
        .query_map(params![connector_id, limit], |r| {
            Ok(TickRow {
                connector_id: r.get(0)?,
                scheduled_for_ms: r.get(1)?,
                started_at_ms: r.get(2)?,
                outcome: r.get(3)?,
                rows: r.get(4)?,
                source_bytes: r.get(5)?,
                sink_bytes: r.get(6)?,
                duration_ms: r.get(7)?,
                error: r.get(8)?,
                runner_id: r.get(9)?,
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot read the tick history"))?;
    rows.into_iter().map(TickRow::into_record).collect()
}
