//! The `connectord.discoveries` table, and the connectors each discovery manages.

use connector_runner::protocol::{
    DiscoveryRow, discovery_name_taken, discovery_not_found, wall_clock_ms,
};
use connector_runner::{
    DiscoveryRecord, DiscoveryStore, ManagedConnector, Origin, StoreError, SyncPlan, SyncReport,
};
use tokio_postgres::{Client, GenericClient, Row};

use crate::{PgStore, backend, is_unique_violation};

const SELECT: &str = "SELECT id, name, spec, origin, status, created_at_ms, updated_at_ms \
     FROM connectord.discoveries";

fn read_row(row: &Row) -> Result<DiscoveryRecord, StoreError> {
    DiscoveryRow {
        id: row.get(0),
        name: row.get(1),
        spec: row.get(2),
        origin: row.get(3),
        status: row.get(4),
        created_at_ms: row.get(5),
        updated_at_ms: row.get(6),
    }
    .into_record()
}

async fn query_one(
    client: &impl GenericClient,
    filter: &str,
    key: &str,
) -> Result<Option<DiscoveryRecord>, StoreError> {
    client
        .query_opt(&format!("{SELECT} WHERE {filter} = $1"), &[&key])
        .await
        .map_err(backend("cannot read the discovery"))?
        .as_ref()
        .map(read_row)
        .transpose()
}

async fn read_back(client: &impl GenericClient, id: &str) -> Result<DiscoveryRecord, StoreError> {
    query_one(client, "id", id)
        .await?
        .ok_or_else(|| discovery_not_found(id))
}

async fn write_spec(
    client: &impl GenericClient,
    id: &str,
    spec: &serde_json::Value,
    origin: Origin,
) -> Result<(), StoreError> {
    let changed = client
        .execute(
            "UPDATE connectord.discoveries SET spec = $2, origin = $3, updated_at_ms = $4 WHERE id = $1",
            &[&id, &spec.to_string(), &origin.as_str(), &wall_clock_ms()],
        )
        .await
        .map_err(backend("cannot update the discovery"))?;
    if changed == 0 {
        return Err(discovery_not_found(id));
    }
    Ok(())
}

async fn insert(
    client: &impl GenericClient,
    name: &str,
    spec: &serde_json::Value,
    origin: Origin,
    on_conflict: &str,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    client
        .execute(
            &format!(
                "INSERT INTO connectord.discoveries (id, name, spec, origin, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $5) {on_conflict}"
            ),
            &[&id, &name, &spec.to_string(), &origin.as_str(), &wall_clock_ms()],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                discovery_name_taken(name)
            } else {
                StoreError::backend("cannot create the discovery", e)
            }
        })?;
    Ok(id)
}

async fn in_transaction<T>(
    client: &mut Client,
    f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    let value = f(&tx).await?;
    tx.commit().await.map_err(backend("cannot commit"))?;
    Ok(value)
}

/// Locks the discovery's row for the transaction, so a refresh and a delete of the
/// same discovery never interleave (a refresh that loses finds it gone).
async fn lock_by_name(tx: &impl GenericClient, name: &str) -> Result<DiscoveryRecord, StoreError> {
    tx.query_opt(&format!("{SELECT} WHERE name = $1 FOR UPDATE"), &[&name])
        .await
        .map_err(backend("cannot read the discovery"))?
        .as_ref()
        .map(read_row)
        .transpose()?
        .ok_or_else(|| {
            StoreError::new(
                connector_runner::StoreErrorKind::NotFound,
                format!("no discovery named `{name}`"),
            )
        })
}

#[async_trait::async_trait]
impl DiscoveryStore for PgStore {
    async fn upsert_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError> {
        in_transaction(&mut *self.pool.get().await?, async |tx| {
            // Several processes may declare the same discovery at once: first one wins.
            insert(tx, name, spec, origin, "ON CONFLICT (name) DO NOTHING").await?;
            let record = lock_by_name(tx, name).await?;
            if record.spec != *spec || record.origin != origin {
                write_spec(tx, &record.id, spec, origin).await?;
            }
            read_back(tx, &record.id).await
        })
        .await
    }

    async fn create_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError> {
        let client = self.pool.get().await?;
        let id = insert(&*client, name, spec, origin, "").await?;
        read_back(&*client, &id).await
    }

    async fn update_discovery(
        &self,
        id: &str,
        spec: &serde_json::Value,
    ) -> Result<DiscoveryRecord, StoreError> {
        in_transaction(&mut *self.pool.get().await?, async |tx| {
            let current = read_back(tx, id).await?;
            if current.spec != *spec {
                write_spec(tx, id, spec, current.origin).await?;
            }
            read_back(tx, id).await
        })
        .await
    }

    async fn delete_discovery(&self, id: &str) -> Result<(), StoreError> {
        in_transaction(&mut *self.pool.get().await?, async |tx| {
            let record = read_back(tx, id).await?;
            lock_by_name(tx, &record.name).await?;
            let owned: Vec<String> = crate::connectors::list(tx)
                .await?
                .into_iter()
                .filter(|c| connector_runner::is_managed_by(c, &record.name))
                .map(|c| c.id)
                .collect();
            crate::connectors::remove(tx, &owned).await?;
            tx.execute("DELETE FROM connectord.discoveries WHERE id = $1", &[&id])
                .await
                .map_err(backend("cannot delete the discovery"))?;
            Ok(())
        })
        .await
    }

    async fn list_discoveries(&self) -> Result<Vec<DiscoveryRecord>, StoreError> {
        self.pool
            .get()
            .await?
            .query(&format!("{SELECT} ORDER BY name"), &[])
            .await
            .map_err(backend("cannot list discoveries"))?
            .iter()
            .map(read_row)
            .collect()
    }

    async fn get_discovery(&self, id: &str) -> Result<Option<DiscoveryRecord>, StoreError> {
        query_one(&*self.pool.get().await?, "id", id).await
    }

    async fn set_discovery_status(
        &self,
        id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let changed = self
            .pool
            .get()
            .await?
            .execute(
                "UPDATE connectord.discoveries SET status = $2 WHERE id = $1",
                &[&id, &status.to_string()],
            )
            .await
            .map_err(backend("cannot record the discovery's status"))?;
        if changed == 0 {
            return Err(discovery_not_found(id));
        }
        Ok(())
    }

    async fn sync_managed(
        &self,
        discovery_name: &str,
        wanted: &[ManagedConnector],
    ) -> Result<SyncReport, StoreError> {
        for want in wanted {
            crate::schema::check_target(&want.spec)?;
        }
        in_transaction(&mut *self.pool.get().await?, async |tx| {
            lock_by_name(tx, discovery_name).await?;
            let existing = crate::connectors::list(tx).await?;
            let plan = SyncPlan::new(discovery_name, &existing, wanted);
            crate::connectors::remove(tx, &plan.remove).await?;
            for want in &plan.create {
                crate::connectors::insert_with_id(tx, &want.id, &want.spec, Origin::Discovery)
                    .await?;
            }
            for want in &plan.update {
                crate::connectors::write_spec(tx, &want.id, &want.spec, Origin::Discovery).await?;
            }
            Ok(plan.report)
        })
        .await
    }
}
