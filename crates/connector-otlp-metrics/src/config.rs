//! The connector's config: how long a series is served after its last point, and the
//! limits that keep one connector's memory and state bounded.

use connector_core::{ConnectorError, check_range, config_from_json, parse_duration};
use otlp_common::naming::FamilyKind;
use serde::Deserialize;

/// Series served after their last point: an hour, as the OpenTelemetry Collector's
/// Prometheus exporter keeps them.
pub const DEFAULT_METRIC_EXPIRATION: &str = "1h";
/// Series a connector keeps; points of new series past it are rejected.
pub const DEFAULT_MAX_SERIES: u64 = 10_000;
/// Labels a series may have, `job`, `instance` and the scope's among them.
pub const DEFAULT_MAX_LABELS_PER_SERIES: u64 = 64;
/// Bytes a label value may have.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: u64 = 4096;
/// Data points one request may carry; the rest of a larger request is rejected.
pub const DEFAULT_MAX_POINTS_PER_REQUEST: u64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_expiration")]
    metric_expiration: String,
    #[serde(default = "default_series")]
    max_series: u64,
    #[serde(default = "default_labels")]
    max_labels_per_series: u64,
    #[serde(default = "default_value_bytes")]
    max_label_value_bytes: u64,
    #[serde(default = "default_points")]
    max_points_per_request: u64,
}

fn default_expiration() -> String {
    DEFAULT_METRIC_EXPIRATION.to_owned()
}
fn default_series() -> u64 {
    DEFAULT_MAX_SERIES
}
fn default_labels() -> u64 {
    DEFAULT_MAX_LABELS_PER_SERIES
}
fn default_value_bytes() -> u64 {
    DEFAULT_MAX_LABEL_VALUE_BYTES
}
fn default_points() -> u64 {
    DEFAULT_MAX_POINTS_PER_REQUEST
}

/// What a connector's state held after the newest commit this process ran: what lets
/// `accept` turn away, in the response itself, points of new series past
/// `max_series` and metrics whose names clash with a kept family's. `None` until
/// this process commits; the commit holds both rules either way.
pub type KnownState = std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Known>>>>;

/// The series and families of a connector's state, each with the bucket of its
/// newest point (so expired ones can be told apart).
#[derive(Debug, Default)]
pub struct Known {
    /// Series by hash of family name and labels (`model::series_hash`).
    pub series: std::collections::HashMap<u64, i64>,
    /// Families by name, with their kind. foldhash: looked up for every metric of
    /// every request, where SipHash was most of the names check's cost.
    pub families: std::collections::HashMap<String, (FamilyKind, i64), foldhash::fast::RandomState>,
}

/// The validated config. connectord keeps one per connector and spec for both ingest
/// and commit, so `known` carries what commits learned to later requests.
#[derive(Debug, Clone)]
pub struct OtlpMetricsConfig {
    /// A series with no point for this long is dropped from the scrape page and the state.
    pub metric_expiration_ms: i64,
    /// Series kept at most.
    pub max_series: usize,
    /// Labels per series at most.
    pub max_labels_per_series: usize,
    /// Bytes per label value at most.
    pub max_label_value_bytes: usize,
    /// Data points per request at most.
    pub max_points_per_request: usize,
    /// What the newest commit left.
    pub known: KnownState,
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl OtlpMetricsConfig {
    /// The oldest bucket a series may have had its last point in and still be kept, at
    /// `now_ms` (a bucket being committed, or when a request arrived; 0 for unknown,
    /// which keeps everything).
    pub fn oldest_kept_ms(&self, now_ms: i64) -> i64 {
        if now_ms > 0 {
            now_ms.saturating_sub(self.metric_expiration_ms)
        } else {
            i64::MIN
        }
    }

    /// Checks a raw JSON config (`null` takes every default).
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, ConnectorError> {
        let raw: Raw = if raw.is_null() {
            config_from_json(&serde_json::json!({}))?
        } else {
            config_from_json(raw)?
        };
        let expiration = parse_duration(&raw.metric_expiration)
            .map_err(|e| ConnectorError::config(format!("metric_expiration: {e}")))?;
        check_range("max_series", raw.max_series, 1..=1_000_000)?;
        check_range(
            "max_labels_per_series",
            raw.max_labels_per_series,
            1..=1_000,
        )?;
        check_range(
            "max_label_value_bytes",
            raw.max_label_value_bytes,
            1..=65_536,
        )?;
        check_range(
            "max_points_per_request",
            raw.max_points_per_request,
            1..=10_000_000,
        )?;
        Ok(OtlpMetricsConfig {
            metric_expiration_ms: i64::try_from(expiration.as_millis()).unwrap_or(i64::MAX),
            max_series: to_usize(raw.max_series),
            max_labels_per_series: to_usize(raw.max_labels_per_series),
            max_label_value_bytes: to_usize(raw.max_label_value_bytes),
            max_points_per_request: to_usize(raw.max_points_per_request),
            known: KnownState::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_an_hour() {
        let c = OtlpMetricsConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(c.metric_expiration_ms, 3_600_000);
        assert_eq!(c.max_series, 10_000);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |v| OtlpMetricsConfig::from_json(&v).unwrap_err().to_string();
        assert!(
            err(serde_json::json!({"metric_expiration": "an hour"}))
                .starts_with("metric_expiration: `an hour`")
        );
        assert_eq!(
            err(serde_json::json!({"max_series": 0})),
            "max_series: 0 is out of range, expected 1 to 1000000"
        );
        assert!(err(serde_json::json!({"max_serie": 5})).starts_with("unknown field `max_serie`"));
    }
}
