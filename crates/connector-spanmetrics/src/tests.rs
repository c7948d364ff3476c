#![allow(clippy::unwrap_used)]

use connector_core::{IngestRequest, PushConnector, Value};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn span(name: &str, kind: i32, status: i32, duration_ms: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        name: name.into(),
        kind,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + duration_ms * 1_000_000,
        status: Some(Status {
            code: status,
            ..Default::default()
        }),
        attributes: attrs,
        ..Default::default()
    }
}

fn request(service: Option<&str>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: service
                    .map(|s| vec![kv("service.name", s)])
                    .unwrap_or_default(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn protobuf(body: Vec<u8>) -> IngestRequest {
    IngestRequest {
        path: TRACES_PATH.into(),
        headers: vec![("content-type".into(), "application/x-protobuf".into())],
        body,
        ..IngestRequest::default()
    }
}

fn config(raw: serde_json::Value) -> SpanMetricsConfig {
    SpanMetrics.validate_config(&raw).unwrap()
}

/// (name, labels JSON, value) of every row.
fn rows(batch: &connector_core::Batch) -> Vec<(String, String, f64)> {
    (0..batch.len())
        .map(|i| {
            let text = |v: Value<'_>| match v {
                Value::String(s) | Value::Dynamic(s) => s.to_owned(),
                other => panic!("{other:?}"),
            };
            let Value::Real(value) = batch.get(i, 2) else {
                panic!("value")
            };
            (text(batch.get(i, 1)), text(batch.get(i, 3)), value)
        })
        .collect()
}

#[test]
fn spans_become_calls_and_a_histogram_per_label_set() {
    let c = config(serde_json::Value::Null);
    let body = request(
        Some("checkout"),
        vec![
            span("GET /cart", 2, 0, 3, vec![]),
            span("GET /cart", 2, 0, 120, vec![]),
            span("GET /cart", 2, 2, 20_000, vec![]),
        ],
    )
    .encode_to_vec();
    let accepted = SpanMetrics.accept(&c, &protobuf(body)).unwrap();
    assert_eq!((accepted.accepted, accepted.refused), (3, 0));
    assert_eq!(accepted.response.status, 200);
    let response = ExportTraceServiceResponse::decode(accepted.response.body.as_slice()).unwrap();
    assert!(response.partial_success.is_none());

    let committed = SpanMetrics
        .commit(&c, 60_000, std::slice::from_ref(&accepted.staged), None)
        .unwrap();
    let rows = rows(&committed.batch);
    let ok = r#"{"service_name":"checkout","span_name":"GET /cart","span_kind":"SPAN_KIND_SERVER","status_code":"STATUS_CODE_UNSET"}"#;
    assert_eq!(
        rows[0],
        ("traces_span_metrics_calls_total".into(), ok.into(), 2.0)
    );
    let bucket = |le: &str| {
        rows.iter()
            .find(|r| {
                r.0 == "traces_span_metrics_duration_milliseconds_bucket"
                    && r.1.contains("STATUS_CODE_UNSET")
                    && r.1.contains(&format!("\"le\":\"{le}\""))
            })
            .unwrap()
            .2
    };
    assert_eq!(bucket("2"), 0.0);
    assert_eq!(bucket("4"), 1.0);
    assert_eq!(bucket("100"), 1.0);
    assert_eq!(bucket("200"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    let error_count = rows
        .iter()
        .find(|r| {
            r.0 == "traces_span_metrics_duration_milliseconds_count"
                && r.1.contains("STATUS_CODE_ERROR")
        })
        .unwrap();
    assert_eq!(error_count.2, 1.0);
    let sum = rows
        .iter()
        .find(|r| {
            r.0 == "traces_span_metrics_duration_milliseconds_sum"
                && r.1.contains("STATUS_CODE_UNSET")
        })
        .unwrap();
    assert_eq!(sum.2, 123.0);
    // 2 series x (calls + 17 buckets + sum + count)
    assert_eq!(rows.len(), 2 * 20);

    // Cumulative: the next bucket's rows carry the running totals of what it touched.
    let again = SpanMetrics
        .commit(
            &c,
            120_000,
            std::slice::from_ref(&accepted.staged),
            Some(&committed.state),
        )
        .unwrap();
    let again = super::tests::rows(&again.batch);
    assert_eq!(again[0].2, 4.0);
    // Delta: the bucket's own counts.
    let delta = config(serde_json::json!({"temporality": "delta"}));
    let once = SpanMetrics
        .commit(&delta, 120_000, &[accepted.staged], Some(&committed.state))
        .unwrap();
    assert_eq!(super::tests::rows(&once.batch)[0].2, 2.0);
}

#[test]
fn spans_without_a_service_are_refused_in_a_partial_success() {
    let c = config(serde_json::Value::Null);
    let mut body = request(
        None,
        vec![span("a", 1, 0, 1, vec![]), span("b", 1, 0, 1, vec![])],
    );
    body.resource_spans.push(
        request(Some("s"), vec![span("c", 1, 0, 1, vec![])])
            .resource_spans
            .remove(0),
    );
    let accepted = SpanMetrics
        .accept(&c, &protobuf(body.encode_to_vec()))
        .unwrap();
    assert_eq!((accepted.accepted, accepted.refused), (1, 2));
    let response = ExportTraceServiceResponse::decode(accepted.response.body.as_slice()).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("no service.name"),
        "{}",
        partial.error_message
    );
}

#[test]
fn bad_bodies_and_content_types_are_refused_with_the_reason() {
    let c = config(serde_json::Value::Null);
    let body = request(Some("s"), vec![span("a", 1, 0, 1, vec![])]).encode_to_vec();
    let refused = SpanMetrics
        .accept(&c, &protobuf(body[..body.len() - 3].to_vec()))
        .unwrap_err();
    assert_eq!(refused.status, 400);
    let mut wrong = protobuf(body);
    wrong.headers = vec![("content-type".into(), "text/plain".into())];
    let refused = SpanMetrics.accept(&c, &wrong).unwrap_err();
    assert_eq!(refused.status, 415);
    assert!(String::from_utf8_lossy(&refused.body).contains("`text/plain`"));
    let json = IngestRequest {
        path: TRACES_PATH.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"resourceSpans": [{"scopeSpans": 7}]}"#.to_vec(),
        ..IngestRequest::default()
    };
    let refused = SpanMetrics.accept(&c, &json).unwrap_err();
    assert_eq!(refused.status, 400);
    let message: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(message["code"], 3);
    assert!(
        message["message"].as_str().unwrap().contains("JSON"),
        "{message}"
    );
}

/// The OTLP specification's example body (opentelemetry-proto `examples/trace.json`).
const SPEC_EXAMPLE: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0",
        "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 2,
        "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}]
      }]
    }]
  }]
}"#;

#[test]
fn the_specs_json_example_counts_one_server_span_of_one_second() {
    let c = config(
        serde_json::json!({"dimensions": [{"name": "my.span.attr"}, {"name": "absent", "default": "none"}]}),
    );
    let request = IngestRequest {
        path: TRACES_PATH.into(),
        headers: vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: SPEC_EXAMPLE.as_bytes().to_vec(),
        ..IngestRequest::default()
    };
    let accepted = SpanMetrics.accept(&c, &request).unwrap();
    assert_eq!(accepted.accepted, 1);
    assert_eq!(accepted.response.body, b"{}");
    let committed = SpanMetrics.commit(&c, 0, &[accepted.staged], None).unwrap();
    let rows = rows(&committed.batch);
    assert_eq!(
        rows[0].1,
        r#"{"service_name":"my.service","span_name":"I'm a server span","span_kind":"SPAN_KIND_SERVER","status_code":"STATUS_CODE_UNSET","my_span_attr":"some value","absent":"none"}"#
    );
    let le_1000 = rows
        .iter()
        .find(|r| r.1.contains(r#""le":"1000""#))
        .unwrap();
    let le_800 = rows.iter().find(|r| r.1.contains(r#""le":"800""#)).unwrap();
    assert_eq!((le_800.2, le_1000.2), (0.0, 1.0));
}

#[test]
fn the_scrape_page_parses_in_both_formats() {
    use connector_prometheus::exposition::{Format, Parser};
    let c = config(serde_json::Value::Null);
    let body = request(Some("a\"b"), vec![span("x\ny", 3, 1, 7, vec![])]).encode_to_vec();
    let accepted = SpanMetrics.accept(&c, &protobuf(body)).unwrap();
    let committed = SpanMetrics.commit(&c, 0, &[accepted.staged], None).unwrap();
    for (accept, format) in [
        (
            "application/openmetrics-text; version=1.0.0",
            Format::OpenMetrics,
        ),
        ("text/plain", Format::Prometheus),
    ] {
        let page = SpanMetrics.serve(
            &c,
            Some(&committed.state),
            &IngestRequest {
                headers: vec![("accept".into(), accept.into())],
                ..Default::default()
            },
        );
        let text = String::from_utf8(page.body).unwrap();
        // Strict mode: the family rules too (suffixes, `le` order, `+Inf`, `# EOF`).
        let samples: Vec<_> = Parser::new(&text, format)
            .strict(true)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{format:?}: {e}\n{text}"));
        assert_eq!(samples.len(), 20, "{text}");
        let calls = samples
            .iter()
            .find(|s| s.name == "traces_span_metrics_calls_total")
            .unwrap();
        assert_eq!(calls.value, 1.0);
    }
}

#[test]
fn fifty_thousand_span_names_a_bucket_fold_into_the_overflow_series() {
    let c = config(serde_json::json!({"aggregation_cardinality_limit": 100}));
    let spans: Vec<Span> = (0..50_000)
        .map(|i| span(&format!("op{i}"), 1, 0, 1, vec![]))
        .collect();
    let accepted = SpanMetrics
        .accept(&c, &protobuf(request(Some("s"), spans).encode_to_vec()))
        .unwrap();
    let staged = Aggregate::from_bytes(&accepted.staged).unwrap();
    assert_eq!(staged.series.len(), 101);
    assert_eq!(staged.overflow_spans, 49_900);
    let mut state = None;
    for bucket in 0..20 {
        let committed = SpanMetrics
            .commit(
                &c,
                bucket,
                std::slice::from_ref(&accepted.staged),
                state.as_deref(),
            )
            .unwrap();
        state = Some(committed.state);
    }
    let state = Aggregate::from_bytes(&state.unwrap()).unwrap();
    assert_eq!(state.series.len(), 101, "the limit holds across buckets");
    let overflow = state
        .series
        .iter()
        .find(|s| s.labels == ["otel_metric_overflow", "true"])
        .unwrap();
    assert_eq!(overflow.calls, 20 * 49_900);
    assert_eq!(state.overflow_spans, 20 * 49_900);
}
