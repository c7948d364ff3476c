//! Push sources: staging what connectord acknowledged, and committing each closed
//! arrival-time bucket once, under a lease, from what every process staged for it.

pub(crate) mod committer;
pub(crate) mod configs;
pub(crate) mod ingest;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use connector_core::{Committed, ConnectorError, Schema};

use crate::store::{CommitReport, Lease, StoreError, Target};

pub use ingest::{IngestError, IngestLimits, Ingestor};

/// One accepted request's staged data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageItem {
    /// The push connector.
    pub connector_id: String,
    /// The bucket the request arrived in.
    pub bucket_ms: i64,
    /// Where the item goes if `bucket_ms` was committed before this item got staged
    /// (a stage that took longer than the grace): the bucket open now. Either way the
    /// item is counted once.
    pub open_bucket_ms: i64,
    /// What the connector returned to stage.
    pub body: Vec<u8>,
    /// The request's idempotency key ([`connector_core::Accepted::idempotency_key`]).
    pub key: Option<[u8; 16]>,
}

/// How long a staged request's idempotency key is remembered: a request sent again
/// with the same key within this window is not staged twice. Ten minutes covers the
/// OpenTelemetry SDKs' retries (10 s) and the Collector's (5 minutes).
pub const DEDUP_WINDOW_MS: i64 = 600_000;

/// A (connector, bucket) with staged data waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedBucket {
    /// The push connector.
    pub connector_id: String,
    /// The bucket start.
    pub bucket_ms: i64,
    /// Requests staged for it.
    pub requests: u64,
    /// Bytes staged for it.
    pub bytes: u64,
}

/// Makes a bucket's rows and the connector's next state from what was staged for it
/// and the state the previous commit left. Pure CPU on a blocking thread; a store may
/// call it more than once (a request staged for the bucket while it built).
pub type BuildBucket =
    Arc<dyn Fn(&[Vec<u8>], Option<&[u8]>) -> Result<Committed, ConnectorError> + Send + Sync>;

/// Where push sources stage and commit: implemented by each store, checked by the
/// store contract.
#[async_trait]
pub trait PushStore: Send + Sync + fmt::Debug {
    /// Makes every item durable (synced to disk) in one transaction, in the target
    /// `database`, and returns the bucket each went to: its own, or its
    /// `open_bucket_ms` if its own was committed already; `None` for an item whose
    /// key the connector staged within [`DEDUP_WINDOW_MS`] (in this call or before),
    /// which is not staged again.
    async fn stage(
        &self,
        database: &str,
        items: Vec<StageItem>,
    ) -> Result<Vec<Option<i64>>, StoreError>;

    /// Every (connector, bucket) of `database` with staged data, oldest first.
    async fn staged(&self, database: &str) -> Result<Vec<StagedBucket>, StoreError>;

    /// In one transaction: the ledger row of (connector, `lease` bucket) (refused as
    /// [`AlreadyCommitted`](crate::StoreErrorKind::AlreadyCommitted) or
    /// [`Fenced`](crate::StoreErrorKind::Fenced) as [`Sink::commit`](crate::Sink::commit)
    /// refuses), the bucket's staged data read and handed to `build` with the
    /// connector's state, the rows (of `schema`) and the new state written, and the
    /// staged data removed, with idempotency keys older than [`DEDUP_WINDOW_MS`]. A `build` error is [`Invalid`](crate::StoreErrorKind::Invalid)
    /// and leaves everything as it was.
    async fn commit_staged(
        &self,
        target: &Target,
        lease: &Lease,
        schema: Arc<Schema>,
        build: BuildBucket,
    ) -> Result<CommitReport, StoreError>;

    /// The state the connector's newest commit left, if any.
    async fn push_state(&self, target: &Target) -> Result<Option<Vec<u8>>, StoreError>;
}
