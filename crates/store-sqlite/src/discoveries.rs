//! The `discoveries` table, and the connectors each discovery manages.

use connector_runner::protocol::{
    DiscoveryRow, discovery_name_taken, discovery_not_found, wall_clock_ms,
};
use connector_runner::{
    DiscoveryRecord, ManagedConnector, Origin, StoreError, SyncPlan, SyncReport,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::backend;
use crate::connectors::{in_transaction, is_unique_violation};

const SELECT: &str =
    "SELECT id, name, spec, origin, status, created_at_ms, updated_at_ms FROM discoveries";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DiscoveryRow> {
    Ok(DiscoveryRow {
        id: row.get(0)?,
        name: row.get(1)?,
        spec: row.get(2)?,
        origin: row.get(3)?,
        status: row.get(4)?,
        created_at_ms: row.get(5)?,
        updated_at_ms: row.get(6)?,
    })
}

fn query_one(
    conn: &Connection,
    filter: &str,
    key: &str,
) -> Result<Option<DiscoveryRecord>, StoreError> {
    conn.query_row(&format!("{SELECT} WHERE {filter} = ?1"), [key], read_row)
        .optional()
        .map_err(backend("cannot read the discovery"))?
        .map(DiscoveryRow::into_record)
        .transpose()
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<DiscoveryRecord>, StoreError> {
    query_one(conn, "id", id)
}

fn read_back(conn: &Connection, id: &str) -> Result<DiscoveryRecord, StoreError> {
    get(conn, id)?.ok_or_else(|| discovery_not_found(id))
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<DiscoveryRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("{SELECT} ORDER BY name"))
        .map_err(backend("cannot list discoveries"))?;
    let rows = stmt
        .query_map([], read_row)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(backend("cannot list discoveries"))?;
    rows.into_iter().map(DiscoveryRow::into_record).collect()
}

fn insert(
    conn: &Connection,
    name: &str,
    spec: &serde_json::Value,
    origin: Origin,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO discoveries (id, name, spec, origin, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, name, spec.to_string(), origin.as_str(), wall_clock_ms()],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            discovery_name_taken(name)
        } else {
            StoreError::backend("cannot create the discovery", e)
        }
    })?;
    Ok(id)
}

fn write_spec(
    conn: &Connection,
    id: &str,
    spec: &serde_json::Value,
    origin: Origin,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE discoveries SET spec = ?2, origin = ?3, updated_at_ms = ?4 WHERE id = ?1",
            params![id, spec.to_string(), origin.as_str(), wall_clock_ms()],
        )
        .map_err(backend("cannot update the discovery"))?;
    if changed == 0 {
        return Err(discovery_not_found(id));
    }
    Ok(())
}

pub(crate) fn upsert(
    conn: &mut Connection,
    name: &str,
    spec: &serde_json::Value,
    origin: Origin,
) -> Result<DiscoveryRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = match query_one(tx, "name", name)? {
            None => insert(tx, name, spec, origin)?,
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
    name: &str,
    spec: &serde_json::Value,
    origin: Origin,
) -> Result<DiscoveryRecord, StoreError> {
    in_transaction(conn, |tx| {
        let id = insert(tx, name, spec, origin)?;
        read_back(tx, &id)
    })
}

pub(crate) fn update(
    conn: &mut Connection,
    id: &str,
    spec: &serde_json::Value,
) -> Result<DiscoveryRecord, StoreError> {
    in_transaction(conn, |tx| {
        let current = read_back(tx, id)?;
        if current.spec != *spec {
            write_spec(tx, id, spec, current.origin)?;
        }
        read_back(tx, id)
    })
}

/// Deletes connectors and their history, inside the caller's transaction.
fn remove_connectors(tx: &Connection, ids: &[String]) -> Result<(), StoreError> {
    for id in ids {
        crate::connectors::remove(tx, id)?;
    }
    Ok(())
}

pub(crate) fn delete(conn: &mut Connection, id: &str) -> Result<(), StoreError> {
    in_transaction(conn, |tx| {
        let record = read_back(tx, id)?;
        let owned = crate::connectors::list(tx)?
            .into_iter()
            .filter(|c| connector_runner::is_managed_by(c, &record.name))
            .map(|c| c.id)
            .collect::<Vec<_>>();
        remove_connectors(tx, &owned)?;
        tx.execute("DELETE FROM discoveries WHERE id = ?1", [id])
            .map_err(backend("cannot delete the discovery"))?;
        Ok(())
    })
}

pub(crate) fn set_status(
    conn: &Connection,
    id: &str,
    status: &serde_json::Value,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE discoveries SET status = ?2 WHERE id = ?1",
            params![id, status.to_string()],
        )
        .map_err(backend("cannot record the discovery's status"))?;
    if changed == 0 {
        return Err(discovery_not_found(id));
    }
    Ok(())
}

pub(crate) fn sync(
    conn: &mut Connection,
    discovery_name: &str,
    wanted: &[ManagedConnector],
) -> Result<SyncReport, StoreError> {
    in_transaction(conn, |tx| {
        // Every connector, not only the prefix: a wanted name or id may be held by a
        // connector of another origin, which the plan reports instead of touching.
        // A refresh that lost a race with the discovery's deletion recreates nothing.
        if query_one(tx, "name", discovery_name)?.is_none() {
            return Err(StoreError::new(
                connector_runner::StoreErrorKind::NotFound,
                format!("no discovery named `{discovery_name}`"),
            ));
        }
        let existing = crate::connectors::list(tx)?;
        let plan = SyncPlan::new(discovery_name, &existing, wanted);
        remove_connectors(tx, &plan.remove)?;
        for want in &plan.create {
            crate::connectors::insert_with_id(tx, &want.id, &want.spec, Origin::Discovery)?;
        }
        for want in &plan.update {
            crate::connectors::write_spec(tx, &want.id, &want.spec, Origin::Discovery)?;
        }
        Ok(plan.report)
    })
}

#[async_trait::async_trait]
impl connector_runner::DiscoveryStore for crate::SqliteStore {
    async fn upsert_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError> {
        let (name, spec) = (name.to_owned(), spec.clone());
        self.with_state(move |c| upsert(c, &name, &spec, origin))
            .await
    }

    async fn create_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError> {
        let (name, spec) = (name.to_owned(), spec.clone());
        self.with_state(move |c| create(c, &name, &spec, origin))
            .await
    }

    async fn update_discovery(
        &self,
        id: &str,
        spec: &serde_json::Value,
    ) -> Result<DiscoveryRecord, StoreError> {
        let (id, spec) = (id.to_owned(), spec.clone());
        self.with_state(move |c| update(c, &id, &spec)).await
    }

    async fn delete_discovery(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| delete(c, &id)).await
    }

    async fn list_discoveries(&self) -> Result<Vec<DiscoveryRecord>, StoreError> {
        self.with_reader(|c| list(c)).await
    }

    async fn get_discovery(&self, id: &str) -> Result<Option<DiscoveryRecord>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |c| get(c, &id)).await
    }

    async fn set_discovery_status(
        &self,
        id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let (id, status) = (id.to_owned(), status.clone());
        self.with_state(move |c| set_status(c, &id, &status)).await
    }

    async fn sync_managed(
        &self,
        discovery_name: &str,
        wanted: &[ManagedConnector],
    ) -> Result<SyncReport, StoreError> {
        for want in wanted {
            crate::schema::check_target(&want.spec)?;
        }
        let (name, wanted) = (discovery_name.to_owned(), wanted.to_vec());
        self.with_state(move |c| sync(c, &name, &wanted)).await
    }
}
