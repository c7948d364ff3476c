//! A real scrape of Debian's prometheus-node-exporter on 127.0.0.1. `.ci/run` installs
//! it; under `CI=true` a missing exporter fails this test instead of skipping it.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, Declared, connector, ledger, open, wait_for, write_config};

const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_exporter() -> Option<(Exporter, u16)> {
    if !std::path::Path::new(EXPORTER).exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{EXPORTER} is missing: .ci/run must install prometheus-node-exporter"
        );
        eprintln!(
            "skipped: {EXPORTER} is not installed (apt-get install prometheus-node-exporter)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--no-collector.systemd")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exporter = Exporter(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "node exporter did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((exporter, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_a_real_node_exporter() {
    let Some((_exporter, port)) = start_exporter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "node",
            table: "node",
            schedule_ms: 500,
            config: format!("endpoint = \"http://127.0.0.1:{port}/metrics\""),
        }],
    );
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "node")
    })
    .await;
    wait_for("2 committed buckets", Duration::from_secs(30), || {
        (ledger(dir.path(), &id).len() >= 2).then_some(())
    })
    .await;
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");

    let conn = open(dir.path(), "metrics.sqlite").unwrap();
    for (bucket, rows) in ledger(dir.path(), &id) {
        assert!(
            rows > 100,
            "a node exporter scrape has hundreds of samples, got {rows}"
        );
        let (count, node, with_labels): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), sum(name LIKE 'node\\_%' ESCAPE '\\'), sum(labels != '{}') FROM node WHERE timestamp = ?1",
                [bucket],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(count, rows);
        assert!(node > 50, "{node} node_* samples");
        assert!(with_labels > 10);
    }
    let build_info: String = conn
        .query_row(
            "SELECT labels FROM node WHERE name = 'node_exporter_build_info' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let labels: serde_json::Value = serde_json::from_str(&build_info).unwrap();
    assert!(
        labels["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{labels}"
    );
}
