//! Destinations as operators declare them and as stores keep them, and what the
//! runner needs from a store to deliver: the next undelivered bucket of a source, its
//! rows in chunks, and a delivery ledger that refuses a second or fenced delivery.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use connector_core::{Batch, Registry, Schema, ValidatedConfig};
use serde::{Deserialize, Serialize};

use crate::spec::{ConnectorRecord, ConnectorState, Origin, SpecError, check_name};
use crate::store::{Lease, StatusChange, StoreError, Target};

/// How far below the newest delivered bucket the search for the next one starts, so
/// a bucket whose commit landed after a newer one (another runner's slower tick) is
/// still found without scanning the whole ledger. Two hours: a tick commits within
/// its timeout (connectord allows at most one hour) plus its lease margin.
pub const LATE_COMMIT_WINDOW_MS: i64 = 7_200_000;

/// Where a new destination begins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// With the oldest bucket its source ever committed.
    #[default]
    Earliest,
    /// With the buckets its source commits from the destination's creation on.
    Latest,
}

/// What a destination does when its receiver refuses a bucket for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPermanent {
    /// Stop at that bucket (the destination is disabled with the error as its
    /// reason); nothing is skipped. Resuming tries the bucket again.
    #[default]
    Halt,
    /// Record the bucket and the error as a dead letter and go on with the next one.
    DeadLetter,
}

/// What an operator declares about a destination, in TOML or over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Unique, human-chosen name.
    pub name: String,
    /// The destination type id (`influx`).
    #[serde(rename = "type")]
    pub destination_type: String,
    /// The name of the source connector whose committed buckets it delivers.
    pub source: String,
    /// Where it begins when created.
    #[serde(default)]
    pub start: Start,
    /// What a `Permanent` error does.
    #[serde(default)]
    pub on_permanent: OnPermanent,
    /// The destination's own config, checked by its `validate_config`.
    #[serde(default)]
    pub config: serde_json::Value,
}

impl DestinationSpec {
    /// Checks every field and the destination's own config. Pure: no I/O.
    pub fn validate(&self, registry: &Registry) -> Result<ValidatedConfig, SpecError> {
        check_name("name", &self.name)?;
        check_name("source", &self.source)?;
        if registry.destination(&self.destination_type).is_none() {
            let known: Vec<_> = registry.destination_types().collect();
            return Err(SpecError::new(
                "type",
                format!(
                    "unknown destination type `{}`; known types: {}",
                    self.destination_type,
                    known.join(", ")
                ),
            ));
        }
        registry
            .validate_destination(&self.destination_type, &self.config)
            .map_err(|e| SpecError::new("config", format!("{e:#}")))
    }

    /// Checks that this destination can send rows of its source's `schema`.
    pub fn check_source_schema(
        &self,
        registry: &Registry,
        schema: &Schema,
    ) -> Result<(), SpecError> {
        let Some(destination) = registry.destination(&self.destination_type) else {
            return Err(SpecError::new("type", "unknown destination type"));
        };
        destination.check_schema(schema).map_err(|e| {
            SpecError::new(
                "source",
                format!(
                    "connector `{}` writes rows this destination cannot send: {e:#}",
                    self.source
                ),
            )
        })
    }
}

/// A destination as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationRecord {
    /// A UUID assigned at creation.
    pub id: String,
    /// What was declared.
    pub spec: DestinationSpec,
    /// Where it was declared.
    pub origin: Origin,
    /// Whether it delivers: `disabled` after a `Config` error or a halt.
    pub state: ConnectorState,
    /// Why it is disabled (or halted), when it is.
    pub disabled_reason: Option<String>,
    /// The error of the last failed delivery, cleared by a successful one.
    pub last_error: Option<String>,
    /// Buckets before this one (Unix ms) are never delivered: `start` as it was
    /// resolved at creation.
    pub start_ms: i64,
    /// The newest bucket delivered (or dead-lettered), Unix ms.
    pub delivered_through_ms: Option<i64>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change of the spec, Unix ms.
    pub updated_at_ms: i64,
    /// The newest entry of its delivery history.
    pub last_delivery: Option<DeliveryRecord>,
}

impl DestinationRecord {
    /// Where the search for the next undelivered bucket starts: the destination's
    /// start, or [`LATE_COMMIT_WINDOW_MS`] below the newest bucket it delivered.
    pub fn search_from_ms(&self) -> i64 {
        self.start_ms.max(
            self.delivered_through_ms
                .map_or(i64::MIN, |t| t.saturating_sub(LATE_COMMIT_WINDOW_MS)),
        )
    }
}

/// How one delivery attempt of a bucket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Every row of the bucket was accepted: the bucket is in the ledger.
    Delivered,
    /// A `Permanent` error under `on_permanent = "dead_letter"`: the bucket is in the
    /// ledger and in the dead letters.
    DeadLetter,
    /// A `Transient` error: the bucket is tried again.
    Transient,
    /// A `Permanent` error under `on_permanent = "halt"`: the destination stopped.
    Halted,
    /// A `Config` error: the destination was disabled.
    Config,
    /// The lease was lost before the ledger row went in: another runner has it.
    Fenced,
    /// The store failed reading the bucket or recording the delivery.
    StoreError,
    /// connectord stopped during the delivery: nothing recorded, tried again later.
    Cancelled,
}

impl DeliveryOutcome {
    /// Every outcome, in the order of the enum.
    pub const ALL: [DeliveryOutcome; 8] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::DeadLetter,
        DeliveryOutcome::Transient,
        DeliveryOutcome::Halted,
        DeliveryOutcome::Config,
        DeliveryOutcome::Fenced,
        DeliveryOutcome::StoreError,
        DeliveryOutcome::Cancelled,
    ];

    /// The snake_case name used in the store, the API and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::DeadLetter => "dead_letter",
            DeliveryOutcome::Transient => "transient",
            DeliveryOutcome::Halted => "halted",
            DeliveryOutcome::Config => "config",
            DeliveryOutcome::Fenced => "fenced",
            DeliveryOutcome::StoreError => "store_error",
            DeliveryOutcome::Cancelled => "cancelled",
        }
    }

    /// Parses [`DeliveryOutcome::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the bucket is in the ledger after this outcome.
    pub fn passes_bucket(self) -> bool {
        matches!(
            self,
            DeliveryOutcome::Delivered | DeliveryOutcome::DeadLetter
        )
    }
}

impl fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a destination's delivery history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The destination.
    pub destination_id: String,
    /// The bucket delivered.
    pub scheduled_for_ms: i64,
    /// When the attempt started, Unix ms.
    pub started_at_ms: i64,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// Rows the receiver accepted.
    pub rows: u64,
    /// Rows left out (null values and the like).
    pub skipped: u64,
    /// Request bytes on the wire, retries included.
    pub bytes: u64,
    /// Requests the receiver accepted.
    pub requests: u64,
    /// Requests retried within the attempt.
    pub retries: u64,
    /// Wall time of the attempt.
    pub duration_ms: u64,
    /// The error, for failed attempts.
    pub error: Option<String>,
    /// The runner that made it.
    pub runner_id: String,
}

/// A bucket a destination gave up on under `on_permanent = "dead_letter"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The destination.
    pub destination_id: String,
    /// The bucket.
    pub scheduled_for_ms: i64,
    /// Rows in the bucket.
    pub rows: u64,
    /// Why the receiver refused it.
    pub error: String,
    /// When it was recorded, Unix ms.
    pub recorded_at_ms: i64,
}

/// A committed bucket of a source that a destination has not delivered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBucket {
    /// The bucket start, Unix ms.
    pub scheduled_for_ms: i64,
    /// Rows committed for it.
    pub rows: u64,
    /// Where its rows sit in the target table: positions `first_row..=last_row` (a
    /// store's own row numbering, in commit order).
    pub first_row: i64,
    /// The last position of its rows.
    pub last_row: i64,
}

/// Rows of a bucket read back, and the position of the last one, to read on from.
#[derive(Debug)]
pub struct BucketChunk {
    /// The rows, in commit order, with the source's schema.
    pub rows: Batch,
    /// The position of the last row read; the next chunk starts after it.
    pub last_row: i64,
}

/// Destinations, delivery ledger, history and dead letters, and reading committed
/// buckets back. Leases are the [`StateStore`](crate::StateStore)'s, keyed by the
/// destination id and the bucket.
#[async_trait]
pub trait DeliveryStore: Send + Sync + fmt::Debug {
    /// Creates the destination called `spec.name`, or updates its spec (TOML at start).
    /// `start_ms` applies to a new destination only.
    async fn upsert_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError>;

    /// Creates a destination; a name already taken is
    /// [`Conflict`](crate::StoreErrorKind::Conflict).
    async fn create_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError>;

    /// Replaces a destination's spec; a disabled destination is re-enabled, since the
    /// operator changed it. Its ledger and `start_ms` stay.
    async fn update_destination(
        &self,
        id: &str,
        spec: &DestinationSpec,
    ) -> Result<DestinationRecord, StoreError>;

    /// Deletes a destination with its ledger, history and dead letters.
    async fn delete_destination(&self, id: &str) -> Result<(), StoreError>;

    /// Sets enabled or paused, clearing `disabled_reason`.
    async fn set_destination_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<DestinationRecord, StoreError>;

    /// Every destination, in name order.
    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>, StoreError>;

    /// One destination.
    async fn get_destination(&self, id: &str) -> Result<Option<DestinationRecord>, StoreError>;

    /// Records an attempt's effect on the destination's status.
    async fn set_destination_status(
        &self,
        id: &str,
        change: StatusChange,
    ) -> Result<(), StoreError>;

    /// The oldest committed bucket of `source` at or after `from_ms` that the
    /// destination has neither delivered nor dead-lettered.
    async fn next_bucket(
        &self,
        destination_id: &str,
        source: &Target,
        from_ms: i64,
    ) -> Result<Option<PendingBucket>, StoreError>;

    /// Up to `limit` rows of `bucket` after position `after_row`, in commit order,
    /// read with `schema` (the source's). A value that does not read back as its
    /// column's type fails, naming the row.
    async fn read_bucket(
        &self,
        source: &Target,
        schema: Arc<Schema>,
        bucket: &PendingBucket,
        after_row: i64,
        limit: usize,
    ) -> Result<BucketChunk, StoreError>;

    /// Records a delivery attempt in the history. When its outcome
    /// [passes the bucket](DeliveryOutcome::passes_bucket), also writes the ledger row
    /// (and for a dead letter, the dead letter with `rows`) and marks the bucket's
    /// lease done, in the same transaction,
    /// refusing with [`Fenced`](crate::StoreErrorKind::Fenced) when `lease.token` is no
    /// longer the bucket's, and with
    /// [`AlreadyCommitted`](crate::StoreErrorKind::AlreadyCommitted) when the ledger
    /// has it; either way nothing is written.
    async fn record_delivery(
        &self,
        lease: &Lease,
        record: &DeliveryRecord,
        bucket_rows: u64,
    ) -> Result<(), StoreError>;

    /// The newest `limit` entries of a destination's delivery history, newest first.
    async fn deliveries(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// The newest `limit` dead letters of a destination, newest first.
    async fn dead_letters(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;
}

/// The [`Target`] a connector commits to, which its destinations read.
pub fn source_target(source: &ConnectorRecord) -> Target {
    Target {
        connector_id: source.id.clone(),
        database: source.spec.target_database.clone(),
        table: source.spec.target_table.clone(),
    }
}
