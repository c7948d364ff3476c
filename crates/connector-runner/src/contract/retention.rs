//! Retention, as every store keeps it: a prune removes a connector's oldest buckets,
//! rows and ledger rows together, a batch at a time, and nothing of another
//! connector writing to the same table.

use std::time::Duration;

use super::{ContractStore, Opened, metric_batch, metric_schema, read_all, unique};
use crate::Target;

const LEASE: Duration = Duration::from_secs(30);

fn target(connector: &str, database: &str) -> Target {
    Target {
        connector_id: connector.into(),
        database: database.into(),
        table: "samples".into(),
    }
}

/// Commits `rows` rows at each of `buckets` for `connector`.
async fn commit_buckets<S: ContractStore>(
    store: &S,
    connector: &str,
    database: &str,
    buckets: &[i64],
    rows: usize,
) {
    for bucket in buckets {
        let lease = store
            .claim_task(connector, *bucket, "r", LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .commit(
                &target(connector, database),
                &lease,
                metric_batch(rows, *bucket),
            )
            .await
            .unwrap();
        store.finish_task(&lease).await.unwrap();
    }
}

/// Timestamps (Unix ms) of the rows in the table, one per row.
async fn timestamps<S: ContractStore>(store: &S, database: &str) -> Vec<i64> {
    let mut ts: Vec<i64> = read_all(store, database, "samples", Some(metric_schema()))
        .await
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    ts.sort_unstable();
    ts
}

pub async fn prune_removes_old_buckets_of_one_connector_a_batch_at_a_time<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &*o.store;
    let (a, b, db) = (unique("a"), unique("b"), unique("d"));
    commit_buckets(store, &a, &db, &[1000, 2000, 3000, 4000], 3).await;
    commit_buckets(store, &b, &db, &[1000, 2000], 2).await;

    let first = store
        .prune(&target(&a, &db), 3500, 2, u64::MAX)
        .await
        .unwrap();
    assert_eq!((first.buckets, first.rows), (2, 6));
    let second = store
        .prune(&target(&a, &db), 3500, 2, u64::MAX)
        .await
        .unwrap();
    assert_eq!((second.buckets, second.rows), (1, 3));
    let none = store
        .prune(&target(&a, &db), 3500, 2, u64::MAX)
        .await
        .unwrap();
    assert_eq!((none.buckets, none.rows), (0, 0));

    // a keeps 4000; b keeps all of its own rows in the shared table.
    assert_eq!(
        timestamps(store, &db).await,
        [1000, 1000, 2000, 2000, 4000, 4000, 4000]
    );
    // A pruned bucket's ledger row is gone with its rows, so its destination reads
    // nothing of it; the newer one still reads back whole.
    let newer = store
        .prune(&target(&a, &db), 4000, 10, u64::MAX)
        .await
        .unwrap();
    assert_eq!(newer.buckets, 0, "4000 is not older than 4000");
    let b_all = store
        .prune(&target(&b, &db), i64::MAX, 10, u64::MAX)
        .await
        .unwrap();
    assert_eq!((b_all.buckets, b_all.rows), (2, 4));
    assert_eq!(timestamps(store, &db).await, [4000, 4000, 4000]);
}

pub async fn prune_keeps_a_batch_within_its_row_budget_but_takes_one_bucket<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    commit_buckets(store, &a, &db, &[1000, 2000, 3000, 4000, 5000], 3).await;
    // 7 rows allow two buckets of 3, not a third.
    let two = store
        .prune(&target(&a, &db), i64::MAX, 10, 7)
        .await
        .unwrap();
    assert_eq!((two.buckets, two.rows), (2, 6));
    // A budget smaller than the oldest bucket still takes it whole.
    let one = store
        .prune(&target(&a, &db), i64::MAX, 10, 0)
        .await
        .unwrap();
    assert_eq!((one.buckets, one.rows), (1, 3));
    assert_eq!(
        timestamps(store, &db).await,
        [4000, 4000, 4000, 5000, 5000, 5000]
    );
}
