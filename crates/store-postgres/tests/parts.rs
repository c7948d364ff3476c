//! Commits in parts past the block of positions a bucket reserves at its first part
//! (`PgStore::with_parts_block`): the copy is given up and the tick commits whole,
//! still one range of positions that no other bucket's rows fall into.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::sync::Arc;
use std::time::Duration;

use connector_core::Batch;
use connector_runner::{DeliveryStore, PartCommit, Sink, StateStore, Target};
use store_postgres::PgStore;

fn batch(series: std::ops::Range<usize>, ts: i64) -> Batch {
    let mut b = Batch::new(metric_rows::schema());
    for i in series {
        b.row()
            .timestamp(ts)
            .string("up")
            .real(i as f64)
            .map([("i", i.to_string())])
            .finish()
            .unwrap();
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_larger_than_its_block_commits_whole_in_one_range() {
    let Some(base) = support::base_url() else {
        return;
    };
    let database = support::TestDatabase::create(&base).await;
    let store = Arc::new(
        PgStore::connect(&database.url, 4)
            .await
            .unwrap()
            .with_parts_block(1500),
    );
    let target = Target {
        connector_id: "big".into(),
        database: "m".into(),
        table: "samples".into(),
    };
    let lease_of = |bucket| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim_task("big", bucket, "r", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap()
        }
    };
    // The series become known, so the ticks below copy their parts.
    let lease = lease_of(1).await;
    store
        .commit(&target, &lease, batch(0..3000, 1))
        .await
        .unwrap();

    // Within the block, then past it at the second part, then within it again.
    for (bucket, rows) in [(2, 1100), (3, 2100), (4, 1200)] {
        let lease = lease_of(bucket).await;
        let parts = PartCommit::start(
            Arc::clone(&store) as Arc<dyn Sink>,
            target.clone(),
            lease.clone(),
        );
        let take = parts.taker();
        take(batch(0..1024, bucket));
        if rows > 2048 {
            take(batch(1024..2048, bucket));
        }
        let start = if rows > 2048 { 2048 } else { 1024 };
        let report = parts
            .finish(batch(start..rows, bucket), lease)
            .await
            .unwrap();
        assert_eq!(report.rows, rows as u64);
    }

    let mut ranges = Vec::new();
    for (bucket, rows) in [(1, 3000), (2, 1100), (3, 2100), (4, 1200)] {
        let pending = store
            .next_bucket("d", &target, bucket)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((pending.scheduled_for_ms, pending.rows), (bucket, rows));
        assert_eq!(pending.last_row - pending.first_row + 1, rows as i64);
        let read = store
            .read_bucket(
                &target,
                metric_rows::schema(),
                &pending,
                pending.first_row - 1,
                10_000,
            )
            .await
            .unwrap();
        let values: Vec<_> = read.rows.rows().map(|r| r.at(2)).collect();
        let wanted: Vec<_> = (0..rows)
            .map(|i| connector_core::Value::Real(i as f64))
            .collect();
        let differs = values
            .iter()
            .zip(&wanted)
            .position(|(got, want)| got != want);
        assert_eq!(
            (values.len(), differs),
            (wanted.len(), None),
            "bucket {bucket}: (rows read, first row out of place)"
        );
        ranges.push((pending.first_row, pending.last_row));
    }
    ranges.sort_unstable();
    assert!(
        ranges.windows(2).all(|w| w[0].1 < w[1].0),
        "bucket ranges overlap: {ranges:?}"
    );
}
