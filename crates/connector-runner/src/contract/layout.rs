//! The compact metric layout, as every store keeps it: a table of metric rows stores
//! each series once, reads back exactly the rows that went in (through plain reads
//! and destinations' bucket reads), shares series between connectors writing to
//! one table, keeps them through retention, and is not corrupted by a commit that
//! failed after adding series.

use std::time::Duration;

use connector_core::{Batch, ColumnType, Schema};
use serde_json::{Value, json};

use super::{ContractStore, Opened, metric_schema, read_all, unique};
use crate::{Lease, StoreErrorKind, TableStats, Target};

pub(super) const LEASE: Duration = Duration::from_secs(30);

pub(super) fn target(connector: &str, database: &str) -> Target {
    Target {
        connector_id: connector.into(),
        database: database.into(),
        table: "metrics".into(),
    }
}

/// The labels of series `i`: awkward characters in values, an empty map for 0.
fn labels(i: usize) -> Vec<(String, String)> {
    if i == 0 {
        return Vec::new();
    }
    vec![
        ("instance".into(), format!("host-{i}:9100")),
        ("quote".into(), "say \"hi\"\\n\n".into()),
        ("unicode".into(), format!("zürich ☃ {i}")),
    ]
}

/// `series` rows at `ts`, one per series; series 3's value is null (NaN).
pub(super) fn batch(series: std::ops::Range<usize>, ts: i64) -> Batch {
    let mut b = Batch::new(metric_schema());
    for i in series {
        let row = b
            .row()
            .timestamp(ts)
            .string(if i % 2 == 0 { "up" } else { "x_total" });
        let row = if i == 3 {
            row.null()
        } else {
            row.real(i as f64 + 0.5)
        };
        row.map(labels(i)).finish().unwrap();
    }
    b
}

/// The rows `batch(series, ts)` reads back as, newest first as `read_rows` gives.
pub(super) fn expected(series: std::ops::Range<usize>, ts: i64) -> Vec<Vec<Value>> {
    series
        .rev()
        .map(|i| {
            let labels: serde_json::Map<String, Value> =
                labels(i).into_iter().map(|(k, v)| (k, v.into())).collect();
            vec![
                json!(ts),
                json!(if i % 2 == 0 { "up" } else { "x_total" }),
                if i == 3 {
                    Value::Null
                } else {
                    json!(i as f64 + 0.5)
                },
                Value::Object(labels),
            ]
        })
        .collect()
}

/// The lease on (`connector`, `bucket`) for runner `r`; the bucket must be free.
pub(super) async fn claim<S: ContractStore>(store: &S, connector: &str, bucket: i64) -> Lease {
    store
        .claim_task(connector, bucket, "r", LEASE)
        .await
        .unwrap()
        .unwrap()
}

async fn commit<S: ContractStore>(store: &S, connector: &str, database: &str, b: Batch) {
    let ts = b.rows().next().map_or(0, |r| match r.at(0) {
        connector_core::Value::Timestamp(ts) => ts,
        _ => 0,
    });
    let lease = claim(store, connector, ts).await;
    store
        .commit(&target(connector, database), &lease, b)
        .await
        .unwrap();
    store.finish_task(&lease).await.unwrap();
}

/// Every row, newest bucket first and in commit order within it reversed, with
/// labels as JSON objects whatever the store keeps them as.
pub(super) async fn rows<S: ContractStore>(store: &S, database: &str) -> Vec<Vec<Value>> {
    read_all(store, database, "metrics", Some(metric_schema()))
        .await
        .into_iter()
        .map(|mut row| {
            if let Value::String(text) = &row[3] {
                row[3] = serde_json::from_str(text).unwrap();
            }
            row
        })
        .collect()
}

pub async fn metric_rows_store_each_series_once_and_read_back_unchanged<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &*o.store;
    let (a, b, db) = (unique("a"), unique("b"), unique("d"));
    for ts in [1000, 2000, 3000] {
        commit(store, &a, &db, batch(0..20, ts)).await;
    }
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 60,
            series: Some(20)
        }
    );
    let mut want = expected(0..20, 3000);
    want.extend(expected(0..20, 2000));
    want.extend(expected(0..20, 1000));
    assert_eq!(rows(store, &db).await, want);

    // A destination reads a bucket back in commit order, every value as it went in.
    let source = target(&a, &db);
    let pending = store
        .next_bucket("dest", &source, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((pending.scheduled_for_ms, pending.rows), (1000, 20));
    let chunk = store
        .read_bucket(&source, metric_schema(), &pending, pending.first_row - 1, 7)
        .await
        .unwrap();
    assert_eq!(chunk.rows.len(), 7);
    let first = chunk.rows.rows().next().unwrap();
    assert_eq!(first.at(1), connector_core::Value::String("up"));
    assert_eq!(first.at(3), connector_core::Value::Dynamic("{}"));
    let fourth = chunk.rows.rows().nth(3).unwrap();
    assert_eq!(fourth.at(2), connector_core::Value::Null);
    let labels: Value = match fourth.at(3) {
        connector_core::Value::Dynamic(text) => serde_json::from_str(text).unwrap(),
        other => panic!("labels read back as {other:?}"),
    };
    assert_eq!(labels["quote"], "say \"hi\"\\n\n");
    assert_eq!(labels["unicode"], "zürich ☃ 3");

    // Another connector writing the same series to the same table shares them.
    commit(store, &b, &db, batch(10..25, 4000)).await;
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 75,
            series: Some(25)
        }
    );

    // Retention removes samples; series stay, for the samples still to come.
    let pruned = store.prune(&source, 2500, 10, u64::MAX).await.unwrap();
    assert_eq!((pruned.buckets, pruned.rows), (2, 40));
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 35,
            series: Some(25)
        }
    );
    let mut want = expected(10..25, 4000);
    want.extend(expected(0..20, 3000));
    assert_eq!(rows(store, &db).await, want);

    // Rows of another shape keep the row layout.
    let other = std::sync::Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("note", ColumnType::String),
    ]));
    let mut plain = Batch::new(other);
    plain.row().timestamp(1000).string("n").finish().unwrap();
    let c = unique("c");
    let lease = claim(store, &c, 1000).await;
    let mut t = target(&c, &db);
    t.table = "notes".into();
    store.commit(&t, &lease, plain).await.unwrap();
    assert_eq!(
        store.table_stats(&db, "notes").await.unwrap(),
        TableStats {
            rows: 1,
            series: None
        }
    );
    // A table name of the longest length accepted still gets its own series and
    // samples tables (PostgreSQL would truncate `<table>__samples`).
    let long = "m".repeat(crate::MAX_IDENTIFIER_LEN);
    let d = unique("d");
    let lease = claim(store, &d, 1000).await;
    let mut t = target(&d, &db);
    t.table.clone_from(&long);
    store.commit(&t, &lease, batch(0..4, 1000)).await.unwrap();
    assert_eq!(
        store.table_stats(&db, &long).await.unwrap(),
        TableStats {
            rows: 4,
            series: Some(4)
        }
    );
    assert_eq!(
        read_all(store, &db, &long, Some(metric_schema()))
            .await
            .len(),
        4
    );

    let missing = store.table_stats(&db, "nothing").await.unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::NotFound);
}

pub async fn a_failed_commit_with_new_series_leaves_later_commits_right<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    commit(store, &a, &db, batch(0..5, 1000)).await;

    // A stale runner's commit carries series nobody has stored yet; it is fenced.
    let stale = store
        .claim_task(&a, 2000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_task(&a, 2000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&target(&a, &db), &stale, batch(0..12, 2000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);

    // A batch that fails part way, after new series were seen: a row without labels.
    let mut broken = batch(5..12, 2000);
    broken
        .row()
        .timestamp(2000)
        .string("up")
        .real(1.0)
        .null()
        .finish()
        .unwrap();
    let err = store
        .commit(&target(&a, &db), &fresh, broken)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(err.to_string().contains("row 7"), "{err}");

    // The fresh runner commits other new series, then the failed ones come back.
    store
        .commit(&target(&a, &db), &fresh, batch(12..15, 2000))
        .await
        .unwrap();
    store.finish_task(&fresh).await.unwrap();
    commit(store, &a, &db, batch(0..15, 3000)).await;

    let mut want = expected(0..15, 3000);
    want.extend(expected(12..15, 2000));
    want.extend(expected(0..5, 1000));
    assert_eq!(rows(store, &db).await, want);
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: 23,
            series: Some(15)
        }
    );
}

/// Rows in [`a_large_metric_batch_commits_whole_once_or_not_at_all`]: more than any
/// store's bulk path takes (PostgreSQL copies batches from 1,000 rows on).
const LARGE: usize = 2_500;

pub async fn a_large_metric_batch_commits_whole_once_or_not_at_all<S: ContractStore>(o: Opened<S>) {
    let store = &*o.store;
    let (a, db) = (unique("a"), unique("d"));
    let t = target(&a, &db);

    // A lease whose end has come commits nothing.
    let ended = store
        .claim_task(&a, 1000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = store
        .commit(&t, &ended, batch(0..LARGE, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");

    // Nor does one whose bucket another runner has taken since.
    let fresh = store
        .claim_task(&a, 1000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&t, &ended, batch(0..LARGE, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
    assert_eq!(store.table_stats(&db, "metrics").await.unwrap().rows, 0);

    // The current lease commits every row, once.
    store
        .commit(&t, &fresh, batch(0..LARGE, 1000))
        .await
        .unwrap();
    let err = store
        .commit(&t, &fresh, batch(0..LARGE, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::AlreadyCommitted, "{err}");
    store.finish_task(&fresh).await.unwrap();
    assert_eq!(
        store.table_stats(&db, "metrics").await.unwrap(),
        TableStats {
            rows: LARGE as u64,
            series: Some(LARGE as u64)
        }
    );
    assert_eq!(rows(store, &db).await, expected(0..LARGE, 1000));

    // A destination reads the bucket back whole, in commit order, to its last row.
    let pending = store.next_bucket("dest", &t, 0).await.unwrap().unwrap();
    assert_eq!(
        (pending.scheduled_for_ms, pending.rows),
        (1000, LARGE as u64)
    );
    let tail = store
        .read_bucket(&t, metric_schema(), &pending, pending.last_row - 2, 10)
        .await
        .unwrap();
    assert_eq!(tail.rows.len(), 2);
    let last = tail.rows.rows().last().unwrap();
    assert_eq!(
        last.at(2),
        connector_core::Value::Real((LARGE - 1) as f64 + 0.5)
    );
}
