//! An `ExportMetricsServiceRequest` to Prometheus families, as the OpenTelemetry
//! specification's "Prometheus and OpenMetrics compatibility" section says; every
//! point that cannot be written as Prometheus writes it is rejected with its reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint, metric, number_data_point,
};
use otlp_common::attribute_text;
use otlp_common::http::{Encoding, Tally};
use otlp_common::naming::{FamilyKind, family_name, label_name, metric_name, unit_suffix};
use prost::Message as _;

use crate::config::{Known, OtlpMetricsConfig};
use crate::model::{Family, Label, Point, Quantile, Staged, kind_code, overlay, series_hash};
use crate::samples::clashing_family;

/// Decodes a request body in its encoding; the error says why it is not a request.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| {
            format!("the body is not an OTLP ExportMetricsServiceRequest in protobuf: {e}")
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            format!("the body is not an OTLP ExportMetricsServiceRequest in JSON: {e}")
        }),
    }
}

/// A request's families, and what became of its points.
#[derive(Debug, Default)]
pub struct Converted {
    /// What to stage.
    pub staged: Staged,
    /// Points taken and rejected, with the first reason.
    pub tally: Tally,
}

/// The target of `target_info`'s help, as the reference exporter writes it.
const TARGET_INFO_HELP: &str = "Target metadata";

/// Resource attributes that become `job` and `instance` rather than `target_info` labels.
const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

/// Attributes as labels, sorted by name: names by `name_of`, values as text, and
/// names that sanitise alike joined with `;` in the order of their original keys, as
/// the specification says. Empty values are no labels; a key that sanitises to
/// nothing (an empty key) has no label to go to, so a resource attribute with one is
/// left off `target_info`, and points with one are rejected before this.
fn attribute_labels<'a>(
    attributes: impl IntoIterator<Item = &'a KeyValue>,
    mut name_of: impl FnMut(&str) -> String,
) -> Vec<Label> {
    let mut texts: Vec<(String, &str, String)> = attributes
        .into_iter()
        .filter_map(|kv| {
            let text = attribute_text(kv.value.as_ref()?)?;
            let name = name_of(&kv.key);
            (!text.is_empty() && !name.is_empty())
                .then(|| (name, kv.key.as_str(), text.into_owned()))
        })
        .collect();
    if texts.len() > 1 {
        texts.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(texts.len());
    for (name, _, value) in texts {
        match labels.last_mut() {
            Some(last) if last.name == name => {
                last.value.push(';');
                last.value.push_str(&value);
            }
            _ => labels.push(Label { name, value }),
        }
    }
    labels
}

/// `job` and `instance`, from a resource's `service.*` attributes.
fn resource_labels(attributes: &[KeyValue]) -> Vec<Label> {
    let text = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| attribute_text(kv.value.as_ref()?))
            .filter(|t| !t.is_empty())
    };
    let mut labels = Vec::new();
    if let Some(instance) = text("service.instance.id") {
        labels.push(Label {
            name: "instance".to_owned(),
            value: instance.into_owned(),
        });
    }
    if let Some(name) = text("service.name") {
        let job = match text("service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name.into_owned(),
        };
        labels.push(Label {
            name: "job".to_owned(),
            value: job,
        });
    }
    labels
}

/// The scope's name, version and attributes as `otel_scope_*` labels, sorted.
fn scope_labels(scope: Option<&InstrumentationScope>) -> Vec<Label> {
    let Some(scope) = scope else {
        return Vec::new();
    };
    let attributes = attribute_labels(&scope.attributes, |key| {
        label_name(&format!("otel_scope_{key}"))
    });
    let mut named: Vec<Label> = [
        ("otel_scope_name", &scope.name),
        ("otel_scope_version", &scope.version),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| Label {
        name: name.to_owned(),
        value: value.clone(),
    })
    .collect();
    named.sort();
    overlay(attributes, &named)
}

/// Label names by attribute key, kept for a request: the same few keys come on every
/// point, and sanitising each again cost more than the lookup.
#[derive(Default)]
struct Names(std::collections::HashMap<String, String>);

impl Names {
    fn of(&mut self, key: &str) -> String {
        if let Some(name) = self.0.get(key) {
            return name.clone();
        }
        let name = label_name(key);
        self.0.insert(key.to_owned(), name.clone());
        name
    }
}

/// Converts points into families, one metric after another.
struct Converter<'a> {
    config: &'a OtlpMetricsConfig,
    out: Converted,
    names: Names,
    /// Points seen so far, taken or not, against `max_points_per_request`.
    points: usize,
    /// What the newest commit in this process left (empty before one).
    known: Arc<Known>,
    /// Series and families of `known` last seen before this are past
    /// `metric_expiration`: not kept.
    oldest_ms: i64,
    /// The families this request has taken points of, by name (foldhash, as
    /// `Known::families`).
    families: HashMap<String, FamilyKind, foldhash::fast::RandomState>,
    /// The series check against `max_series`; `None` when the series kept and the
    /// request's points together cannot pass it.
    series: Option<SeriesCheck>,
}

/// New series of a request against the series the connector keeps.
struct SeriesCheck {
    /// Series of `Converter::known` not past expiration.
    kept: usize,
    /// Series of the points taken that `known` does not have.
    new: HashSet<u64>,
}

/// What a metric becomes.
struct Shape {
    kind: FamilyKind,
    delta: bool,
}

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

impl Converter<'_> {
    /// The labels of a point: its attributes under the resource's and scope's labels,
    /// checked against the limits. `reserved` is the label the family's samples add.
    fn labels(
        &mut self,
        common: &[Label],
        attributes: &[KeyValue],
        reserved: Option<&str>,
    ) -> Result<Vec<Label>, String> {
        let names = &mut self.names;
        // Sanitising turns `__` into `_`, so no attribute reaches Prometheus's
        // reserved names; an empty key would be an empty label name.
        if attributes.iter().any(|kv| kv.key.is_empty()) {
            return Err(
                "an attribute has an empty key, which no Prometheus label can carry".to_owned(),
            );
        }
        let attributes = attribute_labels(attributes, |key| names.of(key));
        if let Some(reserved) = reserved
            && attributes.iter().any(|l| l.name == reserved)
        {
            return Err(format!(
                "an attribute becomes label `{reserved}`, which the family's samples set themselves"
            ));
        }
        // The point's labels are its own; the family stages `common` once. The limits
        // hold for both together, a name in both counting once, with common's value.
        let shadowed = |l: &Label| common.binary_search_by(|c| c.name.cmp(&l.name)).is_ok();
        let count = common.len() + attributes.iter().filter(|l| !shadowed(l)).count();
        if count > self.config.max_labels_per_series {
            return Err(format!(
                "{count} labels, more than max_labels_per_series ({})",
                self.config.max_labels_per_series
            ));
        }
        if let Some(label) = attributes
            .iter()
            .filter(|l| !shadowed(l))
            .chain(common)
            .find(|l| l.value.len() > self.config.max_label_value_bytes)
        {
            return Err(format!(
                "label `{}` has {} bytes, more than max_label_value_bytes ({})",
                label.name,
                label.value.len(),
                self.config.max_label_value_bytes
            ));
        }
        Ok(attributes)
    }

    /// Takes a point that passed the limits, or rejects it with `why`.
    fn take(&mut self, family: &mut Family, metric: &str, point: Result<Point, String>) {
        self.points += 1;
        if self.points > self.config.max_points_per_request {
            let max = self.config.max_points_per_request;
            self.out.tally.reject(1, || {
                format!("the request has more than max_points_per_request ({max}) data points")
            });
            return;
        }
        match point {
            Ok(point) => {
                if let Some(check) = &mut self.series {
                    let hash =
                        series_hash(&family.name, &overlay(point.labels.clone(), &family.common));
                    let kept = self
                        .known
                        .series
                        .get(&hash)
                        .is_some_and(|seen| *seen >= self.oldest_ms);
                    if !kept && !check.new.contains(&hash) {
                        let max = self.config.max_series;
                        if check.kept + check.new.len() >= max {
                            let kept = check.kept;
                            self.out.tally.reject(1, || {
                                format!("a new series past max_series ({max}): the connector keeps {kept} series, and this request brings more")
                            });
                            return;
                        }
                        check.new.insert(hash);
                    }
                }
                family.points.push(point);
                self.out.tally.accepted += 1;
            }
            Err(why) => self
                .out
                .tally
                .reject(1, || format!("metric `{metric}`: {why}")),
        }
    }

    fn metric(&mut self, common: &[Label], metric: &Metric) -> Option<Family> {
        let Some(data) = &metric.data else {
            return None;
        };
        let temporality = |t: i32| match t {
            DELTA => Ok(true),
            CUMULATIVE => Ok(false),
            _ => Err(format!(
                "aggregation temporality {t} is neither delta nor cumulative"
            )),
        };
        let points = points_of(data);
        let shape = match data {
            metric::Data::Gauge(_) => Ok(Shape {
                kind: FamilyKind::Gauge,
                delta: false,
            }),
            metric::Data::Sum(s) => temporality(s.aggregation_temporality).map(|delta| Shape {
                kind: if s.is_monotonic {
                    FamilyKind::Counter
                } else {
                    FamilyKind::Gauge
                },
                delta,
            }),
            metric::Data::Histogram(h) => {
                temporality(h.aggregation_temporality).map(|delta| Shape {
                    kind: FamilyKind::Histogram,
                    delta,
                })
            }
            metric::Data::Summary(_) => Ok(Shape {
                kind: FamilyKind::Summary,
                delta: false,
            }),
            metric::Data::ExponentialHistogram(_) => Err(
                "exponential histograms have no Prometheus text form; configure an explicit-bucket histogram view"
                    .to_owned(),
            ),
        };
        let shape = match shape {
            Ok(_) if metric_name(&metric.name).is_empty() => {
                self.points += points;
                self.out.tally.reject(points as u64, || {
                    "a metric has no name, so its points have no Prometheus name".to_owned()
                });
                return None;
            }
            Ok(shape) => shape,
            Err(why) => {
                self.points += points;
                self.out
                    .tally
                    .reject(points as u64, || format!("metric `{}`: {why}", metric.name));
                return None;
            }
        };
        let name = family_name(&metric.name, &metric.unit, shape.kind);
        if let Some(other) = self.clash(&name, shape.kind) {
            self.points += points;
            self.out.tally.reject(points as u64, || {
                format!(
                    "metric `{}` becomes family `{name}`, whose names on the scrape page clash with those of family `{other}`; rename one of the two metrics",
                    metric.name
                )
            });
            return None;
        }
        let mut family = Family {
            name,
            kind: kind_code(shape.kind),
            help: metric.description.clone(),
            unit: unit_suffix(&metric.unit, shape.kind),
            points: Vec::new(),
            common: common.to_vec(),
        };
        let name = metric.name.as_str();
        match data {
            metric::Data::Gauge(g) => {
                for p in &g.data_points {
                    let point = self.number(common, p, &shape);
                    self.take(&mut family, name, point);
                }
            }
            metric::Data::Sum(s) => {
                for p in &s.data_points {
                    let point = self.number(common, p, &shape);
                    self.take(&mut family, name, point);
                }
            }
            metric::Data::Histogram(h) => {
                for p in &h.data_points {
                    let point = self.histogram(common, p, &shape);
                    self.take(&mut family, name, point);
                }
            }
            metric::Data::Summary(s) => {
                for p in &s.data_points {
                    let point = self.summary(common, p);
                    self.take(&mut family, name, point);
                }
            }
            metric::Data::ExponentialHistogram(_) => {}
        }
        if !family.points.is_empty() {
            self.families.insert(family.name.clone(), shape.kind);
        }
        Some(family)
    }

    /// A family, of this request or kept and not expired, whose page names clash
    /// with those of `name` of `kind` (`samples::clashing_family`). As at the commit,
    /// only a family that arrives is checked: one new, or of another kind than its
    /// name has now; a later family of a name wins, as the commit applies them in
    /// order.
    fn clash(&self, name: &str, kind: FamilyKind) -> Option<String> {
        let kind_of = |other: &str| {
            self.families.get(other).copied().or_else(|| {
                self.known
                    .families
                    .get(other)
                    .filter(|(_, newest)| *newest >= self.oldest_ms)
                    .map(|(kind, _)| *kind)
            })
        };
        if kind_of(name) == Some(kind) {
            return None;
        }
        clashing_family(name, kind, kind_of)
    }

    fn number(
        &mut self,
        common: &[Label],
        p: &NumberDataPoint,
        shape: &Shape,
    ) -> Result<Point, String> {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return Err("a point has no recorded value".to_owned());
        }
        #[allow(clippy::cast_precision_loss)]
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return Err("a point has no value".to_owned()),
        };
        if shape.kind == FamilyKind::Counter && !(value.is_finite() && value >= 0.0) {
            return Err(format!(
                "a monotonic sum has value {value}; counters take finite values of 0 or more"
            ));
        }
        if shape.delta && !value.is_finite() {
            return Err(format!(
                "a delta point has value {value}, which cannot be added up"
            ));
        }
        Ok(Point {
            labels: self.labels(common, &p.attributes, None)?,
            delta: shape.delta,
            // One NaN: a pushed NaN must not carry Prometheus's stale-marker bits.
            value: if value.is_nan() { f64::NAN } else { value },
            ..Point::default()
        })
    }

    fn histogram(
        &mut self,
        common: &[Label],
        p: &HistogramDataPoint,
        shape: &Shape,
    ) -> Result<Point, String> {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return Err("a point has no recorded value".to_owned());
        }
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return Err(format!(
                "a histogram point has {} bucket counts for {} bounds; it needs one more count than bounds",
                p.bucket_counts.len(),
                p.explicit_bounds.len()
            ));
        }
        if let Some(pair) = p
            .explicit_bounds
            .windows(2)
            .find(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return Err(format!(
                "histogram bounds are not increasing: {} then {}",
                pair[0], pair[1]
            ));
        }
        if let Some(b) = p.explicit_bounds.iter().find(|b| !b.is_finite()) {
            return Err(format!(
                "histogram bound {b} is not finite (+Inf is the last bucket already)"
            ));
        }
        let total = p
            .bucket_counts
            .iter()
            .try_fold(0u64, |a, c| a.checked_add(*c));
        if total != Some(p.count) {
            return Err(format!(
                "histogram bucket counts add up to {}, but its count is {}",
                total.map_or_else(|| "more than 2^64".to_owned(), |t| t.to_string()),
                p.count
            ));
        }
        let sum = p.sum.ok_or_else(|| {
            "a histogram point without a sum has no Prometheus form (`_sum` is required)".to_owned()
        })?;
        if !sum.is_finite() {
            return Err(format!("histogram sum {sum} is not finite"));
        }
        if sum < 0.0 && p.explicit_bounds.iter().all(|b| *b >= 0.0) {
            return Err(format!(
                "histogram sum {sum} is negative but no bound is: Prometheus reads the sum of such a histogram as a counter"
            ));
        }
        Ok(Point {
            labels: self.labels(common, &p.attributes, Some("le"))?,
            delta: shape.delta,
            bounds: p.explicit_bounds.clone(),
            counts: p.bucket_counts.clone(),
            sum,
            count: p.count,
            ..Point::default()
        })
    }

    fn summary(&mut self, common: &[Label], p: &SummaryDataPoint) -> Result<Point, String> {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return Err("a point has no recorded value".to_owned());
        }
        if !(p.sum.is_finite() && p.sum >= 0.0) {
            return Err(format!(
                "summary sum {} is not a finite number of 0 or more, as Prometheus reads a summary's sum",
                p.sum
            ));
        }
        if let Some(q) = p
            .quantile_values
            .iter()
            .find(|q| !(0.0..=1.0).contains(&q.quantile))
        {
            return Err(format!("summary quantile {} is outside 0 to 1", q.quantile));
        }
        Ok(Point {
            labels: self.labels(common, &p.attributes, Some("quantile"))?,
            sum: p.sum,
            count: p.count,
            quantiles: p
                .quantile_values
                .iter()
                .map(|q| Quantile {
                    quantile: q.quantile,
                    value: q.value,
                })
                .collect(),
            ..Point::default()
        })
    }
}

/// The series check for a request, unless the series kept and its points together
/// cannot pass `max_series` (then hashing every point's labels would be wasted).
fn series_check(
    config: &OtlpMetricsConfig,
    request: &ExportMetricsServiceRequest,
    known: &Known,
    oldest_ms: i64,
) -> Option<SeriesCheck> {
    if known.series.len() + points_in(request) <= config.max_series {
        return None;
    }
    let kept = known
        .series
        .values()
        .filter(|seen| **seen >= oldest_ms)
        .count();
    Some(SeriesCheck {
        kept,
        new: HashSet::new(),
    })
}

/// The data points of a request, of every kind.
fn points_in(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter_map(|m| m.data.as_ref())
        .map(points_of)
        .sum()
}

/// The data points of one metric.
fn points_of(data: &metric::Data) -> usize {
    match data {
        metric::Data::Gauge(g) => g.data_points.len(),
        metric::Data::Sum(s) => s.data_points.len(),
        metric::Data::Histogram(h) => h.data_points.len(),
        metric::Data::ExponentialHistogram(h) => h.data_points.len(),
        metric::Data::Summary(s) => s.data_points.len(),
    }
}

/// Converts a decoded request received at `received_ms` (0: unknown): its families
/// in order, `target_info` per resource that has attributes beyond `job` and
/// `instance`.
pub fn convert(
    config: &OtlpMetricsConfig,
    request: &ExportMetricsServiceRequest,
    received_ms: i64,
) -> Converted {
    let known = config
        .known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_default();
    let oldest_ms = config.oldest_kept_ms(received_ms);
    let mut converter = Converter {
        config,
        out: Converted::default(),
        names: Names::default(),
        points: 0,
        series: series_check(config, request, &known, oldest_ms),
        known,
        oldest_ms,
        families: HashMap::default(),
    };
    for resource_metrics in &request.resource_metrics {
        let attributes = resource_metrics
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let identity = resource_labels(attributes);
        let info = attribute_labels(
            attributes
                .iter()
                .filter(|kv| !IDENTIFYING.contains(&kv.key.as_str())),
            label_name,
        );
        if !info.is_empty() {
            converter.out.staged.families.push(Family {
                name: "target_info".to_owned(),
                kind: kind_code(FamilyKind::Gauge),
                help: TARGET_INFO_HELP.to_owned(),
                unit: String::new(),
                points: vec![Point {
                    labels: info,
                    value: 1.0,
                    ..Point::default()
                }],
                common: identity.clone(),
            });
        }
        for scope_metrics in &resource_metrics.scope_metrics {
            let common = overlay(scope_labels(scope_metrics.scope.as_ref()), &identity);
            for metric in &scope_metrics.metrics {
                if let Some(family) = converter.metric(&common, metric) {
                    converter.out.staged.families.push(family);
                }
            }
        }
    }
    converter.out
}
