//! Inputs for the parser benchmarks: the real fixtures and a deterministic generated
//! exposition shaped like a large kube-state-metrics scrape.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The project's `fixtures/exposition/` folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/exposition")
}

/// Reads a fixture by file name.
///
/// # Panics
///
/// When the fixture is missing: a benchmark without its input is meaningless.
pub fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

const LABEL_NAMES: [&str; 11] = [
    "namespace",
    "pod",
    "container",
    "node",
    "instance",
    "job",
    "service",
    "endpoint",
    "uid",
    "phase",
    "created_by_kind",
];

/// A small deterministic generator (xorshift64*), so every run parses the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Generates Prometheus text of at least `target_bytes`: families of 20 samples with
/// HELP and TYPE, 8 to 11 labels per sample, a mix of integer and float values, and
/// about one sample in eight with a timestamp. The same call always returns the same text.
pub fn generate_exposition(target_bytes: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(target_bytes + 4096);
    let mut family = 0;
    while out.len() < target_bytes {
        let kind = ["gauge", "counter"][family % 2];
        let name = format!(
            "kube_generated_metric_{family}{}",
            if kind == "counter" { "_total" } else { "" }
        );
        let _ = writeln!(
            out,
            "# HELP {name} Generated family {family} for parser benchmarks."
        );
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for sample in 0..20 {
            out.push_str(&name);
            out.push('{');
            let labels = 8 + rng.below(4) as usize;
            for (i, label) in LABEL_NAMES.iter().take(labels).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{label}=\"{label}-{:x}-{sample}\"", rng.below(1 << 20));
            }
            out.push_str("} ");
            match rng.below(4) {
                0 => {
                    let _ = write!(out, "{}", rng.below(1000));
                }
                1 => {
                    let _ = write!(out, "{}", rng.below(1 << 40));
                }
                _ => {
                    let _ = write!(out, "{:.6}", rng.below(1 << 30) as f64 / 1024.0);
                }
            }
            if rng.below(8) == 0 {
                let _ = write!(out, " {}", 1_700_000_000_000 + rng.below(1 << 20));
            }
            out.push('\n');
        }
        family += 1;
    }
    out
}

/// `scrapes` scrapes of `text` as the metric rows the Prometheus connector commits
/// (`timestamp`, `name`, `value` or null for NaN and ±Inf, `labels` as JSON), 15 s
/// apart: the input of the destination encoders' benchmarks.
///
/// # Panics
///
/// When `text` does not parse: a benchmark without its input is meaningless.
pub fn metric_rows(text: &str, scrapes: i64) -> connector_core::Batch {
    use connector_core::Batch;
    use connector_prometheus::exposition::{Format, Parser};
    let mut batch = Batch::new(metric_rows::schema());
    for scrape in 0..scrapes {
        for sample in Parser::new(text, Format::Prometheus) {
            let sample = sample.unwrap_or_else(|e| panic!("benchmark input failed to parse: {e}"));
            let row = batch
                .row()
                .timestamp(1_700_000_000_000 + scrape * 15_000)
                .string(sample.name);
            let row = if sample.value.is_finite() {
                row.real(sample.value)
            } else {
                row.null()
            };
            row.map(sample.labels.iter_decoded())
                .finish()
                .unwrap_or_else(|e| panic!("a metric row: {e}"));
        }
    }
    batch
}

/// The metric rows of `scrape` (a batch of [`metric_rows::schema()`]) again, stamped
/// `timestamp_ms`: the next scrape of the same target, without parsing again.
///
/// # Panics
///
/// When a row has no name or no labels: `scrape` is not a metric scrape.
pub fn restamped(scrape: &connector_core::Batch, timestamp_ms: i64) -> connector_core::Batch {
    use connector_core::{Batch, Value};
    let mut batch = Batch::with_capacity(scrape.schema().clone(), scrape.len());
    for row in scrape.rows() {
        let (name, labels) = metric_rows::series_of(&row)
            .unwrap_or_else(|| panic!("a metric row without name or labels: {:?}", row.at(1)));
        let writer = batch.row().timestamp(timestamp_ms).string(name);
        let writer = match row.at(2) {
            Value::Real(v) => writer.real(v),
            _ => writer.null(),
        };
        writer
            .json_text(labels)
            .finish()
            .unwrap_or_else(|e| panic!("a metric row: {e}"));
    }
    batch
}

/// A string attribute.
fn text(key: &str, value: String) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// An OTLP `ExportTraceServiceRequest` in protobuf, shaped like what instrumented web
/// services export: `spans` spans of 3 services, 20 routes, each route's spans of one
/// kind (as an instrumentation library makes them), status unset but for about one
/// span in ten (ok or error, the error ones answering 500), 16-byte trace and 8-byte
/// span ids, and 4 HTTP attributes per span (`http.method`, `http.route`,
/// `http.status_code`, `net.peer.name`). `seed` varies ids, routes, statuses and
/// durations; the same arguments always give the same bytes.
pub fn otlp_traces(spans: usize, seed: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message as _;

    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let services = ["checkout", "payments", "catalog"];
    let resource_spans = services
        .iter()
        .enumerate()
        .map(|(s, service)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", (*service).to_owned()),
                    text("host.name", format!("host-{s}")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans / services.len() + usize::from(s < spans % services.len()))
                    .map(|_| {
                        let start = 1_700_000_000_000_000_000 + rng.below(1_000_000_000);
                        let route = rng.below(20);
                        let status = match rng.below(20) {
                            0 => 1,
                            1 => 2,
                            _ => 0,
                        };
                        Span {
                            trace_id: rng.next().to_le_bytes().repeat(2),
                            span_id: rng.next().to_le_bytes().to_vec(),
                            name: format!("GET /api/v1/items/{route}"),
                            kind: i32::try_from(route % 5 + 1).unwrap_or(0),
                            start_time_unix_nano: start,
                            end_time_unix_nano: start + rng.below(2_000_000_000),
                            attributes: vec![
                                text("http.method", "GET".to_owned()),
                                text("http.route", format!("/api/v1/items/{route}")),
                                text(
                                    "http.status_code",
                                    if status == 2 { "500" } else { "200" }.to_owned(),
                                ),
                                text(
                                    "net.peer.name",
                                    format!("10.0.{}.{}", rng.below(4), rng.below(250)),
                                ),
                            ],
                            status: Some(Status {
                                code: status,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// An OTLP/HTTP request to a push connector, as connectord hands it over: `body`
/// in protobuf, posted to the ingest `path` (`v1/traces`, `v1/metrics`).
pub fn protobuf_ingest(path: &str, body: Vec<u8>) -> connector_core::IngestRequest {
    connector_core::IngestRequest {
        path: path.into(),
        headers: vec![("content-type".into(), "application/x-protobuf".into())],
        body,
        ..connector_core::IngestRequest::default()
    }
}

/// The data points of [`otlp_metrics`] that are delta counter increments of 1: a
/// load test checks the committed counters add up to exactly these.
pub const OTLP_COUNTER_NAME: &str = "http.server.requests";

/// An OTLP/HTTP metrics request body (protobuf) of about `points` data points, shaped
/// like an instrumented web service's export with delta temporality: three services,
/// per service a counter of requests by route, method and status (delta, each point 1),
/// a duration histogram by route (delta, 10 bounds) and a memory gauge. Returns the
/// body and how many of its points are counter increments. The same arguments always
/// give the same body.
pub fn otlp_metrics(points: usize, seed: u64) -> (Vec<u8>, u64) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;

    const DELTA: i32 = 1;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let services = ["checkout", "payments", "catalog"];
    let per_service = points / services.len();
    let mut counters = 0u64;
    let resource_metrics = services
        .iter()
        .enumerate()
        .map(|(s, service)| {
            let time = 1_700_000_000_000_000_000 + seed * 1_000_000_000;
            let counter_points = per_service * 7 / 10;
            let histogram_points = per_service * 2 / 10;
            let gauge_points = per_service - counter_points - histogram_points;
            counters += counter_points as u64;
            let route = |rng: &mut Rng| format!("/api/v1/items/{}", rng.below(20));
            let counter = Metric {
                name: OTLP_COUNTER_NAME.to_owned(),
                unit: "{request}".to_owned(),
                description: "Requests served.".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: (0..counter_points)
                        .map(|_| NumberDataPoint {
                            attributes: vec![
                                text("http.route", route(&mut rng)),
                                text(
                                    "http.request.method",
                                    ["GET", "POST", "PUT"][rng.below(3) as usize].to_owned(),
                                ),
                                text(
                                    "http.response.status_code",
                                    (200 + 100 * rng.below(4)).to_string(),
                                ),
                            ],
                            time_unix_nano: time,
                            value: Some(number_data_point::Value::AsInt(1)),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: DELTA,
                    is_monotonic: true,
                })),
                ..Default::default()
            };
            let bounds = vec![
                5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
            ];
            let histogram = Metric {
                name: "http.server.request.duration".to_owned(),
                unit: "ms".to_owned(),
                description: "Request time.".to_owned(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: (0..histogram_points)
                        .map(|_| {
                            let counts: Vec<u64> =
                                (0..=bounds.len()).map(|_| rng.below(5)).collect();
                            HistogramDataPoint {
                                attributes: vec![text("http.route", route(&mut rng))],
                                time_unix_nano: time,
                                count: counts.iter().sum(),
                                sum: Some(rng.below(100_000) as f64 / 10.0),
                                bucket_counts: counts,
                                explicit_bounds: bounds.clone(),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: DELTA,
                })),
                ..Default::default()
            };
            let gauge = Metric {
                name: "process.memory.usage".to_owned(),
                unit: "By".to_owned(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: (0..gauge_points)
                        .map(|i| NumberDataPoint {
                            attributes: vec![text("worker", i.to_string())],
                            time_unix_nano: time,
                            value: Some(number_data_point::Value::AsDouble(
                                rng.below(1 << 30) as f64
                            )),
                            ..Default::default()
                        })
                        .collect(),
                })),
                ..Default::default()
            };
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", (*service).to_owned()),
                        text("service.instance.id", format!("{service}-{s}")),
                        text("host.name", format!("host-{s}")),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".to_owned(),
                        version: "1.0.0".to_owned(),
                        ..Default::default()
                    }),
                    metrics: vec![counter, histogram, gauge],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    (
        ExportMetricsServiceRequest { resource_metrics }.encode_to_vec(),
        counters,
    )
}

/// An OTLP/HTTP metrics request body (protobuf) shaped like an SDK's export of many
/// instruments with few series each, where what a request pays per metric shows:
/// `instruments` metrics of one service, by turns a cumulative counter, a gauge and
/// a cumulative histogram (5 bounds), each with two points (`outcome` ok and
/// error). The same arguments always give the same body.
pub fn otlp_metrics_instruments(instruments: usize, seed: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;

    const CUMULATIVE: i32 = 2;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let outcomes = ["ok", "error"];
    let metrics = (0..instruments)
        .map(|i| {
            let name = format!("app.component{}.operation{}", i % 7, i);
            let number = |rng: &mut Rng| -> Vec<NumberDataPoint> {
                outcomes
                    .iter()
                    .map(|outcome| NumberDataPoint {
                        attributes: vec![text("outcome", (*outcome).to_owned())],
                        value: Some(number_data_point::Value::AsDouble(rng.below(1000) as f64)),
                        ..Default::default()
                    })
                    .collect()
            };
            let data = match i % 3 {
                0 => metric::Data::Sum(Sum {
                    data_points: number(&mut rng),
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: true,
                }),
                1 => metric::Data::Gauge(Gauge {
                    data_points: number(&mut rng),
                }),
                _ => metric::Data::Histogram(Histogram {
                    data_points: outcomes
                        .iter()
                        .map(|outcome| {
                            let counts: Vec<u64> = (0..6).map(|_| rng.below(5)).collect();
                            HistogramDataPoint {
                                attributes: vec![text("outcome", (*outcome).to_owned())],
                                count: counts.iter().sum(),
                                sum: Some(rng.below(10_000) as f64),
                                bucket_counts: counts,
                                explicit_bounds: vec![5.0, 10.0, 50.0, 100.0, 500.0],
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: CUMULATIVE,
                }),
            };
            Metric {
                name,
                unit: if i % 3 == 2 { "ms" } else { "1" }.to_owned(),
                description: "An operation.".to_owned(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("service.name", "inventory".to_owned())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use connector_prometheus::exposition::{Format, parse};

    use super::*;

    #[test]
    fn generated_metrics_are_deterministic_and_count_their_counter_points() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        use prost::Message as _;

        let (body, counters) = otlp_metrics(510, 7);
        assert_eq!((body.clone(), counters), otlp_metrics(510, 7));
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let metrics = || {
            request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
        };
        let points: usize = metrics()
            .map(|m| match m.data.as_ref().unwrap() {
                Data::Sum(s) => s.data_points.len(),
                Data::Gauge(g) => g.data_points.len(),
                Data::Histogram(h) => h.data_points.len(),
                _ => unreachable!(),
            })
            .sum();
        assert_eq!(points, 510);
        let counted: usize = metrics()
            .filter(|m| m.name == OTLP_COUNTER_NAME)
            .map(|m| match m.data.as_ref().unwrap() {
                Data::Sum(s) => s.data_points.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(counted as u64, counters);
    }

    #[test]
    fn generated_input_is_deterministic_valid_and_shaped_as_promised() {
        let text = generate_exposition(200_000);
        assert_eq!(text, generate_exposition(200_000));
        assert!(text.len() >= 200_000);
        let samples = parse(&text, Format::Prometheus).unwrap();
        assert!(samples.len() > 500);
        for s in &samples {
            assert!(
                (8..=11).contains(&s.labels.len()),
                "{} labels",
                s.labels.len()
            );
        }
        assert!(samples.iter().any(|s| s.timestamp_ms.is_some()));
        assert!(samples.iter().any(|s| s.value.fract() != 0.0));
    }
}
