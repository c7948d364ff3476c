//! The `destinations` table, the delivery ledger (`delivered`), the delivery history
//! and dead letters, all in the state database.

use connector_runner::protocol::{
    DEAD_LETTERS_KEPT, DeadLetterRow, DeliveryRow, DestinationRow, LEASES_KEPT_MS, TICKS_KEPT,
    already_delivered, check_fencing, destination_name_taken, destination_not_found, to_i64,
    wall_clock_ms,
};
use connector_runner::{
    ConnectorState, DeadLetter, DeliveryOutcome, DeliveryRecord, DestinationRecord,
    DestinationSpec, Lease, Origin, StatusChange, StoreError,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::backend;
use crate::connectors::{in_transaction, is_unique_violation};

const SELECT: &str = "SELECT id, spec, origin, state, disabled_reason, last_error, start_ms, \
     delivered_through_ms, created_at_ms, updated_at_ms, last_delivery FROM destinations";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DestinationRow> {
    Ok(DestinationRow {
        id: row.get(0)?,
        spec: row.get(1)?,
        origin: row.get(2)?,
        state: row.get(3)?,
        disabled_reason: row.get(4)?,
        last_error: row.get(5)?,
        start_ms: row.get(6)?,
        delivered_through_ms: row.get(7)?,
        created_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
        last_delivery: row.get(10)?,
    })
}

fn query_one(
    conn: &Connection,
    filter: &str,
    key: &str,
) -> Result<Option<DestinationRecord>, StoreError> {
    conn.query_row(&format!("{SELECT} WHERE {filter} = ?1"), [key], read_row)
        .optional()
        .map_err(backend("cannot read the destination"))?
        .map(DestinationRow::into_record)
        .transpose()
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<DestinationRecord>, StoreError> {
    query_one(conn, "id", id)
}

fn read_back(conn: &Connection, id: &str) -> Result<DestinationRecord, StoreError> {
    get(conn, id)?.ok_or_else(|| destination_not_found(id))
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<DestinationRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("{SELECT} ORDER BY name"))
        .map_err(backend("cannot list destinations"))?;
    let rows = stmt
        .query_map([], read_row)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot list destinations"))?;
    rows.into_iter().map(DestinationRow::into_record).collect()
}

fn write_error<'a>(
    what: &'static str,
    spec: &'a DestinationSpec,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            destination_name_taken(&spec.name)
        } else {
            StoreError::backend(what, e)
        }
    }
}

fn insert(
    conn: &Connection,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO destinations (id, name, type, source, spec, origin, state, start_ms, \
         created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'enabled', ?7, ?8, ?8)",
        params![
            id,
            spec.name,
            spec.destination_type,
            spec.source,
            DestinationRow::spec_text(spec),
            origin.as_str(),
            start_ms,
            wall_clock_ms()
        ],
    )
    .map_err(write_error("cannot create the destination", spec))?;
    Ok(id)
}

fn write_spec(
    conn: &Connection,
    id: &str,
    spec: &DestinationSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE destinations SET name = ?2, type = ?3, source = ?4, spec = ?5, origin = ?6, \
             updated_at_ms = ?7, state = CASE state WHEN 'disabled' THEN 'enabled' ELSE state END, \
             disabled_reason = NULL WHERE id = ?1",
            params![
                id,
                spec.name,
                spec.destination_type,
                spec.source,
                DestinationRow::spec_text(spec),
                origin.as_str(),
                wall_clock_ms()
            ],
        )
        .map_err(write_error("cannot update the destination", spec))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    Ok(())
}

pub(crate) fn upsert(
    conn: &mut Connection,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
) -> Result<DestinationRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = match query_one(tx, "name", &spec.name)? {
            None => insert(tx, spec, origin, start_ms)?,
            Some(record) if record.spec == *spec && record.origin == origin => record.id,
            Some(record) => {
                write_spec(tx, &record.id, spec, origin)?;
                record.id
            }
        };
        read_back(tx, &id)
    })
}

pub(crate) fn create(
    conn: &mut Connection,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
) -> Result<DestinationRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = insert(tx, spec, origin, start_ms)?;
        read_back(tx, &id)
    })
}

pub(crate) fn update(
    conn: &mut Connection,
    id: &str,
    spec: &DestinationSpec,
) -> Result<DestinationRecord, StoreError> {
    in_transaction(conn, |tx| {
        let current = read_back(tx, id)?;
        if current.spec != *spec {
            write_spec(tx, id, spec, current.origin)?;
        }
        read_back(tx, id)
    })
}

pub(crate) fn delete(conn: &mut Connection, id: &str) -> Result<(), StoreError> {
    in_transaction(conn, |tx| {
        let deleted = tx
            .execute("DELETE FROM destinations WHERE id = ?1", [id])
            .map_err(backend("cannot delete the destination"))?;
        if deleted == 0 {
            return Err(destination_not_found(id));
        }
        for sql in [
            "DELETE FROM delivered WHERE destination_id = ?1",
            "DELETE FROM deliveries WHERE destination_id = ?1",
            "DELETE FROM dead_letters WHERE destination_id = ?1",
            "DELETE FROM leases WHERE connector_id = ?1",
            "DELETE FROM fencing WHERE connector_id = ?1",
        ] {
            tx.execute(sql, [id])
                .map_err(backend("cannot delete the destination's history"))?;
        }
        Ok(())
    })
}

pub(crate) fn set_state(
    conn: &Connection,
    id: &str,
    state: ConnectorState,
) -> Result<DestinationRecord, StoreError> {
    let changed = conn
        .execute(
            "UPDATE destinations SET state = ?2, disabled_reason = NULL WHERE id = ?1",
            params![id, state.as_str()],
        )
        .map_err(backend("cannot change the destination's state"))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    read_back(conn, id)
}

pub(crate) fn set_status(
    conn: &Connection,
    id: &str,
    change: StatusChange,
) -> Result<(), StoreError> {
    let changed = match change {
        StatusChange::Succeeded => conn.execute(
            "UPDATE destinations SET last_error = NULL WHERE id = ?1",
            [id],
        ),
        StatusChange::Failed(error) => conn.execute(
            "UPDATE destinations SET last_error = ?2 WHERE id = ?1",
            params![id, error],
        ),
        StatusChange::Disabled(reason) => conn.execute(
            "UPDATE destinations SET state = 'disabled', disabled_reason = ?2, last_error = ?2 WHERE id = ?1",
            params![id, reason],
        ),
    }
    .map_err(backend("cannot update the destination's status"))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    Ok(())
}

pub(crate) fn record_delivery(
    conn: &mut Connection,
    lease: &Lease,
    record: &DeliveryRecord,
    bucket_rows: u64,
) -> Result<(), StoreError> {
    in_transaction(conn, |tx| {
        let id = &record.destination_id;
        let bucket = record.scheduled_for_ms;
        let now = wall_clock_ms();
        // A destination deleted while its delivery was in flight gets nothing back.
        if get(tx, id)?.is_none() {
            return Err(destination_not_found(id));
        }
        if record.outcome.passes_bucket() {
            let inserted = tx.execute(
                "INSERT INTO delivered (destination_id, scheduled_for_ms, token, outcome, rows, delivered_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, bucket, lease.token, record.outcome.as_str(), to_i64(bucket_rows), now],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(already_delivered(bucket));
                }
                Err(e) => return Err(StoreError::backend("cannot write the delivery ledger", e)),
            }
            let current: Option<i64> = tx
                .query_row(
                    "SELECT token FROM leases WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
                    params![id, bucket],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend("cannot read the fencing token"))?;
            check_fencing(lease, current)?;
            // The lease is done in the same transaction: one write fewer per bucket.
            tx.execute(
                "UPDATE leases SET done = 1 WHERE connector_id = ?1 AND scheduled_for_ms = ?2 AND token = ?3",
                params![id, bucket, lease.token],
            )
            .map_err(backend("cannot mark the bucket done"))?;
            tx.execute(
                "DELETE FROM leases WHERE connector_id = ?1 AND scheduled_for_ms < ?2",
                params![id, bucket.saturating_sub(LEASES_KEPT_MS)],
            )
            .map_err(backend("cannot prune old leases"))?;
            if record.outcome == DeliveryOutcome::DeadLetter {
                tx.execute(
                    "INSERT INTO dead_letters (destination_id, scheduled_for_ms, rows, error, recorded_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, bucket, to_i64(bucket_rows), record.error.as_deref().unwrap_or_default(), now],
                )
                .map_err(backend("cannot write the dead letter"))?;
                tx.execute(
                    "DELETE FROM dead_letters WHERE destination_id = ?1 AND scheduled_for_ms <= \
                     (SELECT scheduled_for_ms FROM dead_letters WHERE destination_id = ?1 \
                      ORDER BY scheduled_for_ms DESC LIMIT 1 OFFSET ?2)",
                    params![id, DEAD_LETTERS_KEPT],
                )
                .map_err(backend("cannot trim the dead letters"))?;
            }
            tx.execute(
                "UPDATE destinations SET delivered_through_ms = max(coalesce(delivered_through_ms, ?2), ?2) WHERE id = ?1",
                params![id, bucket],
            )
            .map_err(backend("cannot advance the destination"))?;
        }
        let row = DeliveryRow::new(record);
        tx.execute(
            "INSERT INTO deliveries (destination_id, scheduled_for_ms, started_at_ms, outcome, rows, skipped, \
             bytes, requests, retries, duration_ms, error, runner_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                row.destination_id, row.scheduled_for_ms, row.started_at_ms, row.outcome, row.rows,
                row.skipped, row.bytes, row.requests, row.retries, row.duration_ms, row.error, row.runner_id
            ],
        )
        .map_err(backend("cannot record the delivery"))?;
        tx.execute(
            "DELETE FROM deliveries WHERE destination_id = ?1 AND id <= \
             (SELECT id FROM deliveries WHERE destination_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![id, TICKS_KEPT],
        )
        .map_err(backend("cannot trim the delivery history"))?;
        let last = serde_json::to_string(record)
            .map_err(|e| StoreError::backend("cannot encode the delivery record", e))?;
        tx.execute(
            "UPDATE destinations SET last_delivery = ?2 WHERE id = ?1",
            params![id, last],
        )
        .map_err(backend("cannot record the last delivery"))?;
        Ok(())
    })
}

pub(crate) fn history(
    conn: &Connection,
    id: &str,
    limit: usize,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT destination_id, scheduled_for_ms, started_at_ms, outcome, rows, skipped, bytes, \
             requests, retries, duration_ms, error, runner_id FROM deliveries \
             WHERE destination_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(backend("cannot read the delivery history"))?;
    let rows = stmt
        .query_map(params![id, to_i64(limit as u64)], |r| {
            Ok(DeliveryRow {
                destination_id: r.get(0)?,
                scheduled_for_ms: r.get(1)?,
                started_at_ms: r.get(2)?,
                outcome: r.get(3)?,
                rows: r.get(4)?,
                skipped: r.get(5)?,
                bytes: r.get(6)?,
                requests: r.get(7)?,
                retries: r.get(8)?,
                duration_ms: r.get(9)?,
                error: r.get(10)?,
                runner_id: r.get(11)?,
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot read the delivery history"))?;
    rows.into_iter().map(DeliveryRow::into_record).collect()
}

pub(crate) fn dead_letters(
    conn: &Connection,
    id: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT destination_id, scheduled_for_ms, rows, error, recorded_at_ms FROM dead_letters \
             WHERE destination_id = ?1 ORDER BY scheduled_for_ms DESC LIMIT ?2",
        )
        .map_err(backend("cannot read the dead letters"))?;
    let rows = stmt
        .query_map(params![id, to_i64(limit as u64)], |r| {
            Ok(DeadLetterRow {
                destination_id: r.get(0)?,
                scheduled_for_ms: r.get(1)?,
                rows: r.get(2)?,
                error: r.get(3)?,
                recorded_at_ms: r.get(4)?,
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot read the dead letters"))?;
    rows.into_iter().map(DeadLetterRow::into_record).collect()
}
