//! The `destinations` table, the delivery ledger (`delivered`), the delivery history
//! and dead letters, in the `connectord` schema.

use connector_runner::protocol::{
    DEAD_LETTERS_KEPT, DeadLetterRow, DeliveryRow, DestinationRow, LEASES_KEPT_MS, TICKS_KEPT,
    already_delivered, check_fencing, destination_name_taken, destination_not_found, to_i64,
    wall_clock_ms,
};
use connector_runner::{
    ConnectorState, DeadLetter, DeliveryOutcome, DeliveryRecord, DestinationRecord,
    DestinationSpec, Lease, Origin, StatusChange, StoreError,
};
use tokio_postgres::{Client, GenericClient, Row};

use crate::{backend, is_unique_violation, relaxed_transaction};

const SELECT: &str = "SELECT id, spec, origin, state, disabled_reason, last_error, start_ms, \
     delivered_through_ms, created_at_ms, updated_at_ms, last_delivery FROM connectord.destinations";

const INSERT: &str = "INSERT INTO connectord.destinations (id, name, type, source, spec, origin, state, \
     start_ms, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'enabled', $7, $8, $8)";

fn read_row(row: &Row) -> Result<DestinationRecord, StoreError> {
    DestinationRow {
        id: row.get(0),
        spec: row.get(1),
        origin: row.get(2),
        state: row.get(3),
        disabled_reason: row.get(4),
        last_error: row.get(5),
        start_ms: row.get(6),
        delivered_through_ms: row.get(7),
        created_at_ms: row.get(8),
        updated_at_ms: row.get(9),
        last_delivery: row.get(10),
    }
    .into_record()
}

pub(crate) async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<DestinationRecord>, StoreError> {
    client
        .query_opt(&format!("{SELECT} WHERE id = $1"), &[&id])
        .await
        .map_err(backend("cannot read the destination"))?
        .as_ref()
        .map(read_row)
        .transpose()
}

async fn read_back(client: &impl GenericClient, id: &str) -> Result<DestinationRecord, StoreError> {
    get(client, id)
        .await?
        .ok_or_else(|| destination_not_found(id))
}

pub(crate) async fn list(client: &Client) -> Result<Vec<DestinationRecord>, StoreError> {
    client
        .query(&format!("{SELECT} ORDER BY name"), &[])
        .await
        .map_err(backend("cannot list destinations"))?
        .iter()
        .map(read_row)
        .collect()
}

fn write_error<'a>(
    what: &'static str,
    spec: &'a DestinationSpec,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            destination_name_taken(&spec.name)
        } else {
            StoreError::backend(what, e)
        }
    }
}

async fn insert(
    client: &impl GenericClient,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
    on_conflict: &str,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    client
        .execute(
            &format!("{INSERT} {on_conflict}"),
            &[
                &id,
                &spec.name,
                &spec.destination_type,
                &spec.source,
                &DestinationRow::spec_text(spec),
                &origin.as_str(),
                &start_ms,
                &wall_clock_ms(),
            ],
        )
        .await
        .map_err(write_error("cannot create the destination", spec))?;
    Ok(id)
}

async fn write_spec(
    client: &impl GenericClient,
    id: &str,
    spec: &DestinationSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let changed = client
        .execute(
            "UPDATE connectord.destinations SET name = $2, type = $3, source = $4, spec = $5, origin = $6, \
             updated_at_ms = $7, state = CASE state WHEN 'disabled' THEN 'enabled' ELSE state END, \
             disabled_reason = NULL WHERE id = $1",
            &[
                &id,
                &spec.name,
                &spec.destination_type,
                &spec.source,
                &DestinationRow::spec_text(spec),
                &origin.as_str(),
                &wall_clock_ms(),
            ],
        )
        .await
        .map_err(write_error("cannot update the destination", spec))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    Ok(())
}

pub(crate) async fn upsert(
    client: &mut Client,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
) -> Result<DestinationRecord, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    // Several processes may declare the same destination at once: first one wins.
    insert(&tx, spec, origin, start_ms, "ON CONFLICT (name) DO NOTHING").await?;
    let row = tx
        .query_one(
            &format!("{SELECT} WHERE name = $1 FOR UPDATE"),
            &[&spec.name],
        )
        .await
        .map_err(backend("cannot read the destination"))?;
    let record = read_row(&row)?;
    if record.spec != *spec || record.origin != origin {
        write_spec(&tx, &record.id, spec, origin).await?;
    }
    let record = read_back(&tx, &record.id).await?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the destination"))?;
    Ok(record)
}

pub(crate) async fn create(
    client: &Client,
    spec: &DestinationSpec,
    origin: Origin,
    start_ms: i64,
) -> Result<DestinationRecord, StoreError> {
    let id = insert(client, spec, origin, start_ms, "").await?;
    read_back(client, &id).await
}

pub(crate) async fn update(
    client: &mut Client,
    id: &str,
    spec: &DestinationSpec,
) -> Result<DestinationRecord, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    let current = read_back(&tx, id).await?;
    if current.spec != *spec {
        write_spec(&tx, id, spec, current.origin).await?;
    }
    let record = read_back(&tx, id).await?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the destination"))?;
    Ok(record)
}

pub(crate) async fn delete(client: &mut Client, id: &str) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    let deleted = tx
        .execute("DELETE FROM connectord.destinations WHERE id = $1", &[&id])
        .await
        .map_err(backend("cannot delete the destination"))?;
    if deleted == 0 {
        return Err(destination_not_found(id));
    }
    for sql in [
        "DELETE FROM connectord.delivered WHERE destination_id = $1",
        "DELETE FROM connectord.deliveries WHERE destination_id = $1",
        "DELETE FROM connectord.dead_letters WHERE destination_id = $1",
        "DELETE FROM connectord.leases WHERE connector_id = $1",
        "DELETE FROM connectord.fencing WHERE connector_id = $1",
    ] {
        tx.execute(sql, &[&id])
            .await
            .map_err(backend("cannot delete the destination's history"))?;
    }
    tx.commit()
        .await
        .map_err(backend("cannot commit the deletion"))
}

pub(crate) async fn set_state(
    client: &Client,
    id: &str,
    state: ConnectorState,
) -> Result<DestinationRecord, StoreError> {
    let changed = client
        .execute(
            "UPDATE connectord.destinations SET state = $2, disabled_reason = NULL WHERE id = $1",
            &[&id, &state.as_str()],
        )
        .await
        .map_err(backend("cannot change the destination's state"))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    read_back(client, id).await
}

pub(crate) async fn set_status(
    client: &mut Client,
    id: &str,
    change: StatusChange,
) -> Result<(), StoreError> {
    let tx = relaxed_transaction(client).await?;
    let changed = match change {
        StatusChange::Succeeded => {
            tx.execute(
                "UPDATE connectord.destinations SET last_error = NULL WHERE id = $1",
                &[&id],
            )
            .await
        }
        StatusChange::Failed(error) => {
            tx.execute(
                "UPDATE connectord.destinations SET last_error = $2 WHERE id = $1",
                &[&id, &error],
            )
            .await
        }
        StatusChange::Disabled(reason) => {
            tx.execute(
                "UPDATE connectord.destinations SET state = 'disabled', disabled_reason = $2, last_error = $2 \
                 WHERE id = $1",
                &[&id, &reason],
            )
            .await
        }
    }
    .map_err(backend("cannot update the destination's status"))?;
    if changed == 0 {
        return Err(destination_not_found(id));
    }
    tx.commit().await.map_err(backend("cannot commit"))
}

/// The ledger row goes in with a synchronous commit, like the sink's: it is what
/// stops a bucket from being delivered twice. History alone is relaxed.
pub(crate) async fn record_delivery(
    client: &mut Client,
    lease: &Lease,
    record: &DeliveryRecord,
    bucket_rows: u64,
) -> Result<(), StoreError> {
    let tx = if record.outcome.passes_bucket() {
        client
            .transaction()
            .await
            .map_err(backend("cannot start a transaction"))?
    } else {
        relaxed_transaction(client).await?
    };
    let id = &record.destination_id;
    let bucket = record.scheduled_for_ms;
    let now = wall_clock_ms();
    let rows = to_i64(bucket_rows);
    // A destination deleted while its delivery was in flight gets nothing back; the
    // row lock also keeps a delete from passing this delivery halfway.
    if tx
        .query_opt(
            "SELECT 1 FROM connectord.destinations WHERE id = $1 FOR SHARE",
            &[id],
        )
        .await
        .map_err(backend("cannot read the destination"))?
        .is_none()
    {
        return Err(destination_not_found(id));
    }
    if record.outcome.passes_bucket() {
        tx.execute(
            "INSERT INTO connectord.delivered (destination_id, scheduled_for_ms, token, outcome, rows, delivered_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[id, &bucket, &lease.token, &record.outcome.as_str(), &rows, &now],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                already_delivered(bucket)
            } else {
                StoreError::backend("cannot write the delivery ledger", e)
            }
        })?;
        let current: Option<i64> = tx
            .query_opt(
                "SELECT token FROM connectord.leases WHERE connector_id = $1 AND scheduled_for_ms = $2",
                &[id, &bucket],
            )
            .await
            .map_err(backend("cannot read the fencing token"))?
            .map(|r| r.get(0));
        check_fencing(lease, current)?;
        // The lease is done in the same transaction: one round trip fewer per bucket.
        tx.execute(
            "UPDATE connectord.leases SET done = true WHERE connector_id = $1 AND scheduled_for_ms = $2 AND token = $3",
            &[id, &bucket, &lease.token],
        )
        .await
        .map_err(backend("cannot mark the bucket done"))?;
        tx.execute(
            "DELETE FROM connectord.leases WHERE connector_id = $1 AND scheduled_for_ms < $2",
            &[id, &bucket.saturating_sub(LEASES_KEPT_MS)],
        )
        .await
        .map_err(backend("cannot prune old leases"))?;
        if record.outcome == DeliveryOutcome::DeadLetter {
            tx.execute(
                "INSERT INTO connectord.dead_letters (destination_id, scheduled_for_ms, rows, error, recorded_at_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[id, &bucket, &rows, &record.error.as_deref().unwrap_or_default(), &now],
            )
            .await
            .map_err(backend("cannot write the dead letter"))?;
            tx.execute(
                "DELETE FROM connectord.dead_letters WHERE destination_id = $1 AND scheduled_for_ms <= \
                 (SELECT scheduled_for_ms FROM connectord.dead_letters WHERE destination_id = $1 \
                  ORDER BY scheduled_for_ms DESC LIMIT 1 OFFSET $2)",
                &[id, &DEAD_LETTERS_KEPT],
            )
            .await
            .map_err(backend("cannot trim the dead letters"))?;
        }
        tx.execute(
            "UPDATE connectord.destinations SET delivered_through_ms = \
             greatest(coalesce(delivered_through_ms, $2), $2) WHERE id = $1",
            &[id, &bucket],
        )
        .await
        .map_err(backend("cannot advance the destination"))?;
    }
    let row = DeliveryRow::new(record);
    tx.execute(
        "INSERT INTO connectord.deliveries (destination_id, scheduled_for_ms, started_at_ms, outcome, rows, \
         skipped, bytes, requests, retries, duration_ms, error, runner_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &row.destination_id, &row.scheduled_for_ms, &row.started_at_ms, &row.outcome, &row.rows,
            &row.skipped, &row.bytes, &row.requests, &row.retries, &row.duration_ms, &row.error,
            &row.runner_id,
        ],
    )
    .await
    .map_err(backend("cannot record the delivery"))?;
    tx.execute(
        "DELETE FROM connectord.deliveries WHERE destination_id = $1 AND id <= \
         (SELECT id FROM connectord.deliveries WHERE destination_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        &[id, &TICKS_KEPT],
    )
    .await
    .map_err(backend("cannot trim the delivery history"))?;
    let last = serde_json::to_string(record)
        .map_err(|e| StoreError::backend("cannot encode the delivery record", e))?;
    tx.execute(
        "UPDATE connectord.destinations SET last_delivery = $2 WHERE id = $1",
        &[id, &last],
    )
    .await
    .map_err(backend("cannot record the last delivery"))?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the delivery"))
}

pub(crate) async fn history(
    client: &Client,
    id: &str,
    limit: usize,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    client
        .query(
            "SELECT destination_id, scheduled_for_ms, started_at_ms, outcome, rows, skipped, bytes, \
             requests, retries, duration_ms, error, runner_id FROM connectord.deliveries \
             WHERE destination_id = $1 ORDER BY id DESC LIMIT $2",
            &[&id, &to_i64(limit as u64)],
        )
        .await
        .map_err(backend("cannot read the delivery history"))?
        .iter()
        .map(|r| {
            DeliveryRow {
                destination_id: r.get(0),
                scheduled_for_ms: r.get(1),
                started_at_ms: r.get(2),
                outcome: r.get(3),
                rows: r.get(4),
                skipped: r.get(5),
                bytes: r.get(6),
                requests: r.get(7),
                retries: r.get(8),
                duration_ms: r.get(9),
                error: r.get(10),
                runner_id: r.get(11),
            }
            .into_record()
        })
        .collect()
}

pub(crate) async fn dead_letters(
    client: &Client,
    id: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    client
        .query(
            "SELECT destination_id, scheduled_for_ms, rows, error, recorded_at_ms FROM connectord.dead_letters \
             WHERE destination_id = $1 ORDER BY scheduled_for_ms DESC LIMIT $2",
            &[&id, &to_i64(limit as u64)],
        )
        .await
        .map_err(backend("cannot read the dead letters"))?
        .iter()
        .map(|r| {
            DeadLetterRow {
                destination_id: r.get(0),
                scheduled_for_ms: r.get(1),
                rows: r.get(2),
                error: r.get(3),
                recorded_at_ms: r.get(4),
            }
            .into_record()
        })
        .collect()
}
