//! The `spanmetrics` push source end to end: a real connectord process on SQLite,
//! traces exported by the OpenTelemetry Python SDK (OTLP/HTTP protobuf) and sent as
//! OTLP JSON, the rows compared with aggregates computed here from the same plan, and
//! the scrape page parsed by our own strict parser.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use support::otel::{expected, have_sdk, plan, rows, sdk_export, totals};
use support::{Daemon, request, wait_for};

const INGEST_TOKEN: &str = "ingest-token-5c1a-9d0e";
const READ_TOKEN: &str = "read-token-77b2-41fa";
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

[ingest]
max_body_bytes = 1048576
"#,
        dir.join("data").display()
    );
    for (name, temporality) in [("checkout", "cumulative"), ("checkout_delta", "delta")] {
        text.push_str(&format!(
            r#"
[[connectors]]
name = "{name}"
type = "spanmetrics"
target_database = "traces"
target_table = "{name}"
schedule_ms = 1000
[connectors.config]
temporality = "{temporality}"
dimensions = [{{ name = "http.method", default = "none" }}]
"#
        ));
    }
    let path = dir.join("connectord.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(dir: &Path) -> Daemon {
    Daemon::start(
        &write_config(dir),
        &[("INGEST_TOKEN", INGEST_TOKEN), ("READ_TOKEN", READ_TOKEN)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_spans_land_exactly_in_both_temporalities() {
    if !have_sdk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let spans = plan();
    let want = expected(&spans);
    // Two halves, so buckets and cumulative running totals both get exercised.
    let (first, second) = spans.split_at(spans.len() / 2);
    for connector in ["checkout", "checkout_delta"] {
        let sent = sdk_export(
            daemon.addr,
            INGEST_TOKEN,
            connector,
            first,
            serde_json::json!({}),
        );
        assert_eq!(sent, (first.len() as u64, 0));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for connector in ["checkout", "checkout_delta"] {
        let sent = sdk_export(
            daemon.addr,
            INGEST_TOKEN,
            connector,
            second,
            serde_json::json!({}),
        );
        assert_eq!(sent, (second.len() as u64, 0));
    }
    for (table, cumulative) in [("checkout", true), ("checkout_delta", false)] {
        let got = wait_for(
            &format!("{table}'s rows to add up to the spans sent"),
            Duration::from_secs(20),
            || {
                let got = totals(&rows(dir.path(), table), cumulative);
                (got == want).then_some(got)
            },
        )
        .await;
        assert_eq!(got.values().map(|e| e.0).sum::<u64>(), 420);
        let timestamps: std::collections::BTreeSet<i64> =
            rows(dir.path(), table).iter().map(|r| r.0).collect();
        assert!(
            timestamps.len() >= 2,
            "two exports a bucket apart: {timestamps:?}"
        );
        assert!(timestamps.iter().all(|t| t % 1000 == 0), "{timestamps:?}");
    }
    // The scrape page serves the running totals, in a format our strict parser takes.
    let id = support::connector(dir.path(), "checkout").unwrap().0;
    let page = request(
        daemon.addr,
        "GET",
        &format!("/v1/connectors/{id}/metrics"),
        &[
            ("Authorization", &format!("Bearer {READ_TOKEN}")),
            ("Accept", "application/openmetrics-text; version=1.0.0"),
        ],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let samples: Vec<_> = connector_prometheus::exposition::Parser::new(
        &page.body,
        connector_prometheus::exposition::Format::OpenMetrics,
    )
    .strict(true)
    .collect::<Result<_, _>>()
    .unwrap_or_else(|e| panic!("{e}\n{}", page.body));
    let calls: f64 = samples
        .iter()
        .filter(|s| s.name == "traces_span_metrics_calls_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(calls, 420.0);
    let summed = support::prometheus_scrape(
        daemon.addr,
        &format!("/v1/connectors/{id}/metrics"),
        READ_TOKEN,
        dir.path(),
        false,
        "sum(traces_span_metrics_calls_total)",
        420.0,
    )
    .await;
    assert!(summed.is_none_or(|v| v == 420.0), "{summed:?}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_checks_tokens_types_and_sizes_and_takes_otlp_json() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let path = "/v1/ingest/checkout/v1/traces";
    let bearer = format!("Bearer {INGEST_TOKEN}");
    let json_body = include_str!("otel/trace.json");
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        request(daemon.addr, "POST", path, headers, Some(body))
    };
    // The connector may not be published to the ingest path in the first instant.
    wait_for(
        "the connector to take requests",
        Duration::from_secs(10),
        || {
            let r = post(
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/json"),
                ],
                json_body.as_bytes(),
            );
            (r.status == 200).then_some(())
        },
    )
    .await;
    let no_token = post(
        &[("Content-Type", "application/json")],
        json_body.as_bytes(),
    );
    assert_eq!(no_token.status, 401);
    let read_only = format!("Bearer {READ_TOKEN}");
    let wrong_scope = post(
        &[
            ("Authorization", &read_only),
            ("Content-Type", "application/json"),
        ],
        json_body.as_bytes(),
    );
    assert_eq!(wrong_scope.status, 403);
    assert!(wrong_scope.error().1.contains("ingest:write"));
    let wrong_type = post(
        &[("Authorization", &bearer), ("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.body);
    let truncated = post(
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/x-protobuf"),
        ],
        &[0x0a, 0x10, 0x0a],
    );
    assert_eq!(truncated.status, 400, "{}", truncated.body);
    let too_big = post(
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        &vec![b' '; 2 << 20],
    );
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    // A gzip bomb: 64 KiB that expands to 64 MiB is cut at the body limit.
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 64 << 20]).unwrap();
        gz.finish().unwrap()
    };
    let bombed = post(
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    assert_eq!(bombed.status, 413, "{}", bombed.body);
    // Another span (its own id) of the same series, gzipped.
    let second_span = json_body.replace("EEE19B7EC3C1B174", "EEE19B7EC3C1B175");
    let gzipped = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(second_span.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let ok = post(
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzipped,
    );
    assert_eq!((ok.status, ok.body.as_str()), (200, "{}"));
    // The first request sent again, as an SDK retries one whose response it lost:
    // acknowledged, not counted twice.
    let retried = post(
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        json_body.as_bytes(),
    );
    assert_eq!((retried.status, retried.body.as_str()), (200, "{}"));
    let unknown = request(
        daemon.addr,
        "POST",
        "/v1/ingest/nobody/v1/traces",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        Some(b"{}"),
    );
    assert_eq!(unknown.status, 404);
    let wrong_path = request(
        daemon.addr,
        "POST",
        "/v1/ingest/checkout/v1/metrics",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        Some(b"{}"),
    );
    assert_eq!(wrong_path.status, 404);
    assert!(
        wrong_path.error().1.contains("it serves `v1/traces`"),
        "{}",
        wrong_path.body
    );

    // Two accepted requests of the spec's example: one server span each, in the rows.
    let got = wait_for(
        "the example's spans in the rows",
        Duration::from_secs(20),
        || {
            let rows = rows(dir.path(), "checkout");
            let calls: f64 = rows
                .iter()
                .filter(|r| r.1 == "traces_span_metrics_calls_total")
                .map(|r| r.4)
                .fold(0.0, f64::max);
            (calls >= 2.0).then_some(calls)
        },
    )
    .await;
    assert_eq!(
        got, 2.0,
        "the first request and the gzipped one; the retry counted once"
    );
    // The series gauge follows the commit that the rows came from.
    let complete = |m: &str| {
        m.contains("connectord_ingest_requests_total{connector_id=")
            && m.contains("code=\"415\"")
            && m.contains("connectord_ingest_items_total")
            && m.contains("connectord_ingest_series{connector_id=")
            && m.contains("result=\"duplicate\"} 1")
    };
    let metrics = wait_for(
        "the push series in /metrics",
        Duration::from_secs(10),
        || {
            let m = request(
                daemon.addr,
                "GET",
                "/metrics",
                &[("Authorization", &read_only)],
                None,
            )
            .body;
            complete(&m).then_some(m)
        },
    )
    .await;
    assert!(complete(&metrics), "{metrics}");
    daemon.stop();
}
