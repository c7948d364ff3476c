//! Hostile pushes against a real connectord: a 100 MB body, a million distinct span
//! names (the cardinality limit holds and memory stays bounded), and a staging area
//! that fills up (503 with `Retry-After`, nothing acknowledged lost).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use support::{Daemon, request, wait_for};

fn write_config(dir: &Path, ingest: &str, connector: &str) -> std::path::PathBuf {
    let path = dir.join("connectord.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n{ingest}\n\n\
             [[connectors]]\nname = \"spans\"\ntype = \"spanmetrics\"\ntarget_database = \"traces\"\n\
             target_table = \"spans\"\n{connector}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// `count` spans of service `svc` named `prefix-<first + i>`, in protobuf.
fn spans(prefix: &str, first: usize, count: usize) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (first..first + count)
                    .map(|i| Span {
                        name: format!("{prefix}-{i}"),
                        span_id: (i as u64).to_le_bytes().to_vec(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 1_000_001,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn post(d: &Daemon, body: &[u8]) -> support::Response {
    request(
        d.addr,
        "POST",
        "/v1/ingest/spans/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        Some(body),
    )
}

/// The daemon's peak resident memory, in KiB.
fn peak_rss_kib(d: &Daemon) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A value of connectord's own `/metrics` for a series starting with `prefix`.
fn metric(d: &Daemon, prefix: &str) -> Option<f64> {
    d.get("/metrics")
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_refused_and_a_million_span_names_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "",
        "schedule_ms = 1000\n[connectors.config]\naggregation_cardinality_limit = 1000",
    );
    let d = Daemon::start(&config, &[]);
    wait_for(
        "the connector to take requests",
        Duration::from_secs(10),
        || (post(&d, &spans("warmup", 0, 1)).status == 200).then_some(()),
    )
    .await;
    let huge = post(&d, &vec![0u8; 100 << 20]);
    assert_eq!(huge.status, 413, "{}", huge.body);
    assert!(huge.error().1.contains("max_body_bytes (16777216 bytes)"));

    // A million distinct span names in 100 requests of 10,000.
    for r in 0..100 {
        let response = post(&d, &spans("op", r * 10_000, 10_000));
        assert_eq!(response.status, 200, "request {r}: {}", response.body);
    }
    let series = wait_for("the last bucket's commit", Duration::from_secs(20), || {
        let overflowed = metric(&d, "connectord_ingest_overflow_items_total{")?;
        (overflowed >= 999_000.0).then(|| metric(&d, "connectord_ingest_series{"))?
    })
    .await;
    // The warm-up span's series, 999 of the names, and the overflow series.
    assert_eq!(series, 1001.0);
    assert_eq!(
        metric(&d, "connectord_ingest_overflow_items_total{"),
        Some(999_001.0)
    );
    let rss = peak_rss_kib(&d);
    eprintln!("peak RSS after a million span names: {rss} KiB");
    assert!(rss < 256 * 1024, "peak RSS {rss} KiB");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_staging_area_answers_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A one-minute window: nothing commits during the test, so staged data piles up.
    let config = write_config(
        dir.path(),
        "[ingest]\nmax_staged_bytes = 1048576",
        "schedule_ms = 60000\n[connectors.config]",
    );
    let d = Daemon::start(&config, &[]);
    wait_for(
        "the connector to take requests",
        Duration::from_secs(10),
        || (post(&d, &spans("warmup", 0, 1)).status == 200).then_some(()),
    )
    .await;
    let mut acknowledged = 1;
    let mut refused = None;
    for r in 0..200 {
        let response = post(&d, &spans("full", r * 1000, 1000));
        match response.status {
            200 => acknowledged += 1000,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("request {r}: {other} {}", response.body),
        }
    }
    let refused = refused.expect("the staging bound was never reached");
    assert!(
        refused.headers.contains("retry-after: "),
        "{}",
        refused.headers
    );
    let (code, message) = refused.error();
    assert_eq!(code, "backpressure");
    assert!(message.contains("the bound is 1048576"), "{message}");
    let staged = support::query_i64(
        dir.path(),
        "traces.sqlite",
        "SELECT count(*) FROM _connectord_staged",
    );
    assert_eq!(
        staged,
        acknowledged / 1000 + 1,
        "every acknowledged request is staged"
    );
    d.stop();
}
