//! The connector's config, with the OpenTelemetry Collector `spanmetrics` connector's
//! defaults.

use connector_core::{ConnectorError, check_range, config_from_json};
use serde::Deserialize;

/// The Collector's default histogram buckets, in milliseconds.
pub const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// Label sets per connector before new ones fold into the overflow series.
pub const DEFAULT_CARDINALITY_LIMIT: u64 = 10_000;

/// The unit of the duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Milliseconds (`_duration_milliseconds`), the default.
    #[default]
    Ms,
    /// Seconds (`_duration_seconds`).
    S,
}

impl Unit {
    /// The unit as a metric name suffix.
    pub fn word(self) -> &'static str {
        match self {
            Unit::Ms => "milliseconds",
            Unit::S => "seconds",
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> f64 {
        match self {
            Unit::Ms => 1e6,
            Unit::S => 1e9,
        }
    }
}

/// `histogram`: the duration histogram's unit and bucket bounds (in that unit).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    /// `ms` (default) or `s`.
    #[serde(default)]
    pub unit: Unit,
    /// Upper bounds, increasing; the Collector's defaults when absent.
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
}

/// An extra label taken from span attributes, then resource attributes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The attribute name (`http.method`); the label is its Prometheus form (`http_method`).
    pub name: String,
    /// The value when neither the span nor its resource has the attribute; without
    /// one the label is left out.
    #[serde(default)]
    pub default: Option<String>,
}

/// Whether rows carry running totals or each bucket's own counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Running totals since the connector was created, so `rate()` works downstream.
    #[default]
    Cumulative,
    /// Each bucket's own counts.
    Delta,
}

/// The raw config as operators write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    histogram: HistogramConfig,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    #[serde(default)]
    exclude_dimensions: Vec<String>,
    #[serde(default)]
    temporality: Temporality,
    #[serde(default = "default_limit")]
    aggregation_cardinality_limit: u64,
}

fn default_namespace() -> String {
    "traces.span.metrics".to_owned()
}

fn default_limit() -> u64 {
    DEFAULT_CARDINALITY_LIMIT
}

/// The four labels every series has unless excluded, by OpenTelemetry name.
pub const BUILTIN_DIMENSIONS: [&str; 4] = ["service.name", "span.name", "span.kind", "status.code"];

/// The validated config.
#[derive(Debug, Clone)]
pub struct SpanMetricsConfig {
    /// `namespace_calls_total` and `namespace_duration_<unit>`, sanitised.
    pub calls_name: String,
    /// The histogram family name, without `_bucket` / `_sum` / `_count`.
    pub duration_name: String,
    /// The histogram's unit.
    pub unit: Unit,
    /// The bucket upper bounds, increasing, without `+Inf`.
    pub bounds: Vec<f64>,
    /// Which of [`BUILTIN_DIMENSIONS`] are kept.
    pub builtin: [bool; 4],
    /// Extra dimensions with their label names.
    pub dimensions: Vec<(String, Dimension)>,
    /// Cumulative or delta rows.
    pub temporality: Temporality,
    /// Label sets before the overflow series.
    pub cardinality_limit: usize,
}

/// A name in Prometheus's alphabet: every character outside `[a-zA-Z0-9_]` becomes
/// `_`, and a leading digit gets a `_` before it, as the Collector's translation does.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl SpanMetricsConfig {
    /// Checks a raw JSON config.
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, ConnectorError> {
        let raw: Raw = if raw.is_null() {
            config_from_json(&serde_json::json!({}))?
        } else {
            config_from_json(raw)?
        };
        if raw.namespace.is_empty() {
            return Err(ConnectorError::config("namespace: must not be empty"));
        }
        let bounds = raw
            .histogram
            .buckets
            .clone()
            .unwrap_or_else(|| match raw.histogram.unit {
                Unit::Ms => DEFAULT_BUCKETS_MS.to_vec(),
                Unit::S => DEFAULT_BUCKETS_MS.iter().map(|b| b / 1000.0).collect(),
            });
        check_range("histogram.buckets: count", bounds.len(), 1..=256)?;
        for (i, pair) in bounds.windows(2).enumerate() {
            if pair[0].partial_cmp(&pair[1]) != Some(std::cmp::Ordering::Less) {
                return Err(ConnectorError::config(format!(
                    "histogram.buckets[{}]: {} is not above the bucket before it ({})",
                    i + 1,
                    pair[1],
                    pair[0]
                )));
            }
        }
        if let Some((i, b)) = bounds.iter().enumerate().find(|(_, b)| !b.is_finite()) {
            return Err(ConnectorError::config(format!(
                "histogram.buckets[{i}]: {b} is not a finite number (+Inf is always added)"
            )));
        }
        let mut builtin = [true; 4];
        for (i, name) in raw.exclude_dimensions.iter().enumerate() {
            match BUILTIN_DIMENSIONS.iter().position(|b| b == name) {
                Some(at) => builtin[at] = false,
                None => {
                    return Err(ConnectorError::config(format!(
                        "exclude_dimensions[{i}]: `{name}` is not one of {}",
                        BUILTIN_DIMENSIONS.join(", ")
                    )));
                }
            }
        }
        let mut labels: Vec<String> = BUILTIN_DIMENSIONS
            .iter()
            .map(|d| prometheus_name(d))
            .collect();
        let mut dimensions = Vec::with_capacity(raw.dimensions.len());
        for (i, d) in raw.dimensions.into_iter().enumerate() {
            let label = prometheus_name(&d.name);
            if d.name.is_empty()
                || label.starts_with("__")
                || labels.contains(&label)
                || label == "le"
            {
                return Err(ConnectorError::config(format!(
                    "dimensions[{i}].name: `{}` is empty, reserved, or gives label `{label}` that another dimension has",
                    d.name
                )));
            }
            labels.push(label.clone());
            dimensions.push((label, d));
        }
        check_range(
            "aggregation_cardinality_limit",
            raw.aggregation_cardinality_limit,
            1..=1_000_000,
        )?;
        let namespace = prometheus_name(&raw.namespace);
        Ok(SpanMetricsConfig {
            calls_name: format!("{namespace}_calls_total"),
            duration_name: format!("{namespace}_duration_{}", raw.histogram.unit.word()),
            unit: raw.histogram.unit,
            bounds,
            builtin,
            dimensions,
            temporality: raw.temporality,
            cardinality_limit: usize::try_from(raw.aggregation_cardinality_limit)
                .unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_collector() {
        let c = SpanMetricsConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(c.calls_name, "traces_span_metrics_calls_total");
        assert_eq!(c.duration_name, "traces_span_metrics_duration_milliseconds");
        assert_eq!(c.bounds, DEFAULT_BUCKETS_MS);
        assert_eq!(c.cardinality_limit, 10_000);
        assert_eq!(c.temporality, Temporality::Cumulative);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |v: serde_json::Value| SpanMetricsConfig::from_json(&v).unwrap_err().to_string();
        assert!(
            err(serde_json::json!({"histogram": {"buckets": [5, 2]}}))
                .starts_with("histogram.buckets[1]: 2 is not above")
        );
        assert!(
            err(serde_json::json!({"exclude_dimensions": ["span.nam"]}))
                .starts_with("exclude_dimensions[0]: `span.nam`")
        );
        assert!(
            err(serde_json::json!({"dimensions": [{"name": "span.name"}]}))
                .starts_with("dimensions[0].name")
        );
        assert!(err(serde_json::json!({"namespce": "x"})).starts_with("unknown field `namespce`"));
        assert!(
            err(serde_json::json!({"temporality": "sometimes"}))
                .contains("unknown variant `sometimes`")
        );
        assert_eq!(
            err(serde_json::json!({"aggregation_cardinality_limit": 0})),
            "aggregation_cardinality_limit: 0 is out of range, expected 1 to 1000000"
        );
    }

    #[test]
    fn seconds_scale_the_default_buckets() {
        let c = SpanMetricsConfig::from_json(
            &serde_json::json!({"histogram": {"unit": "s"}, "namespace": "my.spans"}),
        )
        .unwrap();
        assert_eq!(c.bounds[0], 0.002);
        assert_eq!(c.duration_name, "my_spans_duration_seconds");
    }
}
