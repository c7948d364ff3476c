//! The `otlp_metrics` push source end to end: a real connectord process on SQLite, the
//! OpenTelemetry Python SDK pushing OTLP/HTTP protobuf with cumulative and with delta
//! temporality, and the scrape page compared series for series with the OpenTelemetry
//! project's own Prometheus rendering (`PrometheusMetricReader`) of the same
//! instruments on the same `MeterProvider`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use connector_prometheus::exposition::{Format, Parser};
use support::otel::{have_metrics_sdk, run_script};
use support::{Daemon, request, wait_for};

const INGEST_TOKEN: &str = "ingest-token-0a7e-51c2";
const READ_TOKEN: &str = "read-token-3f90-c2d8";

fn write_config(dir: &Path) -> std::path::PathBuf {
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
[[server.tokens]]
name = "sdk"
token_ref = "$env:INGEST_TOKEN"
scopes = ["ingest:write"]
[[server.tokens]]
name = "reader"
token_ref = "$env:READ_TOKEN"
scopes = ["connectors:read", "metrics:read"]

[storage]
data_dir = "{}"
"#,
        dir.join("data").display()
    );
    for name in ["cumulative", "delta"] {
        text.push_str(&format!(
            "\n[[connectors]]\nname = \"{name}\"\ntype = \"otlp_metrics\"\ntarget_database = \"otel\"\ntarget_table = \"{name}\"\nschedule_ms = 1000\n"
        ));
    }
    let path = dir.join("connectord.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A series as compared: name, labels without empty values, and the value; `le` and
/// `quantile` as numbers, since the reference writes `5.0` where we write `5`.
type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

fn series(page: &str, ours: bool) -> Series {
    let mut out = Series::new();
    for sample in Parser::new(page, Format::Prometheus).strict(true) {
        let sample = sample.unwrap_or_else(|e| panic!("{e}\n{page}"));
        let target_info = sample.name == "target_info";
        let labels: Vec<(String, String)> = sample
            .labels
            .iter_decoded()
            .filter(|(_, v)| !v.is_empty())
            .filter(|(n, _)| {
                // job and instance come from the resource (ours only); the reference
                // puts the identifying resource attributes on target_info instead.
                let dropped: &[&str] = match (ours, target_info) {
                    (true, _) => &["job", "instance"],
                    (false, true) => &["service_name", "service_namespace", "service_instance_id"],
                    (false, false) => &[],
                };
                !dropped.contains(n)
            })
            .map(|(n, v)| {
                let v = if n == "le" || n == "quantile" {
                    v.parse::<f64>().map_or(v.into_owned(), |f| f.to_string())
                } else {
                    v.into_owned()
                };
                (n.to_owned(), v)
            })
            .collect();
        let mut labels = labels;
        labels.sort();
        out.insert((sample.name.to_owned(), labels), sample.value);
    }
    out
}

fn start(dir: &Path) -> Daemon {
    Daemon::start(
        &write_config(dir),
        &[("INGEST_TOKEN", INGEST_TOKEN), ("READ_TOKEN", READ_TOKEN)],
    )
}

/// Runs the SDK script for one service; returns the reference rendering's series.
fn push(
    daemon: &Daemon,
    connector: &str,
    temporality: &str,
    service: &str,
    instance: &str,
) -> Series {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/export_metrics.py");
    let plan = serde_json::json!({
        "endpoint": format!("http://{}/v1/ingest/{connector}/v1/metrics", daemon.addr),
        "token": INGEST_TOKEN,
        "service": service,
        "instance": instance,
        "temporality": temporality,
        "rounds": 3,
    });
    let result = run_script(&script, &plan);
    // A flush per round, and one more at shutdown.
    assert_eq!(
        (result["exported"].as_u64(), result["failed"].as_u64()),
        (Some(4), Some(0)),
        "{result}"
    );
    series(result["reference"].as_str().unwrap(), false)
}

fn page(daemon: &Daemon, id: &str) -> String {
    let page = request(
        daemon.addr,
        "GET",
        &format!("/v1/connectors/{id}/metrics"),
        &[("Authorization", &format!("Bearer {READ_TOKEN}"))],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    page.body
}

/// Waits until the connector's page, compared as [`series`], equals `want`.
async fn page_equals(daemon: &Daemon, id: &str, want: &Series) -> String {
    wait_for(
        "the connector's page to equal the reference",
        Duration::from_secs(20),
        || {
            let body = page(daemon, id);
            (series(&body, true) == *want).then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_page_equals_the_opentelemetry_prometheus_rendering() {
    if !have_metrics_sdk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    for temporality in ["cumulative", "delta"] {
        let mut want = Series::new();
        for (service, instance) in [("checkout", "pod-1"), ("billing", "pod-2")] {
            // Both services' target_info reduce to the same series once their
            // identifying attributes are dropped; ours keeps them apart by job.
            want.extend(push(&daemon, temporality, temporality, service, instance));
        }
        let id = support::connector(dir.path(), temporality).unwrap().0;
        let got = page_equals(&daemon, &id, &want).await;
        assert!(got.contains("# TYPE shop_orders_total counter"), "{got}");
        assert!(got.contains("naïve ☃"), "{got}");
    }
}

/// The newest row value of every (name, labels) in a table.
fn latest_rows(dir: &Path, table: &str) -> BTreeMap<(String, String), f64> {
    let conn = support::open(dir, "otel.sqlite").unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT name, labels, value FROM \"{table}\" ORDER BY timestamp, rowid"
        ))
        .unwrap();
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_last_2xx_loses_nothing_and_delta_sums_continue() {
    if !have_metrics_sdk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let first = push(&daemon, "delta", "delta", "checkout", "pod-1");
    // Right after the SDK's last 2xx: what it staged has not been committed yet.
    daemon.kill9();
    let daemon = start(dir.path());
    let second = push(&daemon, "delta", "delta", "checkout", "pod-1");
    // The second SDK process starts from zero; its deltas add to what the first
    // pushed, gauges observed take the newest value.
    let mut want = first;
    for (key, value) in second {
        let newest_wins = key.0 == "room_temperature_celsius" || key.0 == "target_info";
        want.entry(key)
            .and_modify(|v| *v = if newest_wins { value } else { *v + value })
            .or_insert(value);
    }
    let id = support::connector(dir.path(), "delta").unwrap().0;
    page_equals(&daemon, &id, &want).await;
    // Every point is a row too: the newest row of each sample is its value on the page.
    let page = page(&daemon, &id);
    let rows = latest_rows(dir.path(), "delta");
    let mut checked = 0;
    for sample in Parser::new(&page, Format::Prometheus).strict(true) {
        let sample = sample.unwrap();
        let labels: serde_json::Map<String, serde_json::Value> = sample
            .labels
            .iter_decoded()
            .map(|(n, v)| (n.to_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
        let found = rows.iter().find(|((name, json), _)| {
            name == sample.name
                && serde_json::from_str::<serde_json::Value>(json).unwrap()
                    == serde_json::Value::Object(labels.clone())
        });
        let (_, value) = found.unwrap_or_else(|| panic!("no row for {} {labels:?}", sample.name));
        assert_eq!(*value, sample.value, "{} {labels:?}", sample.name);
        checked += 1;
    }
    assert!(checked > 80, "{checked} samples checked");
}
