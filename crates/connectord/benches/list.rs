//! `GET /v1/connectors` with 10,000 connectors, against the real binary over
//! loopback: all of them in one page (one store query; each record carries its
//! newest tick), and a page of 100 from the middle. Run with
//! `cargo bench -p connectord --bench list`.
#![allow(clippy::unwrap_used)] // a benchmark's setup: a panic is the failure report

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use connector_runner::{ConnectorSpec, Origin, StateStore, TickOutcome, TickRecord};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use store_sqlite::SqliteStore;

const CONNECTORS: usize = 10_000;

fn populate(data: &std::path::Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(data).unwrap();
        for i in 0..CONNECTORS {
            let record = store
                .create_connector(
                    &ConnectorSpec {
                        name: format!("node-{i:05}"),
                        connector_type: "prometheus".into(),
                        target_database: "metrics".into(),
                        target_table: format!("node_{i:05}"),
                        schedule_ms: 15_000,
                        config: serde_json::json!({"endpoint": format!("http://10.0.{}.{}:9100/metrics", i / 250, i % 250)}),
                        retention: None,
                        org_id: connector_runner::DEFAULT_ORG.into(),
                    },
                    Origin::Api,
                )
                .await
                .unwrap();
            store
                .record_tick(&TickRecord {
                    connector_id: record.id,
                    scheduled_for_ms: 1_700_000_000_000,
                    started_at_ms: 1_700_000_000_010,
                    outcome: TickOutcome::Ok,
                    rows: 1_500,
                    source_bytes: 150_000,
                    sink_bytes: 120_000,
                    duration_ms: 40,
                    error: None,
                    runner_id: "bench".into(),
                })
                .await
                .unwrap();
        }
    });
}

fn get(addr: &str, path: &str) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response[..200.min(response.len())])
    );
    response.len()
}

fn list(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate(&data);
    let config = dir.path().join("connectord.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndata_dir = \"{}\"\n\n[runner]\nenabled = false\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining the log, so the daemon never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let addr = line[at + "listening on http://".len()..].split(' ').next();
                let _ = tx.send(addr.unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let bytes = get(&addr, "/v1/connectors?limit=10000");
    eprintln!("list: {CONNECTORS} connectors, {bytes} bytes per response");
    let mut group = c.benchmark_group("api");
    group.throughput(Throughput::Elements(CONNECTORS as u64));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(20);
    group.bench_function("get_v1_connectors_10000", |b| {
        b.iter(|| assert_eq!(get(&addr, "/v1/connectors?limit=10000"), bytes));
    });
    group.finish();
    // A page of 100 from the middle of the 10,000: one indexed query.
    let middle = "/v1/connectors?limit=100&after=80000000-0000-0000-0000-000000000000";
    let page_bytes = get(&addr, middle);
    eprintln!("page: 100 connectors, {page_bytes} bytes per response");
    let mut group = c.benchmark_group("api_page");
    group.throughput(Throughput::Elements(100));
    group.bench_function("get_v1_connectors_page_100_of_10000", |b| {
        b.iter(|| assert_eq!(get(&addr, middle), page_bytes));
    });
    group.finish();
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, list);
criterion_main!(benches);
