//! The SQLite file stops growing once retention removes as much as ticks add (issue
//! 15: "pruned space is reused ... the file stops growing at steady state").
//!
//! ```text
//! cargo run --release -p benches --example retention_steady_state -- [buckets] [retention_buckets]
//! ```
//!
//! One connector commits node_exporter's output (about 3,000 samples a scrape) into a
//! metric table, a bucket every 15 s of simulated time, through the store's real
//! `commit`; after each commit, what is older than the retention goes through the
//! store's real `Sink::prune` with the pruner's batch bounds, as the runner's pruner
//! does every `prune_interval`. Every `retention_buckets` commits it prints the file
//! on disk (database and WAL, after a checkpoint), its pages in use and the samples
//! kept. Defaults: 4,800 buckets (20 hours) under a one-hour retention (240 buckets),
//! so twenty retention windows. It fails if the database file grew more than 1 %
//! over the run's second half. (The WAL is bounded apart: the
//! store checkpoints it after commits.)

use std::path::Path;
use std::time::{Duration, Instant};

use connector_runner::{PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS, Sink, StateStore, Target};
use store_sqlite::SqliteStore;

const BUCKET_MS: i64 = 15_000;

/// Bytes on disk of the database file and of its WAL (after a checkpoint that
/// truncates it unless the store's own checkpointer is busy with it), and the
/// database's pages in use (all pages less the free list).
fn on_disk(dir: &Path) -> (u64, u64, i64) {
    let path = dir.join("metrics.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("the database");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("a checkpoint");
    let used: i64 = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)",
            [],
            |r| r.get(0),
        )
        .expect("page counts");
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    (size("metrics.sqlite"), size("metrics.sqlite-wal"), used)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let buckets: i64 = args.next().map_or(4_800, |a| a.parse().expect("buckets"));
    let window: i64 = args
        .next()
        .map_or(240, |a| a.parse().expect("retention_buckets"));
    let one = benches::metric_rows(
        &benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
        1,
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(dir.path()).expect("the store");
    let target = Target {
        connector_id: "node".into(),
        database: "metrics".into(),
        table: "samples".into(),
    };
    println!(
        "{buckets} buckets of {} samples, retention {window} buckets ({} min of 15 s buckets)",
        one.len(),
        window / 4
    );
    println!("after bucket | database bytes | WAL bytes | pages in use | samples kept | elapsed");
    let started = Instant::now();
    let mut sizes = Vec::new();
    for i in 1..=buckets {
        let bucket = i * BUCKET_MS;
        let lease = store
            .claim_task(&target.connector_id, bucket, "r", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("a free bucket");
        store
            .commit(&target, &lease, benches::restamped(&one, bucket))
            .await
            .expect("commit");
        let before = bucket - window * BUCKET_MS;
        while store
            .prune(&target, before, PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS)
            .await
            .expect("prune")
            .buckets
            > 0
        {}
        if i % window == 0 {
            let (bytes, wal, pages) = on_disk(dir.path());
            let kept = store
                .table_stats("metrics", "samples")
                .await
                .expect("stats")
                .rows;
            println!(
                "{i:>12} | {bytes:>14} | {wal:>9} | {pages:>12} | {kept:>12} | {:.1?}",
                started.elapsed()
            );
            sizes.push(bytes);
        }
    }
    // The first windows fill the B-trees' pages to their steady fill factor (pages
    // half emptied by pruning take new rows); the second half of the run shows
    // whether the file still grows.
    let (middle, last) = (sizes[sizes.len() / 2 - 1], sizes[sizes.len() - 1]);
    #[allow(clippy::cast_precision_loss)]
    let growth = (last as f64 / middle as f64 - 1.0) * 100.0;
    println!(
        "steady state: over the run's second half the database file changed {growth:+.2} % ({middle} -> {last} bytes)"
    );
    assert!(
        growth <= 1.0,
        "the file kept growing: {middle} bytes halfway, {last} at the end"
    );
}
