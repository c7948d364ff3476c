//! The zero-copy reader against prost, on generated requests of every shape the
//! reader must handle, and on bodies prost refuses.
#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message as _;

use crate::SpanMetricsConfig;
use crate::otlp::wire_agrees_with_prost;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn value(rng: &mut Rng, depth: u32) -> AnyValue {
    use any_value::Value as V;
    let v = match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => V::StringValue(["GET", "POST", "", "ünïcode", "a\"b\n"][rng.below(5) as usize].into()),
        1 => V::BoolValue(rng.below(2) == 1),
        2 => V::IntValue(rng.next() as i64 % 1000),
        3 => V::DoubleValue([0.5, -1.0, 1e300, f64::NAN][rng.below(4) as usize]),
        4 => V::BytesValue(vec![0, 255, 7]),
        5 => return AnyValue { value: None },
        6 => V::ArrayValue(ArrayValue {
            values: (0..rng.below(3)).map(|_| value(rng, depth + 1)).collect(),
        }),
        _ => V::KvlistValue(KeyValueList {
            values: (0..rng.below(3)).map(|_| kv(rng, depth + 1)).collect(),
        }),
    };
    AnyValue { value: Some(v) }
}

fn kv(rng: &mut Rng, depth: u32) -> KeyValue {
    let keys = ["http.method", "service.name", "peer", "http.method", "x"];
    KeyValue {
        key: keys[rng.below(keys.len() as u64) as usize].into(),
        value: (rng.below(8) > 0).then(|| value(rng, depth)),
        ..Default::default()
    }
}

fn request(rng: &mut Rng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..rng.below(4))
            .map(|_| ResourceSpans {
                resource: (rng.below(6) > 0).then(|| Resource {
                    attributes: (0..rng.below(4)).map(|_| kv(rng, 0)).collect(),
                    ..Default::default()
                }),
                scope_spans: (0..rng.below(3))
                    .map(|_| ScopeSpans {
                        spans: (0..rng.below(5))
                            .map(|_| {
                                let start = rng.below(1 << 40);
                                Span {
                                    trace_id: vec![1; 16],
                                    span_id: vec![2; 8],
                                    name: ["a", "b", ""][rng.below(3) as usize].into(),
                                    kind: [0, 1, 2, 5, 7, -1][rng.below(6) as usize],
                                    start_time_unix_nano: start,
                                    end_time_unix_nano: if rng.below(10) == 0 {
                                        start.saturating_sub(1)
                                    } else {
                                        start + rng.below(20_000_000_000)
                                    },
                                    attributes: (0..rng.below(4)).map(|_| kv(rng, 0)).collect(),
                                    events: vec![span::Event {
                                        name: "event".into(),
                                        ..Default::default()
                                    }],
                                    status: (rng.below(3) > 0).then(|| Status {
                                        code: [0, 1, 2, 9][rng.below(4) as usize],
                                        message: "m".into(),
                                    }),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

fn config() -> SpanMetricsConfig {
    SpanMetricsConfig::from_json(&serde_json::json!({
        "dimensions": [{"name": "http.method"}, {"name": "peer", "default": "none"}, {"name": "x"}],
        "aggregation_cardinality_limit": 20,
    }))
    .unwrap()
}

#[test]
fn the_reader_counts_what_prost_decodes_on_ten_thousand_requests() {
    let config = config();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for i in 0..10_000 {
        let body = request(&mut rng).encode_to_vec();
        wire_agrees_with_prost(&config, &body).unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
}

#[test]
fn truncated_and_mutated_bodies_never_disagree_with_prost() {
    let config = config();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3_000 {
        let mut body = request(&mut rng).encode_to_vec();
        if body.is_empty() {
            continue;
        }
        match i % 3 {
            0 => body.truncate(rng.below(body.len() as u64) as usize),
            1 => {
                let at = rng.below(body.len() as u64) as usize;
                body[at] = rng.next() as u8;
            }
            _ => {
                let at = rng.below(body.len() as u64) as usize;
                body.insert(at, rng.next() as u8);
            }
        }
        wire_agrees_with_prost(&config, &body).unwrap_or_else(|e| panic!("body {i}: {e}"));
    }
}

#[test]
fn a_resource_after_its_spans_on_the_wire_still_labels_them() {
    // ResourceSpans with field 2 (scope_spans) before field 1 (resource): legal protobuf.
    let config = config();
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("late".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let scope = ScopeSpans {
        spans: vec![Span {
            name: "s".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2_000_001,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut inner = Vec::new();
    prost::encoding::message::encode(2, &scope, &mut inner);
    prost::encoding::message::encode(1, &resource, &mut inner);
    let mut body = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut body);
    prost::encoding::encode_varint(inner.len() as u64, &mut body);
    body.extend_from_slice(&inner);
    wire_agrees_with_prost(&config, &body).unwrap();
    let mut acc = crate::Accumulator::new(&config.bounds, 10);
    let counted = crate::otlp::count_protobuf(&config, &body, &mut acc).unwrap();
    assert_eq!(counted.accepted, 1);
    assert_eq!(acc.series()[0].labels[1], "late");
}

#[test]
fn errors_name_the_byte_and_deep_nesting_is_refused() {
    let config = config();
    let mut acc = crate::Accumulator::new(&config.bounds, 10);
    let err = crate::otlp::count_protobuf(&config, &[0x0a, 0x05, 0x0a], &mut acc).unwrap_err();
    assert!(
        err.ends_with("a field runs past the end of its message at byte 2"),
        "{err}"
    );
    // An attribute value nested 200 arrays deep.
    let mut nested = AnyValue {
        value: Some(any_value::Value::StringValue("deep".into())),
    };
    for _ in 0..200 {
        nested = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![nested],
            })),
        };
    }
    let deep = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "deep".into(),
                    value: Some(nested),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let err = crate::otlp::count_protobuf(&config, &deep.encode_to_vec(), &mut acc).unwrap_err();
    assert!(err.contains("nest deeper than 100 levels"), "{err}");
}

#[test]
fn invalid_utf8_in_an_attribute_is_refused_with_its_offset() {
    let config = config();
    let good = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc\u{7f}".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let mut body = good.encode_to_vec();
    let at = body.iter().position(|b| *b == 0x7f).unwrap();
    body[at] = 0xff;
    let mut acc = crate::Accumulator::new(&config.bounds, 10);
    let err = crate::otlp::count_protobuf(&config, &body, &mut acc).unwrap_err();
    assert!(
        err.ends_with(&format!("a string field is not UTF-8 at byte {at}")),
        "{err}"
    );
    assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());
}
