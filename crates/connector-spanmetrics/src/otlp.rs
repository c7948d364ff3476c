//! OTLP/HTTP for traces: the two encodings, spans to label sets and durations, and
//! the responses the OTLP specification asks for.

use base64::Engine as _;
use connector_core::{IngestRequest, IngestResponse};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

use crate::aggregate::Accumulator;
use crate::config::SpanMetricsConfig;

/// The request's encoding, which the response uses too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `content-type` names, if OTLP/HTTP has it.
    pub fn of(request: &IngestRequest) -> Result<Self, IngestResponse> {
        let content_type = request.header("content-type").unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(IngestResponse::text(
                415,
                format!(
                    "content type `{content_type}` is not OTLP/HTTP: send application/x-protobuf or application/json"
                ),
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP sends with an error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC's INVALID_ARGUMENT, which OTLP/HTTP puts in a 400's status.
const INVALID_ARGUMENT: i32 = 3;

/// A 400 whose body says why, in the request's encoding.
pub fn bad_request(encoding: Encoding, message: String) -> IngestResponse {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus {
            code: INVALID_ARGUMENT,
            message,
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": INVALID_ARGUMENT, "message": message})
            .to_string()
            .into_bytes(),
    };
    IngestResponse::new(400, encoding.content_type(), body)
}

/// The 200 `ExportTraceServiceResponse`, with a partial success when spans were refused.
pub fn success(encoding: Encoding, rejected: u64, message: &str) -> IngestResponse {
    let body = match encoding {
        Encoding::Protobuf => {
            use opentelemetry_proto::tonic::collector::trace::v1::{
                ExportTracePartialSuccess, ExportTraceServiceResponse,
            };
            ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec()
        }
        // OTLP's JSON writes 64-bit integers as strings.
        Encoding::Json if rejected > 0 => serde_json::json!({
            "partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": message}
        })
        .to_string()
        .into_bytes(),
        Encoding::Json => b"{}".to_vec(),
    };
    IngestResponse::new(200, encoding.content_type(), body)
}

/// Decodes the body in its encoding; the error says why, for a 400.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            format!("the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}")
        }),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| format!("the body is not an OTLP ExportTraceServiceRequest in JSON: {e}")),
    }
}

/// An attribute value as a label value, as the Collector's `AsString` writes it.
fn value_text(value: &AnyValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        any_value::Value::BytesValue(b) => {
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))
        }
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => {
            Cow::Owned(serde_json::to_string(value).ok()?)
        }
        any_value::Value::StringValueStrindex(_) => return None,
    })
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
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

/// What a request added: spans counted and spans refused, with the first reason.
#[derive(Debug, Default)]
pub struct Counted {
    /// Spans counted.
    pub accepted: u64,
    /// Spans refused.
    pub refused: u64,
    /// Why the first refused span was.
    pub reason: Option<String>,
}

impl Counted {
    fn refuse(&mut self, spans: u64, reason: impl FnOnce() -> String) {
        self.refused += spans;
        if self.reason.is_none() {
            self.reason = Some(reason());
        }
    }
}

/// Counts every span of `request` into `acc`, refusing those it cannot label.
pub fn count_spans(
    config: &SpanMetricsConfig,
    request: &ExportTraceServiceRequest,
    acc: &mut Accumulator<'_>,
) -> Counted {
    let mut counted = Counted::default();
    let mut labels: Vec<(&str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(8);
    for (r, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service = attribute(resource, "service.name").and_then(value_text);
        let spans: u64 = resource_spans
            .scope_spans
            .iter()
            .map(|s| s.spans.len() as u64)
            .sum();
        let Some(service) = service.filter(|s| !s.is_empty()) else {
            counted.refuse(spans, || {
                format!("resource_spans[{r}]: the resource has no service.name, so its spans cannot be labelled")
            });
            continue;
        };
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                if span.end_time_unix_nano < span.start_time_unix_nano {
                    counted.refuse(1, || {
                        format!(
                            "span `{}` of service `{service}` ends ({}) before it starts ({})",
                            span.name, span.end_time_unix_nano, span.start_time_unix_nano
                        )
                    });
                    continue;
                }
                labels.clear();
                let builtin: [(&str, std::borrow::Cow<'_, str>); 4] = [
                    ("service_name", service.clone()),
                    ("span_name", span.name.as_str().into()),
                    (
                        "span_kind",
                        SPAN_KINDS
                            .get(usize::try_from(span.kind).unwrap_or(0))
                            .copied()
                            .unwrap_or(SPAN_KINDS[0])
                            .into(),
                    ),
                    (
                        "status_code",
                        STATUS_CODES
                            .get(
                                span.status
                                    .as_ref()
                                    .and_then(|s| usize::try_from(s.code).ok())
                                    .unwrap_or(0),
                            )
                            .copied()
                            .unwrap_or(STATUS_CODES[0])
                            .into(),
                    ),
                ];
                for (keep, label) in config.builtin.iter().zip(builtin) {
                    if *keep {
                        labels.push(label);
                    }
                }
                for (label, dimension) in &config.dimensions {
                    let value = attribute(&span.attributes, &dimension.name)
                        .or_else(|| attribute(resource, &dimension.name))
                        .and_then(value_text)
                        .or_else(|| dimension.default.as_deref().map(Into::into));
                    if let Some(value) = value {
                        labels.push((label.as_str(), value));
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                let duration = (span.end_time_unix_nano - span.start_time_unix_nano) as f64
                    / config.unit.nanos();
                acc.add_span(labels.iter().map(|(n, v)| (*n, v.as_ref())), duration);
                counted.accepted += 1;
            }
        }
    }
    counted
}
