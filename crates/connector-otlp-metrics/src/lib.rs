//! `otlp_metrics`: a push source that takes OTLP/HTTP metrics, the way an application
//! using the OpenTelemetry SDK in any language reports them, and serves them to
//! Prometheus as the OpenTelemetry Collector's Prometheus exporter would, with what the
//! Collector lacks: nothing acknowledged is lost, and every point is also a metric row.
//!
//! A request is decoded and converted to Prometheus families ([`convert`]) before it is
//! acknowledged; the converted families are what connectord stages. A bucket's commit
//! folds them into the running series kept as the connector's state (delta points
//! added up, so a restart does not reset a counter), drops series older than
//! `metric_expiration`, and writes a row per sample of every series the bucket
//! changed. The scrape page is rendered from that state.
//!
//! Invariants: every data point is either taken or counted as rejected with a reason
//! (in the response's `partial_success` when the request is accepted, in `/metrics`
//! when `max_series` refuses it at commit); the state holds at most `max_series`
//! series whatever the input.

mod config;
pub mod convert;
mod exposition;
mod model;
mod samples;
mod state;

use std::sync::Arc;

use connector_core::{
    Accepted, Batch, Committed, ConnectorError, IngestRequest, IngestResponse, PushConnector,
    Schema,
};
use otlp_common::http::{self, Encoding, Signal};
use prost::Message as _;

pub use config::{
    DEFAULT_MAX_LABEL_VALUE_BYTES, DEFAULT_MAX_LABELS_PER_SERIES, DEFAULT_MAX_POINTS_PER_REQUEST,
    DEFAULT_MAX_SERIES, DEFAULT_METRIC_EXPIRATION, Known, KnownState, OtlpMetricsConfig,
};

/// The `otlp_metrics` connector type.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtlpMetrics;

/// The OTLP/HTTP path for metrics.
pub const METRICS_PATH: &str = "v1/metrics";

fn decode_state(state: Option<&[u8]>) -> Result<model::Kept, ConnectorError> {
    state
        .map(model::Kept::decode)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            ConnectorError::permanent(format!("the connector's state does not decode: {e}"))
        })
}

impl PushConnector for OtlpMetrics {
    const TYPE_ID: &'static str = "otlp_metrics";
    const PATHS: &'static [&'static str] = &[METRICS_PATH];
    type Config = OtlpMetricsConfig;

    fn schema(&self) -> Arc<Schema> {
        metric_rows::schema()
    }

    fn validate_config(
        &self,
        raw: &serde_json::Value,
    ) -> Result<OtlpMetricsConfig, ConnectorError> {
        OtlpMetricsConfig::from_json(raw)
    }

    fn accept(
        &self,
        config: &OtlpMetricsConfig,
        request: &IngestRequest,
    ) -> Result<Accepted, IngestResponse> {
        let encoding = Encoding::of(request)?;
        let decoded = convert::decode(encoding, &request.body)
            .map_err(|message| http::bad_request(encoding, message))?;
        let converted = convert::convert(config, &decoded, request.received_ms);
        let staged = if converted.staged.families.is_empty() {
            Vec::new()
        } else {
            converted.staged.encode_to_vec()
        };
        // Points carry no identity: the same body twice is two reports.
        Ok(converted
            .tally
            .into_accepted(encoding, Signal::Metrics, staged, None))
    }

    fn commit(
        &self,
        config: &OtlpMetricsConfig,
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError> {
        let mut live = state::Live::from_kept(decode_state(state)?)?;
        live.expire(config.oldest_kept_ms(bucket_ms));
        for (i, bytes) in staged.iter().enumerate() {
            let request = model::Staged::decode(bytes.as_slice()).map_err(|e| {
                ConnectorError::permanent(format!(
                    "staged request {i} of the bucket does not decode: {e}"
                ))
            })?;
            live.apply(config, request, bucket_ms)?;
        }
        let mut batch = Batch::new(self.schema());
        live.rows(&mut batch, bucket_ms)?;
        *config
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(live.known()));
        let (series, overflowed) = (live.series() as u64, live.refused());
        Ok(Committed {
            batch,
            state: live.into_kept().encode_to_vec(),
            series,
            overflowed,
        })
    }

    fn serve(
        &self,
        config: &OtlpMetricsConfig,
        state: Option<&[u8]>,
        request: &IngestRequest,
    ) -> IngestResponse {
        let content_type = otlp_common::exposition::negotiate(request.header("accept"));
        // Series expire at commits too, but a connector that stopped receiving
        // commits nothing: the read's own time drops what is past its expiration.
        let oldest_ms = config.oldest_kept_ms(request.received_ms);
        match decode_state(state)
            .map_err(|e| e.to_string())
            .and_then(|kept| exposition::render(&kept, content_type, oldest_ms))
        {
            Ok(page) => IngestResponse::new(200, content_type, page),
            Err(e) => IngestResponse::text(500, e),
        }
    }
}

#[cfg(test)]
mod tests;
