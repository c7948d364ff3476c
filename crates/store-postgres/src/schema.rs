//! The `connectord` schema's numbered migrations, and the names PostgreSQL keeps.

use connector_runner::protocol::{Migration, pending, refuse_reserved};
use connector_runner::{ConnectorSpec, StoreError};
use tokio_postgres::Client;

use crate::backend;

/// Serializes schema changes across processes that start at once.
pub(crate) const MIGRATION_LOCK: i64 = 0x0063_6f6e_6e65_6374;

/// The schema that holds connectord's own tables.
pub(crate) const STATE_SCHEMA: &str = "connectord";

/// Every schema change of the `connectord` schema, in order. Version 1 is the schema
/// connectord had before versions were recorded (`IF NOT EXISTS`, so such a database
/// adopts it as is).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "connectors, leases, fencing tokens, tick history and the ledger",
        sql: "
CREATE TABLE IF NOT EXISTS connectord.connectors (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    type text NOT NULL,
    target_database text NOT NULL,
    target_table text NOT NULL,
    schedule_ms bigint NOT NULL,
    config text NOT NULL,
    origin text NOT NULL,
    state text NOT NULL,
    disabled_reason text,
    last_error text,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS connectord.leases (
    connector_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    runner_id text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (connector_id, scheduled_for_ms)
);
CREATE TABLE IF NOT EXISTS connectord.fencing (
    connector_id text PRIMARY KEY,
    last_token bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS connectord.ticks (
    id bigserial PRIMARY KEY,
    connector_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    started_at_ms bigint NOT NULL,
    outcome text NOT NULL,
    rows bigint NOT NULL,
    source_bytes bigint NOT NULL,
    sink_bytes bigint NOT NULL,
    duration_ms bigint NOT NULL,
    error text,
    runner_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS ticks_by_connector ON connectord.ticks (connector_id, id);
CREATE TABLE IF NOT EXISTS connectord.ledger (
    connector_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    target_database text NOT NULL,
    target_table text NOT NULL,
    token bigint NOT NULL,
    rows bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_id, scheduled_for_ms)
);
",
    },
    Migration {
        version: 2,
        description: "the newest tick beside each connector, so listing is one query",
        sql: "
ALTER TABLE connectord.connectors ADD COLUMN last_tick text;
UPDATE connectord.connectors c SET last_tick = (
    SELECT json_build_object('connector_id', t.connector_id, 'scheduled_for_ms', t.scheduled_for_ms,
        'started_at_ms', t.started_at_ms, 'outcome', t.outcome, 'rows', t.rows,
        'source_bytes', t.source_bytes, 'sink_bytes', t.sink_bytes, 'duration_ms', t.duration_ms,
        'error', t.error, 'runner_id', t.runner_id)::text
    FROM connectord.ticks t WHERE t.connector_id = c.id ORDER BY t.id DESC LIMIT 1
);
",
    },
    Migration {
        version: 3,
        description: "destinations, their delivery ledger and history, dead letters, and row positions in the ledger",
        sql: "
CREATE TABLE connectord.destinations (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    type text NOT NULL,
    source text NOT NULL,
    spec text NOT NULL,
    origin text NOT NULL,
    state text NOT NULL,
    disabled_reason text,
    last_error text,
    start_ms bigint NOT NULL,
    delivered_through_ms bigint,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    last_delivery text
);
CREATE TABLE connectord.delivered (
    destination_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    token bigint NOT NULL,
    outcome text NOT NULL,
    rows bigint NOT NULL,
    delivered_at_ms bigint NOT NULL,
    PRIMARY KEY (destination_id, scheduled_for_ms)
);
CREATE TABLE connectord.deliveries (
    id bigserial PRIMARY KEY,
    destination_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    started_at_ms bigint NOT NULL,
    outcome text NOT NULL,
    rows bigint NOT NULL,
    skipped bigint NOT NULL,
    bytes bigint NOT NULL,
    requests bigint NOT NULL,
    retries bigint NOT NULL,
    duration_ms bigint NOT NULL,
    error text,
    runner_id text NOT NULL
);
CREATE INDEX deliveries_by_destination ON connectord.deliveries (destination_id, id);
CREATE TABLE connectord.dead_letters (
    destination_id text NOT NULL,
    scheduled_for_ms bigint NOT NULL,
    rows bigint NOT NULL,
    error text NOT NULL,
    recorded_at_ms bigint NOT NULL,
    PRIMARY KEY (destination_id, scheduled_for_ms)
);
ALTER TABLE connectord.ledger ADD COLUMN first_row bigint, ADD COLUMN last_row bigint;
CREATE TABLE connectord.row_positions (one boolean PRIMARY KEY DEFAULT true CHECK (one), next bigint NOT NULL);
INSERT INTO connectord.row_positions (next) VALUES (1);
",
    },
    Migration {
        version: 4,
        description: "push sources: staged requests, idempotency keys and each connector's state",
        sql: "
CREATE TABLE connectord.staged (
    id bigserial PRIMARY KEY,
    connector_id text NOT NULL,
    target_database text NOT NULL,
    bucket_ms bigint NOT NULL,
    staged_at_ms bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX staged_by_bucket ON connectord.staged (connector_id, bucket_ms);
CREATE TABLE connectord.seen (
    connector_id text NOT NULL,
    key bytea NOT NULL,
    seen_at_ms bigint NOT NULL,
    PRIMARY KEY (connector_id, key)
);
CREATE TABLE connectord.push_state (
    connector_id text PRIMARY KEY,
    bucket_ms bigint NOT NULL,
    state bytea NOT NULL
);
",
    },
    Migration {
        version: 5,
        description: "service discoveries and their last refresh",
        sql: "
CREATE TABLE connectord.discoveries (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    spec text NOT NULL,
    origin text NOT NULL,
    status text,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL
);
",
    },
    Migration {
        version: 6,
        description: "retention per connector",
        sql: "ALTER TABLE connectord.connectors ADD COLUMN retention text;",
    },
    Migration {
        version: 7,
        description: "claim, row reservation and end of tick as one statement each, so a tick costs four round trips",
        sql: include_str!("sql/tick_functions.sql"),
    },
    Migration {
        version: 8,
        description: "the runners sharing the database, so they split the connectors instead of all claiming every bucket",
        sql: include_str!("sql/runners.sql"),
    },
    Migration {
        version: 9,
        description: "the org that owns each connector; existing connectors belong to `default`",
        sql: "ALTER TABLE connectord.connectors ADD COLUMN org_id text NOT NULL DEFAULT 'default';
CREATE INDEX connectors_by_org ON connectord.connectors (org_id, id COLLATE \"C\");",
    },
    Migration {
        version: CHUNKS_VERSION,
        description: "metric samples in chunks of up to 1,024 a record, not a record each",
        sql: "-- the tables are rewritten by layout::rewrite_sample_records, which needs the ledger and each table's name",
    },
];

/// The migration after which metric tables hold their samples in chunks.
const CHUNKS_VERSION: i64 = 10;

/// The column every target table gets for destinations: the row's position, unique
/// across the database and increasing with each commit, so the ledger can name a
/// bucket's rows as a range (PostgreSQL has no stable row id of its own).
pub(crate) const ROW_POSITION: &str = "_connectord_row";

/// Brings the `connectord` schema to the newest version in one transaction under an
/// advisory lock, or refuses one that a newer connectord wrote.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot start a transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend("cannot take the migration lock"))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS connectord;
         CREATE TABLE IF NOT EXISTS connectord.schema_migrations (
             version bigint PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(backend("cannot create the schema version table"))?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM connectord.schema_migrations",
            &[],
        )
        .await
        .map_err(backend("cannot read the schema version"))?
        .get(0);
    for migration in pending("the `connectord` schema", current, MIGRATIONS)? {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            StoreError::backend(
                format!(
                    "cannot apply migration {} ({})",
                    migration.version, migration.description
                ),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO connectord.schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(backend("cannot record the migration"))?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "connectord schema migrated"
        );
    }
    if current < CHUNKS_VERSION {
        crate::layout::rewrite_sample_records(&tx).await?;
    }
    tx.commit()
        .await
        .map_err(backend("cannot commit the migrations"))
}

/// Refuses target names PostgreSQL or connectord keep: `pg_*` and
/// `information_schema` schemas, `pg_*` tables, and connectord's own schema.
pub(crate) fn check_target(spec: &ConnectorSpec) -> Result<(), StoreError> {
    refuse_reserved(
        "target_database",
        &spec.target_database,
        &["pg_"],
        &["information_schema", STATE_SCHEMA],
        "PostgreSQL or connectord (pg_*, information_schema and connectord are not for rows)",
    )?;
    refuse_reserved(
        "target_table",
        &spec.target_table,
        &["pg_"],
        &[],
        "PostgreSQL (its catalog tables start with `pg_`)",
    )
}
