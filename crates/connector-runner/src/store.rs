use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use std::sync::Arc;

use connector_core::{Batch, Schema};
use serde::{Deserialize, Serialize};

use crate::parts::Parts;
use crate::spec::{ConnectorRecord, ConnectorSpec, ConnectorState, Origin};

/// What went wrong in a state store or sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// No such connector.
    NotFound,
    /// The change conflicts with existing data (a duplicate name).
    Conflict,
    /// The bucket's rows were committed before: this commit wrote nothing.
    AlreadyCommitted,
    /// Another runner claimed the bucket since this lease was taken: this commit wrote nothing.
    Fenced,
    /// The data cannot be stored as given (a table whose columns do not match).
    Invalid,
    /// The database failed (I/O, locking, a broken connection).
    Backend,
    /// The database has no space left (a full disk): nothing was written, and the
    /// same write can succeed once space is freed.
    Full,
}

/// An error of a [`StateStore`] or [`Sink`], with its kind as data and the source kept.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StoreError {
    /// [`StoreErrorKind::NotFound`] for a connector id.
    pub fn connector_not_found(id: &str) -> Self {
        Self::new(
            StoreErrorKind::NotFound,
            format!("no connector with id {id}"),
        )
    }

    /// [`StoreErrorKind::Conflict`] for a connector name already taken.
    pub fn name_taken(name: &str) -> Self {
        Self::new(
            StoreErrorKind::Conflict,
            format!("a connector named `{name}` already exists"),
        )
    }

    /// Checks a target table's `(name, type)` columns against the ones a connector
    /// writes; a mismatch is [`StoreErrorKind::Invalid`] naming both lists, so the sink
    /// never writes into a table of another shape. `table` is as the operator knows it.
    pub fn check_columns(
        table: &str,
        existing: &[(String, String)],
        wanted: &[(String, String)],
    ) -> Result<(), Self> {
        if existing == wanted {
            return Ok(());
        }
        let show = |cols: &[(String, String)]| {
            cols.iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Self::new(
            StoreErrorKind::Invalid,
            format!(
                "table `{table}` has columns ({}) but the connector writes ({}); pick another target_table",
                show(existing),
                show(wanted)
            ),
        ))
    }

    /// An error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A [`StoreErrorKind::Backend`] error caused by `source`.
    pub fn backend(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        StoreError {
            kind: StoreErrorKind::Backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// This error as [`StoreErrorKind::Full`], with `where_` (the folder or database
    /// that ran out of space) and what to do in its message.
    pub fn into_full(self, where_: &str) -> Self {
        StoreError {
            kind: StoreErrorKind::Full,
            message: format!(
                "no space left for {where_}: {}; free space there or set a shorter retention",
                self.message
            ),
            source: self.source,
        }
    }

    /// Keeps `cause` as this error's source.
    pub fn with_cause(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(cause.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

/// `{}` is the message alone (the cause is `source()`); `{:#}` adds every cause once.
impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            connector_core::ErrorChain(self).fmt(f)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The right to tick one (connector, bucket), until `expires_at_ms` on the store's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The connector.
    pub connector_id: String,
    /// The bucket start.
    pub scheduled_for_ms: i64,
    /// The runner holding it.
    pub runner_id: String,
    /// Increases with every claim of this connector: a commit carrying an older token
    /// than the bucket's current one is refused.
    pub token: i64,
    /// When the lease ends, on the store's clock.
    pub expires_at_ms: i64,
}

/// How a tick ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// Rows committed.
    Ok,
    /// A `Transient` error.
    Transient,
    /// A `Permanent` error.
    Permanent,
    /// A `Config` error: the connector was disabled.
    Config,
    /// The tick ran past the runner's tick timeout.
    Timeout,
    /// The connector panicked.
    Panic,
    /// The lease ran out before the commit, or another runner took the bucket: nothing committed.
    Fenced,
    /// The sink failed: nothing committed.
    SinkError,
    /// The state store failed to claim the bucket: the tick did not run.
    StoreError,
    /// connectord stopped before the tick finished, past its shutdown grace: nothing
    /// committed.
    Cancelled,
}

impl TickOutcome {
    /// The snake_case name used in the store, the API and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TickOutcome::Ok => "ok",
            TickOutcome::Transient => "transient",
            TickOutcome::Permanent => "permanent",
            TickOutcome::Config => "config",
            TickOutcome::Timeout => "timeout",
            TickOutcome::Panic => "panic",
            TickOutcome::Fenced => "fenced",
            TickOutcome::SinkError => "sink_error",
            TickOutcome::StoreError => "store_error",
            TickOutcome::Cancelled => "cancelled",
        }
    }

    /// Every outcome, in the order of the enum.
    pub const ALL: [TickOutcome; 10] = [
        TickOutcome::Ok,
        TickOutcome::Transient,
        TickOutcome::Permanent,
        TickOutcome::Config,
        TickOutcome::Timeout,
        TickOutcome::Panic,
        TickOutcome::Fenced,
        TickOutcome::SinkError,
        TickOutcome::StoreError,
        TickOutcome::Cancelled,
    ];

    /// Parses [`TickOutcome::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One line of a connector's tick history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    /// The connector.
    pub connector_id: String,
    /// The bucket start.
    pub scheduled_for_ms: i64,
    /// When the tick started, Unix ms.
    pub started_at_ms: i64,
    /// How it ended.
    pub outcome: TickOutcome,
    /// Rows committed (0 unless `Ok`).
    pub rows: u64,
    /// Bytes read from the source.
    pub source_bytes: u64,
    /// Bytes written to the sink.
    pub sink_bytes: u64,
    /// Wall time of the tick and commit.
    pub duration_ms: u64,
    /// The error, for failed ticks.
    pub error: Option<String>,
    /// The runner that ran it.
    pub runner_id: String,
}

/// How a tick ended, as [`StateStore::end_tick`] records it in one step.
#[derive(Debug, Clone, Copy)]
pub struct TickEnd<'a> {
    /// The lease of a committed bucket: the bucket is marked done, so nobody claims
    /// it again. `None` for a tick that committed nothing.
    pub done: Option<&'a Lease>,
    /// The tick's effect on the connector's status; `None` leaves it as it was.
    pub status: Option<&'a StatusChange>,
    /// The line for the tick history.
    pub tick: &'a TickRecord,
}

/// A change of a connector's status after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// A tick committed: clear `last_error`.
    Succeeded,
    /// A tick failed: set `last_error`.
    Failed(String),
    /// A `Config` error: disable the connector with this reason (also its `last_error`).
    Disabled(String),
}

/// Where a connector's rows go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The connector committing.
    pub connector_id: String,
    /// A SQLite file or PostgreSQL schema.
    pub database: String,
    /// The table.
    pub table: String,
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitReport {
    /// Rows inserted.
    pub rows: u64,
    /// Payload bytes written.
    pub bytes: u64,
}

/// Connectors, leases and tick history.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Creates the connector called `spec.name`, or updates its spec. An update that
    /// changes the spec re-enables a connector disabled by a `Config` error.
    async fn upsert_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError>;

    /// Creates a connector; a name already taken is [`StoreErrorKind::Conflict`].
    async fn create_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError>;

    /// Replaces a connector's spec (its id, origin and history stay). A connector
    /// disabled by a `Config` error is re-enabled, since the operator changed it.
    /// Renaming onto a taken name is [`StoreErrorKind::Conflict`].
    async fn update_connector(
        &self,
        id: &str,
        spec: &ConnectorSpec,
    ) -> Result<ConnectorRecord, StoreError>;

    /// Deletes a connector and its tick history; rows already landed stay.
    async fn delete_connector(&self, id: &str) -> Result<(), StoreError>;

    /// Sets enabled or paused, clearing `disabled_reason`.
    async fn set_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<ConnectorRecord, StoreError>;

    /// Every connector.
    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>, StoreError>;

    /// One page of connectors in id order, filtered, in one query.
    async fn list_page(&self, query: &ListQuery) -> Result<Vec<ConnectorRecord>, StoreError>;

    /// One connector.
    async fn get_connector(&self, id: &str) -> Result<Option<ConnectorRecord>, StoreError>;

    /// Records a tick's effect on the connector's status.
    async fn set_status(&self, id: &str, change: StatusChange) -> Result<(), StoreError>;

    /// Claims (connector, bucket) for `runner_id` for `lease`, on the store's clock.
    /// `None` when another runner holds an unexpired lease or the bucket is done.
    async fn claim_task(
        &self,
        connector_id: &str,
        scheduled_for_ms: i64,
        runner_id: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a lease to `lease` from now on the store's clock, only while `lease.token`
    /// is still the bucket's token and the bucket is not done. `None` means the lease
    /// was lost: the runner must not commit.
    async fn renew_task(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Marks the bucket done, so nobody claims it again.
    async fn finish_task(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Appends to the tick history.
    async fn record_tick(&self, tick: &TickRecord) -> Result<(), StoreError>;

    /// Records how a tick ended: marks its bucket done (when it committed), applies
    /// its status change and appends its history line. A store over a network should
    /// do it in one round trip, since every tick ends here; the default makes the
    /// three calls in turn and stops at the first failure.
    async fn end_tick(&self, end: TickEnd<'_>) -> Result<(), StoreError> {
        if let Some(lease) = end.done {
            self.finish_task(lease).await?;
        }
        if let Some(status) = end.status {
            self.set_status(&end.tick.connector_id, status.clone())
                .await?;
        }
        self.record_tick(end.tick).await
    }

    /// The newest `limit` ticks of a connector, newest first.
    async fn ticks(&self, connector_id: &str, limit: usize) -> Result<Vec<TickRecord>, StoreError>;

    /// The store's clock, Unix ms: leases are measured against it.
    async fn now_ms(&self) -> Result<i64, StoreError>;

    /// Says `runner_id` is alive, on the store's clock, and returns every runner
    /// heard from within `ttl` (this one included), sorted: the runners split the
    /// connectors among those ([`schedule::owner`](crate::schedule::owner)). The
    /// default knows no other runner, so each runner it serves ticks every
    /// connector and the leases decide (safe, but every runner then claims every
    /// bucket).
    async fn heartbeat(&self, runner_id: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        let _ = ttl;
        Ok(vec![runner_id.to_owned()])
    }

    /// `runner_id` stops: the others take over its connectors at their next
    /// heartbeat rather than after its `ttl`.
    async fn leave(&self, runner_id: &str) -> Result<(), StoreError> {
        let _ = runner_id;
        Ok(())
    }
}

/// One page of connectors, in id order, for the REST API's list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only connectors whose id sorts after this one (the previous page's last id).
    pub after: Option<String>,
    /// Only connectors in this state.
    pub state: Option<ConnectorState>,
    /// Only connectors of this type.
    pub connector_type: Option<String>,
    /// Only connectors of this org.
    pub org_id: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// What one [`Sink::prune`] batch removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Buckets (ledger rows) removed.
    pub buckets: u64,
    /// Rows removed.
    pub rows: u64,
}

/// How a target table is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    /// Rows in the table (samples, for a metric table).
    pub rows: u64,
    /// Series stored once each, when the table has the compact metric layout
    /// (rows of `metric_rows::schema()`); `None` for a table that keeps its rows as
    /// they come.
    pub series: Option<u64>,
}

/// Which rows of a target table to read back, for `connectord rows`.
#[derive(Debug, Clone)]
pub struct RowQuery {
    /// A SQLite file or PostgreSQL schema.
    pub database: String,
    /// The table.
    pub table: String,
    /// The connector's row schema, when known: it tells a store whose column types
    /// are coarser than the schema's (SQLite keeps JSON as TEXT and booleans as
    /// INTEGER) how to print them. Columns come from the table itself.
    pub schema: Option<Arc<Schema>>,
    /// Only rows whose `timestamp` is at or after this, Unix ms.
    pub since_ms: Option<i64>,
    /// At most this many rows, newest first.
    pub limit: usize,
}

/// Rows read back from a table, newest first: timestamps as Unix ms, JSON columns
/// as JSON, booleans as booleans.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsRead {
    /// The table's columns, in table order.
    pub columns: Vec<String>,
    /// One value per column per row.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Commits batches, at most once per (connector, bucket).
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// Writes the rows of `batch` and a ledger row for (connector, bucket) in one
    /// transaction. Refuses with [`StoreErrorKind::AlreadyCommitted`] when the ledger
    /// has the bucket, and [`StoreErrorKind::Fenced`] when `lease.token` is no longer
    /// the bucket's current one or the store's clock has reached
    /// `lease.expires_at_ms` (the runner passes the lease's end less its safety
    /// margin); either way nothing is written. The checks run inside the commit's
    /// transaction, so a network store needs no round trip of its own for them.
    /// Takes the batch by value so a blocking database driver can own it on another thread.
    async fn commit(
        &self,
        target: &Target,
        lease: &Lease,
        batch: Batch,
    ) -> Result<CommitReport, StoreError>;

    /// Whether [`Sink::commit_parts`] writes parts as they arrive. Only then does the
    /// runner let a connector hand rows over during its tick: collecting parts to
    /// commit them whole costs more than building the batch whole (PostgreSQL's
    /// single-connector ingest fell from 350 k to 219 k samples/s on node_exporter
    /// output with parts collected, before it wrote them as they came).
    fn writes_parts(&self) -> bool {
        false
    }

    /// [`Sink::commit`] of a tick's rows as they come ([`Parts`]): rows the connector
    /// hands over during the tick, then the batch it returns with the lease as it is
    /// then. The same checks and the same single transaction; a tick that ends in
    /// [`Part::Abort`](crate::Part::Abort) writes nothing. `lease` is the lease as the tick began (its end
    /// less the margin). A store may write parts as they arrive, holding its write
    /// lock until the tick ends; by default the parts are collected and committed in
    /// one piece.
    async fn commit_parts(
        &self,
        target: &Target,
        lease: &Lease,
        parts: Parts,
    ) -> Result<CommitReport, StoreError> {
        let _ = lease;
        let (batch, last) = parts.collect().await?;
        self.commit(target, &last, batch).await
    }

    /// Retention: deletes the rows and ledger rows of the connector's oldest
    /// committed buckets older than `before_ms`, in one short transaction, so commits
    /// wait for at most one batch: up to `max_buckets` buckets whose rows total at
    /// most `max_rows`, but always the oldest bucket when there is one (a bucket is
    /// never split). Buckets whose ledger row names no row range (committed before
    /// ranges were recorded) are left.
    async fn prune(
        &self,
        target: &Target,
        before_ms: i64,
        max_buckets: usize,
        max_rows: u64,
    ) -> Result<PruneReport, StoreError>;

    /// Reads rows of a target table back, whatever its columns. A table (or
    /// database) that does not exist is [`StoreErrorKind::NotFound`]; a `since_ms`
    /// on a table without a `timestamp` column is [`StoreErrorKind::Invalid`].
    async fn read_rows(&self, query: &RowQuery) -> Result<RowsRead, StoreError>;

    /// How `database`.`table` is stored: its rows, and its series when it has the
    /// compact metric layout. A table that does not exist is
    /// [`StoreErrorKind::NotFound`].
    async fn table_stats(&self, database: &str, table: &str) -> Result<TableStats, StoreError>;
}
