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
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
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
        "the `connectord` schema is at schema version 99, newer than this connectord knows (version 10); run the newer connectord that migrated it"
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

/// Objects an older connectord made for a metric table `metrics.samples`: one record
/// per sample, and the view over them.
const SAMPLE_RECORDS_SQL: &str = r#"
CREATE SCHEMA metrics;
CREATE TABLE metrics.samples__series (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, labels jsonb NOT NULL);
CREATE UNIQUE INDEX _connectord_series_x ON metrics.samples__series (name, md5(labels::text));
CREATE TABLE metrics.samples__samples ("timestamp" timestamptz, series bigint NOT NULL, value double precision, _connectord_row bigint);
CREATE INDEX _connectord_row_old ON metrics.samples__samples USING brin (_connectord_row);
CREATE VIEW metrics.samples AS SELECT s."timestamp", r.name, s.value, r.labels, s._connectord_row
  FROM metrics.samples__samples s JOIN metrics.samples__series r ON r.id = s.series;
INSERT INTO metrics.samples__series (name, labels) VALUES ('up', '{"job": "a"}'), ('up', '{"job": "b"}');
"#;

/// Every row of the view, in position order, as text.
async fn view_rows(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT concat_ws(' ', _connectord_row, (extract(epoch FROM \"timestamp\") * 1000)::bigint, name, value, labels::text) \
         FROM metrics.samples ORDER BY _connectord_row",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A database at schema version 9 holding the old layout with two buckets: 2,500
/// samples at positions 1 to 2,500 and 3 at positions 5,001 to 5,003 (a gap between,
/// as a failed commit leaves), and NULL values among them.
async fn database_with_sample_records(base: &str) -> TestDatabase {
    let database = TestDatabase::create(base).await;
    PgStore::connect(&database.url, 2).await.unwrap();
    let db = client(&database.url).await;
    db.batch_execute(SAMPLE_RECORDS_SQL).await.unwrap();
    db.batch_execute(
        "INSERT INTO metrics.samples__samples SELECT to_timestamp(1000 + p / 1000.0), 1 + p % 2, \
           CASE WHEN p % 7 = 0 THEN NULL ELSE p * 0.5 END, p FROM generate_series(1, 2500) p;
         INSERT INTO metrics.samples__samples SELECT to_timestamp(2000), 1 + p % 2, p, p FROM generate_series(5001, 5003) p;
         INSERT INTO connectord.ledger (connector_id, scheduled_for_ms, target_database, target_table, token, rows, first_row, last_row)
           VALUES ('c-1', 1000, 'metrics', 'samples', 1, 2500, 1, 2500), ('c-1', 2000, 'metrics', 'samples', 2, 3, 5001, 5003);
         DELETE FROM connectord.schema_migrations WHERE version = 10;",
    )
    .await
    .unwrap();
    database
}

#[tokio::test]
async fn an_older_metric_table_is_rewritten_into_chunks_keeping_every_sample() {
    use connector_runner::{DeliveryStore as _, PendingBucket, Sink as _, Target};
    let Some(base) = base_url() else { return };
    let database = database_with_sample_records(&base).await;
    let db = client(&database.url).await;
    let before = view_rows(&db).await;
    assert_eq!(before.len(), 2503);

    let store = PgStore::connect(&database.url, 2).await.unwrap();
    assert_eq!(view_rows(&db).await, before, "the view reads the same rows");
    let chunks: Vec<(i64, i64)> = db
        .query(
            "SELECT first_row, last_row FROM metrics.samples__samples ORDER BY first_row",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        chunks,
        [(1, 1024), (1025, 2048), (2049, 2500), (5001, 5003)],
        "chunks of 1,024 samples at most, none across buckets"
    );
    let stats = store.table_stats("metrics", "samples").await.unwrap();
    assert_eq!((stats.rows, stats.series), (2503, Some(2)));

    let target = Target {
        connector_id: "c-1".into(),
        database: "metrics".into(),
        table: "samples".into(),
    };
    let bucket = PendingBucket {
        scheduled_for_ms: 1000,
        rows: 2500,
        first_row: 1,
        last_row: 2500,
    };
    let read = store
        .read_bucket(&target, metric_rows::schema(), &bucket, 1000, 100)
        .await
        .unwrap();
    assert_eq!((read.rows.len(), read.last_row), (100, 1100));

    let pruned = store.prune(&target, 1500, 10, 1_000_000).await.unwrap();
    assert_eq!((pruned.buckets, pruned.rows), (1, 2500));
    assert_eq!(view_rows(&db).await, before[2500..]);

    let versions: i64 = db
        .query_one("SELECT max(version) FROM connectord.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 10);
}

#[tokio::test]
async fn an_older_metric_table_the_ledger_does_not_account_for_is_refused_unchanged() {
    let Some(base) = base_url() else { return };
    let database = database_with_sample_records(&base).await;
    let db = client(&database.url).await;
    db.batch_execute(
        "INSERT INTO metrics.samples__samples VALUES (to_timestamp(3000), 1, 1, 9000)",
    )
    .await
    .unwrap();
    let before = view_rows(&db).await;

    let err = PgStore::connect(&database.url, 2).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(
        err.to_string().starts_with(
            "metric table `metrics.samples`: the ledger accounts for 2503 of its 2504 samples (0 buckets with gaps)"
        ),
        "{err}"
    );
    assert_eq!(view_rows(&db).await, before, "nothing changed");
}
