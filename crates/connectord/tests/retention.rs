//! Retention end to end on the embedded default: a connector keeps one second of
//! rows, the pruner removes older buckets with their ledger rows while ticks go on
//! committing, and the target file stops growing.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use connector_http::testing::{Reply, TestServer};
use support::{Daemon, Declared, connector, ledger, open, wait_for, write_config_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_past_retention_are_pruned_and_the_file_stops_growing() {
    let body: String = (0..300)
        .map(|i| format!("m{{i=\"{i}\",pad=\"{}\"}} {i}\n", "x".repeat(40)))
        .collect();
    let exporter = TestServer::start(move |_| Reply::ok(body.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        "",
        &[Declared {
            name: "kept",
            table: "kept",
            schedule_ms: 200,
            config: format!("endpoint = \"{}\"", exporter.url("/metrics")),
        }],
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "schedule_ms = 200\n",
            "schedule_ms = 200\nretention = \"1s\"\n",
        )
        .replacen("[storage]\n", "[storage]\nprune_interval_ms = 200\n", 1);
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "kept")
    })
    .await;
    let started = Instant::now();
    let mut sizes = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let conn = open(dir.path(), "metrics.sqlite").unwrap();
        // Pages in use: the file's size once freed pages are reused or handed back.
        let used: i64 = conn
            .query_row("SELECT (SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)", [], |r| r.get(0))
            .unwrap();
        sizes.push(used);
    }
    let now = connector_runner::protocol::wall_clock_ms();
    let metrics = daemon.get("/metrics");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // Read once nothing commits any more, so the ledger and the rows agree.
    let buckets = ledger(dir.path(), &id);

    // About 1 s of 200 ms buckets, plus a prune interval and a tick in flight.
    assert!(
        (3..=12).contains(&buckets.len()),
        "{} buckets kept: {buckets:?}",
        buckets.len()
    );
    assert!(
        buckets[0].0 >= now - 2_000,
        "oldest kept bucket {} is older than 2 s",
        buckets[0].0
    );
    let conn = open(dir.path(), "metrics.sqlite").unwrap();
    let (rows, oldest): (i64, i64) = conn
        .query_row("SELECT count(*), min(timestamp) FROM kept", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        rows,
        buckets.iter().map(|b| b.1).sum::<i64>(),
        "rows outside the ledger"
    );
    assert_eq!(oldest, buckets[0].0);
    let pruned: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "connectord_pruned_rows_total{{connector_id=\"{id}\""
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(pruned >= 300 * 20, "only {pruned} rows pruned");
    // Steady state: the pages in use over the last seconds grow no more.
    let late = &sizes[sizes.len() - 4..];
    let (low, high) = (*late.iter().min().unwrap(), *late.iter().max().unwrap());
    assert!(
        high <= low + low / 5,
        "pages in use still growing: {sizes:?}"
    );
    eprintln!(
        "buckets kept {}, rows pruned {pruned}, pages in use per second {sizes:?}",
        buckets.len()
    );
}
