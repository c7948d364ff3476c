//! OTLP traces: spans to label sets and durations, in either encoding (the protocol
//! itself is `otlp_common::http`).

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use otlp_common::attribute_text;
use otlp_common::http::{Encoding, Tally};
use prost::Message as _;

use std::borrow::Cow;

use crate::aggregate::Accumulator;
use crate::config::SpanMetricsConfig;
use crate::wire::{self, AnyRef, Attribute, SpanRef};

/// Counts the spans of a request body in its encoding into `acc`; the error says why
/// the body is not a request, for a 400.
pub fn count_body(
    config: &SpanMetricsConfig,
    encoding: Encoding,
    body: &[u8],
    acc: &mut Accumulator<'_>,
) -> Result<Tally, String> {
    match encoding {
        Encoding::Protobuf => count_protobuf(config, body, acc),
        Encoding::Json => {
            let request: ExportTraceServiceRequest = serde_json::from_slice(body).map_err(|e| {
                format!("the body is not an OTLP ExportTraceServiceRequest in JSON: {e}")
            })?;
            Ok(count_spans(config, &request, acc))
        }
    }
}

/// The same for a value read off the wire.
fn wire_text<'a>(value: AnyRef<'a>) -> Option<Cow<'a, str>> {
    Some(match value {
        AnyRef::Str(s) => Cow::Borrowed(s),
        AnyRef::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        AnyRef::Int(i) => Cow::Owned(i.to_string()),
        AnyRef::Double(d) => Cow::Owned(d.to_string()),
        AnyRef::Bytes(b) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
        // Rare (a dimension naming a list or map attribute): decoded in full.
        AnyRef::Nested(raw) => {
            let value = AnyValue::decode(raw).ok()?;
            Cow::Owned(serde_json::to_string(&value).ok()?)
        }
        AnyRef::Empty => return None,
    })
}

/// An attribute list, in either decoding: the first value of a key, as label text.
pub trait Attributes<'a> {
    /// The value of `key`, if the list has it and it has a text form.
    fn text(&self, key: &str) -> Option<Cow<'a, str>>;
}

impl<'a> Attributes<'a> for &'a [KeyValue] {
    fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        self.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(attribute_text)
    }
}

impl<'a> Attributes<'a> for &[Attribute<'a>] {
    fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        self.iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| wire_text(*v))
    }
}

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// The fields of a span that labels and durations come from.
#[derive(Debug, Clone, Copy)]
struct SpanFields<'a> {
    name: &'a str,
    kind: i32,
    status: i32,
    start: u64,
    end: u64,
}

/// Counts spans into an accumulator, one resource after another, in either decoding.
/// `'a` covers the config and the request (labels borrow from both).
struct Counter<'a, 'b> {
    config: &'a SpanMetricsConfig,
    acc: &'a mut Accumulator<'b>,
    counted: Tally,
    labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The current resource's `service.name`; `None` refuses its spans.
    service: Option<Cow<'a, str>>,
    resources: usize,
}

impl<'a, 'b> Counter<'a, 'b> {
    fn new(config: &'a SpanMetricsConfig, acc: &'a mut Accumulator<'b>) -> Self {
        Counter {
            config,
            acc,
            counted: Tally::default(),
            labels: Vec::with_capacity(8),
            service: None,
            resources: 0,
        }
    }

    fn resource(&mut self, attributes: impl Attributes<'a>, spans: u64) {
        let r = self.resources;
        self.resources += 1;
        self.service = attributes.text("service.name").filter(|s| !s.is_empty());
        if self.service.is_none() {
            self.counted.reject(spans, || {
                format!("resource_spans[{r}]: the resource has no service.name, so its spans cannot be labelled")
            });
        }
    }

    fn span(
        &mut self,
        resource: impl Attributes<'a>,
        span: SpanFields<'a>,
        attributes: impl Attributes<'a>,
    ) {
        let Some(service) = &self.service else {
            return;
        };
        if span.end < span.start {
            self.counted.reject(1, || {
                format!(
                    "span `{}` of service `{service}` ends ({}) before it starts ({})",
                    span.name, span.end, span.start
                )
            });
            return;
        }
        self.labels.clear();
        let kind = usize::try_from(span.kind)
            .ok()
            .and_then(|k| SPAN_KINDS.get(k));
        let status = usize::try_from(span.status)
            .ok()
            .and_then(|s| STATUS_CODES.get(s));
        let builtin: [(&str, Cow<'a, str>); 4] = [
            ("service_name", service.clone()),
            ("span_name", Cow::Borrowed(span.name)),
            (
                "span_kind",
                Cow::Borrowed(kind.copied().unwrap_or(SPAN_KINDS[0])),
            ),
            (
                "status_code",
                Cow::Borrowed(status.copied().unwrap_or(STATUS_CODES[0])),
            ),
        ];
        for (keep, label) in self.config.builtin.iter().zip(builtin) {
            if *keep {
                self.labels.push(label);
            }
        }
        for (label, dimension) in &self.config.dimensions {
            let value = attributes
                .text(&dimension.name)
                .or_else(|| resource.text(&dimension.name))
                .or_else(|| dimension.default.as_deref().map(Cow::Borrowed));
            if let Some(value) = value {
                self.labels.push((label.as_str(), value));
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let duration = (span.end - span.start) as f64 / self.config.unit.nanos();
        self.acc
            .add_span(self.labels.iter().map(|(n, v)| (*n, v.as_ref())), duration);
        self.counted.accepted += 1;
    }
}

/// Counts every span of a decoded request into `acc`, refusing those it cannot label.
pub fn count_spans(
    config: &SpanMetricsConfig,
    request: &ExportTraceServiceRequest,
    acc: &mut Accumulator<'_>,
) -> Tally {
    let mut counter = Counter::new(config, acc);
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let spans = resource_spans
            .scope_spans
            .iter()
            .map(|s| s.spans.len() as u64)
            .sum();
        counter.resource(resource, spans);
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            let fields = SpanFields {
                name: &span.name,
                kind: span.kind,
                status: span.status.as_ref().map_or(0, |s| s.code),
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
            };
            counter.span(resource, fields, span.attributes.as_slice());
        }
    }
    counter.counted
}

impl<'a> wire::Visit<'a> for Counter<'a, '_> {
    fn resource(&mut self, attributes: &[Attribute<'a>], spans: usize) {
        Counter::resource(self, attributes, spans as u64);
    }

    fn span(&mut self, resource: &[Attribute<'a>], span: &SpanRef<'a>) {
        let fields = SpanFields {
            name: span.name,
            kind: span.kind,
            status: span.status,
            start: span.start,
            end: span.end,
        };
        Counter::span(self, resource, fields, span.attributes.as_slice());
    }
}

/// Counts every span of a protobuf body into `acc` without decoding it into owned
/// types (see [`wire`]); the error says where the body is not a request.
pub fn count_protobuf(
    config: &SpanMetricsConfig,
    body: &[u8],
    acc: &mut Accumulator<'_>,
) -> Result<Tally, String> {
    let mut counter = Counter::new(config, acc);
    wire::walk(body, &mut counter).map_err(|e| {
        format!("the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}")
    })?;
    Ok(counter.counted)
}

/// Checks the zero-copy reader against prost on one body: where prost decodes it,
/// the reader must count the same spans into the same aggregate. For the
/// differential tests and the fuzz target; not part of the API.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub fn wire_agrees_with_prost(config: &SpanMetricsConfig, body: &[u8]) -> Result<(), String> {
    let mut by_wire = Accumulator::new(&config.bounds, config.cardinality_limit);
    let wire = count_protobuf(config, body, &mut by_wire);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Ok(());
    };
    let mut by_prost = Accumulator::new(&config.bounds, config.cardinality_limit);
    let prost = count_spans(config, &request, &mut by_prost);
    let wire = wire.map_err(|e| format!("prost decodes the body, the reader does not: {e}"))?;
    if wire != prost {
        return Err(format!(
            "counted {wire:?} by the reader, {prost:?} by prost"
        ));
    }
    let (a, b) = (by_wire.finish(), by_prost.finish());
    if a != b {
        return Err(format!("aggregates differ:\n{a:?}\n{b:?}"));
    }
    Ok(())
}
