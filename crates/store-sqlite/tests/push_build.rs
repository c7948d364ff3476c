//! SQLite builds a push bucket without its write lock held; a request staged for the
//! bucket during the build must still land in that commit, once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use connector_core::PushConnector;
use connector_runner::contract::Lines;
use connector_runner::{BuildBucket, PushStore, RowQuery, Sink, StageItem, StateStore, Target};
use store_sqlite::SqliteStore;

fn item(lines: i64) -> StageItem {
    StageItem {
        connector_id: "c".into(),
        bucket_ms: 1000,
        open_bucket_ms: 1000,
        body: lines.to_le_bytes().to_vec(),
        key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_staged_during_the_build_is_in_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store.stage("db", vec![item(2)]).await.unwrap();
    let builds = Arc::new(AtomicUsize::new(0));
    let build: BuildBucket = {
        let (store, builds) = (Arc::clone(&store), Arc::clone(&builds));
        let handle = tokio::runtime::Handle::current();
        Arc::new(move |staged, state| {
            // The first build stages one more request for the bucket, as a client
            // whose request arrived just before the close would.
            if builds.fetch_add(1, Ordering::SeqCst) == 0 {
                handle.block_on(store.stage("db", vec![item(3)])).unwrap();
            }
            Lines.commit(&(), 1000, staged, state)
        })
    };
    let target = Target {
        connector_id: "c".into(),
        database: "db".into(),
        table: "lines".into(),
    };
    let lease = store
        .claim_task("c", 1000, "r", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    store
        .commit_staged(&target, &lease, Lines.schema(), build)
        .await
        .unwrap();
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "built again with the new request"
    );
    let rows = store
        .read_rows(&RowQuery {
            database: "db".into(),
            table: "lines".into(),
            schema: Some(Lines.schema()),
            since_ms: None,
            limit: 10,
        })
        .await
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], serde_json::json!(5), "both requests, once");
    assert!(store.staged("db").await.unwrap().is_empty());
}
