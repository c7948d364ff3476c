//! Scale-out: connector state and sink in one PostgreSQL database, shared by several
//! connectord processes.
//!
//! - Schema `connectord`: connectors, leases, fencing counters, tick history, the
//!   ledger of committed (connector, bucket) pairs and the schema version.
//! - `target_database` is a schema, `target_table` a table in it, with columns from
//!   the connector's row schema (`timestamptz`, `text`, `double precision`, `jsonb`,
//!   `bigint`, `boolean`) and `_connectord_row`, each row's position: the ledger
//!   names a bucket's rows as a range of positions, which destinations read back.
//! - Destinations, their delivery ledger (`delivered`), history and dead letters
//!   live in schema `connectord` too.
//!
//! Leases use the database's clock (`now()`) and `FOR UPDATE SKIP LOCKED`, so two
//! processes racing for a bucket never wait on each other: one claims, the other
//! moves on. A commit is one transaction: the ledger row, only under the current
//! fencing token and before the lease's end, and the rows. A small one is one
//! statement (the rows as one array per column through `unnest`), and a tick then
//! costs four statements (`sql/tick_functions.sql`); a metric batch of 1,000 rows
//! or more goes through COPY (`copy`), and the rows a connector hands over during its
//! tick are copied as they come (`parts`).
//!
//! Files by job: `pool` (connections, TLS, timeouts), `schema` (migrations, reserved
//! names), `connectors`, `leases`, `history`, `sink` (commits and reading rows back),
//! `copy` and `parts` (metric samples through COPY, whole or as they come),
//! `destinations` and `buckets` (reading committed buckets back for destinations).

mod buckets;
mod connectors;
mod copy;
mod destinations;
mod discoveries;
mod history;
mod layout;
mod leases;
mod parts;
mod pool;
mod push;
mod schema;
mod series;
mod sink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use connector_core::Schema;
use connector_runner::{
    BucketChunk, ConnectorRecord, ConnectorSpec, ConnectorState, DeadLetter, DeliveryRecord,
    DeliveryStore, DestinationRecord, DestinationSpec, Lease, ListQuery, Origin, PendingBucket,
    StateStore, StatusChange, StoreError, Target, TickEnd, TickRecord,
};
use tokio_postgres::Client;

pub use pool::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT, TlsMode};
pub use schema::MIGRATIONS;

fn backend(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        let full = e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL);
        let error = StoreError::backend(what, e);
        if full {
            error.into_full("the PostgreSQL server's data directory")
        } else {
            error
        }
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// (schema, table, the row schema it was checked against).
type CheckedTable = (String, String, Arc<connector_core::Schema>);

/// State store and sink over one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<pool::Pool>,
    /// Target tables already created and checked against a row schema by this
    /// process, with their layout.
    tables: Arc<Mutex<HashMap<CheckedTable, layout::Layout>>>,
    /// Series ids of the metric tables this process wrote to.
    series: Arc<series::SeriesCache>,
    /// Positions reserved for each bucket copied in parts (`parts.rs`).
    parts_block: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        let config = &self.pool.options.config;
        f.debug_struct("PgStore")
            .field("hosts", &config.get_hosts())
            .field("dbname", &config.get_dbname())
            .field("tls", &self.pool.options.tls)
            .finish()
    }
}

impl PgStore {
    /// Connects (`max_connections` at most, opened on demand) and migrates the
    /// `connectord` schema forward, which is safe when several processes start at
    /// once; a schema written by a newer connectord is refused. TLS, its root
    /// certificate and the connect timeout come from the URL ([`ConnectOptions`]).
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let options = ConnectOptions::parse(url)?;
        // Reads `sslrootcert`: a file read, kept off the async workers.
        let pool = tokio::task::spawn_blocking(move || pool::Pool::new(options, max_connections))
            .await
            .map_err(|e| StoreError::backend("cannot set up the connection pool", e))??;
        let store = PgStore {
            pool: Arc::new(pool),
            tables: Arc::new(Mutex::new(HashMap::new())),
            series: Arc::default(),
            parts_block: parts::BLOCK_ROWS,
        };
        let mut client = store.pool.get().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// Sets how many row positions a bucket copied in parts reserves at its first
    /// part (1,048,576 by default); a tick with more rows than that commits whole
    /// instead. There to test that path: a smaller block only wastes work.
    pub fn with_parts_block(mut self, rows: usize) -> Self {
        self.parts_block = rows.max(1);
        self
    }

    /// Whether the connections this store opens are encrypted, as the server sees them.
    pub async fn uses_tls(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .map_err(backend("cannot read the connection's TLS state"))
    }
}

/// A transaction that does not wait for its WAL flush. For the tick's bookkeeping
/// (claims, status, history): a database crash may lose the last few of those, and
/// the ledger row, committed synchronously with the rows, still stops any bucket from
/// landing twice. Measured: with a flush per bookkeeping write, 10,000 connectors on a
/// 15 s schedule fell seconds behind (p50 lateness 1.9 s on 2 vCPUs).
async fn relaxed_transaction(
    client: &mut Client,
) -> Result<tokio_postgres::Transaction<'_>, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(backend("cannot relax the commit"))?;
    Ok(tx)
}

#[async_trait]
impl StateStore for PgStore {
    async fn upsert_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        connectors::upsert(&mut *self.pool.get().await?, spec, origin).await
    }

    async fn create_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        connectors::create(&*self.pool.get().await?, spec, origin).await
    }

    async fn update_connector(
        &self,
        id: &str,
        spec: &ConnectorSpec,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        connectors::update(&mut *self.pool.get().await?, id, spec).await
    }

    async fn delete_connector(&self, id: &str) -> Result<(), StoreError> {
        connectors::delete(&mut *self.pool.get().await?, id).await
    }

    async fn set_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<ConnectorRecord, StoreError> {
        connectors::set_state(&*self.pool.get().await?, id, state).await
    }

    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>, StoreError> {
        connectors::list(&*self.pool.get().await?).await
    }

    async fn list_page(&self, query: &ListQuery) -> Result<Vec<ConnectorRecord>, StoreError> {
        connectors::page(&*self.pool.get().await?, query).await
    }

    async fn get_connector(&self, id: &str) -> Result<Option<ConnectorRecord>, StoreError> {
        connectors::get(&*self.pool.get().await?, id).await
    }

    async fn set_status(&self, id: &str, change: StatusChange) -> Result<(), StoreError> {
        connectors::set_status(&mut *self.pool.get().await?, id, change).await
    }

    async fn claim_task(
        &self,
        connector_id: &str,
        scheduled_for_ms: i64,
        runner_id: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        leases::claim(
            &*self.pool.get().await?,
            connector_id,
            scheduled_for_ms,
            runner_id,
            lease,
        )
        .await
    }

    async fn renew_task(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        leases::renew(&*self.pool.get().await?, lease, duration).await
    }

    async fn finish_task(&self, lease: &Lease) -> Result<(), StoreError> {
        leases::finish(&*self.pool.get().await?, lease).await
    }

    async fn record_tick(&self, tick: &TickRecord) -> Result<(), StoreError> {
        let end = TickEnd {
            done: None,
            status: None,
            tick,
        };
        history::end(&*self.pool.get().await?, end).await
    }

    async fn end_tick(&self, end: TickEnd<'_>) -> Result<(), StoreError> {
        history::end(&*self.pool.get().await?, end).await
    }

    async fn ticks(&self, connector_id: &str, limit: usize) -> Result<Vec<TickRecord>, StoreError> {
        history::newest(&*self.pool.get().await?, connector_id, limit).await
    }

    async fn heartbeat(&self, runner_id: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        leases::heartbeat(&*self.pool.get().await?, runner_id, ttl).await
    }

    async fn leave(&self, runner_id: &str) -> Result<(), StoreError> {
        leases::leave(&*self.pool.get().await?, runner_id).await
    }

    async fn now_ms(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        client
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .map_err(backend("cannot read the database clock"))
    }
}

#[async_trait]
impl DeliveryStore for PgStore {
    async fn upsert_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError> {
        destinations::upsert(&mut *self.pool.get().await?, spec, origin, start_ms).await
    }

    async fn create_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError> {
        destinations::create(&*self.pool.get().await?, spec, origin, start_ms).await
    }

    async fn update_destination(
        &self,
        id: &str,
        spec: &DestinationSpec,
    ) -> Result<DestinationRecord, StoreError> {
        destinations::update(&mut *self.pool.get().await?, id, spec).await
    }

    async fn delete_destination(&self, id: &str) -> Result<(), StoreError> {
        destinations::delete(&mut *self.pool.get().await?, id).await
    }

    async fn set_destination_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<DestinationRecord, StoreError> {
        destinations::set_state(&*self.pool.get().await?, id, state).await
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        destinations::list(&*self.pool.get().await?).await
    }

    async fn get_destination(&self, id: &str) -> Result<Option<DestinationRecord>, StoreError> {
        destinations::get(&*self.pool.get().await?, id).await
    }

    async fn set_destination_status(
        &self,
        id: &str,
        change: StatusChange,
    ) -> Result<(), StoreError> {
        destinations::set_status(&mut *self.pool.get().await?, id, change).await
    }

    async fn next_bucket(
        &self,
        destination_id: &str,
        source: &Target,
        from_ms: i64,
    ) -> Result<Option<PendingBucket>, StoreError> {
        buckets::next_bucket(&*self.pool.get().await?, destination_id, source, from_ms).await
    }

    async fn read_bucket(
        &self,
        source: &Target,
        schema: Arc<Schema>,
        bucket: &PendingBucket,
        after_row: i64,
        limit: usize,
    ) -> Result<BucketChunk, StoreError> {
        buckets::read_bucket(
            &*self.pool.get().await?,
            source,
            &schema,
            bucket,
            after_row,
            limit,
        )
        .await
    }

    async fn record_delivery(
        &self,
        lease: &Lease,
        record: &DeliveryRecord,
        bucket_rows: u64,
    ) -> Result<(), StoreError> {
        destinations::record_delivery(&mut *self.pool.get().await?, lease, record, bucket_rows)
            .await
    }

    async fn deliveries(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        destinations::history(&*self.pool.get().await?, destination_id, limit).await
    }

    async fn dead_letters(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        destinations::dead_letters(&*self.pool.get().await?, destination_id, limit).await
    }
}
