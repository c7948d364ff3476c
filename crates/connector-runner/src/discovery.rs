//! Service discoveries as stores keep them, and the managed connectors they own.
//!
//! A discovery's spec is the `discovery` crate's business; a store keeps it as JSON
//! beside its name, with the last refresh's status (also JSON) so every process
//! sharing a store can show it. A discovery owns the connectors of origin
//! [`Origin::Discovery`] named `<discovery name>/...`: [`DiscoveryStore::sync_managed`]
//! makes that set equal to the wanted one in one transaction.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::spec::{ConnectorRecord, ConnectorSpec, Origin};
use crate::store::StoreError;

/// A discovery as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryRecord {
    /// A UUID assigned at creation.
    pub id: String,
    /// Unique; also the prefix of its managed connectors' names.
    pub name: String,
    /// The spec as declared (the `discovery` crate's `DiscoverySpec`).
    pub spec: serde_json::Value,
    /// Where it was declared ([`Origin::File`] or [`Origin::Api`]).
    pub origin: Origin,
    /// The last refresh's outcome and targets, when one ran.
    pub status: Option<serde_json::Value>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change of the spec, Unix ms.
    pub updated_at_ms: i64,
}

/// A connector a discovery wants: its id is derived from its name, so a target that
/// disappears and comes back gets the same id (and its fencing tokens and ledger).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedConnector {
    /// The derived id.
    pub id: String,
    /// The spec built from the discovery's template and the target.
    pub spec: ConnectorSpec,
}

/// What [`DiscoveryStore::sync_managed`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Connectors created.
    pub created: usize,
    /// Connectors whose spec changed.
    pub updated: usize,
    /// Connectors removed (their rows stay).
    pub removed: usize,
    /// Wanted connectors not made because another connector (of another origin or
    /// discovery) holds the name or the id, with the reason.
    pub conflicts: Vec<String>,
}

/// The prefix of the names of the connectors a discovery owns.
pub fn managed_prefix(discovery_name: &str) -> String {
    format!("{discovery_name}/")
}

/// Whether `record` is one of the connectors the discovery `discovery_name` owns.
pub fn is_managed_by(record: &ConnectorRecord, discovery_name: &str) -> bool {
    record.origin == Origin::Discovery
        && record
            .spec
            .name
            .starts_with(&managed_prefix(discovery_name))
}

/// What a store does to make a discovery's connectors the wanted set: computed once
/// here from the connectors it read inside its transaction, so both stores decide
/// the same way and keep only their SQL.
#[derive(Debug, Default)]
pub struct SyncPlan<'w> {
    /// Not there yet: insert with the given id and origin `discovery`.
    pub create: Vec<&'w ManagedConnector>,
    /// There with another spec: write the spec (state and history stay).
    pub update: Vec<&'w ManagedConnector>,
    /// Owned by the discovery and no longer wanted: delete with its history.
    pub remove: Vec<String>,
    /// The report, counts filled from the plan.
    pub report: SyncReport,
}

impl<'w> SyncPlan<'w> {
    /// The plan for `discovery_name` given every connector now in the store.
    pub fn new(
        discovery_name: &str,
        existing: &[ConnectorRecord],
        wanted: &'w [ManagedConnector],
    ) -> Self {
        let mut plan = SyncPlan::default();
        let wanted_ids: std::collections::HashSet<&str> =
            wanted.iter().map(|w| w.id.as_str()).collect();
        for record in existing {
            if is_managed_by(record, discovery_name) && !wanted_ids.contains(record.id.as_str()) {
                plan.remove.push(record.id.clone());
            }
        }
        let prefix = managed_prefix(discovery_name);
        for want in wanted {
            if !want.spec.name.starts_with(&prefix) {
                plan.report.conflicts.push(format!(
                    "`{}`: a connector of discovery `{discovery_name}` must be named `{prefix}...`",
                    want.spec.name
                ));
                continue;
            }
            let by_id = existing.iter().find(|r| r.id == want.id);
            let by_name = existing.iter().find(|r| r.spec.name == want.spec.name);
            match (by_id, by_name) {
                (Some(mine), _) if is_managed_by(mine, discovery_name) => {
                    if mine.spec != want.spec {
                        plan.update.push(want);
                    }
                }
                (Some(other), _) | (None, Some(other)) => plan.report.conflicts.push(format!(
                    "`{}`: connector {} (origin {}) already has this {}",
                    want.spec.name,
                    other.id,
                    other.origin.as_str(),
                    if other.id == want.id { "id" } else { "name" }
                )),
                (None, None) => plan.create.push(want),
            }
        }
        plan.report.created = plan.create.len();
        plan.report.updated = plan.update.len();
        plan.report.removed = plan.remove.len();
        plan
    }
}

/// Discoveries, their status, and the connectors they manage.
#[async_trait]
pub trait DiscoveryStore: Send + Sync + fmt::Debug {
    /// Creates the discovery called `name`, or replaces its spec and origin.
    async fn upsert_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError>;

    /// Creates a discovery; a name already taken is `Conflict`.
    async fn create_discovery(
        &self,
        name: &str,
        spec: &serde_json::Value,
        origin: Origin,
    ) -> Result<DiscoveryRecord, StoreError>;

    /// Replaces a discovery's spec (its name, id and origin stay).
    async fn update_discovery(
        &self,
        id: &str,
        spec: &serde_json::Value,
    ) -> Result<DiscoveryRecord, StoreError>;

    /// Deletes a discovery and, in the same transaction, the connectors it manages
    /// (their rows stay).
    async fn delete_discovery(&self, id: &str) -> Result<(), StoreError>;

    /// Every discovery, by name.
    async fn list_discoveries(&self) -> Result<Vec<DiscoveryRecord>, StoreError>;

    /// One discovery.
    async fn get_discovery(&self, id: &str) -> Result<Option<DiscoveryRecord>, StoreError>;

    /// Records the last refresh's status.
    async fn set_discovery_status(
        &self,
        id: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Makes the connectors `discovery_name` manages exactly `wanted`, in one
    /// transaction: creates the missing ones with their ids, writes changed specs,
    /// removes the rest with their history (rows stay). A wanted connector whose
    /// name or id another connector holds is left out and reported.
    async fn sync_managed(
        &self,
        discovery_name: &str,
        wanted: &[ManagedConnector],
    ) -> Result<SyncReport, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ConnectorState;

    fn record(id: &str, name: &str, origin: Origin, table: &str) -> ConnectorRecord {
        ConnectorRecord {
            id: id.into(),
            spec: spec(name, table),
            origin,
            state: ConnectorState::Enabled,
            disabled_reason: None,
            last_error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_tick: None,
        }
    }

    fn spec(name: &str, table: &str) -> ConnectorSpec {
        ConnectorSpec {
            name: name.into(),
            connector_type: "prometheus".into(),
            target_database: "m".into(),
            target_table: table.into(),
            schedule_ms: 1000,
            config: serde_json::json!({}),
            retention: None,
            org_id: crate::DEFAULT_ORG.into(),
        }
    }

    #[test]
    fn a_plan_creates_updates_removes_and_never_touches_others() {
        let existing = [
            record("1", "d/a", Origin::Discovery, "t"),
            record("2", "d/b", Origin::Discovery, "t"),
            record("3", "d/gone", Origin::Discovery, "t"),
            record("4", "d/file", Origin::File, "t"),
            record("5", "other/x", Origin::Discovery, "t"),
            record("6", "dd/y", Origin::Discovery, "t"),
        ];
        let wanted = [
            ManagedConnector {
                id: "1".into(),
                spec: spec("d/a", "t"),
            },
            ManagedConnector {
                id: "2".into(),
                spec: spec("d/b", "u"),
            },
            ManagedConnector {
                id: "7".into(),
                spec: spec("d/new", "t"),
            },
            ManagedConnector {
                id: "8".into(),
                spec: spec("d/file", "t"),
            },
            ManagedConnector {
                id: "5".into(),
                spec: spec("d/x", "t"),
            },
        ];
        let plan = SyncPlan::new("d", &existing, &wanted);
        assert_eq!(
            plan.create
                .iter()
                .map(|w| w.id.as_str())
                .collect::<Vec<_>>(),
            ["7"]
        );
        assert_eq!(
            plan.update
                .iter()
                .map(|w| w.id.as_str())
                .collect::<Vec<_>>(),
            ["2"]
        );
        assert_eq!(plan.remove, ["3"]);
        assert_eq!(
            plan.report.conflicts.len(),
            2,
            "{:?}",
            plan.report.conflicts
        );
        assert!(
            plan.report.conflicts[0]
                .starts_with("`d/file`: connector 4 (origin file) already has this name")
        );
        assert!(
            plan.report.conflicts[1]
                .starts_with("`d/x`: connector 5 (origin discovery) already has this id")
        );
    }
}
