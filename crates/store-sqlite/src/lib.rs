//! The embedded default: connector state and sink in SQLite files under one folder.
//!
//! - `<data_dir>/connectord-state.sqlite`: connectors, leases, fencing tokens, tick
//!   history and the schema version (`schema.rs` migrates it forward at open).
//! - `<data_dir>/<target_database>.sqlite`: one table per `target_table`, created from the
//!   connector's row schema, plus `_connectord_ledger`, which has one row per committed
//!   (connector, bucket).
//!
//! A commit inserts the ledger row first (taking the target file's write lock), then
//! checks the lease's fencing token in the attached state file, then inserts the rows,
//! all in one transaction: a second commit of a bucket, or one from a runner whose
//! lease was taken over, writes nothing. Several processes may share a data folder;
//! SQLite's locks (WAL mode, a busy timeout) serialize them.
//!
//! Files by job: `schema` (migrations, reserved names), `connectors`, `leases`,
//! `history`, `sink` (commits and reading rows back), `checkpoint`.

mod buckets;
mod checkpoint;
mod connectors;
mod damage;
mod destinations;
mod discoveries;
mod history;
mod layout;
mod leases;
mod parts;
mod prune;
mod push;
mod schema;
mod series;
mod sink;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use connector_core::Schema;
use connector_runner::{
    BucketChunk, ConnectorRecord, ConnectorSpec, ConnectorState, DeadLetter, DeliveryRecord,
    DeliveryStore, DestinationRecord, DestinationSpec, Lease, ListQuery, Origin, PendingBucket,
    StateStore, StatusChange, StoreError, Target, TickEnd, TickRecord,
};
use rusqlite::{Connection, Params};

pub use schema::MIGRATIONS;

/// File name of the state database inside the data folder. Target database names
/// cannot contain `-`, so no target can collide with it.
pub const STATE_FILE: &str = "connectord-state.sqlite";

/// State store and sink over SQLite files in one data folder.
#[derive(Clone)]
pub struct SqliteStore {
    data_dir: PathBuf,
    state: Arc<Mutex<Connection>>,
    /// Reads of connectors and history: under WAL they never wait for a writer, so
    /// the API still answers while a write waits on a lock held elsewhere (measured:
    /// with one connection a held lock froze every GET for the 10 s busy timeout).
    reader: Arc<Mutex<Connection>>,
    targets: Arc<Mutex<HashMap<String, Arc<Mutex<sink::TargetDb>>>>>,
    /// Per target file, the connection destinations read buckets back on.
    bucket_readers: Arc<Mutex<HashMap<String, Arc<Mutex<Connection>>>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

fn backend(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(what.to_owned(), e)
}

impl SqliteStore {
    /// A write refused for lack of space, as [`connector_runner::StoreErrorKind::Full`] naming the data
    /// folder, so the operator knows which disk to look at.
    pub(crate) fn name_full(&self, e: StoreError) -> StoreError {
        let full = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .is_some_and(|s| {
                matches!(s, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
            });
        if full {
            e.into_full(&format!("the data folder {}", self.data_dir.display()))
        } else {
            e
        }
    }
}

/// `Connection::execute` through the connection's statement cache, for the
/// statements every tick runs: prepared anew each time, they were 5 % of the store's
/// thread in `perf` (label-heavy ingest), all on the tick's serial path.
fn execute_cached(conn: &Connection, sql: &str, params: impl Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `Connection::query_row` through the statement cache, as `execute_cached`.
fn query_row_cached<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, row)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::backend(format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend("cannot set the busy timeout"))?;
    // A commit runs five statements of its own on its target file, and four more for
    // each metric table (two sample inserts, two for new series): rusqlite's 16 would
    // start evicting at three tables a file (`execute_cached`).
    conn.set_prepared_statement_cache_capacity(64);
    // WAL lets readers and one writer work at once across processes; NORMAL sync is
    // durable against process crashes, which is what exactly-once needs here.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend("cannot switch to WAL mode"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend("cannot set synchronous mode"))?;
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
    // back on drop), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) the data folder and its state database, migrating
    /// the state database forward; one written by a newer connectord is refused, and
    /// one that is not SQLite or is damaged is refused untouched.
    /// Blocking: call it before the runtime starts or on a blocking thread.
    pub fn open(data_dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            StoreError::backend(
                format!("cannot create the data folder {}", data_dir.display()),
                e,
            )
        })?;
        let path = data_dir.join(STATE_FILE);
        damage::check_state_file(&path)?;
        let mut conn = open_connection(&path)?;
        schema::migrate(&mut conn, &path)?;
        let reader = open_connection(&path)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(backend("cannot make the reading connection read-only"))?;
        Ok(SqliteStore {
            data_dir,
            state: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            targets: Arc::new(Mutex::new(HashMap::new())),
            bucket_readers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file that holds `target_database`.
    pub fn database_path(&self, target_database: &str) -> PathBuf {
        self.data_dir.join(format!("{target_database}.sqlite"))
    }

    /// Runs `f` on the state connection on tokio's blocking pool, never on an async worker.
    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::on_blocking_pool(&self.state, f).await
    }

    /// Runs a read on the reading connection, which no write ever holds.
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::on_blocking_pool(&self.reader, f).await
    }

    async fn on_blocking_pool<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| StoreError::backend("state store task failed", e))?
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn upsert_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        let spec = spec.clone();
        self.with_state(move |c| connectors::upsert(c, &spec, origin))
            .await
    }

    async fn create_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        let spec = spec.clone();
        self.with_state(move |c| connectors::create(c, &spec, origin))
            .await
    }

    async fn update_connector(
        &self,
        id: &str,
        spec: &ConnectorSpec,
    ) -> Result<ConnectorRecord, StoreError> {
        schema::check_target(spec)?;
        let (id, spec) = (id.to_owned(), spec.clone());
        self.with_state(move |c| connectors::update(c, &id, &spec))
            .await
    }

    async fn delete_connector(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| connectors::delete(c, &id)).await
    }

    async fn set_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<ConnectorRecord, StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| connectors::set_state(c, &id, state))
            .await
    }

    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>, StoreError> {
        self.with_reader(|c| connectors::list(c)).await
    }

    async fn list_page(&self, query: &ListQuery) -> Result<Vec<ConnectorRecord>, StoreError> {
        let query = query.clone();
        self.with_reader(move |c| connectors::page(c, &query)).await
    }

    async fn get_connector(&self, id: &str) -> Result<Option<ConnectorRecord>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |c| connectors::get(c, &id)).await
    }

    async fn set_status(&self, id: &str, change: StatusChange) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| connectors::set_status(c, &id, change))
            .await
    }

    async fn claim_task(
        &self,
        connector_id: &str,
        scheduled_for_ms: i64,
        runner_id: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (connector_id, runner_id) = (connector_id.to_owned(), runner_id.to_owned());
        self.with_state(move |c| leases::claim(c, connector_id, scheduled_for_ms, runner_id, lease))
            .await
            .map_err(|e| self.name_full(e))
    }

    async fn renew_task(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = lease.clone();
        self.with_state(move |c| leases::renew(c, lease, duration))
            .await
    }

    async fn finish_task(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.with_state(move |c| leases::finish(c, &lease)).await
    }

    async fn record_tick(&self, tick: &TickRecord) -> Result<(), StoreError> {
        let tick = tick.clone();
        self.with_state(move |c| history::end(c, &tick, None, None))
            .await
    }

    async fn end_tick(&self, end: TickEnd<'_>) -> Result<(), StoreError> {
        let tick = end.tick.clone();
        let done = end.done.cloned();
        let status = end.status.cloned();
        self.with_state(move |c| history::end(c, &tick, done.as_ref(), status))
            .await
    }

    async fn ticks(&self, connector_id: &str, limit: usize) -> Result<Vec<TickRecord>, StoreError> {
        let connector_id = connector_id.to_owned();
        self.with_reader(move |c| history::newest(c, &connector_id, limit))
            .await
    }

    async fn heartbeat(&self, runner_id: &str, ttl: Duration) -> Result<Vec<String>, StoreError> {
        let runner_id = runner_id.to_owned();
        self.with_state(move |c| leases::heartbeat(c, &runner_id, ttl))
            .await
    }

    async fn leave(&self, runner_id: &str) -> Result<(), StoreError> {
        let runner_id = runner_id.to_owned();
        self.with_state(move |c| leases::leave(c, &runner_id)).await
    }

    async fn now_ms(&self) -> Result<i64, StoreError> {
        // Every process sharing a data folder runs on this machine, so its clock is the store's.
        Ok(connector_runner::protocol::wall_clock_ms())
    }
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn upsert_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError> {
        let spec = spec.clone();
        self.with_state(move |c| destinations::upsert(c, &spec, origin, start_ms))
            .await
    }

    async fn create_destination(
        &self,
        spec: &DestinationSpec,
        origin: Origin,
        start_ms: i64,
    ) -> Result<DestinationRecord, StoreError> {
        let spec = spec.clone();
        self.with_state(move |c| destinations::create(c, &spec, origin, start_ms))
            .await
    }

    async fn update_destination(
        &self,
        id: &str,
        spec: &DestinationSpec,
    ) -> Result<DestinationRecord, StoreError> {
        let (id, spec) = (id.to_owned(), spec.clone());
        self.with_state(move |c| destinations::update(c, &id, &spec))
            .await
    }

    async fn delete_destination(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| destinations::delete(c, &id)).await
    }

    async fn set_destination_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<DestinationRecord, StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| destinations::set_state(c, &id, state))
            .await
    }

    async fn list_destinations(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        self.with_reader(|c| destinations::list(c)).await
    }

    async fn get_destination(&self, id: &str) -> Result<Option<DestinationRecord>, StoreError> {
        let id = id.to_owned();
        self.with_reader(move |c| destinations::get(c, &id)).await
    }

    async fn set_destination_status(
        &self,
        id: &str,
        change: StatusChange,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |c| destinations::set_status(c, &id, change))
            .await
    }

    async fn next_bucket(
        &self,
        destination_id: &str,
        source: &Target,
        from_ms: i64,
    ) -> Result<Option<PendingBucket>, StoreError> {
        let (store, id, source) = (self.clone(), destination_id.to_owned(), source.clone());
        tokio::task::spawn_blocking(move || store.next_bucket_blocking(&id, &source, from_ms))
            .await
            .map_err(|e| StoreError::backend("bucket task failed", e))?
    }

    async fn read_bucket(
        &self,
        source: &Target,
        schema: Arc<Schema>,
        bucket: &PendingBucket,
        after_row: i64,
        limit: usize,
    ) -> Result<BucketChunk, StoreError> {
        let (store, source, bucket) = (self.clone(), source.clone(), *bucket);
        tokio::task::spawn_blocking(move || {
            store.read_bucket_blocking(&source, &schema, &bucket, after_row, limit)
        })
        .await
        .map_err(|e| StoreError::backend("bucket task failed", e))?
    }

    async fn record_delivery(
        &self,
        lease: &Lease,
        record: &DeliveryRecord,
        bucket_rows: u64,
    ) -> Result<(), StoreError> {
        let (lease, record) = (lease.clone(), record.clone());
        self.with_state(move |c| destinations::record_delivery(c, &lease, &record, bucket_rows))
            .await
    }

    async fn deliveries(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let id = destination_id.to_owned();
        self.with_reader(move |c| destinations::history(c, &id, limit))
            .await
    }

    async fn dead_letters(
        &self,
        destination_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let id = destination_id.to_owned();
        self.with_reader(move |c| destinations::dead_letters(c, &id, limit))
            .await
    }
}
