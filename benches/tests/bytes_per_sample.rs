//! Bytes on disk per sample, after a checkpoint, for 200 scrapes of node_exporter's
//! output and of the generated label-heavy (kube-state-metrics-like) body, each
//! committed bucket by bucket through the store's real `commit`. The compact metric
//! layout must stay at or under 30 bytes per sample in SQLite; the row layout it
//! replaced is measured in the same run for comparison, and PostgreSQL is reported
//! when `DATABASE_URL` is set.

use std::time::Duration;

use connector_runner::{Sink, StateStore, Target};

const SCRAPES: i64 = 200;
const GOAL_BYTES_PER_SAMPLE: f64 = 30.0;

fn inputs() -> Vec<(&'static str, String)> {
    vec![
        (
            "node_exporter",
            benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
        ),
        ("label-heavy", benches::generate_exposition(256 * 1024)),
    ]
}

/// Commits `SCRAPES` scrapes of `text`, one bucket each, as the runner would.
async fn commit_scrapes<S: StateStore + Sink>(store: &S, target: &Target, text: &str) -> u64 {
    let one = benches::metric_rows(text, 1);
    let mut samples = 0;
    for scrape in 0..SCRAPES {
        let bucket = 1_700_000_000_000 + scrape * 15_000;
        let batch = benches::restamped(&one, bucket);
        let lease = store
            .claim_task(&target.connector_id, bucket, "r", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("a free bucket");
        samples += store
            .commit(target, &lease, batch)
            .await
            .expect("the commit")
            .rows;
    }
    samples
}

/// Bytes the target file holds in use after a checkpoint (free pages left out).
fn sqlite_bytes(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("open the target file");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let pages: i64 = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )
        .expect("page count");
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    u64::try_from(pages * page_size).expect("a size")
}

#[allow(clippy::cast_precision_loss)]
fn per_sample(bytes: u64, samples: u64) -> f64 {
    bytes as f64 / samples as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_a_sample_in_at_most_30_bytes() {
    for (input, text) in inputs() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = store_sqlite::SqliteStore::open(dir.path()).expect("the store");
        let compact = Target {
            connector_id: "compact".into(),
            database: "compact".into(),
            table: "samples".into(),
        };
        let samples = commit_scrapes(&store, &compact, &text).await;
        let stats = store
            .table_stats("compact", "samples")
            .await
            .expect("stats");
        assert_eq!(stats.rows, samples);

        // The row layout, as tables made before the compact one keep it.
        let rows = Target {
            connector_id: "rows".into(),
            database: "rows".into(),
            table: "samples".into(),
        };
        {
            let conn = rusqlite::Connection::open(store.database_path("rows")).expect("open");
            conn.execute_batch(
                "CREATE TABLE samples (timestamp INTEGER, name TEXT, value REAL, labels TEXT)",
            )
            .expect("a row table");
        }
        let row_samples = commit_scrapes(&store, &rows, &text).await;
        assert_eq!(row_samples, samples);
        let row_stats = store.table_stats("rows", "samples").await.expect("stats");
        assert_eq!(row_stats.series, None);
        let (compact_path, rows_path) =
            (store.database_path("compact"), store.database_path("rows"));
        drop(store);

        let compact_bytes = per_sample(sqlite_bytes(&compact_path), samples);
        let row_bytes = per_sample(sqlite_bytes(&rows_path), samples);
        eprintln!(
            "sqlite {input}: {samples} samples of {} series: compact layout {compact_bytes:.1} bytes/sample, row layout {row_bytes:.1} bytes/sample",
            stats.series.expect("a metric table has series")
        );
        assert!(
            compact_bytes <= GOAL_BYTES_PER_SAMPLE,
            "{input}: {compact_bytes:.1} bytes per sample, over {GOAL_BYTES_PER_SAMPLE}"
        );
        assert!(compact_bytes < row_bytes, "{input}: no smaller than rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bytes_per_sample_are_reported() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "DATABASE_URL is missing under CI=true"
        );
        eprintln!("skipped: DATABASE_URL is not set");
        return;
    };
    let store = store_postgres::PgStore::connect(&url, 4)
        .await
        .expect("PostgreSQL");
    let client_url = url.clone();
    for (input, text) in inputs() {
        let schema = format!("bytes_{}", uuid_like());
        let target = Target {
            connector_id: format!("{schema}-c"),
            database: schema.clone(),
            table: "samples".into(),
        };
        let samples = commit_scrapes(&store, &target, &text).await;
        let (client, connection) = tokio_postgres::connect(&client_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".samples__samples"))
            .await
            .expect("vacuum");
        let bytes: i64 = client
            .query_one(
                &format!(
                    "SELECT pg_total_relation_size('\"{schema}\".samples__samples') + pg_total_relation_size('\"{schema}\".samples__series')"
                ),
                &[],
            )
            .await
            .expect("sizes")
            .get(0);
        let bytes = u64::try_from(bytes).expect("a size");
        eprintln!(
            "postgres {input}: {samples} samples: {:.1} bytes/sample (tables and indexes)",
            per_sample(bytes, samples)
        );
        assert!(bytes > 0);
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .expect("drop");
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{nanos:x}{}", std::process::id())
}
