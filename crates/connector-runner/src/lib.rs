//! Runs connectors: bucketed scheduling, leases, tick execution and outcome handling.
//!
//! The runner defines what it needs from storage as two traits, [`StateStore`]
//! (connectors, leases, tick history) and [`Sink`] (rows, at most once per bucket),
//! and knows nothing of HTTP servers, TOML or any particular database.

#[cfg(feature = "store-contract")]
pub mod contract;
mod deliverer;
mod destination;
mod discovery;
mod parts;
pub use parts::{Part, PartCommit, Parts, aborted, join_parts, schema_mismatch};
pub mod protocol;
mod pruner;
pub use pruner::{PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS, PRUNE_PAUSE};
mod push;
mod refresh;
mod runner;
pub mod schedule;
mod slots;
mod spec;
mod store;
pub mod telemetry;
mod tick;

/// Moved to connector-core, where connectors parse durations of their own config.
pub use connector_core::parse_duration;
pub use destination::{
    BucketChunk, DeadLetter, DeliveryOutcome, DeliveryRecord, DeliveryStore, DestinationRecord,
    DestinationSpec, LATE_COMMIT_WINDOW_MS, OnPermanent, PendingBucket, Start, source_target,
};
pub use discovery::{
    DiscoveryRecord, DiscoveryStore, ManagedConnector, SyncPlan, SyncReport, is_managed_by,
    managed_prefix,
};
pub use push::{
    BuildBucket, DEDUP_WINDOW_MS, IngestError, IngestLimits, Ingestor, PushStore, StageItem,
    StagedBucket,
};
pub use runner::{Runner, RunnerConfig, RunnerHandle};
pub use spec::{
    ConnectorRecord, ConnectorSpec, ConnectorState, DEFAULT_ORG, MAX_IDENTIFIER_LEN, MAX_NAME_LEN,
    MAX_ORG_LEN, Origin, SCHEDULE_MS_RANGE, SpecError, check_org_id,
};
pub use store::{
    CommitReport, Lease, ListQuery, PruneReport, RowQuery, RowsRead, Sink, StateStore,
    StatusChange, StoreError, StoreErrorKind, TableStats, Target, TickEnd, TickOutcome, TickRecord,
};
