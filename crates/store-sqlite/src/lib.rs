//! The embedded default: connector state and sink in SQLite files under one folder.
//!
//! - `<data_dir>/connectord-state.sqlite`: connectors, leases, fencing tokens, tick history.
//! - `<data_dir>/<target_database>.sqlite`: one table per `target_table`, created from the
//!   connector's row schema, plus `_connectord_ledger`, which has one row per committed
//!   (connector, bucket).
//!
//! A commit inserts the ledger row first (taking the target file's write lock), then
//! checks the lease's fencing token in the attached state file, then inserts the rows,
//! all in one transaction: a second commit of a bucket, or one from a runner whose
//! lease was taken over, writes nothing. Several processes may share a data folder;
//! SQLite's locks (WAL mode, a busy timeout) serialize them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use connector_core::{Batch, ColumnType, Value};
use connector_runner::{
    CommitReport, ConnectorRecord, ConnectorSpec, ConnectorState, Lease, Origin, Sink, StateStore,
    StatusChange, StoreError, StoreErrorKind, Target, TickOutcome, TickRecord,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// File name of the state database inside the data folder. Target database names
/// cannot contain `-`, so no target can collide with it.
pub const STATE_FILE: &str = "connectord-state.sqlite";

/// Tick history kept per connector.
const TICKS_KEPT: i64 = 1000;

/// Finished or abandoned leases older than this are deleted.
const LEASES_KEPT_MS: i64 = 3_600_000;

const STATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS connectors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    target_database TEXT NOT NULL,
    target_table TEXT NOT NULL,
    schedule_ms INTEGER NOT NULL,
    config TEXT NOT NULL,
    origin TEXT NOT NULL,
    state TEXT NOT NULL,
    disabled_reason TEXT,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    connector_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    runner_id TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connector_id, scheduled_for_ms)
);
CREATE TABLE IF NOT EXISTS fencing (
    connector_id TEXT PRIMARY KEY,
    last_token INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    rows INTEGER NOT NULL,
    source_bytes INTEGER NOT NULL,
    sink_bytes INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    runner_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ticks_by_connector ON ticks (connector_id, id);
";

const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _connectord_ledger (
    connector_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    target_table TEXT NOT NULL,
    token INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (connector_id, scheduled_for_ms)
);
";

struct TargetDb {
    conn: Connection,
    /// Tables whose columns were checked against a batch schema on this connection.
    checked: HashSet<String>,
    /// Wakes the checkpointer after a commit; dropping it stops the checkpointer.
    checkpoint: std::sync::mpsc::SyncSender<()>,
}

/// How often the checkpointer runs even without commits.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Copies a target file's WAL into the database on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses the threshold, and
/// copying a few MB of WAL there was 40 % of a large commit's time (measured with perf
/// on the ingest benchmark). A passive checkpoint on another connection does the same
/// work without holding up ticks, and never blocks writers.
fn spawn_checkpointer(path: PathBuf) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let conn = open_connection(&path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !matches!(
                rx.recv_timeout(CHECKPOINT_INTERVAL),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            ) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(file = %path.display(), error = %e, "WAL checkpoint failed; retrying later");
                }
            }
            // The store is gone: fold the WAL back so the file stands alone.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::backend("cannot start the checkpoint thread", e))?;
    Ok(tx)
}

/// State store and sink over SQLite files in one data folder.
#[derive(Clone)]
pub struct SqliteStore {
    data_dir: PathBuf,
    state: Arc<Mutex<Connection>>,
    targets: Arc<Mutex<HashMap<String, Arc<Mutex<TargetDb>>>>>,
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

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::backend(format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(backend("cannot set the busy timeout"))?;
    // WAL lets readers and one writer work at once across processes; NORMAL sync is
    // durable against process crashes, which is what exactly-once needs here.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend("cannot switch to WAL mode"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend("cannot set synchronous mode"))?;
    Ok(conn)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
    // back on drop), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp | ColumnType::Integer | ColumnType::Boolean => "INTEGER",
        ColumnType::Real => "REAL",
        _ => "TEXT",
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the data folder and its state database.
    pub fn open(data_dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            StoreError::backend(
                format!("cannot create the data folder {}", data_dir.display()),
                e,
            )
        })?;
        let conn = open_connection(&data_dir.join(STATE_FILE))?;
        conn.execute_batch(STATE_SCHEMA)
            .map_err(backend("cannot create the state tables"))?;
        Ok(SqliteStore {
            data_dir,
            state: Arc::new(Mutex::new(conn)),
            targets: Arc::new(Mutex::new(HashMap::new())),
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

    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || f(&mut lock(&state)))
            .await
            .map_err(|e| StoreError::backend("state store task failed", e))?
    }

    fn target(&self, database: &str) -> Result<Arc<Mutex<TargetDb>>, StoreError> {
        let mut targets = lock(&self.targets);
        if let Some(db) = targets.get(database) {
            return Ok(Arc::clone(db));
        }
        let path = self.database_path(database);
        let conn = open_connection(&path)?;
        conn.execute_batch(LEDGER_SCHEMA)
            .map_err(backend("cannot create the ledger table"))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend("cannot hand checkpoints to the checkpointer"))?;
        let checkpoint = spawn_checkpointer(path)?;
        let state_path = self.data_dir.join(STATE_FILE);
        conn.execute(
            "ATTACH DATABASE ?1 AS state",
            [state_path.to_string_lossy()],
        )
        .map_err(backend("cannot attach the state database"))?;
        let db = Arc::new(Mutex::new(TargetDb {
            conn,
            checked: HashSet::new(),
            checkpoint,
        }));
        targets.insert(database.to_owned(), Arc::clone(&db));
        Ok(db)
    }
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConnectorRecord> {
    let config: String = row.get("config")?;
    let origin: String = row.get("origin")?;
    let state: String = row.get("state")?;
    Ok(ConnectorRecord {
        id: row.get("id")?,
        spec: ConnectorSpec {
            name: row.get("name")?,
            connector_type: row.get("type")?,
            target_database: row.get("target_database")?,
            target_table: row.get("target_table")?,
            schedule_ms: to_u64(row.get("schedule_ms")?),
            config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        },
        origin: if origin == "api" {
            Origin::Api
        } else {
            Origin::File
        },
        state: ConnectorState::parse(&state).unwrap_or(ConnectorState::Disabled),
        disabled_reason: row.get("disabled_reason")?,
        last_error: row.get("last_error")?,
        created_at_ms: row.get("created_at_ms")?,
        updated_at_ms: row.get("updated_at_ms")?,
    })
}

const SELECT_CONNECTOR: &str = "SELECT id, name, type, target_database, target_table, schedule_ms, config, origin, \
     state, disabled_reason, last_error, created_at_ms, updated_at_ms FROM connectors";

fn get_connector(conn: &Connection, id: &str) -> Result<Option<ConnectorRecord>, StoreError> {
    conn.query_row(
        &format!("{SELECT_CONNECTOR} WHERE id = ?1"),
        [id],
        read_record,
    )
    .optional()
    .map_err(backend("cannot read the connector"))
}

fn origin_text(origin: Origin) -> &'static str {
    match origin {
        Origin::File => "file",
        Origin::Api => "api",
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn insert_connector(
    tx: &Connection,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO connectors (id, name, type, target_database, target_table, schedule_ms, config, \
         origin, state, created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'enabled', ?9, ?9)",
        SpecColumns::new(spec, origin).params(&id),
    )
    .map_err(spec_write_error("cannot create the connector", spec))?;
    Ok(id)
}

/// A spec's column values, bound after the id as `?2` to `?9` by both
/// [`insert_connector`] and [`update_spec`].
struct SpecColumns<'a> {
    spec: &'a ConnectorSpec,
    schedule: i64,
    config: String,
    origin: &'static str,
    now: i64,
}

impl<'a> SpecColumns<'a> {
    fn new(spec: &'a ConnectorSpec, origin: Origin) -> Self {
        SpecColumns {
            spec,
            schedule: to_i64(spec.schedule_ms),
            config: spec.config.to_string(),
            origin: origin_text(origin),
            now: now_ms(),
        }
    }

    fn params<'b>(&'b self, id: &'b dyn rusqlite::ToSql) -> [&'b dyn rusqlite::ToSql; 9] {
        [
            id,
            &self.spec.name,
            &self.spec.connector_type,
            &self.spec.target_database,
            &self.spec.target_table,
            &self.schedule,
            &self.config,
            &self.origin,
            &self.now,
        ]
    }
}

/// A write of `spec` that failed: a taken name is the operator's to fix.
fn spec_write_error<'a>(
    what: &'static str,
    spec: &'a ConnectorSpec,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::name_taken(&spec.name)
        } else {
            StoreError::backend(what, e)
        }
    }
}

/// A changed spec is the operator's fix: a Config-disabled connector runs again.
fn update_spec(
    tx: &Connection,
    id: &str,
    spec: &ConnectorSpec,
    origin: Origin,
) -> Result<(), StoreError> {
    let changed = tx
        .execute(
            "UPDATE connectors SET name = ?2, type = ?3, target_database = ?4, target_table = ?5, schedule_ms = ?6, \
             config = ?7, origin = ?8, updated_at_ms = ?9, \
             state = CASE state WHEN 'disabled' THEN 'enabled' ELSE state END, \
             disabled_reason = NULL WHERE id = ?1",
            SpecColumns::new(spec, origin).params(&id),
        )
        .map_err(spec_write_error("cannot update the connector", spec))?;
    if changed == 0 {
        return Err(StoreError::connector_not_found(id));
    }
    Ok(())
}

fn read_back(tx: &Connection, id: &str) -> Result<ConnectorRecord, StoreError> {
    get_connector(tx, id)?.ok_or_else(|| StoreError::connector_not_found(id))
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn upsert_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        let spec = spec.clone();
        self.with_state(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("cannot start a transaction"))?;
            let existing = tx
                .query_row(
                    &format!("{SELECT_CONNECTOR} WHERE name = ?1"),
                    [&spec.name],
                    read_record,
                )
                .optional()
                .map_err(backend("cannot read the connector"))?;
            let id = match existing {
                None => insert_connector(&tx, &spec, origin)?,
                Some(record) if record.spec == spec && record.origin == origin => record.id,
                Some(record) => {
                    update_spec(&tx, &record.id, &spec, origin)?;
                    record.id
                }
            };
            let record = read_back(&tx, &id)?;
            tx.commit()
                .map_err(backend("cannot commit the connector"))?;
            Ok(record)
        })
        .await
    }

    async fn create_connector(
        &self,
        spec: &ConnectorSpec,
        origin: Origin,
    ) -> Result<ConnectorRecord, StoreError> {
        let spec = spec.clone();
        self.with_state(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("cannot start a transaction"))?;
            let id = insert_connector(&tx, &spec, origin)?;
            let record = read_back(&tx, &id)?;
            tx.commit()
                .map_err(backend("cannot commit the connector"))?;
            Ok(record)
        })
        .await
    }

    async fn update_connector(
        &self,
        id: &str,
        spec: &ConnectorSpec,
    ) -> Result<ConnectorRecord, StoreError> {
        let (id, spec) = (id.to_owned(), spec.clone());
        self.with_state(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("cannot start a transaction"))?;
            let current = read_back(&tx, &id)?;
            if current.spec != spec {
                update_spec(&tx, &id, &spec, current.origin)?;
            }
            let record = read_back(&tx, &id)?;
            tx.commit()
                .map_err(backend("cannot commit the connector"))?;
            Ok(record)
        })
        .await
    }

    async fn delete_connector(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("cannot start a transaction"))?;
            let deleted = tx
                .execute("DELETE FROM connectors WHERE id = ?1", [&id])
                .map_err(backend("cannot delete the connector"))?;
            if deleted == 0 {
                return Err(StoreError::connector_not_found(&id));
            }
            for sql in [
                "DELETE FROM ticks WHERE connector_id = ?1",
                "DELETE FROM leases WHERE connector_id = ?1",
            ] {
                tx.execute(sql, [&id])
                    .map_err(backend("cannot delete the connector's history"))?;
            }
            tx.commit().map_err(backend("cannot commit the deletion"))?;
            Ok(())
        })
        .await
    }

    async fn set_state(
        &self,
        id: &str,
        state: ConnectorState,
    ) -> Result<ConnectorRecord, StoreError> {
        let id = id.to_owned();
        self.with_state(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE connectors SET state = ?2, disabled_reason = NULL WHERE id = ?1",
                    params![id, state.as_str()],
                )
                .map_err(backend("cannot change the connector's state"))?;
            if changed == 0 {
                return Err(StoreError::connector_not_found(&id));
            }
            read_back(conn, &id)
        })
        .await
    }

    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>, StoreError> {
        self.with_state(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!("{SELECT_CONNECTOR} ORDER BY name"))
                .map_err(backend("cannot list connectors"))?;
            let rows = stmt
                .query_map([], read_record)
                .map_err(backend("cannot list connectors"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(backend("cannot list connectors"))
        })
        .await
    }

    async fn get_connector(&self, id: &str) -> Result<Option<ConnectorRecord>, StoreError> {
        let id = id.to_owned();
        self.with_state(move |conn| get_connector(conn, &id)).await
    }

    async fn set_status(&self, id: &str, change: StatusChange) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_state(move |conn| {
            let changed = match change {
                StatusChange::Succeeded => conn.execute("UPDATE connectors SET last_error = NULL WHERE id = ?1", [&id]),
                StatusChange::Failed(error) => conn.execute(
                    "UPDATE connectors SET last_error = ?2 WHERE id = ?1",
                    params![id, error],
                ),
                StatusChange::Disabled(reason) => conn.execute(
                    "UPDATE connectors SET state = 'disabled', disabled_reason = ?2, last_error = ?2 WHERE id = ?1",
                    params![id, reason],
                ),
            }
            .map_err(backend("cannot update the connector's status"))?;
            if changed == 0 {
                return Err(StoreError::new(StoreErrorKind::NotFound, format!("no connector with id {id}")));
            }
            Ok(())
        })
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
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.with_state(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("cannot start a transaction"))?;
            let now = now_ms();
            let current: Option<(String, i64, bool)> = tx
                .query_row(
                    "SELECT runner_id, expires_at_ms, done FROM leases WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
                    params![connector_id, scheduled_for_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(backend("cannot read the lease"))?;
            if let Some((holder, expires_at_ms, done)) = current
                && (done || (expires_at_ms > now && holder != runner_id))
            {
                return Ok(None);
            }
            let token: i64 = tx
                .query_row(
                    "INSERT INTO fencing (connector_id, last_token) VALUES (?1, 1) \
                     ON CONFLICT (connector_id) DO UPDATE SET last_token = last_token + 1 RETURNING last_token",
                    [&connector_id],
                    |r| r.get(0),
                )
                .map_err(backend("cannot take a fencing token"))?;
            let expires_at_ms = now.saturating_add(lease_ms);
            tx.execute(
                "INSERT INTO leases (connector_id, scheduled_for_ms, runner_id, token, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (connector_id, scheduled_for_ms) DO UPDATE SET \
                 runner_id = excluded.runner_id, token = excluded.token, expires_at_ms = excluded.expires_at_ms",
                params![connector_id, scheduled_for_ms, runner_id, token, expires_at_ms],
            )
            .map_err(backend("cannot write the lease"))?;
            tx.commit().map_err(backend("cannot commit the lease"))?;
            Ok(Some(Lease {
                connector_id,
                scheduled_for_ms,
                runner_id,
                token,
                expires_at_ms,
            }))
        })
        .await
    }

    async fn renew_task(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = lease.clone();
        let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        self.with_state(move |conn| {
            let expires_at_ms = now_ms().saturating_add(duration_ms);
            let renewed = conn
                .execute(
                    "UPDATE leases SET expires_at_ms = ?4 WHERE connector_id = ?1 AND scheduled_for_ms = ?2 \
                     AND token = ?3 AND NOT done",
                    params![lease.connector_id, lease.scheduled_for_ms, lease.token, expires_at_ms],
                )
                .map_err(backend("cannot renew the lease"))?;
            Ok((renewed == 1).then_some(Lease { expires_at_ms, ..lease }))
        })
        .await
    }

    async fn finish_task(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.with_state(move |conn| {
            conn.execute(
                "UPDATE leases SET done = 1 WHERE connector_id = ?1 AND scheduled_for_ms = ?2 AND token = ?3",
                params![lease.connector_id, lease.scheduled_for_ms, lease.token],
            )
            .map_err(backend("cannot mark the bucket done"))?;
            conn.execute(
                "DELETE FROM leases WHERE connector_id = ?1 AND scheduled_for_ms < ?2",
                params![lease.connector_id, lease.scheduled_for_ms - LEASES_KEPT_MS],
            )
            .map_err(backend("cannot prune old leases"))?;
            Ok(())
        })
        .await
    }

    async fn record_tick(&self, tick: &TickRecord) -> Result<(), StoreError> {
        let tick = tick.clone();
        self.with_state(move |conn| {
            conn.execute(
                "INSERT INTO ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, \
                 sink_bytes, duration_ms, error, runner_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    tick.connector_id,
                    tick.scheduled_for_ms,
                    tick.started_at_ms,
                    tick.outcome.as_str(),
                    to_i64(tick.rows),
                    to_i64(tick.source_bytes),
                    to_i64(tick.sink_bytes),
                    to_i64(tick.duration_ms),
                    tick.error,
                    tick.runner_id
                ],
            )
            .map_err(backend("cannot record the tick"))?;
            conn.execute(
                "DELETE FROM ticks WHERE connector_id = ?1 AND id <= \
                 (SELECT id FROM ticks WHERE connector_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![tick.connector_id, TICKS_KEPT],
            )
            .map_err(backend("cannot prune the tick history"))?;
            Ok(())
        })
        .await
    }

    async fn ticks(&self, connector_id: &str, limit: usize) -> Result<Vec<TickRecord>, StoreError> {
        let connector_id = connector_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_state(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, sink_bytes, \
                     duration_ms, error, runner_id FROM ticks WHERE connector_id = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(backend("cannot read the tick history"))?;
            let rows = stmt
                .query_map(params![connector_id, limit], |r| {
                    let outcome: String = r.get(3)?;
                    Ok(TickRecord {
                        connector_id: r.get(0)?,
                        scheduled_for_ms: r.get(1)?,
                        started_at_ms: r.get(2)?,
                        outcome: TickOutcome::parse(&outcome).unwrap_or(TickOutcome::SinkError),
                        rows: to_u64(r.get(4)?),
                        source_bytes: to_u64(r.get(5)?),
                        sink_bytes: to_u64(r.get(6)?),
                        duration_ms: to_u64(r.get(7)?),
                        error: r.get(8)?,
                        runner_id: r.get(9)?,
                    })
                })
                .map_err(backend("cannot read the tick history"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(backend("cannot read the tick history"))
        })
        .await
    }

    async fn now_ms(&self) -> Result<i64, StoreError> {
        // Every process sharing a data folder runs on this machine, so its clock is the store's.
        Ok(now_ms())
    }
}

fn ensure_table(db: &mut TargetDb, table: &str, batch: &Batch) -> Result<(), StoreError> {
    if db.checked.contains(table) {
        return Ok(());
    }
    let columns: Vec<String> = batch
        .schema()
        .columns()
        .iter()
        .map(|c| format!("{} {}", quote_ident(c.name()), sql_type(c.ty())))
        .collect();
    db.conn
        .execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote_ident(table),
            columns.join(", ")
        ))
        .map_err(backend("cannot create the target table"))?;
    let mut stmt = db
        .conn
        .prepare(&format!(
            "SELECT name, type FROM pragma_table_info({})",
            quote_literal(table)
        ))
        .map_err(backend("cannot read the target table's columns"))?;
    let existing: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(backend("cannot read the target table's columns"))?;
    let wanted: Vec<(String, String)> = batch
        .schema()
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), sql_type(c.ty()).to_owned()))
        .collect();
    StoreError::check_columns(table, &existing, &wanted)?;
    drop(stmt);
    db.checked.insert(table.to_owned());
    Ok(())
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows per INSERT statement: one statement per row spends most of its time in the
/// statement machinery rather than the b-tree, so rows go in multi-row VALUES lists.
const ROWS_PER_INSERT: usize = 64;

fn insert_statement(table: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    format!(
        "INSERT INTO {} VALUES {}",
        quote_ident(table),
        vec![row; rows].join(",")
    )
}

fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    batch: &Batch,
) -> Result<(), StoreError> {
    let columns = batch.schema().len();
    let mut rows = batch.rows();
    while rows.len() > 0 {
        let chunk = rows.len().min(ROWS_PER_INSERT);
        // Cached: the full-size statement is prepared once per connection and table.
        let mut statement = tx
            .prepare_cached(&insert_statement(table, columns, chunk))
            .map_err(backend("cannot prepare the row insert"))?;
        let mut index = 1;
        for row in rows.by_ref().take(chunk) {
            for column in 0..columns {
                match row.at(column) {
                    Value::Null => statement.raw_bind_parameter(index, rusqlite::types::Null),
                    Value::Timestamp(ms) => statement.raw_bind_parameter(index, ms),
                    Value::Real(v) => statement.raw_bind_parameter(index, v),
                    Value::Integer(v) => statement.raw_bind_parameter(index, v),
                    Value::Boolean(v) => statement.raw_bind_parameter(index, v),
                    Value::String(s) | Value::Dynamic(s) => statement.raw_bind_parameter(index, s),
                }
                .map_err(backend("cannot bind a row value"))?;
                index += 1;
            }
        }
        statement
            .raw_execute()
            .map_err(backend("cannot insert rows"))?;
    }
    Ok(())
}

fn commit_batch(
    db: &mut TargetDb,
    target: &Target,
    lease: &Lease,
    batch: &Batch,
) -> Result<CommitReport, StoreError> {
    ensure_table(db, &target.table, batch)?;
    let tx = db
        .conn
        .transaction()
        .map_err(backend("cannot start a transaction"))?;
    let rows = to_i64(u64::try_from(batch.len()).unwrap_or(u64::MAX));
    // The ledger row first: it takes this file's write lock, and a second commit of the
    // bucket stops here on the primary key.
    let inserted = tx.execute(
        "INSERT INTO _connectord_ledger (connector_id, scheduled_for_ms, target_table, token, rows, committed_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![target.connector_id, lease.scheduled_for_ms, target.table, lease.token, rows, now_ms()],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(StoreError::new(
                StoreErrorKind::AlreadyCommitted,
                format!("bucket {} was already committed", lease.scheduled_for_ms),
            ));
        }
        Err(e) => return Err(StoreError::backend("cannot write the ledger row", e)),
    }
    let current: Option<i64> = tx
        .query_row(
            "SELECT token FROM state.leases WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
            params![target.connector_id, lease.scheduled_for_ms],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("cannot read the fencing token"))?;
    if current != Some(lease.token) {
        return Err(StoreError::new(
            StoreErrorKind::Fenced,
            format!(
                "lease token {} is stale (current {}): another runner took bucket {}",
                lease.token,
                current.map_or_else(|| "none".to_owned(), |t| t.to_string()),
                lease.scheduled_for_ms
            ),
        ));
    }
    insert_rows(&tx, &target.table, batch)?;
    tx.commit().map_err(backend("cannot commit the rows"))?;
    Ok(CommitReport {
        rows: batch.len() as u64,
        bytes: batch.payload_bytes() as u64,
    })
}

#[async_trait]
impl Sink for SqliteStore {
    async fn commit(
        &self,
        target: &Target,
        lease: &Lease,
        batch: Batch,
    ) -> Result<CommitReport, StoreError> {
        let db = self.target(&target.database)?;
        let (target, lease) = (target.clone(), lease.clone());
        tokio::task::spawn_blocking(move || {
            let mut db = lock(&db);
            let report = commit_batch(&mut db, &target, &lease, &batch)?;
            // Full means a checkpoint is already pending.
            let _ = db.checkpoint.try_send(());
            Ok(report)
        })
        .await
        .map_err(|e| StoreError::backend("sink task failed", e))?
    }
}
