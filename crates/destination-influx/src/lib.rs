//! The `influx` destination ([`InfluxDestination`]): committed metric rows as Influx
//! line protocol, the format Grafana Cloud takes at `/api/v1/push/influx/write`,
//! InfluxDB 1.x at `/write` and VictoriaMetrics at `/influx/write`.
//!
//! ```
//! use connector_core::Batch;
//!
//! let mut batch = Batch::new(metric_rows::schema());
//! batch.row().timestamp(1_700_000_000_000).string("up").real(1.0).map([("job", "node")]).finish()?;
//! let mut body = Vec::new();
//! let skipped = destination_influx::encode(&batch, &mut body)?;
//! assert_eq!(body, b"up,job=node value=1 1700000000000000000\n");
//! assert_eq!(skipped.total(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod destination;
pub mod line_protocol;

pub use destination::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_MS, InfluxConfig, InfluxDestination,
    MAX_REQUEST_BYTES_RANGE, TIMEOUT_MS_RANGE,
};
pub use line_protocol::{Encoder, SkipReason, Skipped, encode};
pub use metric_rows::ShapeError;
