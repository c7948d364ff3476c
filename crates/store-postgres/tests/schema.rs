//! What only a real PostgreSQL shows: migrations from an older schema, refusing a
//! newer one, concurrent starts, stored values that do not parse, and TLS. Each test
//! that changes the `connectord` schema works in a database of its own.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use connector_runner::{ConnectorSpec, Origin, StateStore, StoreErrorKind};
use store_postgres::{MIGRATIONS, PgStore};
use support::{TestDatabase, base_url, client};

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

#[tokio::test]
async fn an_older_schema_is_migrated_forward_keeping_its_connectors() {
    let Some(base) = base_url() else { return };
    let database = TestDatabase::create(&base).await;
    let url = database.url.clone();
    let db = client(&url).await;
    db.batch_execute(&format!("CREATE SCHEMA connectord; {}", MIGRATIONS[0].sql))
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO connectord.connectors VALUES ('c-1', 'old', 'prometheus', 'metrics', 'samples', 1000, '{}', 'file', 'enabled', NULL, NULL, 1, 1);
         INSERT INTO connectord.ticks (connector_id, scheduled_for_ms, started_at_ms, outcome, rows, source_bytes, sink_bytes, duration_ms, error, runner_id)
         VALUES ('c-1', 1000, 1000, 'transient', 0, 10, 0, 5, 'x', 'r'), ('c-1', 2000, 2000, 'ok', 3, 10, 20, 5, NULL, 'r');",
    )
    .await
    .unwrap();
    let store = PgStore::connect(&url, 2).await.unwrap();
    let versions: Vec<i64> = db
        .query(
            "SELECT version FROM connectord.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let record = store.get_connector("c-1").await.unwrap().unwrap();
    assert_eq!(
        record.spec.org_id, "default",
        "a connector from before orgs"
    );
    let last = record.last_tick.unwrap();
    assert_eq!((last.scheduled_for_ms, last.rows), (2000, 3));
}

#[tokio::test]
async fn a_schema_from_a_newer_connectord_is_refused() {
    let Some(base) = base_url() else { return };
    let database = TestDatabase::create(&base).await;
    let url = database.url.clone();
    PgStore::connect(&url, 2).await.unwrap();
    client(&url)
        .await
        .batch_execute("INSERT INTO connectord.schema_migrations (version, description) VALUES (99, 'from the future')")
        .await
        .unwrap();
    let err = PgStore::connect(&url, 2).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "the `connectord` schema is at schema version 99, newer than this connectord knows (version 9); run the newer connectord that migrated it"
    );
}

#[tokio::test]
async fn migrations_are_safe_when_processes_start_at_once() {
    let Some(base) = base_url() else { return };
    let database = TestDatabase::create(&base).await;
    let url = database.url.clone();
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url, 2).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_an_error_naming_connector_and_column() {
    let Some(base) = base_url() else { return };
    let database = TestDatabase::create(&base).await;
    let url = database.url.clone();
    let store = PgStore::connect(&url, 2).await.unwrap();
    let record = store
        .create_connector(&spec("n"), Origin::Api)
        .await
        .unwrap();
    client(&url)
        .await
        .execute(
            "UPDATE connectord.connectors SET state = 'sleeping' WHERE id = $1",
            &[&record.id],
        )
        .await
        .unwrap();
    let err = store.get_connector(&record.id).await.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "connector {}: stored state `sleeping` is not `enabled`, `paused` or `disabled`",
            record.id
        )),
        "{err}"
    );
}
