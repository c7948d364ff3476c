//! `spanmetrics`: a push source that takes OTLP/HTTP traces and turns them into RED
//! metrics (calls, and a duration histogram) per service, span name, span kind and
//! status code, named as the OpenTelemetry Collector's `spanmetrics` connector names
//! them after Prometheus translation (`traces_span_metrics_calls_total`,
//! `traces_span_metrics_duration_milliseconds_bucket`).
//!
//! Each request is decoded and counted into a small aggregate of its own before it is
//! acknowledged; that aggregate is what connectord stages. A bucket's commit adds its
//! aggregates to the running totals kept as the connector's state and writes metric
//! rows (`timestamp`, `name`, `value`, `labels`) for the series the bucket touched.
//!
//! Invariants: a span is counted in exactly one series; label sets past
//! `aggregation_cardinality_limit` share one series labelled
//! `otel_metric_overflow="true"`, so memory and state stay bounded whatever the input.

mod aggregate;
mod config;
mod exposition;
mod otlp;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use otlp_common::http::{self, Encoding, Signal};

use connector_core::{
    Accepted, Batch, Committed, ConnectorError, IngestRequest, IngestResponse, PushConnector,
    Schema,
};

pub use aggregate::{Accumulator, Aggregate, OVERFLOW_LABEL, SeriesTotals};
pub use config::{
    BUILTIN_DIMENSIONS, DEFAULT_BUCKETS_MS, DEFAULT_CARDINALITY_LIMIT, Dimension,
    SpanMetricsConfig, Temporality, Unit, prometheus_name,
};

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub use otlp::wire_agrees_with_prost;

/// The `spanmetrics` connector type.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanMetrics;

/// The OTLP/HTTP path for traces.
pub const TRACES_PATH: &str = "v1/traces";

fn decode_state(state: Option<&[u8]>) -> Result<Aggregate, ConnectorError> {
    state
        .map(Aggregate::from_bytes)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            ConnectorError::permanent(format!("the connector's state does not decode: {e}"))
        })
}

/// Writes one series' calls, buckets (cumulative, with `le`), sum and count.
fn write_series(
    config: &SpanMetricsConfig,
    batch: &mut Batch,
    bucket_ms: i64,
    series: &SeriesTotals,
) -> Result<(), ConnectorError> {
    #[allow(clippy::cast_precision_loss)]
    let mut row = |name: &str, value: f64, le: Option<&str>| {
        batch
            .row()
            .timestamp(bucket_ms)
            .string(name)
            .real(value)
            .map(series.label_pairs().chain(le.map(|le| ("le", le))))
            .finish()
    };
    #[allow(clippy::cast_precision_loss)]
    {
        row(&config.calls_name, series.calls as f64, None)?;
        let bucket = format!("{}_bucket", config.duration_name);
        let mut running = 0u64;
        for (i, count) in series.buckets.iter().enumerate() {
            running += count;
            let le = config
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            row(&bucket, running as f64, Some(&le))?;
        }
        row(&format!("{}_sum", config.duration_name), series.sum, None)?;
        row(
            &format!("{}_count", config.duration_name),
            series.calls as f64,
            None,
        )?;
    }
    Ok(())
}

/// The identity of a request: spans carry unique ids, so the same bytes again are
/// the same spans (an SDK retrying a request whose response it lost), to be counted
/// once. 128 bits from two seeded hashes of the decoded body.
fn body_key(body: &[u8]) -> [u8; 16] {
    use std::hash::BuildHasher as _;
    let [a, b] = [0x5eed_0001, 0x5eed_0002]
        .map(|seed| foldhash::quality::FixedState::with_seed(seed).hash_one(body));
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_le_bytes());
    key[8..].copy_from_slice(&b.to_le_bytes());
    key
}

impl PushConnector for SpanMetrics {
    const TYPE_ID: &'static str = "spanmetrics";
    const PATHS: &'static [&'static str] = &[TRACES_PATH];
    type Config = SpanMetricsConfig;

    fn schema(&self) -> Arc<Schema> {
        metric_rows::schema()
    }

    fn validate_config(
        &self,
        raw: &serde_json::Value,
    ) -> Result<SpanMetricsConfig, ConnectorError> {
        SpanMetricsConfig::from_json(raw)
    }

    fn accept(
        &self,
        config: &SpanMetricsConfig,
        request: &IngestRequest,
    ) -> Result<Accepted, IngestResponse> {
        let encoding = Encoding::of(request)?;
        let mut acc = Accumulator::new(&config.bounds, config.cardinality_limit);
        let counted = otlp::count_body(config, encoding, &request.body, &mut acc)
            .map_err(|message| http::bad_request(encoding, message))?;
        let staged = if acc.is_empty() {
            Vec::new()
        } else {
            acc.finish().to_bytes()
        };
        Ok(counted.into_accepted(
            encoding,
            Signal::Traces,
            staged,
            Some(body_key(&request.body)),
        ))
    }

    fn commit(
        &self,
        config: &SpanMetricsConfig,
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError> {
        let mut totals = Accumulator::from_aggregate(
            &config.bounds,
            config.cardinality_limit,
            decode_state(state)?,
        );
        // The bucket's own counts, by the index of the series they went to in `totals`.
        let mut delta: HashMap<usize, SeriesTotals> = HashMap::new();
        let mut touched = Vec::new();
        for (i, bytes) in staged.iter().enumerate() {
            let request = Aggregate::from_bytes(bytes).map_err(|e| {
                ConnectorError::permanent(format!(
                    "staged request {i} of the bucket does not decode: {e}"
                ))
            })?;
            totals.add_overflow_spans(request.overflow_spans);
            for series in &request.series {
                let at = totals.add_totals(series);
                delta
                    .entry(at)
                    .or_insert_with(|| {
                        touched.push(at);
                        SeriesTotals {
                            labels: totals.series()[at].labels.clone(),
                            calls: 0,
                            buckets: vec![0; config.bounds.len() + 1],
                            sum: 0.0,
                        }
                    })
                    .add(series);
            }
        }
        let mut batch = Batch::new(self.schema());
        for at in touched {
            let series = match config.temporality {
                Temporality::Cumulative => &totals.series()[at],
                Temporality::Delta => &delta[&at],
            };
            write_series(config, &mut batch, bucket_ms, series)?;
        }
        let state = totals.finish();
        Ok(Committed {
            batch,
            series: state.series.len() as u64,
            overflowed: state.overflow_spans,
            state: state.to_bytes(),
        })
    }

    fn serve(
        &self,
        config: &SpanMetricsConfig,
        state: Option<&[u8]>,
        request: &IngestRequest,
    ) -> IngestResponse {
        match decode_state(state) {
            Ok(state) => {
                let content_type = exposition::negotiate(request.header("accept"));
                IngestResponse::new(
                    200,
                    content_type,
                    exposition::render(config, &state, content_type),
                )
            }
            Err(e) => IngestResponse::text(500, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
