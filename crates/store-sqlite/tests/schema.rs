//! What only SQLite's files show: migrations from an older state database, refusing
//! a newer one, stored values that do not parse, and state surviving a reopen.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use connector_runner::protocol::wall_clock_ms;
use connector_runner::{ConnectorSpec, Origin, StateStore, StoreErrorKind};
use store_sqlite::{MIGRATIONS, STATE_FILE, SqliteStore};

fn spec(name: &str) -> ConnectorSpec {
    ConnectorSpec {
        name: name.into(),
        connector_type: "prometheus".into(),
        target_database: "metrics".into(),
        target_table: "samples".into(),
        schedule_ms: 1000,
        config: serde_json::json!({"endpoint": "http://127.0.0.1:1/metrics"}),
        retention: None,
        org_id: connector_runner::DEFAULT_ORG.into(),
    }
}

fn versions(dir: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(dir.join(STATE_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn an_older_state_database_is_migrated_forward_keeping_its_connectors() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The schema before versions were recorded, with a connector and two ticks in it.
        let conn = rusqlite::Connection::open(dir.path().join(STATE_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0].sql).unwrap();
        conn.execute(
            "INSERT INTO connectors VALUES ('c-1', 'old', 'prometheus', 'metrics', 'samples', 1000, '{}', 'file', 'enabled', NULL, NULL, 1, 1)",
            [],
        )
        .unwrap();
        for (at, outcome) in [(1000, "transient"), (2000, "ok")] {
            conn.execute(
                "INSERT INTO ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, sink_bytes, duration_ms, error, runner_id) \
                 VALUES ('c-1', ?1, ?1, ?2, 3, 10, 20, 5, NULL, 'r')",
                rusqlite::params![at, outcome],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(versions(dir.path()), [1, 2, 3, 4, 5, 6, 7]);
    let record = store.get_connector("c-1").await.unwrap().unwrap();
    assert_eq!(record.spec.name, "old");
    assert_eq!(
        record.spec.org_id, "default",
        "a connector from before orgs"
    );
    let last = record.last_tick.unwrap();
    assert_eq!((last.scheduled_for_ms, last.rows), (2000, 3));
    drop(store);
    // Opening again changes nothing.
    SqliteStore::open(dir.path()).unwrap();
    assert_eq!(versions(dir.path()), [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn a_state_database_from_a_newer_connectord_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path()).unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(STATE_FILE)).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (99, 'from the future', ?1)",
            [wall_clock_ms()],
        )
        .unwrap();
    }
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    let text = err.to_string();
    assert!(
        text.contains("is at schema version 99, newer than this connectord knows (version 7)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_an_error_naming_connector_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let record = store
        .create_connector(&spec("n"), Origin::Api)
        .await
        .unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(STATE_FILE)).unwrap();
        conn.execute(
            "UPDATE connectors SET origin = 'cloud' WHERE id = ?1",
            [&record.id],
        )
        .unwrap();
    }
    let err = store.get_connector(&record.id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "connector {}: stored origin `cloud` is not `file`, `api` or `discovery`; the state database was changed by hand or by a newer connectord",
            record.id
        )
    );
    assert_eq!(
        store.list_connectors().await.unwrap_err().to_string(),
        err.to_string()
    );
}

#[tokio::test]
async fn state_survives_reopening_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let record = store
        .upsert_connector(&spec("kept"), Origin::File)
        .await
        .unwrap();
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.get_connector(&record.id).await.unwrap().unwrap(),
        record
    );
}

/// A target file written before destinations existed gets row ranges in its ledger;
/// its old buckets, whose rows have no recorded range, are not offered for delivery,
/// and new ones are.
#[tokio::test]
async fn an_old_ledger_gains_row_ranges_and_only_new_buckets_are_delivered() {
    use connector_runner::{DeliveryStore as _, Sink as _, Target};
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("metrics.sqlite")).unwrap();
        conn.execute_batch(
            "CREATE TABLE _connectord_ledger (connector_id TEXT NOT NULL, scheduled_for_ms INTEGER NOT NULL, \
             target_table TEXT NOT NULL, token INTEGER NOT NULL, rows INTEGER NOT NULL, committed_at_ms INTEGER NOT NULL, \
             PRIMARY KEY (connector_id, scheduled_for_ms));
             CREATE TABLE samples (timestamp INTEGER, name TEXT, value REAL, labels TEXT);
             INSERT INTO samples VALUES (1000, 'up', 1, '{}');
             INSERT INTO _connectord_ledger VALUES ('c-1', 1000, 'samples', 1, 1, 1);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let target = Target {
        connector_id: "c-1".into(),
        database: "metrics".into(),
        table: "samples".into(),
    };
    let lease = store
        .claim_task("c-1", 2000, "r", std::time::Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    use connector_core::ColumnType;
    let schema = std::sync::Arc::new(connector_core::Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("name", ColumnType::String),
        ("value", ColumnType::Real),
        ("labels", ColumnType::Dynamic),
    ]));
    let mut batch = connector_core::Batch::new(schema);
    batch
        .row()
        .timestamp(2000)
        .string("up")
        .real(1.0)
        .map([("job", "a")])
        .finish()
        .unwrap();
    store.commit(&target, &lease, batch).await.unwrap();
    let next = store
        .next_bucket("d-1", &target, i64::MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.scheduled_for_ms, next.first_row, next.last_row),
        (2000, 2, 2),
        "the old bucket has no range; the new rows follow the old ones"
    );
}
