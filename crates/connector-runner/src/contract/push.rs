//! The push half of the contract: staged requests commit once with their bucket's
//! ledger row and leave staging in the same transaction; a request staged after its
//! bucket committed goes to the open bucket; a failed build or a fenced lease keeps
//! everything staged; and the runner commits closed buckets of a push connector
//! exactly once from concurrent requests.

use std::sync::Arc;
use std::time::Duration;

use connector_core::{
    Accepted, Batch, ColumnType, Committed, ConnectorError, IngestRequest, IngestResponse,
    PushConnector, Registry, Schema, config_from_json,
};

use super::{ContractStore, Opened, read_all, unique};
use crate::{
    BuildBucket, CommitReport, ConnectorSpec, IngestLimits, Origin, Runner, RunnerConfig,
    StageItem, StateStore, StoreErrorKind, Target,
};

const LEASE: Duration = Duration::from_secs(10);

/// Counts the lines pushed to it: each request stages its line count, each bucket
/// commits one row with the bucket's lines, and the state keeps the running total.
#[derive(Debug, Clone, Copy)]
pub struct Lines;

fn count(bytes: &[u8]) -> Result<i64, ConnectorError> {
    bytes
        .try_into()
        .map(i64::from_le_bytes)
        .map_err(|_| ConnectorError::permanent(format!("staged data of {} bytes", bytes.len())))
}

fn lines_schema() -> Arc<Schema> {
    Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("lines", ColumnType::Integer),
        ("total", ColumnType::Integer),
    ]))
}

impl PushConnector for Lines {
    const TYPE_ID: &'static str = "lines";
    const PATHS: &'static [&'static str] = &["lines"];
    type Config = ();

    fn schema(&self) -> Arc<Schema> {
        lines_schema()
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
        config_from_json(raw)
    }

    fn accept(&self, _: &(), request: &IngestRequest) -> Result<Accepted, IngestResponse> {
        let text = std::str::from_utf8(&request.body)
            .map_err(|e| IngestResponse::text(400, format!("not UTF-8: {e}")))?;
        let lines = text.lines().count() as i64;
        Ok(Accepted {
            staged: lines.to_le_bytes().to_vec(),
            accepted: lines.unsigned_abs(),
            refused: 0,
            response: IngestResponse::text(200, "ok"),
            // A line of its own in the body (`#id`) makes the request idempotent.
            idempotency_key: text.lines().find_map(|l| l.strip_prefix('#')).map(|id| {
                let mut key = [0u8; 16];
                for (k, b) in key.iter_mut().zip(id.bytes()) {
                    *k = b;
                }
                key
            }),
        })
    }

    fn commit(
        &self,
        _: &(),
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError> {
        let mut lines = 0;
        for s in staged {
            lines += count(s)?;
        }
        let total = state.map(count).transpose()?.unwrap_or(0) + lines;
        let mut batch = Batch::new(self.schema());
        batch
            .row()
            .timestamp(bucket_ms)
            .integer(lines)
            .integer(total)
            .finish()?;
        Ok(Committed {
            batch,
            state: total.to_le_bytes().to_vec(),
            series: 1,
            overflowed: 0,
        })
    }

    fn serve(&self, _: &(), state: Option<&[u8]>, _: &IngestRequest) -> IngestResponse {
        let total = state.map(count).transpose().ok().flatten().unwrap_or(0);
        IngestResponse::text(200, format!("lines_total {total}\n"))
    }
}

fn target(connector_id: &str, database: &str) -> Target {
    Target {
        connector_id: connector_id.into(),
        database: database.into(),
        table: "lines".into(),
    }
}

fn item(connector_id: &str, bucket_ms: i64, open_bucket_ms: i64, lines: i64) -> StageItem {
    StageItem {
        connector_id: connector_id.into(),
        bucket_ms,
        open_bucket_ms,
        body: lines.to_le_bytes().to_vec(),
        key: None,
    }
}

fn build(bucket_ms: i64) -> BuildBucket {
    Arc::new(move |staged, state| Lines.commit(&(), bucket_ms, staged, state))
}

/// Claims (connector of `t`, `bucket`) and commits what is staged for it.
async fn claim_and_commit<S: ContractStore>(store: &S, t: &Target, bucket: i64) -> CommitReport {
    let lease = store
        .claim_task(&t.connector_id, bucket, "r", LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .commit_staged(t, &lease, lines_schema(), build(bucket))
        .await
        .unwrap()
}

/// (lines, total) of every committed row, oldest first; none before the first
/// commit has created the table.
async fn committed_rows<S: ContractStore>(store: &S, database: &str) -> Vec<(i64, i64)> {
    let read = store
        .read_rows(&crate::RowQuery {
            database: database.into(),
            table: "lines".into(),
            schema: Some(lines_schema()),
            since_ms: None,
            limit: 1_000_000,
        })
        .await;
    let rows = match read {
        Ok(read) => read.rows,
        Err(e) if e.kind() == StoreErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{e:#}"),
    };
    rows.into_iter()
        .rev()
        .map(|r| (r[1].as_i64().unwrap(), r[2].as_i64().unwrap()))
        .collect()
}

/// Staged requests are listed by bucket, commit once with their bucket (the rows,
/// the state and the ledger row together) and are gone from staging after it.
pub async fn staged_requests_commit_once_with_their_bucket<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (database, id) = (unique("push"), unique("c"));
    let buckets = store
        .stage(
            &database,
            vec![
                item(&id, 1000, 5000, 2),
                item(&id, 1000, 5000, 3),
                item(&id, 2000, 5000, 4),
            ],
        )
        .await
        .unwrap();
    assert_eq!(buckets, [Some(1000), Some(1000), Some(2000)]);
    let staged = store.staged(&database).await.unwrap();
    assert_eq!(
        staged
            .iter()
            .map(|b| (b.connector_id.as_str(), b.bucket_ms, b.requests, b.bytes))
            .collect::<Vec<_>>(),
        [(id.as_str(), 1000, 2, 16), (id.as_str(), 2000, 1, 8)]
    );
    let t = target(&id, &database);
    let report = claim_and_commit(&**store, &t, 1000).await;
    assert_eq!(report.rows, 1);
    assert_eq!(committed_rows(&**store, &database).await, [(5, 5)]);
    assert_eq!(
        store.push_state(&t).await.unwrap(),
        Some(5i64.to_le_bytes().to_vec())
    );
    let left: Vec<i64> = store
        .staged(&database)
        .await
        .unwrap()
        .iter()
        .map(|b| b.bucket_ms)
        .collect();
    assert_eq!(
        left,
        [2000],
        "the committed bucket left staging with its commit"
    );

    let again = store.claim_task(&id, 1000, "r2", LEASE).await.unwrap();
    if let Some(again) = again {
        let err = store
            .commit_staged(&t, &again, lines_schema(), build(1000))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::AlreadyCommitted);
    }
    claim_and_commit(&**store, &t, 2000).await;
    assert_eq!(committed_rows(&**store, &database).await, [(5, 5), (4, 9)]);
    assert!(store.staged(&database).await.unwrap().is_empty());
}

/// A request staged after its bucket committed is counted in the open bucket instead,
/// and a build error or a fenced lease leaves every staged request in place.
pub async fn late_failed_and_fenced_commits_lose_nothing<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (database, id) = (unique("push"), unique("c"));
    let t = target(&id, &database);
    store
        .stage(&database, vec![item(&id, 1000, 1000, 1)])
        .await
        .unwrap();
    claim_and_commit(&**store, &t, 1000).await;
    let late = store
        .stage(&database, vec![item(&id, 1000, 3000, 7)])
        .await
        .unwrap();
    assert_eq!(
        late,
        [Some(3000)],
        "bucket 1000 is committed: the item goes to the open bucket"
    );

    let short = Duration::from_millis(200);
    let stale = store
        .claim_task(&id, 3000, "r", short)
        .await
        .unwrap()
        .unwrap();
    let failing: BuildBucket =
        Arc::new(|_, _| Err(ConnectorError::permanent("the staged data is damaged")));
    let err = store
        .commit_staged(&t, &stale, lines_schema(), failing)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    assert!(
        format!("{err:#}").contains("the staged data is damaged"),
        "{err:#}"
    );
    assert_eq!(store.staged(&database).await.unwrap().len(), 1);

    // The lease runs out and another runner claims the bucket: the first is fenced.
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let lease = store
        .claim_task(&id, 3000, "r2", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit_staged(&t, &stale, lines_schema(), build(3000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err:#}");
    assert_eq!(store.staged(&database).await.unwrap().len(), 1);
    store
        .commit_staged(&t, &lease, lines_schema(), build(lease.scheduled_for_ms))
        .await
        .unwrap();
    assert_eq!(committed_rows(&**store, &database).await, [(1, 1), (7, 8)]);
}

/// A request staged again with the same idempotency key (a retry whose response was
/// lost), in the same group commit or later, is not staged twice; keys are per
/// connector, and a request without one is always staged.
pub async fn a_request_sent_again_is_staged_once<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (database, id, other) = (unique("push"), unique("c"), unique("c"));
    let keyed = |connector: &str, key: u8, lines: i64| StageItem {
        key: Some([key; 16]),
        ..item(connector, 1000, 1000, lines)
    };
    let first = store
        .stage(
            &database,
            vec![
                keyed(&id, 1, 2),
                keyed(&id, 1, 2),
                item(&id, 1000, 1000, 3),
                keyed(&other, 1, 5),
            ],
        )
        .await
        .unwrap();
    assert_eq!(first, [Some(1000), None, Some(1000), Some(1000)]);
    let again = store
        .stage(&database, vec![keyed(&id, 1, 2), keyed(&id, 2, 4)])
        .await
        .unwrap();
    assert_eq!(again, [None, Some(1000)]);
    let t = target(&id, &database);
    claim_and_commit(&**store, &t, 1000).await;
    assert_eq!(committed_rows(&**store, &database).await, [(9, 9)]);
    let after = store
        .stage(
            &database,
            vec![StageItem {
                open_bucket_ms: 2000,
                ..keyed(&id, 2, 4)
            }],
        )
        .await
        .unwrap();
    assert_eq!(after, [None], "the key outlives its bucket's commit");
}

/// Sixteen stagers race a bucket's commit: every item is counted once, in the
/// bucket or in the open one.
pub async fn staging_racing_a_commit_counts_every_item_once<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (database, id) = (unique("push"), unique("c"));
    let t = target(&id, &database);
    store
        .stage(&database, vec![item(&id, 1000, 2000, 1)])
        .await
        .unwrap();
    let mut stagers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, database, id) = (Arc::clone(store), database.clone(), id.clone());
        stagers.spawn(async move {
            for _ in 0..10 {
                store
                    .stage(&database, vec![item(&id, 1000, 2000, 1)])
                    .await
                    .unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    claim_and_commit(&**store, &t, 1000).await;
    while stagers.join_next().await.is_some() {}
    claim_and_commit(&**store, &t, 2000).await;
    let rows = committed_rows(&**store, &database).await;
    assert_eq!(rows.last().map(|r| r.1), Some(161), "{rows:?}");
    assert!(store.staged(&database).await.unwrap().is_empty());
}

/// The runner takes concurrent pushed requests through its ingestor, acknowledges
/// each once staged, and commits every closed bucket once after the grace; a paused
/// connector refuses, and an unknown path names the paths served.
pub async fn runner_commits_pushed_requests_once<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let database = unique("push");
    let spec = ConnectorSpec {
        name: unique("lines"),
        connector_type: "lines".into(),
        target_database: database.clone(),
        target_table: "lines".into(),
        schedule_ms: 500,
        config: serde_json::Value::Null,
        retention: None,
        org_id: crate::DEFAULT_ORG.into(),
    };
    let record = store.create_connector(&spec, Origin::Api).await.unwrap();
    let mut registry = Registry::new();
    registry.register_push(Lines).unwrap();
    let runner = Runner::new(
        Arc::clone(store) as Arc<dyn StateStore>,
        Arc::clone(store) as Arc<dyn crate::Sink>,
        Arc::new(registry),
        RunnerConfig {
            refresh_interval: Duration::from_millis(50),
            ..RunnerConfig::default()
        },
    )
    .with_push(
        Arc::clone(store) as Arc<dyn crate::PushStore>,
        IngestLimits {
            grace: Duration::from_millis(200),
            ..IngestLimits::default()
        },
    );
    let ingestor = runner.ingestor().unwrap();
    let (name, check_store, check_db) = (spec.name.clone(), Arc::clone(store), database.clone());
    let work = async move {
        let request = |path: &str, body: &str| IngestRequest {
            path: path.into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            ..IngestRequest::default()
        };
        // The first refresh publishes the connector.
        let mut first = ingestor.ingest(&name, None, request("lines", "a\n")).await;
        for _ in 0..100 {
            if first.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            first = ingestor.ingest(&name, None, request("lines", "a\n")).await;
        }
        assert_eq!(first.unwrap().status, 200);
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (ingestor, name) = (ingestor.clone(), name.clone());
            requests.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 15)).await;
                ingestor
                    .ingest(&name, None, request("lines", "x\ny\n"))
                    .await
                    .unwrap()
                    .status
            });
        }
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        for _ in 0..2 {
            let retried = ingestor
                .ingest(&name, None, request("lines", "#retry\nz\n"))
                .await;
            assert_eq!(
                retried.unwrap().status,
                200,
                "a retry is acknowledged again"
            );
        }
        let err = ingestor
            .ingest(&name, None, request("nope", ""))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 404);
        assert!(err.to_string().contains("it serves `lines`"), "{err}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = committed_rows(&*check_store, &check_db).await;
            if rows.last().map(|r| r.1) == Some(83)
                && check_store.staged(&check_db).await.unwrap().is_empty()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not all committed: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), runner.run(work))
        .await
        .unwrap();
    let rows = committed_rows(&**store, &database).await;
    let lines: i64 = rows.iter().map(|r| r.0).sum();
    assert_eq!(
        lines, 83,
        "every acknowledged line once, the retry once: {rows:?}"
    );
    let read = read_all(&**store, &database, "lines", Some(lines_schema())).await;
    for row in &read {
        let ts = row[0].as_i64().unwrap();
        assert_eq!(ts % 500, 0, "rows carry their bucket: {ts}");
    }
    let history = store.ticks(&record.id, 100).await.unwrap();
    assert_eq!(
        history.len(),
        rows.len(),
        "one history line per committed bucket"
    );
}
