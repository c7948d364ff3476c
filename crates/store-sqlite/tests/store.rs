//! The SQLite store against real files: leases, fencing, the ledger and the state tables.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use connector_core::{Batch, ColumnType, Schema};
use connector_runner::{
    ConnectorSpec, ConnectorState, Origin, Sink, StateStore, StatusChange, StoreErrorKind, Target,
    TickOutcome, TickRecord,
};
use store_sqlite::SqliteStore;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("name", ColumnType::String),
        ("value", ColumnType::Real),
        ("labels", ColumnType::Dynamic),
    ]))
}

fn batch(rows: usize, ts: i64) -> Batch {
    let mut b = Batch::new(schema());
    for i in 0..rows {
        let row = b.row().timestamp(ts).string("m");
        let row = if i % 2 == 0 {
            row.real(i as f64)
        } else {
            row.null()
        };
        row.map([("i", i.to_string())]).finish().unwrap();
    }
    b
}

fn spec(name: &str) -> ConnectorSpec {
    ConnectorSpec {
        name: name.into(),
        connector_type: "prometheus".into(),
        target_database: "metrics".into(),
        target_table: "samples".into(),
        schedule_ms: 1000,
        config: serde_json::json!({"endpoint": "http://127.0.0.1:1/metrics"}),
    }
}

fn target(id: &str) -> Target {
    Target {
        connector_id: id.into(),
        database: "metrics".into(),
        table: "samples".into(),
    }
}

fn count(store: &SqliteStore, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(store.database_path("metrics")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn claims_are_exclusive_until_expiry_and_tokens_increase() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let a = store
        .claim_task("c1", 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_task("c1", 1000, "runner-b", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // Another bucket is free, and its token is higher.
    let other = store
        .claim_task("c1", 2000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(other.token > a.token);
    // An expired lease can be taken over, with a higher token still.
    let short = store
        .claim_task("c1", 3000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let taken = store
        .claim_task("c1", 3000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > short.token);
    assert_eq!(taken.runner_id, "runner-b");
    // A finished bucket is never claimed again.
    store.finish_task(&a).await.unwrap();
    assert!(
        store
            .claim_task("c1", 1000, "runner-a", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // Leases are measured on the store's clock.
    let now = store.now_ms().await.unwrap();
    assert!(taken.expires_at_ms >= now + 29_000);
}

#[tokio::test]
async fn a_bucket_commits_once_and_a_stale_lease_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let lease = store
        .claim_task("c1", 5000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    let report = store
        .commit(&target("c1"), &lease, batch(10, 5000))
        .await
        .unwrap();
    assert_eq!(report.rows, 10);
    assert!(report.bytes > 0);
    assert_eq!(count(&store, "SELECT count(*) FROM samples"), 10);
    assert_eq!(
        count(&store, "SELECT count(*) FROM samples WHERE value IS NULL"),
        5
    );

    let again = store
        .commit(&target("c1"), &lease, batch(10, 5000))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), StoreErrorKind::AlreadyCommitted);
    assert_eq!(count(&store, "SELECT count(*) FROM samples"), 10);

    // Runner A stalls past its lease; B takes the bucket over; A's late commit is refused.
    let stale = store
        .claim_task("c1", 6000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = store
        .claim_task("c1", 6000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&target("c1"), &stale, batch(3, 6000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);
    assert!(err.to_string().contains("stale"), "{err}");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM samples WHERE timestamp = 6000"
        ),
        0
    );
    store
        .commit(&target("c1"), &fresh, batch(3, 6000))
        .await
        .unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM samples WHERE timestamp = 6000"
        ),
        3
    );
    assert_eq!(count(&store, "SELECT count(*) FROM _connectord_ledger"), 2);
}

#[tokio::test]
async fn a_table_with_other_columns_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    {
        let conn = rusqlite::Connection::open(store.database_path("metrics")).unwrap();
        conn.execute_batch("CREATE TABLE samples (a TEXT)").unwrap();
    }
    let lease = store
        .claim_task("c1", 1, "r", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&target("c1"), &lease, batch(1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "table `samples` has columns (a TEXT) but the connector writes (timestamp INTEGER, name TEXT, value REAL, labels TEXT); pick another target_table"
    );
}

#[tokio::test]
async fn connectors_are_upserted_by_name_and_keep_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let created = store
        .upsert_connector(&spec("node"), Origin::File)
        .await
        .unwrap();
    assert_eq!(created.state, ConnectorState::Enabled);
    let same = store
        .upsert_connector(&spec("node"), Origin::File)
        .await
        .unwrap();
    assert_eq!(same.id, created.id);

    store
        .set_status(
            &created.id,
            StatusChange::Disabled("token resolve: environment variable `T` is not set".into()),
        )
        .await
        .unwrap();
    let disabled = store.get_connector(&created.id).await.unwrap().unwrap();
    assert_eq!(disabled.state, ConnectorState::Disabled);
    assert!(
        disabled
            .disabled_reason
            .unwrap()
            .starts_with("token resolve:")
    );
    // Re-declaring the same spec keeps it disabled; a changed spec re-enables it.
    let again = store
        .upsert_connector(&spec("node"), Origin::File)
        .await
        .unwrap();
    assert_eq!(again.state, ConnectorState::Disabled);
    let mut fixed = spec("node");
    fixed.schedule_ms = 2000;
    let fixed = store.upsert_connector(&fixed, Origin::File).await.unwrap();
    assert_eq!(
        (fixed.state, fixed.disabled_reason),
        (ConnectorState::Enabled, None)
    );
    assert_eq!(fixed.spec.schedule_ms, 2000);

    store
        .set_status(&created.id, StatusChange::Failed("boom".into()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_connector(&created.id)
            .await
            .unwrap()
            .unwrap()
            .last_error
            .as_deref(),
        Some("boom")
    );
    store
        .set_status(&created.id, StatusChange::Succeeded)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_connector(&created.id)
            .await
            .unwrap()
            .unwrap()
            .last_error,
        None
    );
    assert_eq!(
        store
            .set_status("missing", StatusChange::Succeeded)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
    assert_eq!(store.list_connectors().await.unwrap().len(), 1);

    // The state survives reopening the folder.
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened
            .get_connector(&created.id)
            .await
            .unwrap()
            .unwrap()
            .spec
            .schedule_ms,
        2000
    );
}

#[tokio::test]
async fn tick_history_is_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .record_tick(&TickRecord {
                connector_id: "c1".into(),
                scheduled_for_ms: i * 1000,
                started_at_ms: i * 1000 + 3,
                outcome: if i == 2 {
                    TickOutcome::Permanent
                } else {
                    TickOutcome::Ok
                },
                rows: 10,
                source_bytes: 100,
                sink_bytes: 80,
                duration_ms: 4,
                error: (i == 2)
                    .then(|| "line 3, column 1 (byte 20): expected a metric name".into()),
                runner_id: "r".into(),
            })
            .await
            .unwrap();
    }
    let ticks = store.ticks("c1", 3).await.unwrap();
    assert_eq!(
        ticks.iter().map(|t| t.scheduled_for_ms).collect::<Vec<_>>(),
        [4000, 3000, 2000]
    );
    assert_eq!(ticks[2].outcome, TickOutcome::Permanent);
    assert!(ticks[2].error.as_deref().unwrap().contains("byte 20"));
}

#[tokio::test]
async fn create_update_delete_and_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let a = store
        .create_connector(&spec("a"), Origin::Api)
        .await
        .unwrap();
    assert_eq!(a.origin, Origin::Api);
    let err = store
        .create_connector(&spec("a"), Origin::Api)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
    assert_eq!(err.to_string(), "a connector named `a` already exists");
    let b = store
        .create_connector(&spec("b"), Origin::Api)
        .await
        .unwrap();

    let mut renamed = spec("b");
    renamed.name = "a".into();
    assert_eq!(
        store
            .update_connector(&b.id, &renamed)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::Conflict
    );
    let mut changed = spec("b");
    changed.schedule_ms = 5000;
    store
        .set_status(&b.id, StatusChange::Disabled("token resolve: x".into()))
        .await
        .unwrap();
    let updated = store.update_connector(&b.id, &changed).await.unwrap();
    assert_eq!(
        (updated.spec.schedule_ms, updated.state, updated.origin),
        (5000, ConnectorState::Enabled, Origin::Api)
    );
    assert_eq!(updated.id, b.id);

    let paused = store
        .set_state(&b.id, ConnectorState::Paused)
        .await
        .unwrap();
    assert_eq!(paused.state, ConnectorState::Paused);
    store
        .set_status(&a.id, StatusChange::Disabled("reason".into()))
        .await
        .unwrap();
    let resumed = store
        .set_state(&a.id, ConnectorState::Enabled)
        .await
        .unwrap();
    assert_eq!(
        (resumed.state, resumed.disabled_reason),
        (ConnectorState::Enabled, None)
    );

    store.delete_connector(&a.id).await.unwrap();
    assert!(store.get_connector(&a.id).await.unwrap().is_none());
    assert_eq!(
        store.delete_connector(&a.id).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
    assert_eq!(
        store
            .set_state(&a.id, ConnectorState::Paused)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
    assert_eq!(
        store
            .update_connector(&a.id, &spec("a"))
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
    assert_eq!(store.list_connectors().await.unwrap().len(), 1);
}

#[tokio::test]
async fn renewal_only_while_the_token_matches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let lease = store
        .claim_task("c1", 1, "a", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    let renewed = store.renew_task(&lease, LEASE).await.unwrap().unwrap();
    assert!(renewed.expires_at_ms > lease.expires_at_ms);
    assert_eq!(renewed.token, lease.token);
    // Renewed, so nobody else can take it.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        store
            .claim_task("c1", 1, "b", LEASE)
            .await
            .unwrap()
            .is_none()
    );

    let short = store
        .claim_task("c1", 2, "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .claim_task("c1", 2, "b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store.renew_task(&short, LEASE).await.unwrap().is_none(),
        "a taken-over lease does not renew"
    );
    store.finish_task(&renewed).await.unwrap();
    assert!(
        store.renew_task(&renewed, LEASE).await.unwrap().is_none(),
        "a finished bucket does not renew"
    );
}
