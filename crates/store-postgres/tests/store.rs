//! The PostgreSQL store against a real server: `cargo xtask services up` starts one and
//! prints DATABASE_URL. Under CI=true a missing database fails these tests.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use connector_core::{Batch, ColumnType, Schema};
use connector_runner::{
    ConnectorSpec, ConnectorState, Origin, Sink, StateStore, StatusChange, StoreErrorKind, Target,
    TickOutcome, TickRecord,
};
use store_postgres::PgStore;

const LEASE: Duration = Duration::from_secs(30);

async fn store() -> Option<PgStore> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => Some(PgStore::connect(&url, 8).await.unwrap()),
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "DATABASE_URL is not set: CI must start PostgreSQL (cargo xtask services up)"
            );
            eprintln!("skipped: DATABASE_URL is not set (eval \"$(cargo xtask services up)\")");
            None
        }
    }
}

/// A name no other test run uses, so tests can share one database.
fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

async fn sql_exec(sql: &str) {
    let url = std::env::var("DATABASE_URL").unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

async fn sql_i64(sql: &str) -> i64 {
    let url = std::env::var("DATABASE_URL").unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

fn batch(rows: usize, ts: i64) -> Batch {
    let schema = Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("name", ColumnType::String),
        ("value", ColumnType::Real),
        ("labels", ColumnType::Dynamic),
    ]));
    let mut b = Batch::new(schema);
    for i in 0..rows {
        let row = b.row().timestamp(ts).string("m");
        let row = if i % 2 == 0 {
            row.real(i as f64)
        } else {
            row.null()
        };
        row.map([("i", i.to_string()), ("q", "\"quoted\"\n".to_owned())])
            .finish()
            .unwrap();
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

#[tokio::test]
async fn claims_skip_locked_rows_and_tokens_increase() {
    let Some(store) = store().await else { return };
    let c = unique("c");
    let a = store
        .claim_task(&c, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_task(&c, 1000, "runner-b", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    let other = store
        .claim_task(&c, 2000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(other.token > a.token);
    let short = store
        .claim_task(&c, 3000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = store
        .claim_task(&c, 3000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > short.token);
    store.finish_task(&a).await.unwrap();
    assert!(
        store
            .claim_task(&c, 1000, "runner-a", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // The lease is on the database's clock.
    let now = store.now_ms().await.unwrap();
    assert!(
        (now + 29_000..=now + 31_000).contains(&taken.expires_at_ms),
        "{now} {}",
        taken.expires_at_ms
    );

    // Sixteen claimers racing for one bucket: exactly one wins.
    let bucket = 9000;
    let claims = (0..16).map(|i| {
        let store = store.clone();
        let c = c.clone();
        tokio::spawn(async move {
            store
                .claim_task(&c, bucket, &format!("racer-{i}"), LEASE)
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap().is_some());
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn a_bucket_commits_once_and_a_stale_lease_commits_nothing() {
    let Some(store) = store().await else { return };
    let (c, db) = (unique("c"), unique("db"));
    let target = Target {
        connector_id: c.clone(),
        database: db.clone(),
        table: "samples".into(),
    };
    let count = |ts: i64| {
        format!(
            "SELECT count(*) FROM \"{db}\".samples WHERE timestamp = to_timestamp({ts} / 1000.0)"
        )
    };
    let lease = store
        .claim_task(&c, 5000, "a", LEASE)
        .await
        .unwrap()
        .unwrap();
    let report = store
        .commit(&target, &lease, batch(10, 5000))
        .await
        .unwrap();
    assert_eq!(report.rows, 10);
    assert_eq!(sql_i64(&count(5000)).await, 10);
    assert_eq!(
        sql_i64(&format!(
            "SELECT count(*) FROM \"{db}\".samples WHERE value IS NULL"
        ))
        .await,
        5
    );
    assert_eq!(
        sql_i64(&format!(
            "SELECT count(*) FROM \"{db}\".samples WHERE labels->>'q' = '\"quoted\"' || chr(10)"
        ))
        .await,
        10
    );
    let again = store
        .commit(&target, &lease, batch(10, 5000))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), StoreErrorKind::AlreadyCommitted);
    assert_eq!(sql_i64(&count(5000)).await, 10);

    let stale = store
        .claim_task(&c, 6000, "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_task(&c, 6000, "b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&target, &stale, batch(3, 6000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);
    assert_eq!(sql_i64(&count(6000)).await, 0);
    store.commit(&target, &fresh, batch(3, 6000)).await.unwrap();
    assert_eq!(sql_i64(&count(6000)).await, 3);
    let columns = sql_i64(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{db}' AND table_name = 'samples' \
         AND (column_name, data_type) IN (('timestamp', 'timestamp with time zone'), ('name', 'text'), \
         ('value', 'double precision'), ('labels', 'jsonb'))"
    ))
    .await;
    assert_eq!(columns, 4);
}

#[tokio::test]
async fn a_table_with_other_columns_is_refused() {
    let Some(store) = store().await else { return };
    let (c, db) = (unique("c"), unique("db"));
    sql_exec(&format!(
        "CREATE SCHEMA \"{db}\"; CREATE TABLE \"{db}\".samples (a text)"
    ))
    .await;
    let target = Target {
        connector_id: c.clone(),
        database: db.clone(),
        table: "samples".into(),
    };
    let lease = store.claim_task(&c, 1, "r", LEASE).await.unwrap().unwrap();
    let err = store
        .commit(&target, &lease, batch(1, 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(err.to_string().ends_with("has columns (a text) but the connector writes (timestamp timestamp with time zone, name text, value double precision, labels jsonb); pick another target_table"), "{err}");
}

#[tokio::test]
async fn connectors_create_update_delete_and_status() {
    let Some(store) = store().await else { return };
    let (a_name, b_name) = (unique("a"), unique("b"));
    let a = store
        .upsert_connector(&spec(&a_name), Origin::File)
        .await
        .unwrap();
    assert_eq!(
        store
            .upsert_connector(&spec(&a_name), Origin::File)
            .await
            .unwrap()
            .id,
        a.id
    );
    store
        .set_status(&a.id, StatusChange::Disabled("token resolve: x".into()))
        .await
        .unwrap();
    let disabled = store.get_connector(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (disabled.state, disabled.disabled_reason.as_deref()),
        (ConnectorState::Disabled, Some("token resolve: x"))
    );
    let mut changed = spec(&a_name);
    changed.schedule_ms = 2000;
    let fixed = store
        .upsert_connector(&changed, Origin::File)
        .await
        .unwrap();
    assert_eq!(
        (fixed.state, fixed.spec.schedule_ms),
        (ConnectorState::Enabled, 2000)
    );

    let b = store
        .create_connector(&spec(&b_name), Origin::Api)
        .await
        .unwrap();
    assert_eq!(
        store
            .create_connector(&spec(&b_name), Origin::Api)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::Conflict
    );
    assert_eq!(
        store
            .update_connector(&b.id, &spec(&a_name))
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::Conflict
    );
    assert_eq!(
        store
            .set_state(&b.id, ConnectorState::Paused)
            .await
            .unwrap()
            .state,
        ConnectorState::Paused
    );
    store
        .set_status(&b.id, StatusChange::Failed("boom".into()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_connector(&b.id)
            .await
            .unwrap()
            .unwrap()
            .last_error
            .as_deref(),
        Some("boom")
    );
    store
        .record_tick(&TickRecord {
            connector_id: b.id.clone(),
            scheduled_for_ms: 1,
            started_at_ms: 2,
            outcome: TickOutcome::Permanent,
            rows: 0,
            source_bytes: 10,
            sink_bytes: 0,
            duration_ms: 3,
            error: Some("line 1, column 1 (byte 0): expected a metric name".into()),
            runner_id: "r".into(),
        })
        .await
        .unwrap();
    let ticks = store.ticks(&b.id, 5).await.unwrap();
    assert_eq!((ticks.len(), ticks[0].outcome), (1, TickOutcome::Permanent));
    store.delete_connector(&b.id).await.unwrap();
    assert!(store.get_connector(&b.id).await.unwrap().is_none());
    assert!(store.ticks(&b.id, 5).await.unwrap().is_empty());
    assert_eq!(
        store.delete_connector(&b.id).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
    store.delete_connector(&a.id).await.unwrap();
}

#[tokio::test]
async fn migrations_are_safe_when_processes_start_at_once() {
    let Some(_) = store().await else { return };
    let url = std::env::var("DATABASE_URL").unwrap();
    let starts = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::connect(&url, 2).await.map(|_| ()) })
    });
    for start in starts {
        start.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn renewal_only_while_the_token_matches() {
    let Some(store) = store().await else { return };
    let c = unique("c");
    let lease = store
        .claim_task(&c, 1, "a", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let renewed = store.renew_task(&lease, LEASE).await.unwrap().unwrap();
    assert!(renewed.expires_at_ms > lease.expires_at_ms);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.claim_task(&c, 1, "b", LEASE).await.unwrap().is_none());

    let short = store
        .claim_task(&c, 2, "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.claim_task(&c, 2, "b", LEASE).await.unwrap().unwrap();
    assert!(store.renew_task(&short, LEASE).await.unwrap().is_none());
    store.finish_task(&renewed).await.unwrap();
    assert!(store.renew_task(&renewed, LEASE).await.unwrap().is_none());
}
