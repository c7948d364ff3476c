use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn number(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }
}

fn sum(
    name: &str,
    unit: &str,
    temporality: i32,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        description: format!("{name} help"),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Metric::default()
    }
}

fn histogram(name: &str, temporality: i32, counts: Vec<u64>, count: u64, sum: f64) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: "ms".to_owned(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count,
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: vec![5.0, 10.0],
                ..HistogramDataPoint::default()
            }],
            aggregation_temporality: temporality,
        })),
        ..Metric::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "pod-1"),
                    kv("host.name", "node-a"),
                ],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meter".to_owned(),
                    version: "1.2".to_owned(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn push(config: &OtlpMetricsConfig, req: &ExportMetricsServiceRequest) -> Accepted {
    push_at(config, req, 0)
}

fn push_at(
    config: &OtlpMetricsConfig,
    req: &ExportMetricsServiceRequest,
    received_ms: i64,
) -> Accepted {
    let request = IngestRequest {
        received_ms,
        path: METRICS_PATH.to_owned(),
        headers: vec![(
            "content-type".to_owned(),
            "application/x-protobuf".to_owned(),
        )],
        body: req.encode_to_vec(),
    };
    OtlpMetrics
        .accept(config, &request)
        .unwrap_or_else(|r| panic!("refused: {}", String::from_utf8_lossy(&r.body)))
}

/// Asserts how many points `accepted` took and refused, and that its response
/// names `why`.
fn assert_taken_and_refused(accepted: &Accepted, counts: (u64, u64), why: &str) {
    assert_eq!((accepted.accepted, accepted.refused), counts);
    let body = String::from_utf8_lossy(&accepted.response.body);
    assert!(body.contains(why), "{body}");
}

/// The page's two formats: the `Accept` header asking for each, and whether it is
/// OpenMetrics.
const PAGE_FORMATS: [(&str, bool); 2] = [
    ("text/plain", false),
    (otlp_common::exposition::OPENMETRICS, true),
];

fn page(config: &OtlpMetricsConfig, state: &[u8], accept: &str) -> String {
    page_at(config, state, accept, 0)
}

fn page_at(config: &OtlpMetricsConfig, state: &[u8], accept: &str, received_ms: i64) -> String {
    let request = IngestRequest {
        headers: vec![("accept".to_owned(), accept.to_owned())],
        received_ms,
        ..IngestRequest::default()
    };
    let response = OtlpMetrics.serve(config, Some(state), &request);
    assert_eq!(response.status, 200);
    String::from_utf8(response.body).unwrap()
}

fn config() -> OtlpMetricsConfig {
    OtlpMetricsConfig::from_json(&serde_json::Value::Null).unwrap()
}

/// The samples of a page, as the Prometheus parser reads them: `name{labels} value`.
fn samples(page: &str, om: bool) -> Vec<String> {
    use connector_prometheus::exposition::{Format, parse};
    let format = if om {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let mut out: Vec<String> = parse(page, format)
        .unwrap_or_else(|e| panic!("the page does not parse: {e}\n{page}"))
        .iter()
        .map(|s| {
            format!(
                "{}{:?} {}",
                s.name,
                s.labels.iter_decoded().collect::<Vec<_>>(),
                s.value
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn delta_counters_add_up_across_commits_and_cumulative_ones_replace() {
    let config = config();
    let first = push(
        &config,
        &request(vec![
            sum(
                "http.requests",
                "{request}",
                1,
                true,
                vec![number(3.0, vec![kv("http.route", "/a")])],
            ),
            sum("queue.depth", "{item}", 2, false, vec![number(7.0, vec![])]),
        ]),
    );
    assert_eq!((first.accepted, first.refused), (2, 0));
    let c1 = OtlpMetrics
        .commit(&config, 1_000, &[first.staged], None)
        .unwrap();
    let second = push(
        &config,
        &request(vec![
            sum(
                "http.requests",
                "{request}",
                1,
                true,
                vec![number(4.0, vec![kv("http.route", "/a")])],
            ),
            sum("queue.depth", "{item}", 2, false, vec![number(2.0, vec![])]),
        ]),
    );
    let c2 = OtlpMetrics
        .commit(&config, 2_000, &[second.staged], Some(&c1.state))
        .unwrap();
    assert_eq!(c2.series, 3, "two series and target_info");
    let text = page(&config, &c2.state, "text/plain");
    let got = samples(&text, false);
    let expected_labels = "(\"instance\", \"pod-1\"), (\"job\", \"shop/checkout\"), (\"otel_scope_name\", \"meter\"), (\"otel_scope_version\", \"1.2\")";
    assert!(
        got.contains(&format!(
            "http_requests_total[(\"http_route\", \"/a\"), {expected_labels}] 7"
        )),
        "{text}"
    );
    assert!(
        got.contains(&format!("queue_depth[{expected_labels}] 2")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP queue_depth queue.depth help\n"),
        "{text}"
    );
    assert!(got.iter().any(|s| s.starts_with("target_info[(\"host_name\", \"node-a\"), (\"instance\", \"pod-1\"), (\"job\", \"shop/checkout\")] 1")), "{text}");
    // The rows of the second bucket carry the running value.
    let rows: Vec<_> = c2.batch.rows().map(|r| format!("{:?}", r.at(1))).collect();
    assert!(
        rows.iter().any(|r| r.contains("http_requests_total")),
        "{rows:?}"
    );
}

#[test]
fn histograms_are_cumulative_buckets_and_bad_ones_are_rejected_with_the_reason() {
    let config = config();
    let good = push(
        &config,
        &request(vec![histogram("rpc.duration", 1, vec![1, 2, 3], 6, 40.0)]),
    );
    let again = push(
        &config,
        &request(vec![histogram("rpc.duration", 1, vec![1, 0, 0], 1, 2.0)]),
    );
    let c = OtlpMetrics
        .commit(&config, 1_000, &[good.staged, again.staged], None)
        .unwrap();
    let om = page(
        &config,
        &c.state,
        "application/openmetrics-text; version=1.0.0",
    );
    let got = samples(&om, true);
    assert!(
        got.iter()
            .any(|s| s.starts_with("rpc_duration_milliseconds_bucket")
                && s.contains("(\"le\", \"5.0\")")
                && s.ends_with(" 2")),
        "{om}"
    );
    assert!(
        got.iter()
            .any(|s| s.starts_with("rpc_duration_milliseconds_bucket")
                && s.contains("+Inf")
                && s.ends_with(" 7")),
        "{om}"
    );
    assert!(
        got.iter()
            .any(|s| s.starts_with("rpc_duration_milliseconds_sum") && s.ends_with(" 42")),
        "{om}"
    );
    assert!(
        om.contains("# UNIT rpc_duration_milliseconds milliseconds\n"),
        "{om}"
    );

    let bad = push(
        &config,
        &request(vec![histogram("rpc.duration", 2, vec![1, 2, 3], 5, 1.0)]),
    );
    assert_eq!((bad.accepted, bad.refused), (0, 1));
    let response = serde_json::to_string(
        &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            bad.response.body.as_slice(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        response.contains("bucket counts add up to 6, but its count is 5"),
        "{response}"
    );
}

#[test]
fn unrepresentable_points_are_counted_never_dropped() {
    let config = config();
    let exp = Metric {
        name: "latency".to_owned(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![Default::default(); 3],
            aggregation_temporality: 2,
        })),
        ..Metric::default()
    };
    let nan_counter = sum("errors", "", 2, true, vec![number(f64::NAN, vec![])]);
    let unspecified = sum("odd", "", 0, true, vec![number(1.0, vec![])]);
    let gauge_nan = Metric {
        name: "temperature".to_owned(),
        unit: "Cel".to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![number(f64::NAN, vec![])],
        })),
        ..Metric::default()
    };
    let accepted = push(
        &config,
        &request(vec![exp, nan_counter, unspecified, gauge_nan]),
    );
    assert_taken_and_refused(
        &accepted,
        (1, 5),
        "exponential histograms have no Prometheus text form",
    );
}

#[test]
fn empty_names_are_rejected_and_reserved_ones_sanitised() {
    let config = config();
    let accepted = push(
        &config,
        &request(vec![
            sum(
                "x",
                "",
                2,
                false,
                vec![number(1.0, vec![kv("__name__", "y")])],
            ),
            sum("x", "", 2, false, vec![number(1.0, vec![kv("", "y")])]),
            sum("", "", 2, false, vec![number(1.0, vec![])]),
            sum("x", "", 2, false, vec![number(1.0, vec![kv("ok", "y")])]),
        ]),
    );
    assert_taken_and_refused(&accepted, (2, 2), "an attribute has an empty key");
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    let text = page(&config, &c.state, "text/plain");
    assert!(text.contains("x{_name_=\"y\","), "{text}");
}

#[test]
fn colliding_attribute_names_join_their_values_in_key_order() {
    let config = config();
    let accepted = push(
        &config,
        &request(vec![sum(
            "x",
            "",
            2,
            false,
            vec![number(
                1.0,
                vec![kv("a.b", "2"), kv("a_b", "1"), kv("empty", "")],
            )],
        )]),
    );
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    let text = page(&config, &c.state, "text/plain");
    assert!(text.contains("x{a_b=\"2;1\",instance="), "{text}");
    assert!(!text.contains("empty="), "{text}");
}

#[test]
fn limits_reject_with_their_names_and_series_expire() {
    let config = OtlpMetricsConfig::from_json(&serde_json::json!({"max_series": 2, "max_points_per_request": 3, "metric_expiration": "10s"})).unwrap();
    let points = (0..5)
        .map(|i| number(1.0, vec![kv("i", &i.to_string())]))
        .collect();
    let accepted = push(&config, &request(vec![sum("g", "", 2, false, points)]));
    // Two series fit in one request; the third point would be a third series; the
    // fourth and fifth pass max_points_per_request.
    assert_taken_and_refused(&accepted, (2, 3), "a new series past max_series (2)");
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    // target_info takes one of the two series: the commit holds the limit, counting
    // what it turns away.
    assert_eq!((c.series, c.overflowed), (2, 1));
    // Once a commit has run, a later request's new series are refused in its own
    // response, and a known series is still taken.
    let more = [7, 8, 0]
        .map(|i| number(1.0, vec![kv("i", &i.to_string())]))
        .to_vec();
    let accepted = push(&config, &request(vec![sum("g", "", 2, false, more)]));
    assert_taken_and_refused(&accepted, (1, 2), "the connector keeps 2 series");
    let c = OtlpMetrics
        .commit(&config, 2_000, &[accepted.staged], Some(&c.state))
        .unwrap();
    assert_eq!((c.series, c.overflowed), (2, 1));
    // A process that has not committed yet (a fresh config) does not know the
    // series: the commit turns them away and counts them.
    let fresh = OtlpMetricsConfig::from_json(
        &serde_json::json!({"max_series": 2, "metric_expiration": "10s"}),
    )
    .unwrap();
    let more = (7..9)
        .map(|i| number(1.0, vec![kv("i", &i.to_string())]))
        .collect();
    let accepted = push(&fresh, &request(vec![sum("g", "", 2, false, more)]));
    assert_eq!((accepted.accepted, accepted.refused), (2, 0));
    let c = OtlpMetrics
        .commit(&fresh, 2_500, &[accepted.staged], Some(&c.state))
        .unwrap();
    assert_eq!((c.series, c.overflowed), (2, 3));
    // Ten seconds after the last commit's series were seen they are expired: a new
    // series fits again.
    let later = push_at(
        &config,
        &request(vec![sum("h", "", 2, false, vec![number(1.0, vec![])])]),
        20_000,
    );
    assert_eq!((later.accepted, later.refused), (1, 0));
    let c2 = OtlpMetrics
        .commit(&config, 20_000, &[later.staged], Some(&c.state))
        .unwrap();
    let text = page(&config, &c2.state, "text/plain");
    assert!(!text.contains("g{"), "expired series are gone: {text}");
    assert!(text.contains("h{"), "{text}");
    // Nothing commits after that: a read 10 s past `h`'s bucket still shows it, one
    // more millisecond later does not, and a family with no series left is not named.
    let text = page_at(&config, &c2.state, "text/plain", 30_000);
    assert!(text.contains("h{"), "{text}");
    let text = page_at(&config, &c2.state, "text/plain", 30_001);
    assert!(!text.contains("h{") && !text.contains("# TYPE h"), "{text}");
}

#[test]
fn a_body_that_is_not_a_request_is_a_400_naming_why() {
    let config = config();
    let mut body = request(vec![sum("x", "", 2, true, vec![number(1.0, vec![])])]).encode_to_vec();
    body.truncate(body.len() - 3);
    let request = IngestRequest {
        path: METRICS_PATH.to_owned(),
        headers: vec![(
            "content-type".to_owned(),
            "application/x-protobuf".to_owned(),
        )],
        body,
        ..IngestRequest::default()
    };
    let refused = OtlpMetrics.accept(&config, &request).unwrap_err();
    assert_eq!(refused.status, 400);
    let json = IngestRequest {
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: br#"{"resourceMetrics": [{"scopeMetrics": 5}]}"#.to_vec(),
        ..request
    };
    let refused = OtlpMetrics.accept(&config, &json).unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        String::from_utf8_lossy(&refused.body)
            .contains("not an OTLP ExportMetricsServiceRequest in JSON")
    );
}

#[test]
fn a_damaged_state_is_named_not_defaulted() {
    let err = OtlpMetrics
        .commit(&config(), 1_000, &[], Some(b"\xff\xff"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the connector's state does not decode"),
        "{err}"
    );
}

/// What the `otlp_metrics` fuzz target found: pages our strict parser refused.
#[test]
fn pages_stay_valid_for_negative_bounds_negative_sums_and_empty_keys() {
    let config = config();
    let mut negative = histogram("temperature.change", 2, vec![1, 1, 1], 3, -4.0);
    if let Some(metric::Data::Histogram(h)) = &mut negative.data {
        h.data_points[0].explicit_bounds = vec![-5.0, 0.0];
    }
    let bad_sum = histogram("latency", 2, vec![1, 1, 1], 3, -1.0);
    let mut req = request(vec![negative, bad_sum]);
    req.resource_metrics[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("", "orphan"));
    let accepted = push(&config, &req);
    assert_taken_and_refused(
        &accepted,
        (1, 1),
        "histogram sum -1 is negative but no bound is",
    );
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    for (accept, om) in PAGE_FORMATS {
        let text = page(&config, &c.state, accept);
        let got = samples(&text, om);
        assert!(
            !text.contains("temperature_change_milliseconds_sum"),
            "{text}"
        );
        assert!(
            !text.contains("temperature_change_milliseconds_count"),
            "{text}"
        );
        assert!(
            got.iter()
                .any(|s| s.starts_with("temperature_change_milliseconds_bucket")),
            "{text}"
        );
        assert!(!text.contains("orphan"), "{text}");
    }
}

#[test]
fn label_limits_reject_points_naming_the_limit() {
    let config =
        OtlpMetricsConfig::from_json(&serde_json::json!({"max_labels_per_series": 6})).unwrap();
    // Every point has job, instance and the two scope labels: four of the six.
    let accepted = push(
        &config,
        &request(vec![sum(
            "g",
            "",
            2,
            false,
            vec![
                number(1.0, vec![kv("a", "1"), kv("b", "2")]),
                number(1.0, vec![kv("a", "1"), kv("b", "2"), kv("c", "3")]),
            ],
        )]),
    );
    assert_taken_and_refused(
        &accepted,
        (1, 1),
        "7 labels, more than max_labels_per_series (6)",
    );
}

#[test]
fn a_long_label_value_names_the_label() {
    let config =
        OtlpMetricsConfig::from_json(&serde_json::json!({"max_label_value_bytes": 13})).unwrap();
    let accepted = push(
        &config,
        &request(vec![sum(
            "g",
            "",
            2,
            false,
            vec![number(1.0, vec![kv("a", "12345678901234")])],
        )]),
    );
    assert_taken_and_refused(
        &accepted,
        (0, 1),
        "label `a` has 14 bytes, more than max_label_value_bytes (13)",
    );
}

#[test]
fn summaries_keep_their_quantiles_sum_and_count() {
    use opentelemetry_proto::tonic::metrics::v1::{Summary, SummaryDataPoint, summary_data_point};
    let config = config();
    let summary = Metric {
        name: "rpc.latency".to_owned(),
        unit: "s".to_owned(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                count: 10,
                sum: 4.5,
                quantile_values: [(0.5, 0.25), (0.99, 1.5)]
                    .map(|(quantile, value)| summary_data_point::ValueAtQuantile {
                        quantile,
                        value,
                    })
                    .to_vec(),
                ..SummaryDataPoint::default()
            }],
        })),
        ..Metric::default()
    };
    let accepted = push(&config, &request(vec![summary]));
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    for (accept, om) in PAGE_FORMATS {
        let text = page(&config, &c.state, accept);
        let got = samples(&text, om);
        assert!(
            text.contains("# TYPE rpc_latency_seconds summary\n"),
            "{text}"
        );
        assert!(
            got.iter().any(|s| s.starts_with("rpc_latency_seconds[")
                && s.contains("(\"quantile\", \"0.99\")")
                && s.ends_with(" 1.5")),
            "{text}"
        );
        assert!(
            got.iter()
                .any(|s| s.starts_with("rpc_latency_seconds_count[") && s.ends_with(" 10")),
            "{text}"
        );
    }
    let names: Vec<String> = c.batch.rows().map(|r| format!("{:?}", r.at(1))).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.contains("rpc_latency_seconds"))
            .count(),
        4,
        "{names:?}"
    );
}

/// Every sample of `page` in `format`, read by the strict parser, which refuses
/// a page where two families claim one name.
fn strict_samples(page: &str, om: bool) -> usize {
    use connector_prometheus::exposition::{Format, Parser};
    let format = if om {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let mut samples = 0;
    for sample in Parser::new(page, format).strict(true) {
        if let Err(e) = sample {
            panic!("the strict parser refuses the page: {e}\n{page}");
        }
        samples += 1;
    }
    samples
}

#[test]
fn families_whose_page_names_clash_are_refused_where_they_arrive() {
    let config =
        OtlpMetricsConfig::from_json(&serde_json::json!({"metric_expiration": "10s"})).unwrap();
    let gauge = |name: &str| sum(name, "", 2, false, vec![number(2.0, vec![])]);
    let counter = |name: &str| sum(name, "", 2, true, vec![number(1.0, vec![])]);
    // One request: the counter `x` writes `x_total`, so the gauge `x_total` after it
    // is refused, with the reason.
    let accepted = push(&config, &request(vec![counter("x"), gauge("x_total")]));
    assert_taken_and_refused(
        &accepted,
        (1, 1),
        "metric `x_total` becomes family `x_total`, whose names on the scrape page clash with those of family `x`",
    );
    let c = OtlpMetrics
        .commit(&config, 1_000, &[accepted.staged], None)
        .unwrap();
    for (accept, om) in PAGE_FORMATS {
        let text = page(&config, &c.state, accept);
        assert_eq!(
            strict_samples(&text, om),
            2,
            "x_total and target_info: {text}"
        );
    }
    // Once committed, the kept family turns a later clash away in the response.
    let accepted = push(&config, &request(vec![gauge("x_total")]));
    assert_eq!((accepted.accepted, accepted.refused), (0, 1));
    // A process that has not committed yet cannot know: the commit refuses the
    // family and counts its points.
    let fresh =
        OtlpMetricsConfig::from_json(&serde_json::json!({"metric_expiration": "10s"})).unwrap();
    let accepted = push(&fresh, &request(vec![gauge("x_total")]));
    assert_eq!((accepted.accepted, accepted.refused), (1, 0));
    let c = OtlpMetrics
        .commit(&fresh, 2_000, &[accepted.staged], Some(&c.state))
        .unwrap();
    assert_eq!(c.overflowed, 1);
    let text = page(&fresh, &c.state, "text/plain");
    assert_eq!(strict_samples(&text, false), 2, "{text}");
    assert!(text.contains("# TYPE x_total counter"), "{text}");
    // Two requests of one bucket, neither known: the second family is refused.
    let first = push(
        &fresh,
        &request(vec![histogram("h", 2, vec![1, 0, 0], 1, 1.0)]),
    );
    let second = push(&fresh, &request(vec![gauge("h_milliseconds_count")]));
    let c = OtlpMetrics
        .commit(
            &fresh,
            3_000,
            &[first.staged, second.staged],
            Some(&c.state),
        )
        .unwrap();
    assert_eq!(c.overflowed, 2);
    let text = page(&fresh, &c.state, otlp_common::exposition::OPENMETRICS);
    strict_samples(&text, true);
    assert!(!text.contains("# TYPE h_milliseconds_count"), "{text}");
    // Once `x` has expired, `x_total` is a gauge like any other.
    let later = push_at(&config, &request(vec![gauge("x_total")]), 20_000);
    assert_eq!((later.accepted, later.refused), (1, 0));
    let c = OtlpMetrics
        .commit(&config, 20_000, &[later.staged], Some(&c.state))
        .unwrap();
    let text = page_at(&config, &c.state, "text/plain", 20_000);
    assert!(text.contains("# TYPE x_total gauge"), "{text}");
    strict_samples(&text, false);
}
