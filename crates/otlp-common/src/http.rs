//! OTLP/HTTP: the two encodings a request may use and the responses the OTLP
//! specification asks for, in the request's encoding.

use connector_core::{Accepted, IngestRequest, IngestResponse};
use prost::Message as _;

/// The request's encoding, which the response uses too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a request's `content-type` names; a 415 naming both when OTLP/HTTP
    /// does not have it.
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

    /// The content type of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The signal a receiver takes, which names what a partial success counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Traces: `rejected_spans`.
    Traces,
    /// Metrics: `rejected_data_points`.
    Metrics,
}

/// What a receiver made of a request's items (spans, data points): how many it took,
/// how many it rejected, and why the first rejected one was, which the partial
/// success reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Items taken.
    pub accepted: u64,
    /// Items rejected.
    pub rejected: u64,
    /// Why the first rejected item was.
    pub reason: Option<String>,
}

impl Tally {
    /// Counts `items` rejected; `reason` is asked for only for the first rejection.
    pub fn reject(&mut self, items: u64, reason: impl FnOnce() -> String) {
        self.rejected += items;
        if self.reason.is_none() {
            self.reason = Some(reason());
        }
    }

    /// The accepted request: `staged` to keep, and the 200 export response of
    /// `signal` in `encoding`, with a partial success when items were rejected.
    pub fn into_accepted(
        self,
        encoding: Encoding,
        signal: Signal,
        staged: Vec<u8>,
        idempotency_key: Option<[u8; 16]>,
    ) -> Accepted {
        let reason = self.reason.unwrap_or_default();
        Accepted {
            staged,
            accepted: self.accepted,
            refused: self.rejected,
            response: success(encoding, signal, self.rejected, &reason),
            idempotency_key,
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

/// The 200 export response of `signal`, with a partial success naming the count and
/// the reason when items were rejected.
pub fn success(encoding: Encoding, signal: Signal, rejected: u64, message: &str) -> IngestResponse {
    let rejected_i64 = i64::try_from(rejected).unwrap_or(i64::MAX);
    let body = match (encoding, signal) {
        (Encoding::Protobuf, Signal::Traces) => {
            use opentelemetry_proto::tonic::collector::trace::v1::{
                ExportTracePartialSuccess, ExportTraceServiceResponse,
            };
            ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected_i64,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec()
        }
        (Encoding::Protobuf, Signal::Metrics) => {
            use opentelemetry_proto::tonic::collector::metrics::v1::{
                ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
            };
            ExportMetricsServiceResponse {
                partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejected_i64,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec()
        }
        (Encoding::Json, _) if rejected == 0 => b"{}".to_vec(),
        // OTLP's JSON writes 64-bit integers as strings.
        (Encoding::Json, signal) => {
            let count = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
            };
            serde_json::json!({
                "partialSuccess": {count: rejected.to_string(), "errorMessage": message}
            })
            .to_string()
            .into_bytes()
        }
    };
    IngestResponse::new(200, encoding.content_type(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_success_names_what_its_signal_counts() {
        let json = |signal| {
            let r = success(Encoding::Json, signal, 2, "why");
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        };
        assert_eq!(
            json(Signal::Metrics)["partialSuccess"]["rejectedDataPoints"],
            "2"
        );
        assert_eq!(json(Signal::Traces)["partialSuccess"]["rejectedSpans"], "2");
        assert_eq!(success(Encoding::Json, Signal::Metrics, 0, "").body, b"{}");
    }
}
