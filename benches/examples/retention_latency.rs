//! Commit latency on a large SQLite metric table, with and without retention's
//! pruning running against the same file, in one run (issue 15: "p99 commit latency
//! with the pruner running on a table of 50 M rows").
//!
//! ```text
//! cargo run --release -p benches --example retention_latency -- [samples] [commits]
//! ```
//!
//! The table is filled with `samples` (default 50,000,000) metric rows in buckets of
//! node_exporter's output (about 3,000 samples, as one scrape commits), through the
//! store's real `commit`. Then `commits` (default 300) more buckets commit one after
//! the other, each timed from claim to committed: first alone, then while a task
//! prunes the oldest half of the table the way the runner's pruner does (batches of
//! at most `PRUNE_BATCH_BUCKETS` buckets and `PRUNE_BATCH_ROWS` rows, `PRUNE_PAUSE`
//! between them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connector_core::Batch;
use connector_runner::{
    PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS, PRUNE_PAUSE, Sink, StateStore, Target,
};
use store_sqlite::SqliteStore;

const BUCKET_MS: i64 = 15_000;

async fn commit(store: &SqliteStore, target: &Target, one: &Batch, bucket: i64) -> Duration {
    let batch = benches::restamped(one, bucket);
    let started = Instant::now();
    let lease = store
        .claim_task(&target.connector_id, bucket, "r", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a free bucket");
    store.commit(target, &lease, batch).await.expect("commit");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    println!(
        "{what}: {} commits, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let samples: usize = args
        .next()
        .map_or(50_000_000, |a| a.parse().expect("samples"));
    let commits: usize = args.next().map_or(300, |a| a.parse().expect("commits"));
    let one = benches::metric_rows(
        &benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
        1,
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("the store"));
    let target = Target {
        connector_id: "node".into(),
        database: "metrics".into(),
        table: "samples".into(),
    };

    let buckets = samples.div_ceil(one.len());
    let filling = Instant::now();
    let mut bucket = 0;
    for i in 0..buckets {
        bucket = i64::try_from(i).expect("a bucket") * BUCKET_MS;
        commit(&store, &target, &one, bucket).await;
        if i % 2000 == 0 {
            eprintln!("filled {i}/{buckets} buckets ({:.0?})", filling.elapsed());
        }
    }
    let stats = store
        .table_stats("metrics", "samples")
        .await
        .expect("stats");
    println!(
        "filled {} samples in {buckets} buckets of {} in {:.1?}",
        stats.rows,
        one.len(),
        filling.elapsed()
    );

    let mut alone = Vec::with_capacity(commits);
    for _ in 0..commits {
        bucket += BUCKET_MS;
        alone.push(commit(&store, &target, &one, bucket).await);
    }
    report("without the pruner", alone);

    // The pruner's loop, on the oldest half of the table.
    let cutoff = i64::try_from(buckets / 2).expect("a bucket") * BUCKET_MS;
    let stop = Arc::new(AtomicBool::new(false));
    let pruner = {
        let (store, target, stop) = (Arc::clone(&store), target.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut batches, mut rows, mut longest) = (0u64, 0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let pruned = store
                    .prune(&target, cutoff, PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS)
                    .await
                    .expect("prune");
                longest = longest.max(started.elapsed());
                if pruned.buckets == 0 {
                    break;
                }
                batches += 1;
                rows += pruned.rows;
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
            (batches, rows, longest)
        })
    };
    let mut with_pruner = Vec::with_capacity(commits);
    for _ in 0..commits {
        bucket += BUCKET_MS;
        with_pruner.push(commit(&store, &target, &one, bucket).await);
    }
    stop.store(true, Ordering::Relaxed);
    let (batches, rows, longest) = pruner.await.expect("the pruner");
    report("with the pruner", with_pruner);
    println!(
        "the pruner removed {rows} samples in {batches} batches meanwhile; its longest batch took {:.1} ms",
        longest.as_secs_f64() * 1e3
    );
}
