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
use support::{Daemon, Response, request, wait_for};

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

[ingest]
max_body_bytes = 1048576
"#,
        dir.join("data").display()
    );
    for name in ["cumulative", "delta"] {
        text.push_str(&format!(
            "\n[[connectors]]\nname = \"{name}\"\ntype = \"otlp_metrics\"\ntarget_database = \"otel\"\ntarget_table = \"{name}\"\nschedule_ms = 1000\n"
        ));
    }
    text.push_str(
        "\n[[connectors]]\nname = \"limited\"\ntype = \"otlp_metrics\"\ntarget_database = \"otel\"\n\
         target_table = \"limited\"\nschedule_ms = 1000\n[connectors.config]\nmax_series = 3\n",
    );
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

/// Waits until the connector's page has `what` on it (a bucket committed).
async fn page_containing(daemon: &Daemon, id: &str, what: &str) -> String {
    wait_for(
        &format!("`{what}` on the connector's page"),
        Duration::from_secs(20),
        || {
            let body = page(daemon, id);
            body.contains(what).then_some(body)
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
        let mut checkout_orders = 0.0;
        for (service, instance) in [("checkout", "pod-1"), ("billing", "pod-2")] {
            let reference = push(&daemon, temporality, temporality, service, instance);
            if service == "checkout" {
                checkout_orders = reference
                    .iter()
                    .filter(|((name, _), _)| name == "shop_orders_total")
                    .map(|(_, v)| v)
                    .sum();
            }
            // Both services' target_info reduce to the same series once their
            // identifying attributes are dropped; ours keeps them apart by job.
            want.extend(reference);
        }
        let id = support::connector(dir.path(), temporality).unwrap().0;
        let got = page_equals(&daemon, &id, &want).await;
        assert!(got.contains("# TYPE shop_orders_total counter"), "{got}");
        assert!(got.contains("naïve ☃"), "{got}");
        if temporality == "delta" {
            // Prometheus scrapes the page as it would a Collector's, keeping the
            // page's own job; PromQL returns what the checkout service pushed.
            let query = r#"sum(shop_orders_total{job="checkout",instance="pod-1"})"#;
            let answered = support::prometheus_scrape(
                daemon.addr,
                &format!("/v1/connectors/{id}/metrics"),
                READ_TOKEN,
                dir.path(),
                true,
                query,
                checkout_orders,
            )
            .await;
            assert!(
                answered.is_none_or(|v| v == checkout_orders),
                "{answered:?}"
            );
            assert!(checkout_orders > 0.0);
        }
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

/// A request of `metrics` from service `svc`, in protobuf.
fn body(metrics: Vec<opentelemetry_proto::tonic::metrics::v1::Metric>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec()
}

fn number_metric(
    name: &str,
    monotonic: Option<bool>,
    value: f64,
) -> opentelemetry_proto::tonic::metrics::v1::Metric {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, Sum, metric, number_data_point,
    };
    let points = vec![NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }];
    Metric {
        name: name.into(),
        data: Some(match monotonic {
            Some(is_monotonic) => metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: 2,
                is_monotonic,
            }),
            None => metric::Data::Gauge(Gauge {
                data_points: points,
            }),
        }),
        ..Metric::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer_and_commits_nothing_half_way() {
    use opentelemetry_proto::tonic::metrics::v1::{Histogram, HistogramDataPoint, Metric, metric};
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let post = |content_type: &str, extra: &[(&str, &str)], body: &[u8]| {
        post_body(&daemon, "cumulative", content_type, extra, body)
    };
    let good = body(vec![number_metric("good.gauge", None, 1.5)]);
    until_taken(|| post("application/x-protobuf", &[], &good)).await;

    let truncated = &good[..good.len() - 4];
    let r = post("application/x-protobuf", &[], truncated);
    r.assert_says(400, "not an OTLP ExportMetricsServiceRequest in protobuf");

    let r = post("text/plain", &[], &good);
    r.assert_says(415, "application/x-protobuf or application/json");

    let r = post("application/x-protobuf", &[], &vec![0u8; 2 << 20]);
    r.assert_says(413, "ingest.max_body_bytes");

    let r = post("application/json", &[], br#"{"resourceMetrics": "many"}"#);
    r.assert_says(400, "in JSON");

    // OTLP/JSON receivers ignore fields they do not know, as the specification says.
    let json = r#"{"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "futureField": 1, "scopeMetrics": [{"metrics": [{"name": "json.gauge", "gauge": {"dataPoints": [{"asDouble": 2.5, "someday": true}]}}]}]}]}"#;
    let r = post("application/json", &[], json.as_bytes());
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));

    // NaN and infinities: a gauge may be +Inf; a counter may not be NaN.
    let r = post(
        "application/x-protobuf",
        &[],
        &body(vec![
            number_metric("inf.gauge", None, f64::INFINITY),
            number_metric("nan.counter", Some(true), f64::NAN),
        ]),
    );
    r.assert_says(200, "a monotonic sum has value NaN");

    let bad_histogram = Metric {
        name: "bad.histogram".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: 9,
                sum: Some(3.0),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![1.0],
                ..HistogramDataPoint::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Metric::default()
    };
    let r = post("application/x-protobuf", &[], &body(vec![bad_histogram]));
    r.assert_says(200, "bucket counts add up to 3, but its count is 9");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &body(vec![number_metric("gzip.gauge", None, 4.0)]))
        .unwrap();
    let r = post(
        "application/x-protobuf",
        &[("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // What was taken is served and committed; nothing of the refused points is.
    let id = support::connector(dir.path(), "cumulative").unwrap().0;
    let page = page_containing(&daemon, &id, "gzip_gauge{").await;
    for taken in [
        "good_gauge{job=\"svc\"} 1.5",
        "json_gauge{job=\"svc\"} 2.5",
        "inf_gauge{job=\"svc\"} +Inf",
    ] {
        assert!(page.contains(taken), "{taken}\n{page}");
    }
    assert!(
        !page.contains("nan_counter") && !page.contains("bad_histogram"),
        "{page}"
    );
    let rows = wait_for("the rows", Duration::from_secs(20), || {
        let rows = latest_rows(dir.path(), "cumulative");
        rows.keys()
            .any(|(name, _)| name == "gzip_gauge")
            .then_some(rows)
    })
    .await;
    let names: std::collections::BTreeSet<&str> = rows.keys().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["good_gauge", "gzip_gauge", "inf_gauge", "json_gauge"]
            .into_iter()
            .collect()
    );
}

/// Posts an OTLP/JSON request of `metrics` (JSON objects) from service `svc` to
/// `connector`.
fn post_metrics(daemon: &Daemon, connector: &str, metrics: &[String]) -> Response {
    let body = format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "svc"}}}}]}}, "scopeMetrics": [{{"metrics": [{}]}}]}}]}}"#,
        metrics.join(",")
    );
    post_body(daemon, connector, "application/json", &[], body.as_bytes())
}

/// Posts `body` as `content_type`, with `extra` headers, to `connector`'s OTLP
/// metrics path with the ingest token.
fn post_body(
    daemon: &Daemon,
    connector: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let bearer = format!("Bearer {INGEST_TOKEN}");
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", content_type),
    ];
    headers.extend_from_slice(extra);
    request(
        daemon.addr,
        "POST",
        &format!("/v1/ingest/{connector}/v1/metrics"),
        &headers,
        Some(body),
    )
}

/// A gauge of one point, as OTLP/JSON.
fn gauge(name: &str) -> String {
    format!(r#"{{"name": "{name}", "gauge": {{"dataPoints": [{{"asDouble": 1}}]}}}}"#)
}

/// Asserts that `r` is a 200 whose partial success rejected one point, for a reason
/// that contains `why`.
fn assert_one_rejected(r: &Response, why: &str) {
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"], "1",
        "{answer}"
    );
    let reason = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(reason.contains(why), "{reason}");
}

/// Waits until the connector takes requests, sending with `send` until one is a 200.
async fn until_taken(send: impl Fn() -> Response) {
    wait_for(
        "the connector to take requests",
        Duration::from_secs(10),
        || (send().status == 200).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_series_past_max_series_are_refused_in_the_response_once_a_commit_ran() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    until_taken(|| post_metrics(&daemon, "limited", &[gauge("a"), gauge("b")])).await;
    let id = support::connector(dir.path(), "limited").unwrap().0;
    page_containing(&daemon, &id, "b{").await;
    // Two series kept, three allowed: one more fits, the next is refused in the
    // response, which names the limit; the known ones are still taken.
    let r = post_metrics(&daemon, "limited", &[gauge("a"), gauge("c"), gauge("d")]);
    assert_one_rejected(&r, "max_series (3): the connector keeps 2 series");
    let body = page_containing(&daemon, &id, "c{").await;
    assert!(!body.contains("d{"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_whose_page_names_clash_with_a_kept_one_is_refused_in_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let counter = r#"{"name": "x", "sum": {"dataPoints": [{"asDouble": 1}], "aggregationTemporality": 2, "isMonotonic": true}}"#;
    until_taken(|| post_metrics(&daemon, "cumulative", &[counter.to_owned()])).await;
    let id = support::connector(dir.path(), "cumulative").unwrap().0;
    page_containing(&daemon, &id, "x_total{").await;
    // The counter `x` writes `x_total`: a gauge of that name is refused in the
    // response, naming both; the other gauge of the request is taken.
    let r = post_metrics(&daemon, "cumulative", &[gauge("x_total"), gauge("y")]);
    assert_one_rejected(
        &r,
        "metric `x_total` becomes family `x_total`, whose names on the scrape page clash with those of family `x`",
    );
    let body = page_containing(&daemon, &id, "y{").await;
    assert_eq!(body.matches("# TYPE x_total").count(), 1, "{body}");
    for sample in Parser::new(&body, Format::Prometheus).strict(true) {
        assert!(sample.is_ok(), "{sample:?}\n{body}");
    }
}
