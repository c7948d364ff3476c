//! The `connectors` table: create, update, upsert by name, delete, state and status.

use connector_runner::protocol::{ConnectorRow, SpecValues};
use connector_runner::{
    ConnectorRecord, ConnectorSpec, ConnectorState, ListQuery, Origin, StatusChange, StoreError,
};
use postgres_types::ToSql;
use tokio_postgres::{Client, GenericClient, Row};

use crate::{backend, is_unique_violation, relaxed_transaction};

const SELECT: &str = "SELECT id, name, type, target_database, target_table, schedule_ms, config, origin, \
     state, disabled_reason, last_error, created_at_ms, updated_at_ms, last_tick, retention, org_id FROM connectord.connectors";

const INSERT: &str = "INSERT INTO connectord.connectors (id, name, type, target_database, target_table, \
     schedule_ms, config, origin, state, created_at_ms, updated_at_ms, retention, org_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'enabled', $9, $9, $10, $11)";

fn read_row(row: &Row) -> Result<ConnectorRecord, StoreError> {
    ConnectorRow {
        id: row.get(0),
        name: row.get(1),
        connector_type: row.get(2),
        target_database: row.get(3),
        target_table: row.get(4),
        schedule_ms: row.get(5),
        config: row.get(6),
        origin: row.get(7),
        state: row.get(8),
        disabled_reason: row.get(9),
        last_error: row.get(10),
        created_at_ms: row.get(11),
        updated_at_ms: row.get(12),
        last_tick: row.get(13),
        retention: row.get(14),
        org_id: row.get(15),
    }
    .into_record()
}

pub(crate) async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<ConnectorRecord>, StoreError> {
    client
        .query_opt(&format!("{SELECT} WHERE id = $1"), &[&id])
        .await
        .map_err(backend("cannot read the connector"))?
        .as_ref()
        .map(read_row)
        .transpose()
}

async fn read_back(client: &impl GenericClient, id: &str) -> Result<ConnectorRecord, StoreError> {
    get(client, id)
        .await?
        .ok_or_else(|| StoreError::connector_not_found(id))
}

pub(crate) async fn list(client: &impl GenericClient) -> Result<Vec<ConnectorRecord>, StoreError> {
    client
        .query(&format!("{SELECT} ORDER BY name"), &[])
        .await
        .map_err(backend("cannot list connectors"))?
        .iter()
        .map(read_row)
        .collect()
}

pub(crate) async fn page(
    client: &Client,
    query: &ListQuery,
) -> Result<Vec<ConnectorRecord>, StoreError> {
    client
        .query(
            &format!(
                "{SELECT} WHERE ($1::text IS NULL OR id COLLATE \"C\" > $1) AND ($2::text IS NULL OR state = $2) \
                 AND ($3::text IS NULL OR type = $3) AND ($5::text IS NULL OR org_id = $5) \
                 ORDER BY id COLLATE \"C\" LIMIT $4"
            ),
            &[
                &query.after,
                &query.state.map(ConnectorState::as_str),
                &query.connector_type,
                &i64::try_from(query.limit).unwrap_or(i64::MAX),
                &query.org_id,
            ],
        )
        .await
        .map_err(backend("cannot list connectors"))?
        .iter()
        .map(read_row)
        .collect()
}

fn bind<'a>(id: &'a (dyn ToSql + Sync), v: &'a SpecValues) -> [&'a (dyn ToSql + Sync); 11] {
    [
        id,
        &v.name,
        &v.connector_type,
        &v.target_database,
        &v.target_table,
        &v.schedule_ms,
        &v.config,
        &v.origin,
        &v.now_ms,
        &v.retention,
        &v.org_id,
    ]
}

/// A write of `spec` that failed: a taken name is the operator's to fix.
fn write_error<'a>(
    what: &'static str,
    spec: &'a ConnectorSpec,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::name_taken(&spec.name)
        } else {
            StoreError::backend(what, e)
        }
    }
}

/// A changed spec is the operator's fix: a Config-disabled connector runs again.
pub(crate) async fn write_spec(
    client: &impl GenericClient,
    id: &str,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let id = id.to_owned();
    let changed = client
        .execute(
            "UPDATE connectord.connectors SET name = $2, type = $3, target_database = $4, target_table = $5, \
             schedule_ms = $6, config = $7, origin = $8, updated_at_ms = $9, retention = $10, org_id = $11, \
             state = CASE state WHEN 'disabled' THEN 'enabled' ELSE state END, disabled_reason = NULL WHERE id = $1",
            &bind(&id, &SpecValues::new(spec, origin)),
        )
        .await
        .map_err(write_error("cannot update the connector", spec))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(&id));
    }
    Ok(())
}

pub(crate) async fn upsert(
    client: &mut Client,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<ConnectorRecord, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    let id = uuid::Uuid::new_v4().to_string();
    // Several processes may declare the same connector at once: first one wins.
    tx.execute(
        &format!("{INSERT} ON CONFLICT (name) DO NOTHING"),
        &bind(&id, &SpecValues::new(spec, origin)),
    )
    .await
    .map_err(backend("cannot create the connector"))?;
    let row = tx
        .query_one(
            &format!("{SELECT} WHERE name = $1 FOR UPDATE"),
            &[&spec.name],
        )
        .await
        .map_err(backend("cannot read the connector"))?;
    let record = read_row(&row)?;
    if record.spec != *spec || record.origin != origin {
        write_spec(&tx, &record.id, spec, origin).await?;
    }
    let record = read_back(&tx, &record.id).await?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the connector"))?;
    Ok(record)
}

pub(crate) async fn create(
    client: &Client,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<ConnectorRecord, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    insert_with_id(client, &id, spec, origin).await?;
    read_back(client, &id).await
}

/// Inserts a connector whose id the caller chose (a discovered target's, derived
/// from its name).
pub(crate) async fn insert_with_id(
    client: &impl GenericClient,
    id: &str,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let id = id.to_owned();
    client
        .execute(INSERT, &bind(&id, &SpecValues::new(spec, origin)))
        .await
        .map_err(write_error("cannot create the connector", spec))?;
    Ok(())
}

pub(crate) async fn update(
    client: &mut Client,
    id: &str,
    spec: &ConnectorSpec,
) -> Result<ConnectorRecord, StoreError> {
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
        .map_err(backend("cannot commit the connector"))?;
    Ok(record)
}

/// Deletes connectors and their history inside the caller's transaction; returns
/// how many connectors there were. Their rows, ledger and fencing counters stay.
pub(crate) async fn remove(tx: &impl GenericClient, ids: &[String]) -> Result<u64, StoreError> {
    let deleted = tx
        .execute(
            "DELETE FROM connectord.connectors WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(backend("cannot delete the connector"))?;
    for sql in [
        "DELETE FROM connectord.ticks WHERE connector_id = ANY($1)",
        "DELETE FROM connectord.leases WHERE connector_id = ANY($1)",
    ] {
        tx.execute(sql, &[&ids])
            .await
            .map_err(backend("cannot delete the connector's history"))?;
    }
    Ok(deleted)
}

pub(crate) async fn delete(client: &mut Client, id: &str) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    if remove(&tx, &[id.to_owned()]).await? == 0 {
        return Err(StoreError::connector_not_found(id));
    }
    tx.commit()
        .await
        .map_err(backend("cannot commit the deletion"))
}

pub(crate) async fn set_state(
    client: &Client,
    id: &str,
    state: ConnectorState,
) -> Result<ConnectorRecord, StoreError> {
    let changed = client
        .execute(
            "UPDATE connectord.connectors SET state = $2, disabled_reason = NULL WHERE id = $1",
            &[&id, &state.as_str()],
        )
        .await
        .map_err(backend("cannot change the connector's state"))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(id));
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
                "UPDATE connectord.connectors SET last_error = NULL WHERE id = $1",
                &[&id],
            )
            .await
        }
        StatusChange::Failed(error) => {
            tx.execute(
                "UPDATE connectord.connectors SET last_error = $2 WHERE id = $1",
                &[&id, &error],
            )
            .await
        }
        StatusChange::Disabled(reason) => {
            tx.execute(
                "UPDATE connectord.connectors SET state = 'disabled', disabled_reason = $2, last_error = $2 \
                 WHERE id = $1",
                &[&id, &reason],
            )
            .await
        }
    }
    .map_err(backend("cannot update the connector's status"))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(id));
    }
    tx.commit().await.map_err(backend("cannot commit"))
}
