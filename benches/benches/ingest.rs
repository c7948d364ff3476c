//! Ingest throughput in samples per second, on a runtime shaped like the daemon's
//! here (two workers for two cores), for two bodies: `label_heavy` (2 MB generated kube-state-metrics-like text, 8 to 11
//! labels a sample) and `node_exporter` (the upstream fixture, about 3,000 samples):
//!
//! - `http_to_sqlite`: the real path of one connector's ticks, one after the other:
//!   claim a lease, HTTP GET from a server on 127.0.0.1, parse and build the batch,
//!   handing rows over to a store that writes them as they come (`PartCommit`, as
//!   the runner does; SQLite does), and commit them with their ledger row to SQLite
//!   (WAL, synchronous=NORMAL) in one transaction.
//! - `http_to_postgres`: the same into PostgreSQL (the samples copied in chunks as
//!   the parts come, then the ledger row, in one transaction), when `DATABASE_URL` is
//!   set; the run's schemas are dropped after it.
//! - `http_to_sqlite_2_connectors`, `http_to_postgres_2_connectors`: two connectors'
//!   ticks at once on a 2-worker runtime (how the daemon runs many), samples of both
//!   per second.
//! - `http_to_batch`: the tick alone: HTTP GET, parse and batch, no claim or commit.
//! - `http_fetch`: the HTTP GET alone, through the connectors' client (bytes/s).
//! - `commit_only`: claim and commit of an already built batch (no HTTP, no parse).
//! - `parse_to_batch`: the same body, parse and batch only (no HTTP, no SQLite).
//! - `sqlite_insert_floor`: the peer: the same rows, already decoded, inserted with one
//!   prepared statement in one transaction, the least any SQLite sink keeping rows as
//!   they come can pay.
//! - `sqlite_compact_floor`: the same for the compact layout: (timestamp, series id,
//!   value) with the ids already known, the least the metric layout can pay.

// The allocator connectord runs with (`connectord::Allocator`), so a tick pays for
// memory what it pays in the daemon.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use benches::generate_exposition;
use connector_core::{Batch, Connector as _, TickContext, Value};
use connector_http::testing::{Reply, TestServer};
use connector_prometheus::PrometheusConnector;
use connector_prometheus::exposition::{Format, parse};
use connector_runner::{PartCommit, Sink, StateStore, Target};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use store_sqlite::SqliteStore;

const BODY_BYTES: usize = 2 * 1024 * 1024;

/// Two connectors each ticking `ticks` times back to back, each tick a task of its
/// own as the runner spawns them; returns how long until both are done.
///
/// Each connector keeps its own pace, as connectors do in the daemon, so one's parse
/// runs beside the other's commit. Two ticks joined and awaited together in lockstep
/// parsed at the same time and then waited for each other's commit on the target
/// file: 1.38 of the 2 cores busy. Joined in one task, both parses also ran on one
/// worker.
async fn two_connectors<S: StateStore + Sink + Clone + 'static>(
    store: &S,
    pair: &Arc<[(Target, AtomicI64); 2]>,
    connector: &PrometheusConnector,
    config: &connector_prometheus::PrometheusConfig,
    samples: usize,
    ticks: u64,
) -> Duration {
    let start = std::time::Instant::now();
    let connector_loop = |side: usize| {
        let (store, pair) = (store.clone(), Arc::clone(pair));
        let (connector, config) = (connector.clone(), config.clone());
        tokio::spawn(async move {
            for _ in 0..ticks {
                let (store, pair) = (store.clone(), Arc::clone(&pair));
                let (connector, config) = (connector.clone(), config.clone());
                tokio::spawn(async move {
                    let (target, bucket) = &pair[side];
                    one_tick(&store, target, &connector, &config, bucket, samples).await;
                })
                .await
                .expect("a tick's task");
            }
        })
    };
    let (a, b) = (connector_loop(0), connector_loop(1));
    a.await.expect("the first connector's task");
    b.await.expect("the second connector's task");
    start.elapsed()
}

/// One tick the way the runner does it: claim, scrape and parse with the rows handed
/// to the store as they are built, commit.
async fn one_tick<S: StateStore + Sink + Clone + 'static>(
    store: &S,
    target: &Target,
    connector: &PrometheusConnector,
    config: &connector_prometheus::PrometheusConfig,
    bucket: &AtomicI64,
    samples: usize,
) {
    let scheduled_for = bucket.fetch_add(1, Ordering::Relaxed);
    let lease = store
        .claim_task(
            &target.connector_id,
            scheduled_for,
            "bench-runner",
            Duration::from_secs(60),
        )
        .await
        .expect("claim")
        .expect("a free bucket");
    let sink: Arc<dyn Sink> = Arc::new(store.clone());
    let parts = PartCommit::start(sink, target.clone(), lease.clone());
    let ctx = parts.tick_context(TickContext::new(target.connector_id.clone(), scheduled_for));
    let batch = connector
        .tick(&ctx, config)
        .await
        .expect("the tick succeeds");
    let report = parts
        .finish(batch, lease)
        .await
        .expect("the commit succeeds");
    assert_eq!(report.rows as usize, samples);
}

/// Drops what a run wrote into PostgreSQL: its schemas, and their ledger and lease
/// rows. Left behind, every run added millions of samples to the shared database,
/// which later schema migrations then had to rewrite.
async fn drop_bench_schemas(url: &str, schemas: &[String]) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable");
    tokio::spawn(connection);
    for schema in schemas {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .expect("the bench's schema drops");
        client
            .execute(
                "WITH gone AS (DELETE FROM connectord.ledger WHERE target_database = $1 RETURNING connector_id) \
                 DELETE FROM connectord.leases WHERE connector_id IN (SELECT connector_id FROM gone)",
                &[schema],
            )
            .await
            .expect("the bench's ledger rows go");
    }
}

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    ingest_body(c, &runtime, "label_heavy", generate_exposition(BODY_BYTES));
    ingest_body(
        c,
        &runtime,
        "node_exporter",
        benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
    );
}

fn ingest_body(c: &mut Criterion, runtime: &tokio::runtime::Runtime, input: &str, body: String) {
    let samples = parse(&body, Format::Prometheus)
        .expect("the generated body parses")
        .len();
    // Bytes: the server hands out the same buffer each time. A String cloned per
    // request put a 2 MB copy into fresh pages, the exporter's cost, on the
    // measured thread.
    let served = bytes::Bytes::from(body.clone());
    let server = runtime.block_on(TestServer::start(move |_| Reply::ok(served.clone())));
    let connector = PrometheusConnector::new();
    let config = connector
        .validate_config(&serde_json::json!({"endpoint": server.url("/metrics")}))
        .expect("a valid config");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(dir.path()).expect("the store opens");
    let target = Target {
        connector_id: "bench".into(),
        database: "metrics".into(),
        table: "samples".into(),
    };
    let bucket = AtomicI64::new(0);

    let mut group = c.benchmark_group(format!("ingest/{input}"));
    group.throughput(Throughput::Elements(samples as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("http_to_sqlite", |b| {
        b.to_async(runtime)
            .iter(|| one_tick(&store, &target, &connector, &config, &bucket, samples));
    });
    // Two connectors ticking at once on a 2-worker runtime, as the daemon runs many:
    // one's parse overlaps the other's commit. Its own server, since the
    // current-thread runtime above only runs while it is driven.
    let parallel = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let served = bytes::Bytes::from(body.clone());
    let pair_server = parallel.block_on(TestServer::start(move |_| Reply::ok(served.clone())));
    let pair_config = connector
        .validate_config(&serde_json::json!({"endpoint": pair_server.url("/metrics")}))
        .expect("a valid config");
    let pair = Arc::new(["bench-a", "bench-b"].map(|id| {
        let target = Target {
            connector_id: id.into(),
            database: "pair".into(),
            table: "samples".into(),
        };
        (target, AtomicI64::new(0))
    }));
    group.throughput(Throughput::Elements(2 * samples as u64));
    group.bench_function("http_to_sqlite_2_connectors", |b| {
        b.to_async(&parallel).iter_custom(|ticks| {
            two_connectors(&store, &pair, &connector, &pair_config, samples, ticks)
        });
    });
    group.throughput(Throughput::Elements(samples as u64));
    group.bench_function("http_to_batch", |b| {
        b.to_async(runtime).iter(|| async {
            let ctx = TickContext::new("bench".to_owned(), 0);
            let batch = connector.tick(&ctx, &config).await.expect("the tick");
            assert_eq!(batch.len(), samples);
        });
    });

    // The fetch alone: the GET of the same body through the connectors' HTTP client.
    let client = connector_http::HttpClient::new();
    let url = server.url("/metrics");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("http_fetch", |b| {
        b.to_async(runtime).iter(|| async {
            let ctx = TickContext::new("bench".to_owned(), 0);
            let response = client.get(&url).send(&ctx).await.expect("the fetch");
            assert_eq!(response.body().len(), body.len());
        });
    });
    group.throughput(Throughput::Elements(samples as u64));

    let prebuilt = {
        let mut batch = Batch::with_capacity(connector.schema(), samples);
        for s in parse(&body, Format::Prometheus).expect("parses") {
            batch
                .row()
                .timestamp(0)
                .string(s.name)
                .real(s.value)
                .map(s.labels.iter_decoded())
                .finish()
                .expect("fits");
        }
        batch
    };
    group.bench_function("commit_only", |b| {
        b.to_async(runtime).iter(|| async {
            let scheduled_for = bucket.fetch_add(1, Ordering::Relaxed);
            let lease = store
                .claim_task(
                    "bench",
                    scheduled_for,
                    "bench-runner",
                    Duration::from_secs(60),
                )
                .await
                .expect("claim")
                .expect("a free bucket");
            store
                .commit(&target, &lease, prebuilt.clone())
                .await
                .expect("the commit succeeds");
        });
    });
    // The same tick into PostgreSQL, when a database is up:
    // eval "$(cargo xtask services up)" first.
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let pg = runtime
            .block_on(store_postgres::PgStore::connect(&url, 4))
            .expect("PostgreSQL is reachable");
        let pg_target = Target {
            connector_id: format!("bench-{input}-{}", std::process::id()),
            database: format!("bench_{input}_{}", std::process::id()),
            table: "samples".into(),
        };
        group.bench_function("http_to_postgres", |b| {
            b.to_async(runtime)
                .iter(|| one_tick(&pg, &pg_target, &connector, &config, &bucket, samples));
        });
        // Two connectors at once, as for SQLite: one's parse overlaps the other's
        // commit, and PostgreSQL commits on two backends.
        let pg_pair = parallel
            .block_on(store_postgres::PgStore::connect(&url, 4))
            .expect("PostgreSQL is reachable");
        let pg_pair_targets = Arc::new(["a", "b"].map(|side| {
            let target = Target {
                connector_id: format!("bench-{input}-{side}-{}", std::process::id()),
                database: format!("bench_pair_{input}_{}", std::process::id()),
                table: "samples".into(),
            };
            (target, AtomicI64::new(0))
        }));
        group.throughput(Throughput::Elements(2 * samples as u64));
        group.bench_function("http_to_postgres_2_connectors", |b| {
            b.to_async(&parallel).iter_custom(|ticks| {
                two_connectors(
                    &pg_pair,
                    &pg_pair_targets,
                    &connector,
                    &pair_config,
                    samples,
                    ticks,
                )
            });
        });
        group.throughput(Throughput::Elements(samples as u64));
        let schemas = [pg_target.database, pg_pair_targets[0].0.database.clone()];
        runtime.block_on(drop_bench_schemas(&url, &schemas));
    } else {
        eprintln!(
            "ingest/http_to_postgres skipped: DATABASE_URL is not set (eval \"$(cargo xtask services up)\")"
        );
    }

    group.bench_function("parse_to_batch", |b| {
        b.iter(|| {
            let mut batch = Batch::with_capacity(connector.schema(), samples);
            let mut parser =
                connector_prometheus::exposition::Parser::new(black_box(&body), Format::Prometheus);
            // As the scrape reads them: with the labels the parser kept.
            while let Some(next) = parser.next_with_labels() {
                let (sample, labels) = next.expect("parses");
                let row = batch.row().timestamp(0).string(sample.name);
                let row = if sample.value.is_finite() {
                    row.real(sample.value)
                } else {
                    row.null()
                };
                row.map(labels).finish().expect("fits the schema");
            }
            black_box(batch.len())
        });
    });

    let rows: Vec<(String, Option<f64>, String)> = {
        let mut batch = Batch::new(connector.schema());
        for s in parse(&body, Format::Prometheus).expect("parses") {
            batch
                .row()
                .timestamp(0)
                .string(s.name)
                .real(s.value)
                .map(s.labels.iter_decoded())
                .finish()
                .expect("fits");
        }
        batch
            .rows()
            .map(|r| match (r.at(1), r.at(2), r.at(3)) {
                (Value::String(n), Value::Real(v), Value::Dynamic(l)) => {
                    (n.to_owned(), Some(v), l.to_owned())
                }
                other => panic!("unexpected row {other:?}"),
            })
            .collect()
    };
    let mut conn = rusqlite::Connection::open(dir.path().join("floor.sqlite")).expect("opens");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE samples (timestamp INTEGER, name TEXT, value REAL, labels TEXT)",
    )
    .expect("table");
    let series: Vec<i64> = (1..).take(rows.len()).collect();
    conn.execute_batch("CREATE TABLE compact (timestamp INTEGER, series INTEGER, value REAL)")
        .expect("table");
    group.bench_function("sqlite_compact_floor", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO compact VALUES (?1, ?2, ?3)")
                    .expect("prepare");
                for ((_, value, _), id) in rows.iter().zip(&series) {
                    insert
                        .execute(rusqlite::params![0i64, id, value])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        });
    });
    group.bench_function("sqlite_insert_floor", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO samples VALUES (?1, ?2, ?3, ?4)")
                    .expect("prepare");
                for (name, value, labels) in &rows {
                    insert
                        .execute(rusqlite::params![0i64, name, value, labels])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        });
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
