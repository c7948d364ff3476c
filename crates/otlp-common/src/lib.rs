//! What every OTLP receiver in connectord decides the same way: which encodings
//! OTLP/HTTP has and how its responses look ([`http`]), how an attribute value reads
//! as label text ([`attribute_text`]), and how OpenTelemetry names become Prometheus
//! names ([`naming`]). One place, so the span-metrics and the metrics receivers answer
//! an SDK alike.

pub mod exposition;
pub mod http;
pub mod naming;

use std::borrow::Cow;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

/// An attribute value as label text: strings as they are, booleans `true`/`false`,
/// numbers in their shortest form, bytes in base64, lists and maps as OTLP JSON; `None`
/// for an empty value.
pub fn attribute_text(value: &AnyValue) -> Option<Cow<'_, str>> {
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
