//! Reading the connectors and the live runners, off the loop that starts ticks. With
//! 10,000 connectors a refresh (one heartbeat, every connector listed and compared)
//! took 110 to 180 ms of a process sharing two cores with two others and PostgreSQL,
//! every second; on the loop it held up every tick due meanwhile (p99 lateness
//! 285 ms). The refresher keeps what it knew last time and hands the loop only what
//! changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use connector_core::{Drive, ValidatedConfig};

use crate::runner::Shared;
use crate::schedule::owner;
use crate::spec::{ConnectorRecord, ConnectorSpec, ConnectorState};
use crate::store::StatusChange;

/// What a change means for the loop's slots.
pub(crate) enum Change {
    /// A connector to tick: new, re-enabled, or its spec changed.
    Start(ConnectorRecord, ValidatedConfig, bool),
    /// A connector whose owner changed: ticked here from now on, or no longer.
    Owned(ConnectorRecord, bool),
    /// A connector no longer enabled (paused, disabled, deleted).
    Stop(String),
}

struct KnownConnector {
    spec: ConnectorSpec,
    owned: bool,
    /// Ticked on a schedule (push connectors are not).
    periodic: bool,
}

/// What the refresher knew at its last run.
pub(crate) struct Known {
    connectors: HashMap<String, KnownConnector>,
    live: Vec<String>,
}

impl Known {
    /// Before the first refresh: no connector, and this runner alone.
    pub(crate) fn new(runner_id: &str) -> Self {
        Known {
            connectors: HashMap::new(),
            live: vec![runner_id.to_owned()],
        }
    }
}

/// One refresh: says this runner is alive, lists the connectors, publishes them to
/// the API and the destinations, and returns what changed for the loop's slots.
/// `forget` names connectors whose slots the loop dropped on its own (a `Config`
/// error): if they are still enabled, they start again.
pub(crate) async fn refresh(
    shared: Arc<Shared>,
    mut known: Known,
    forget: Vec<String>,
) -> (Known, Vec<Change>) {
    for id in &forget {
        known.connectors.remove(id);
    }
    let config = &shared.config;
    match shared
        .store
        .heartbeat(&config.runner_id, config.membership_ttl)
        .await
    {
        Ok(runners) => known.live = runners,
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "cannot tell the state store this runner is alive; the connectors stay split as they were"
        ),
    }
    let records = match shared.store.list_connectors().await {
        Ok(records) => records,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot read connectors from the state store"
            );
            return (known, Vec::new());
        }
    };
    shared.telemetry.set_connectors(&records);
    shared.connectors.send_replace(Some(Arc::new(
        records
            .iter()
            .map(|r| (r.spec.name.clone(), r.clone()))
            .collect(),
    )));
    let mut changes = Vec::new();
    let mut enabled = HashSet::with_capacity(records.len());
    for record in records {
        if record.state != ConnectorState::Enabled {
            continue;
        }
        enabled.insert(record.id.clone());
        let owned = owner(&record.id, &known.live) == Some(config.runner_id.as_str());
        if let Some(was) = known.connectors.get_mut(&record.id)
            && was.spec == record.spec
        {
            if was.owned != owned {
                was.owned = owned;
                if was.periodic {
                    changes.push(Change::Owned(record, owned));
                }
            }
            continue;
        }
        let validated = match record.spec.validate(&shared.registry) {
            Ok(validated) => validated,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(connector_id = %record.id, connector = %record.spec.name, %reason, "disabling connector: its spec does not validate");
                if let Err(e) = shared
                    .store
                    .set_status(&record.id, StatusChange::Disabled(reason))
                    .await
                {
                    tracing::error!(error = format!("{e:#}"), "cannot record the disabled state");
                }
                continue;
            }
        };
        // Push connectors are driven by requests and the push committer.
        let periodic = shared
            .registry
            .get(&record.spec.connector_type)
            .is_none_or(|c| c.drive() != Drive::Push);
        known.connectors.insert(
            record.id.clone(),
            KnownConnector {
                spec: record.spec.clone(),
                owned,
                periodic,
            },
        );
        if periodic {
            changes.push(Change::Start(record, validated, owned));
        }
    }
    known.connectors.retain(|id, was| {
        let keep = enabled.contains(id);
        if !keep && was.periodic {
            changes.push(Change::Stop(id.clone()));
        }
        keep
    });
    (known, changes)
}
