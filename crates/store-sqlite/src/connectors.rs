//! The `connectors` table: create, update, upsert by name, delete, state and status.

use connector_runner::protocol::{ConnectorRow, SpecValues};
use connector_runner::{
    ConnectorRecord, ConnectorSpec, ConnectorState, ListQuery, Origin, StatusChange, StoreError,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::backend;

const SELECT: &str = "SELECT id, name, type, target_database, target_table, schedule_ms, config, origin, \
     state, disabled_reason, last_error, created_at_ms, updated_at_ms, last_tick, retention, org_id FROM connectors";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConnectorRow> {
    Ok(ConnectorRow {
        id: row.get(0)?,
        name: row.get(1)?,
        connector_type: row.get(2)?,
        target_database: row.get(3)?,
        target_table: row.get(4)?,
        schedule_ms: row.get(5)?,
        config: row.get(6)?,
        origin: row.get(7)?,
        state: row.get(8)?,
        disabled_reason: row.get(9)?,
        last_error: row.get(10)?,
        created_at_ms: row.get(11)?,
        updated_at_ms: row.get(12)?,
        last_tick: row.get(13)?,
        retention: row.get(14)?,
        org_id: row.get(15)?,
    })
}

fn query_one(
    conn: &Connection,
    filter: &str,
    key: &str,
) -> Result<Option<ConnectorRecord>, StoreError> {
    conn.query_row(&format!("{SELECT} WHERE {filter} = ?1"), [key], read_row)
        .optional()
        .map_err(backend("cannot read the connector"))?
        .map(ConnectorRow::into_record)
        .transpose()
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<ConnectorRecord>, StoreError> {
    query_one(conn, "id", id)
}

fn read_back(conn: &Connection, id: &str) -> Result<ConnectorRecord, StoreError> {
    get(conn, id)?.ok_or_else(|| StoreError::connector_not_found(id))
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ConnectorRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("{SELECT} ORDER BY name"))
        .map_err(backend("cannot list connectors"))?;
    let rows = stmt
        .query_map([], read_row)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot list connectors"))?;
    rows.into_iter().map(ConnectorRow::into_record).collect()
}

pub(crate) fn page(
    conn: &Connection,
    query: &ListQuery,
) -> Result<Vec<ConnectorRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{SELECT} WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR state = ?2) \
             AND (?3 IS NULL OR type = ?3) AND (?5 IS NULL OR org_id = ?5) ORDER BY id LIMIT ?4"
        ))
        .map_err(backend("cannot list connectors"))?;
    let rows = stmt
        .query_map(
            params![
                query.after,
                query.state.map(ConnectorState::as_str),
                query.connector_type,
                i64::try_from(query.limit).unwrap_or(i64::MAX),
                query.org_id
            ],
            read_row,
        )
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot list connectors"))?;
    rows.into_iter().map(ConnectorRow::into_record).collect()
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// A write of `spec` that failed: a taken name is the operator's to fix.
fn write_error<'a>(
    what: &'static str,
    spec: &'a ConnectorSpec,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::name_taken(&spec.name)
        } else {
            StoreError::backend(what, e)
        }
    }
}

fn bind<'a>(id: &'a dyn rusqlite::ToSql, v: &'a SpecValues) -> [&'a dyn rusqlite::ToSql; 11] {
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

fn insert(conn: &Connection, spec: &ConnectorSpec, origin: Origin) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    insert_with_id(conn, &id, spec, origin)?;
    Ok(id)
}

/// Inserts a connector whose id the caller chose (a discovered target's, derived
/// from its name).
pub(crate) fn insert_with_id(
    conn: &Connection,
    id: &str,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let id = id.to_owned();
    conn.execute(
        "INSERT INTO connectors (id, name, type, target_database, target_table, schedule_ms, config, \
         origin, state, created_at_ms, updated_at_ms, retention, org_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'enabled', ?9, ?9, ?10, ?11)",
        bind(&id, &SpecValues::new(spec, origin)),
    )
    .map_err(write_error("cannot create the connector", spec))?;
    Ok(())
}

/// A changed spec is the operator's fix: a Config-disabled connector runs again.
pub(crate) fn write_spec(
    conn: &Connection,
    id: &str,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let id = id.to_owned();
    let changed = conn
        .execute(
            "UPDATE connectors SET name = ?2, type = ?3, target_database = ?4, target_table = ?5, schedule_ms = ?6, \
             config = ?7, origin = ?8, updated_at_ms = ?9, retention = ?10, org_id = ?11, \
             state = CASE state WHEN 'disabled' THEN 'enabled' ELSE state END, \
             disabled_reason = NULL WHERE id = ?1",
            bind(&id, &SpecValues::new(spec, origin)),
        )
        .map_err(write_error("cannot update the connector", spec))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(&id));
    }
    Ok(())
}

/// Runs `f` in an immediate transaction (the write lock up front, so two processes
/// never both read and then both write) and commits.
pub(crate) fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start a transaction"))?;
    let value = f(&tx)?;
    tx.commit().map_err(backend("cannot commit"))?;
    Ok(value)
}

pub(crate) fn upsert(
    conn: &mut Connection,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<ConnectorRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = match query_one(tx, "name", &spec.name)? {
            None => insert(tx, spec, origin)?,
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
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<ConnectorRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = insert(tx, spec, origin)?;
        read_back(tx, &id)
    })
}

pub(crate) fn update(
    conn: &mut Connection,
    id: &str,
    spec: &ConnectorSpec,
) -> Result<ConnectorRecord, StoreError> {
    in_transaction(conn, |tx| {
        let current = read_back(tx, id)?;
        if current.spec != *spec {
            write_spec(tx, id, spec, current.origin)?;
        }
        read_back(tx, id)
    })
}

/// Deletes a connector and its history inside the caller's transaction; false when
/// there was no such connector. Its rows, ledger and fencing counter stay.
pub(crate) fn remove(tx: &Connection, id: &str) -> Result<bool, StoreError> {
    let deleted = tx
        .execute("DELETE FROM connectors WHERE id = ?1", [id])
        .map_err(backend("cannot delete the connector"))?;
    for sql in [
        "DELETE FROM ticks WHERE connector_id = ?1",
        "DELETE FROM leases WHERE connector_id = ?1",
    ] {
        tx.execute(sql, [id])
            .map_err(backend("cannot delete the connector's history"))?;
    }
    Ok(deleted > 0)
}

pub(crate) fn delete(conn: &mut Connection, id: &str) -> Result<(), StoreError> {
    in_transaction(conn, |tx| {
        if remove(tx, id)? {
            Ok(())
        } else {
            Err(StoreError::connector_not_found(id))
        }
    })
}

pub(crate) fn set_state(
    conn: &Connection,
    id: &str,
    state: ConnectorState,
) -> Result<ConnectorRecord, StoreError> {
    let changed = conn
        .execute(
            "UPDATE connectors SET state = ?2, disabled_reason = NULL WHERE id = ?1",
            params![id, state.as_str()],
        )
        .map_err(backend("cannot change the connector's state"))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(id));
    }
    read_back(conn, id)
}

pub(crate) fn set_status(
    conn: &Connection,
    id: &str,
    change: StatusChange,
) -> Result<(), StoreError> {
    let changed = match change {
        StatusChange::Succeeded => {
            conn.execute("UPDATE connectors SET last_error = NULL WHERE id = ?1", [id])
        }
        StatusChange::Failed(error) => conn.execute(
            "UPDATE connectors SET last_error = ?2 WHERE id = ?1",
            params![id, error],
        ),
        StatusChange::Disabled(reason) => conn.execute(
            "UPDATE connectors SET state = 'disabled', disabled_reason = ?2, last_error = ?2 WHERE id = ?1",
            params![id, reason],
        ),
    }
    .map_err(backend("cannot update the connector's status"))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(id));
    }
    Ok(())
}
