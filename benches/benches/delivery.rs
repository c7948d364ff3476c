//! Delivery end to end, in samples per second: committed node_exporter rows in SQLite,
//! read back by the runner's delivery loop, encoded and sent to VictoriaMetrics on
//! 127.0.0.1, each bucket recorded in the delivery ledger.
//!
//! - `influx` and `remote_write`: the real path (`Runner` with a destination, leases,
//!   chunked reads, encoding, HTTP, ledger) over a backlog of committed buckets.
//! - `post_floor_influx` and `post_floor_remote_write`: the peers: the same samples
//!   already encoded (line protocol with gzip, one request per bucket; remote-write
//!   bodies of 2,000 samples), POSTed by the same HTTP client to the same receiver:
//!   what the receiver costs without connectord reading, encoding and recording
//!   anything.
//!
//! After the measurements, the release `connectord` binary (`CONNECTORD_BIN`, built by
//! `cargo xtask bench`) catches up a backlog of 1,000,000 rows, and its peak resident
//! memory (VmHWM) is printed. Needs `VICTORIA_METRICS_URL` (`cargo xtask services up`);
//! skipped without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_core::{Batch, Registry, TickContext};
use connector_http::HttpClient;
use connector_http::http::Method;
use connector_http::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName};
use connector_prometheus::PrometheusConnector;
use connector_prometheus::exposition::{Format, Parser};
use connector_runner::{
    ConnectorSpec, ConnectorState, DeliveryStore, DestinationSpec, OnPermanent, Origin, Runner,
    RunnerConfig, Sink, Start, StateStore, Target,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use destination_influx::InfluxDestination;
use destination_remote_write::RemoteWriteDestination;
use store_sqlite::SqliteStore;

/// Buckets of the measured backlog (15 s apart, ending now).
const BUCKETS: i64 = 50;

fn node_exporter() -> String {
    benches::fixture("upstream-node_exporter.e2e-output.prom.txt")
}

/// The rows of one scrape of `text` at `timestamp`, as the connector commits them.
fn bucket_rows(text: &str, timestamp: i64) -> Batch {
    let mut batch = Batch::new(metric_rows::schema());
    for sample in Parser::new(text, Format::Prometheus) {
        let sample = sample.expect("the fixture parses");
        let row = batch.row().timestamp(timestamp).string(sample.name);
        let row = if sample.value.is_finite() {
            row.real(sample.value)
        } else {
            row.null()
        };
        row.map(sample.labels.iter_decoded())
            .finish()
            .expect("a metric row");
    }
    batch
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "node".into(),
        connector_type: "prometheus".into(),
        target_database: "metrics".into(),
        target_table: "node".into(),
        schedule_ms: 15_000,
        config: serde_json::json!({"endpoint": "http://127.0.0.1:9/metrics"}),
        retention: None,
        org_id: connector_runner::DEFAULT_ORG.into(),
    }
}

/// A data folder holding `buckets` committed scrapes of `text`, the newest now.
/// Returns the store, the source's target and the buckets.
async fn backlog(dir: &Path, text: &str, buckets: i64) -> (Arc<SqliteStore>, Target, Vec<i64>) {
    let store = Arc::new(SqliteStore::open(dir).expect("the data folder opens"));
    let record = store
        .upsert_connector(&source_spec(), Origin::File)
        .await
        .expect("the source");
    store
        .set_state(&record.id, ConnectorState::Paused)
        .await
        .expect("paused: the backlog is all there is");
    let target = Target {
        connector_id: record.id.clone(),
        database: "metrics".into(),
        table: "node".into(),
    };
    let newest = now_ms() / 15_000 * 15_000;
    let mut stamps = Vec::new();
    for i in (0..buckets).rev() {
        let bucket = newest - i * 15_000;
        let lease = store
            .claim_task(&record.id, bucket, "bench", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("free");
        store
            .commit(&target, &lease, bucket_rows(text, bucket))
            .await
            .expect("commit");
        stamps.push(bucket);
    }
    (store, target, stamps)
}

/// Delivers the whole backlog once with a new destination; returns the time taken.
async fn deliver_backlog(
    store: &Arc<SqliteStore>,
    registry: &Arc<Registry>,
    destination_type: &str,
    config: serde_json::Value,
    last_bucket: i64,
    round: usize,
) -> Duration {
    let spec = DestinationSpec {
        name: format!("{destination_type}-{round}"),
        destination_type: destination_type.into(),
        source: "node".into(),
        start: Start::Earliest,
        on_permanent: OnPermanent::Halt,
        config,
    };
    let destination = store
        .create_destination(&spec, Origin::Api, i64::MIN)
        .await
        .expect("the destination");
    let runner = Runner::new(
        Arc::clone(store) as Arc<dyn StateStore>,
        Arc::clone(store) as Arc<dyn Sink>,
        Arc::clone(registry),
        RunnerConfig {
            refresh_interval: Duration::from_millis(20),
            ..RunnerConfig::default()
        },
    )
    .with_deliveries(Arc::clone(store) as Arc<dyn DeliveryStore>);
    let started = Instant::now();
    let watched = Arc::clone(store);
    let id = destination.id.clone();
    runner
        .run(async move {
            loop {
                let record = watched
                    .get_destination(&id)
                    .await
                    .expect("read")
                    .expect("exists");
                assert_eq!(
                    record.state,
                    ConnectorState::Enabled,
                    "{:?}",
                    record.disabled_reason
                );
                if record.delivered_through_ms == Some(last_bucket) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    let took = started.elapsed();
    store
        .delete_destination(&destination.id)
        .await
        .expect("cleanup");
    took
}

fn delivery(c: &mut Criterion) {
    let Ok(victoria) = std::env::var("VICTORIA_METRICS_URL") else {
        eprintln!(
            "delivery: skipped: VICTORIA_METRICS_URL is not set (eval \"$(cargo xtask services up)\")"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let text = node_exporter();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (store, _target, buckets) = runtime.block_on(backlog(dir.path(), &text, BUCKETS));
    let rows_per_bucket = bucket_rows(&text, 0).len() as u64;
    let samples = rows_per_bucket * buckets.len() as u64;
    let last = *buckets.last().expect("buckets");
    let mut registry = Registry::new();
    registry
        .register(PrometheusConnector::new())
        .expect("register");
    registry
        .register_destination(InfluxDestination::new())
        .expect("register");
    registry
        .register_destination(RemoteWriteDestination::new())
        .expect("register");
    let registry = Arc::new(registry);

    let mut group = c.benchmark_group("delivery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(samples));
    let mut round = 0;
    for (name, kind, config) in [
        (
            "influx",
            "influx",
            serde_json::json!({"endpoint": format!("{victoria}/influx/write")}),
        ),
        (
            "remote_write",
            "prometheus_remote_write",
            serde_json::json!({"endpoint": format!("{victoria}/api/v1/write")}),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    round += 1;
                    total += runtime.block_on(deliver_backlog(
                        &store,
                        &registry,
                        kind,
                        config.clone(),
                        last,
                        round,
                    ));
                }
                total
            });
        });
    }

    // The peers: the same samples, encoded beforehand, POSTed by the same client.
    let client = HttpClient::new();
    let influx_bodies: Vec<Vec<u8>> = buckets
        .iter()
        .map(|bucket| {
            let mut lines = Vec::new();
            destination_influx::encode(&bucket_rows(&text, *bucket), &mut lines).expect("encode");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &lines).expect("gzip");
            gz.finish().expect("gzip")
        })
        .collect();
    let remote_write_bodies: Vec<Vec<u8>> = buckets
        .iter()
        .flat_map(|bucket| {
            destination_remote_write::encode(&bucket_rows(&text, *bucket), 2000)
                .expect("encode")
                .requests
                .into_iter()
                .map(|r| r.body)
        })
        .collect();
    let floors = [
        ("post_floor_influx", "/influx/write", "gzip", &influx_bodies),
        (
            "post_floor_remote_write",
            "/api/v1/write",
            "snappy",
            &remote_write_bodies,
        ),
    ];
    for (name, path, encoding, bodies) in floors {
        let url = format!("{victoria}{path}");
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let ctx = TickContext::new("floor", 0);
                    for body in bodies {
                        let mut request = client
                            .request(Method::POST, &url)
                            .header(CONTENT_ENCODING, encoding)
                            .body(body.clone());
                        if encoding == "snappy" {
                            request = request
                                .header(CONTENT_TYPE, "application/x-protobuf")
                                .header(
                                    HeaderName::from_static("x-prometheus-remote-write-version"),
                                    "0.1.0",
                                );
                        }
                        request.send(&ctx).await.expect("VictoriaMetrics takes it");
                    }
                });
            });
        });
    }
    group.finish();
    drop(store);

    backlog_memory(&runtime, &text, &victoria);
}

/// The release binary catching up a backlog of about 1,000,000 rows: time and peak RSS.
fn backlog_memory(runtime: &tokio::runtime::Runtime, text: &str, victoria: &str) {
    let Ok(binary) = std::env::var("CONNECTORD_BIN").map(PathBuf::from) else {
        eprintln!(
            "delivery: backlog memory skipped: CONNECTORD_BIN is not set (cargo xtask bench builds it)"
        );
        return;
    };
    let rows_per_bucket = bucket_rows(text, 0).len() as i64;
    let buckets = (1_000_000 + rows_per_bucket - 1) / rows_per_bucket;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data = dir.path().join("data");
    let (store, _, stamps) = runtime.block_on(backlog(&data, text, buckets));
    drop(store);
    let last = *stamps.last().expect("buckets");
    let config = dir.path().join("connectord.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndata_dir = \"{}\"\n\n\
             [[connectors]]\nname = \"node\"\ntype = \"prometheus\"\ntarget_database = \"metrics\"\n\
             target_table = \"node\"\nschedule_ms = 15000\n\n[connectors.config]\nendpoint = \"http://127.0.0.1:9/metrics\"\n\n\
             [[destinations]]\nname = \"vm\"\ntype = \"influx\"\nsource = \"node\"\n\n\
             [destinations.config]\nendpoint = \"{victoria}/influx/write\"\n",
            data.display()
        ),
    )
    .expect("the config");
    let mut child = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("connectord starts");
    let started = Instant::now();
    let state = data.join("connectord-state.sqlite");
    let mut peak_kib = 0;
    loop {
        peak_kib = vm_hwm_kib(child.id()).unwrap_or(peak_kib);
        if delivered_through(&state) == Some(last) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the backlog did not drain in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let rows = rows_per_bucket * buckets;
    #[allow(clippy::cast_precision_loss)]
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "delivery/backlog: {rows} rows ({buckets} buckets) from SQLite to VictoriaMetrics (influx) in {:.2} s, {rate:.0} rows/s; connectord peak RSS (VmHWM) {:.1} MiB",
        took.as_secs_f64(),
        f64::from(peak_kib) / 1024.0
    );
}

fn vm_hwm_kib(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn delivered_through(state: &Path) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT delivered_through_ms FROM destinations WHERE name = 'vm'",
        [],
        |r| r.get(0),
    )
    .ok()
    .flatten()
}

criterion_group!(benches, delivery);
criterion_main!(benches);
