//! The state database's numbered migrations, and the names SQLite keeps for itself.

use std::path::Path;

use connector_runner::protocol::{Migration, pending, refuse_reserved, wall_clock_ms};
use connector_runner::{ConnectorSpec, StoreError};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::backend;

/// Every schema change of the state database, in order. Version 1 is the schema
/// connectord had before versions were recorded (`IF NOT EXISTS`, so such a
/// database adopts it as is).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "connectors, leases, fencing tokens and tick history",
        sql: "
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
",
    },
    Migration {
        version: 2,
        description: "the newest tick beside each connector, so listing is one query",
        sql: "
ALTER TABLE connectors ADD COLUMN last_tick TEXT;
UPDATE connectors SET last_tick = (
    SELECT json_object('connector_id', t.connector_id, 'scheduled_for_ms', t.scheduled_for_ms,
        'started_at_ms', t.started_at_ms, 'outcome', t.outcome, 'rows', t.rows,
        'source_bytes', t.source_bytes, 'sink_bytes', t.sink_bytes, 'duration_ms', t.duration_ms,
        'error', t.error, 'runner_id', t.runner_id)
    FROM ticks t WHERE t.connector_id = connectors.id ORDER BY t.id DESC LIMIT 1
);
",
    },
    Migration {
        version: 3,
        description: "destinations, their delivery ledger and history, and dead letters",
        sql: "
CREATE TABLE destinations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    spec TEXT NOT NULL,
    origin TEXT NOT NULL,
    state TEXT NOT NULL,
    disabled_reason TEXT,
    last_error TEXT,
    start_ms INTEGER NOT NULL,
    delivered_through_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_delivery TEXT
);
CREATE TABLE delivered (
    destination_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    token INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    rows INTEGER NOT NULL,
    delivered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, scheduled_for_ms)
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    rows INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    runner_id TEXT NOT NULL
);
CREATE INDEX deliveries_by_destination ON deliveries (destination_id, id);
CREATE TABLE dead_letters (
    destination_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    error TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, scheduled_for_ms)
);
",
    },
    Migration {
        version: 4,
        description: "service discoveries and their last refresh",
        sql: "
CREATE TABLE discoveries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    origin TEXT NOT NULL,
    status TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
",
    },
    Migration {
        version: 5,
        description: "retention per connector",
        sql: "ALTER TABLE connectors ADD COLUMN retention TEXT;",
    },
    Migration {
        version: 6,
        description: "the runners sharing the data folder, so they split the connectors instead of all claiming every bucket",
        sql: "CREATE TABLE runners (runner_id TEXT PRIMARY KEY, seen_at_ms INTEGER NOT NULL);",
    },
    Migration {
        version: 7,
        description: "the org that owns each connector; existing connectors belong to `default`",
        sql: "ALTER TABLE connectors ADD COLUMN org_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX connectors_by_org ON connectors (org_id, id);",
    },
];

/// The ledger every target file carries. `first_row..=last_row` are the rowids of
/// the bucket's rows, so destinations read a bucket back by range. Push connectors
/// stage here too, beside their rows, so a bucket's commit removes what it consumed
/// in the same transaction (SQLite does not make a transaction over two attached WAL
/// files atomic).
pub(crate) const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _connectord_ledger (
    connector_id TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    target_table TEXT NOT NULL,
    token INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    first_row INTEGER,
    last_row INTEGER,
    PRIMARY KEY (connector_id, scheduled_for_ms)
);
CREATE TABLE IF NOT EXISTS _connectord_staged (
    id INTEGER PRIMARY KEY,
    connector_id TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    staged_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS _connectord_staged_by_bucket ON _connectord_staged (connector_id, bucket_ms);
CREATE TABLE IF NOT EXISTS _connectord_seen (
    connector_id TEXT NOT NULL,
    key BLOB NOT NULL,
    seen_at_ms INTEGER NOT NULL,
    PRIMARY KEY (connector_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _connectord_push_state (
    connector_id TEXT PRIMARY KEY,
    bucket_ms INTEGER NOT NULL,
    state BLOB NOT NULL
);
";

/// Creates the ledger of a target file, or adds the row-range columns to a ledger
/// written before destinations existed (its buckets keep no range: they cannot be
/// delivered, and `start = "earliest"` begins after them).
pub(crate) fn ensure_ledger(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(LEDGER_SCHEMA)
        .map_err(backend("cannot create the ledger table"))?;
    let has_range: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('_connectord_ledger') WHERE name = 'first_row'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(backend("cannot read the ledger's columns"))?
        > 0;
    if !has_range {
        conn.execute_batch(
            "ALTER TABLE _connectord_ledger ADD COLUMN first_row INTEGER;
             ALTER TABLE _connectord_ledger ADD COLUMN last_row INTEGER;",
        )
        .map_err(backend("cannot add row ranges to the ledger"))?;
    }
    Ok(())
}

/// Brings the state database at `path` to the newest schema, one transaction per
/// migration, or refuses one that a newer connectord wrote. Safe when several
/// processes open one data folder at once: the first takes the write lock, the
/// others then find nothing left to do.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )
    .map_err(backend("cannot create the schema version table"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start the migration"))?;
    let current: i64 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(backend("cannot read the schema version"))?;
    let store = format!("the state database {}", path.display());
    for migration in pending(&store, current, MIGRATIONS)? {
        tx.execute_batch(migration.sql).map_err(|e| {
            StoreError::backend(
                format!(
                    "cannot apply migration {} ({})",
                    migration.version, migration.description
                ),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.description, wall_clock_ms()],
        )
        .map_err(backend("cannot record the migration"))?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "state database migrated"
        );
    }
    tx.commit().map_err(backend("cannot commit the migration"))
}

/// Refuses target names SQLite keeps for itself (`sqlite_*` tables).
pub(crate) fn check_target(spec: &ConnectorSpec) -> Result<(), StoreError> {
    refuse_reserved(
        "target_table",
        &spec.target_table,
        &["sqlite_"],
        &[],
        "SQLite (its own tables start with `sqlite_`)",
    )
}
