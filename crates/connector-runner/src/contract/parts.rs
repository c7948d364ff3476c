//! Commits in parts ([`PartCommit`]), as every store keeps them: rows handed over
//! during a tick and the batch it returns land whole, once, in order, in one
//! transaction with the ledger row; a tick that ends otherwise, a fenced lease or one
//! that ended during the tick leaves nothing.

use std::sync::Arc;
use std::time::Duration;

use super::layout::{LEASE, batch, claim, expected, rows, target};
use super::{ContractStore, Opened, metric_schema, unique};
use crate::{PartCommit, Sink, StoreErrorKind, TableStats};

fn sink<S: ContractStore>(o: &Opened<S>) -> Arc<dyn Sink> {
    Arc::clone(&o.store) as Arc<dyn Sink>
}

pub async fn a_commit_in_parts_lands_whole_once_or_not_at_all<S: ContractStore>(o: Opened<S>) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    let t = target(&a, &db);
    let lease = claim(store, &a, 1000).await;

    // A tick that hands rows over (new series among them) and then fails: nothing.
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let take = parts.taker();
    take(batch(0..700, 1000));
    take(batch(700..1400, 1000));
    drop(parts);

    // The same bucket then commits in parts: every row once, in the order handed over.
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let take = parts.taker();
    take(batch(0..700, 1000));
    take(batch(700..1400, 1000));
    let report = parts
        .finish(batch(1400..1500, 1000), lease.clone())
        .await
        .unwrap();
    assert_eq!(report.rows, 1500);
    store.finish_task(&lease).await.unwrap();
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 1500,
            series: Some(1500)
        }
    );
    assert_eq!(rows(store, &db).await, expected(0..1500, 1000));
    let pending = store.next_bucket("dest", &t, 0).await.unwrap().unwrap();
    assert_eq!((pending.scheduled_for_ms, pending.rows), (1000, 1500));
    let tail = store
        .read_bucket(&t, metric_schema(), &pending, pending.last_row - 1, 10)
        .await
        .unwrap();
    assert_eq!(
        tail.rows.rows().next().unwrap().at(2),
        connector_core::Value::Real(1499.5)
    );

    // A tick that hands nothing over commits its batch in one piece.
    let lease = claim(store, &a, 2000).await;
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    parts
        .finish(batch(0..3, 2000), lease.clone())
        .await
        .unwrap();
    let again = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let err = again
        .finish(batch(0..3, 2000), lease.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::AlreadyCommitted, "{err}");
    store.finish_task(&lease).await.unwrap();
    assert_eq!(store.table_stats(&db, "metrics").await.unwrap().rows, 1503);

    // A tick longer than its first lease: the runner renewed it, and the commit
    // holds to the lease as it is at the end, not as it was at the start.
    let lease = claim(store, &a, 3000).await;
    let mut first = lease.clone();
    first.expires_at_ms = 0;
    let parts = PartCommit::start(sink(&o), t.clone(), first.clone());
    parts.taker()(batch(0..1200, 3000));
    parts.finish(batch(1200..1210, 3000), lease).await.unwrap();
    // The same for a tick that hands nothing over.
    let lease = claim(store, &a, 4000).await;
    let mut first = lease.clone();
    first.expires_at_ms = 0;
    let parts = PartCommit::start(sink(&o), t.clone(), first);
    parts.finish(batch(0..2, 4000), lease).await.unwrap();
    assert_eq!(store.table_stats(&db, "metrics").await.unwrap().rows, 2715);
}

pub async fn a_commit_in_parts_under_a_lost_lease_writes_nothing<S: ContractStore>(o: Opened<S>) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    let t = target(&a, &db);

    // Another runner took the bucket over before the first part.
    let stale = store
        .claim_task(&a, 1000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_task(&a, 1000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let parts = PartCommit::start(sink(&o), t.clone(), stale.clone());
    parts.taker()(batch(0..1200, 1000));
    let err = parts
        .finish(batch(1200..1300, 1000), stale.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");

    // The lease held at the first part but its end came before the last: the end is
    // checked again with the lease as the runner knows it then.
    let parts = PartCommit::start(sink(&o), t.clone(), fresh.clone());
    parts.taker()(batch(0..1200, 1000));
    let mut ended = fresh.clone();
    ended.expires_at_ms = 0;
    let err = parts
        .finish(batch(1200..1300, 1000), ended)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
    assert_eq!(store.table_stats(&db, "metrics").await.unwrap().rows, 0);

    // The current lease still commits the bucket, new series and all.
    let parts = PartCommit::start(sink(&o), t.clone(), fresh.clone());
    parts.taker()(batch(0..1200, 1000));
    parts
        .finish(batch(1200..1300, 1000), fresh.clone())
        .await
        .unwrap();
    assert_eq!(rows(store, &db).await, expected(0..1300, 1000));
}

/// The bucket's range of positions, as destinations read it, holds exactly its rows.
async fn assert_bucket_range<S: ContractStore>(
    store: &S,
    t: &crate::Target,
    bucket: i64,
    rows: u64,
) {
    let pending = store
        .next_bucket(&unique("dest"), t, bucket)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((pending.scheduled_for_ms, pending.rows), (bucket, rows));
    assert_eq!(pending.last_row - pending.first_row + 1, rows as i64);
    let read = store
        .read_bucket(
            t,
            metric_schema(),
            &pending,
            pending.first_row - 1,
            1_000_000,
        )
        .await
        .unwrap();
    assert_eq!(read.rows.len() as u64, rows);
}

/// Series committed before let a store write parts as they come (PostgreSQL copies
/// them then); a part with new series in the middle or at the end, an abort in the
/// middle, a fenced lease at the end and a second commit of the bucket keep the
/// contract all the same.
pub async fn a_commit_in_parts_of_series_seen_before_lands_whole_once_or_not_at_all<
    S: ContractStore,
>(
    o: Opened<S>,
) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    let t = target(&a, &db);
    let lease = claim(store, &a, 1000).await;
    store
        .commit(&t, &lease, batch(0..3000, 1000))
        .await
        .unwrap();
    store.finish_task(&lease).await.unwrap();

    // Known series, aborted after two parts: nothing.
    let lease = claim(store, &a, 2000).await;
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let take = parts.taker();
    take(batch(0..1024, 2000));
    take(batch(1024..2048, 2000));
    drop(parts);
    assert_eq!(store.table_stats(&db, "metrics").await.unwrap().rows, 3000);

    // Known series, committed: whole, in order, one range of positions.
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let take = parts.taker();
    take(batch(0..1024, 2000));
    take(batch(1024..2048, 2000));
    let report = parts
        .finish(batch(2048..2100, 2000), lease.clone())
        .await
        .unwrap();
    assert_eq!(report.rows, 2100);
    store.finish_task(&lease).await.unwrap();
    assert_bucket_range(store, &t, 2000, 2100).await;

    // The same bucket again: refused, nothing added.
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    parts.taker()(batch(0..1024, 2000));
    let err = parts
        .finish(batch(1024..1030, 2000), lease.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::AlreadyCommitted, "{err}");

    // New series in a middle part, then in the last one.
    let lease = claim(store, &a, 3000).await;
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    let take = parts.taker();
    take(batch(0..1024, 3000));
    take(batch(3000..3100, 3000));
    take(batch(1024..2048, 3000));
    parts
        .finish(batch(3100..3110, 3000), lease.clone())
        .await
        .unwrap();
    store.finish_task(&lease).await.unwrap();
    assert_bucket_range(store, &t, 3000, 2158).await;

    // Known series under a lease whose end came during the tick: fenced, nothing.
    let lease = claim(store, &a, 4000).await;
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    parts.taker()(batch(0..1024, 4000));
    let mut ended = lease.clone();
    ended.expires_at_ms = 0;
    let err = parts
        .finish(batch(1024..1100, 4000), ended)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 3000 + 2100 + 2158,
            series: Some(3110)
        }
    );
    // The current lease commits it after all.
    let parts = PartCommit::start(sink(&o), t.clone(), lease.clone());
    parts.taker()(batch(0..1024, 4000));
    parts
        .finish(batch(1024..1100, 4000), lease.clone())
        .await
        .unwrap();
    assert_bucket_range(store, &t, 4000, 1100).await;
    let newest: Vec<_> = rows(store, &db).await.into_iter().take(1100).collect();
    assert_eq!(newest, expected(0..1100, 4000));
}
