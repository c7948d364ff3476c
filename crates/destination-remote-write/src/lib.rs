//! The `prometheus_remote_write` destination ([`RemoteWriteDestination`]) and its
//! encoding: committed metric rows as Remote-Write 1.0 bodies (a protobuf `WriteRequest`, snappy block format), to be
//! sent with `Content-Encoding: snappy`, `Content-Type: application/x-protobuf` and
//! `X-Prometheus-Remote-Write-Version: 0.1.0`.
//!
//! ```
//! use connector_core::Batch;
//! use prost::Message as _;
//!
//! let mut batch = Batch::new(metric_rows::schema());
//! batch.row().timestamp(1_000).string("up").real(1.0).map([("job", "node")]).finish()?;
//! let encoded = destination_remote_write::encode(&batch, 2000)?;
//! let body = snap::raw::Decoder::new().decompress_vec(&encoded.requests[0].body)?;
//! let request = destination_remote_write::proto::WriteRequest::decode(body.as_slice())?;
//! let labels: Vec<_> = request.timeseries[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
//! assert_eq!(labels, [("__name__", "up"), ("job", "node")]);
//! assert_eq!(request.timeseries[0].samples[0].timestamp, 1_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod destination;
mod encode;
pub mod proto;

pub use destination::{
    DEFAULT_MAX_SAMPLES_PER_SEND, DEFAULT_TIMEOUT_MS, MAX_SAMPLES_PER_SEND_RANGE, RESERVED_HEADERS,
    RemoteWriteConfig, RemoteWriteDestination, TIMEOUT_MS_RANGE,
};
pub use encode::{Encoded, Request, SkipReason, Skipped, encode};
pub use metric_rows::ShapeError;
