//! Strict mode: the family-level rules of OpenMetrics 1.0 that no single line shows.
//!
//! The lenient parser checks each line on its own, which is what real-world scrapes
//! need. Strict mode also follows the families across lines, the way the reference
//! parser (prometheus_client) does: metadata placement and repetition, name clashes
//! between families, interleaving, timestamps going backwards, the values counters,
//! histograms, summaries, statesets and infos may take, bucket order, `+Inf` and
//! `_count` agreement, and where exemplars may appear. The same rules apply to the
//! Prometheus text format with its own sample-name suffixes.
//!
//! The checker sees the entries the line parser produced, in order. Rules about a
//! whole metric point or family run when it ends (at the next point, family or the
//! end of the text), and their errors point at the line where that point or family
//! began.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Entry, Format, Labels, MetricType, Sample};

/// A broken rule and the byte offset of the line it is reported at.
#[derive(Debug)]
pub(super) struct Violation {
    pub(super) offset: usize,
    pub(super) message: String,
}

type Check = Result<(), Violation>;

fn violation(offset: usize, message: String) -> Check {
    Err(Violation { offset, message })
}

/// The combined length of an exemplar's label names and values, in code points.
const EXEMPLAR_LABELS_MAX_CHARS: usize = 128;

#[derive(Debug, Clone)]
pub(super) struct Checker<'a> {
    format: Format,
    family: Option<Family<'a>>,
    /// Every sample name a finished family could have produced.
    claimed_names: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Family<'a> {
    name: &'a str,
    offset: usize,
    /// `None` until a `# TYPE` line; the family is unknown (untyped) without one.
    declared_type: Option<MetricType>,
    help_seen: bool,
    unit: Option<(&'a str, usize)>,
    has_samples: bool,
    /// The metric (label set without `le`, `quantile` or the state label) of the
    /// latest sample, and that sample's timestamp.
    group: Option<(String, Option<f64>)>,
    seen_groups: HashSet<String>,
    point: Option<HistogramPoint>,
}

/// One histogram or gauge histogram metric point being read.
#[derive(Debug, Clone)]
struct HistogramPoint {
    group: String,
    timestamp_ms: Option<f64>,
    offset: usize,
    /// The last bucket's bound and value.
    last_bucket: Option<(f64, f64)>,
    has_negative_bucket: bool,
    count: Option<f64>,
    has_sum: bool,
    has_gsum: bool,
    has_negative_gsum: bool,
}

impl<'a> Checker<'a> {
    pub(super) fn new(format: Format) -> Self {
        Checker {
            format,
            family: None,
            claimed_names: HashSet::new(),
        }
    }

    /// Checks one entry that starts at byte `offset` of the text.
    pub(super) fn entry(&mut self, entry: &Entry<'a>, offset: usize) -> Check {
        match entry {
            Entry::Sample(sample) => self.sample(sample, offset),
            Entry::Help { name, .. } => self.metadata(name, offset, Metadata::Help),
            Entry::Type { name, metric_type } => {
                self.metadata(name, offset, Metadata::Type(*metric_type))
            }
            Entry::Unit { name, unit } => self.metadata(name, offset, Metadata::Unit(unit)),
        }
    }

    /// Runs the rules of the last family once the text has ended.
    pub(super) fn finish(&mut self) -> Check {
        match self.family.take() {
            Some(family) => self.close_family(family),
            None => Ok(()),
        }
    }

    fn metadata(&mut self, name: &'a str, offset: usize, what: Metadata<'a>) -> Check {
        let same_family = self.family.as_ref().is_some_and(|f| f.name == name);
        if !same_family {
            if let Some(previous) = self.family.take() {
                self.close_family(previous)?;
            }
            self.family = Some(Family::new(name, offset));
        }
        let Some(family) = self.family.as_mut() else {
            unreachable!("a family was just opened")
        };
        if family.has_samples {
            return violation(
                offset,
                format!(
                    "`# {}` for `{name}` after its samples: a family's metadata comes before its samples",
                    what.keyword()
                ),
            );
        }
        let repeated = match what {
            Metadata::Help => std::mem::replace(&mut family.help_seen, true),
            Metadata::Type(t) => family.declared_type.replace(t).is_some(),
            Metadata::Unit(unit) => family.unit.replace((unit, offset)).is_some(),
        };
        if repeated {
            return violation(
                offset,
                format!(
                    "a second `# {}` for `{name}`: each metadata line may appear once per family",
                    what.keyword()
                ),
            );
        }
        Ok(())
    }

    fn sample(&mut self, sample: &Sample<'a>, offset: usize) -> Check {
        let format = self.format;
        let belongs = self
            .family
            .as_ref()
            .is_some_and(|f| suffix_in(sample.name, f.name, f.suffixes(format)).is_some());
        if !belongs {
            if let Some(family) = self.family.as_ref().filter(|f| f.name == sample.name) {
                // The family's own name is not one of its sample names (a counter
                // writes `_total`): as a new family it would only clash.
                let names: Vec<String> = family
                    .suffixes(format)
                    .iter()
                    .map(|suffix| format!("`{}{suffix}`", family.name))
                    .collect();
                return violation(
                    offset,
                    format!(
                        "sample `{}` does not belong to {} `{}`, whose samples are named {}",
                        sample.name,
                        type_name(family.metric_type(format)),
                        family.name,
                        names.join(", ")
                    ),
                );
            }
            if let Some(previous) = self.family.take() {
                self.close_family(previous)?;
            }
            self.family = Some(Family::new(sample.name, offset));
        }
        let Some(family) = self.family.as_mut() else {
            unreachable!("a family was just opened")
        };
        family.has_samples = true;
        let metric_type = family.metric_type(format);
        let suffix = &sample.name[family.name.len()..];
        let what = SampleRole {
            metric_type,
            suffix,
        };

        check_label_names(sample.labels, "", offset)?;
        let special_label = special_label(metric_type, suffix, family.name);
        match (metric_type, special_label) {
            (MetricType::StateSet, Some(state)) if sample.labels.get(state).is_none() => {
                return violation(
                    offset,
                    format!(
                        "stateset `{}` sample has no `{state}` label naming its state",
                        family.name
                    ),
                );
            }
            (MetricType::Histogram | MetricType::GaugeHistogram, Some(le)) => {
                bucket_bound(sample.labels.get(le).as_deref(), family.name, offset)?;
            }
            (MetricType::Summary, Some(quantile)) => {
                quantile_label(sample.labels.get(quantile).as_deref(), family.name, offset)?;
            }
            _ => {}
        }

        let group = group_key(sample.labels, metric_type, special_label);
        family.track_group(&group, sample, metric_type, offset)?;
        if matches!(
            metric_type,
            MetricType::Histogram | MetricType::GaugeHistogram
        ) && !suffix.is_empty()
        {
            family.track_histogram(group, sample, suffix, offset)?;
        }
        check_value(sample, what, family.name, offset)?;
        if let Some(exemplar) = &sample.exemplar {
            if !what.may_carry_exemplar() {
                return violation(
                    offset,
                    format!(
                        "an exemplar on `{}`: only histogram and gauge histogram buckets and counter totals carry exemplars",
                        sample.name
                    ),
                );
            }
            check_label_names(exemplar.labels, "exemplar ", offset)?;
            let length: usize = exemplar
                .labels
                .iter_decoded()
                .map(|(name, value)| name.chars().count() + value.chars().count())
                .sum();
            if length > EXEMPLAR_LABELS_MAX_CHARS {
                return violation(
                    offset,
                    format!(
                        "exemplar labels are {length} characters long: names and values together may have at most {EXEMPLAR_LABELS_MAX_CHARS}"
                    ),
                );
            }
        }
        Ok(())
    }

    fn close_family(&mut self, mut family: Family<'a>) -> Check {
        let metric_type = family.metric_type(self.format);
        if let Some(point) = family.point.take() {
            point.check(metric_type, family.name)?;
        }
        if let Some((unit, unit_offset)) = family.unit.filter(|(unit, _)| !unit.is_empty()) {
            if matches!(metric_type, MetricType::Info | MetricType::StateSet) {
                return violation(
                    unit_offset,
                    format!(
                        "unit `{unit}` on {} `{}`: infos and statesets have no unit",
                        type_name(metric_type),
                        family.name
                    ),
                );
            }
            if !family
                .name
                .strip_suffix(unit)
                .is_some_and(|rest| rest.ends_with('_'))
            {
                return violation(
                    unit_offset,
                    format!(
                        "unit `{unit}` does not match `{}`: the family name must end with `_{unit}`",
                        family.name
                    ),
                );
            }
        }
        let suffixes = family.suffixes(self.format);
        for suffix in std::iter::once("").chain(suffixes.iter().copied()) {
            let name = format!("{}{suffix}", family.name);
            if self.claimed_names.contains(&name) {
                return violation(
                    family.offset,
                    format!(
                        "family `{}` clashes with an earlier family over the name `{name}`: families must be unique and not interleaved",
                        family.name
                    ),
                );
            }
        }
        for suffix in std::iter::once("").chain(suffixes.iter().copied()) {
            self.claimed_names
                .insert(format!("{}{suffix}", family.name));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Metadata<'a> {
    Help,
    Type(MetricType),
    Unit(&'a str),
}

impl Metadata<'_> {
    fn keyword(self) -> &'static str {
        match self {
            Metadata::Help => "HELP",
            Metadata::Type(_) => "TYPE",
            Metadata::Unit(_) => "UNIT",
        }
    }
}

impl<'a> Family<'a> {
    fn new(name: &'a str, offset: usize) -> Self {
        Family {
            name,
            offset,
            declared_type: None,
            help_seen: false,
            unit: None,
            has_samples: false,
            group: None,
            seen_groups: HashSet::new(),
            point: None,
        }
    }

    fn metric_type(&self, format: Format) -> MetricType {
        self.declared_type.unwrap_or(match format {
            Format::Prometheus => MetricType::Untyped,
            Format::OpenMetrics => MetricType::Unknown,
        })
    }

    fn suffixes(&self, format: Format) -> &'static [&'static str] {
        sample_suffixes(self.metric_type(format), format)
    }

    /// Metrics of a family must not interleave, and the timestamps of one metric
    /// must not go backwards or come and go.
    fn track_group(
        &mut self,
        group: &str,
        sample: &Sample<'_>,
        metric_type: MetricType,
        offset: usize,
    ) -> Check {
        match &mut self.group {
            Some((current, timestamp)) if current == group => {
                match (*timestamp, sample.timestamp_ms) {
                    (Some(_), None) | (None, Some(_)) => {
                        return violation(
                            offset,
                            format!(
                                "`{}` mixes samples with and without timestamps in one metric",
                                sample.name
                            ),
                        );
                    }
                    // The reference parser cannot tell the metrics of an info apart.
                    (Some(before), Some(now))
                        if now < before && metric_type != MetricType::Info =>
                    {
                        return violation(
                            offset,
                            format!(
                                "timestamp of `{}` goes backwards within one metric",
                                sample.name
                            ),
                        );
                    }
                    _ => {}
                }
                *timestamp = sample.timestamp_ms;
            }
            _ => {
                if self.seen_groups.contains(group) {
                    return violation(
                        offset,
                        format!(
                            "`{}` continues a metric of family `{}` after another metric began: metrics must not be interleaved",
                            sample.name, self.name
                        ),
                    );
                }
                self.seen_groups.insert(group.to_owned());
                self.group = Some((group.to_owned(), sample.timestamp_ms));
            }
        }
        Ok(())
    }

    fn track_histogram(
        &mut self,
        group: String,
        sample: &Sample<'_>,
        suffix: &str,
        offset: usize,
    ) -> Check {
        let same_point = self
            .point
            .as_ref()
            .is_some_and(|p| p.group == group && p.timestamp_ms == sample.timestamp_ms);
        if !same_point {
            if let Some(previous) = self.point.take() {
                let metric_type = self.declared_type.unwrap_or(MetricType::Histogram);
                previous.check(metric_type, self.name)?;
            }
            self.point = Some(HistogramPoint::new(group, sample.timestamp_ms, offset));
        }
        let Some(point) = self.point.as_mut() else {
            unreachable!("a point was just opened")
        };
        match suffix {
            "_bucket" => {
                // The bound was checked when the sample arrived.
                let bound = sample
                    .labels
                    .get("le")
                    .and_then(|le| super::syntax::number(le.as_bytes()))
                    .unwrap_or(f64::NAN);
                if let Some((last_bound, last_value)) = point.last_bucket {
                    if bound <= last_bound {
                        return violation(
                            offset,
                            format!(
                                "bucket le=\"{}\" of `{}` is not above the previous bucket's bound {last_bound}: buckets go in increasing order of `le`",
                                sample.labels.get("le").unwrap_or_default(),
                                self.name
                            ),
                        );
                    }
                    if sample.value < last_value {
                        return violation(
                            offset,
                            format!(
                                "bucket le=\"{}\" of `{}` counts {} but the bucket below it counts {last_value}: buckets are cumulative",
                                sample.labels.get("le").unwrap_or_default(),
                                self.name,
                                sample.value
                            ),
                        );
                    }
                }
                point.has_negative_bucket |= bound < 0.0;
                point.last_bucket = Some((bound, sample.value));
            }
            "_count" | "_gcount" => point.count = Some(sample.value),
            "_sum" => point.has_sum = true,
            "_gsum" => {
                point.has_gsum = true;
                point.has_negative_gsum |= sample.value < 0.0;
            }
            _ => {}
        }
        Ok(())
    }
}

impl HistogramPoint {
    fn new(group: String, timestamp_ms: Option<f64>, offset: usize) -> Self {
        HistogramPoint {
            group,
            timestamp_ms,
            offset,
            last_bucket: None,
            has_negative_bucket: false,
            count: None,
            has_sum: false,
            has_gsum: false,
            has_negative_gsum: false,
        }
    }

    fn check(&self, metric_type: MetricType, family: &str) -> Check {
        let metric = if self.group.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", self.group.trim_end_matches(','))
        };
        let fail = |what: String| {
            violation(
                self.offset,
                format!("{} `{family}`{metric}: {what}", type_name(metric_type)),
            )
        };
        let inf_value = match self.last_bucket {
            Some((bound, value)) if bound == f64::INFINITY => value,
            _ => return fail("no `le=\"+Inf\"` bucket: every point needs one".to_owned()),
        };
        if let Some(count) = self.count
            && count != inf_value
        {
            return fail(format!(
                "the count {count} differs from the `+Inf` bucket {inf_value}: they must agree"
            ));
        }
        if (self.has_sum || self.has_gsum) && self.count.is_none() {
            return fail("a sum without a count: a point has both or neither".to_owned());
        }
        if self.count.is_some() && !(self.has_sum || self.has_gsum) {
            return fail("a count without a sum: a point has both or neither".to_owned());
        }
        if self.has_negative_bucket && self.has_sum {
            return fail(
                "a `_sum` with negative buckets: the sum is then no counter and must be left out"
                    .to_owned(),
            );
        }
        if !self.has_negative_bucket && self.has_negative_gsum {
            return fail("a negative `_gsum` without negative buckets".to_owned());
        }
        Ok(())
    }
}

/// What a sample is within its family, for the value and exemplar rules.
#[derive(Debug, Clone, Copy)]
struct SampleRole<'s> {
    metric_type: MetricType,
    suffix: &'s str,
}

impl SampleRole<'_> {
    /// Counter totals, sums, counts and buckets can be neither NaN nor negative
    /// (a gauge histogram's `_gsum` may be negative).
    fn counter_like(self) -> (bool, bool) {
        use MetricType::*;
        match (self.metric_type, self.suffix) {
            (Counter, "_total") | (Summary | Histogram, "_sum" | "_count") => (true, true),
            // Prometheus text names counters without a suffix.
            (Counter, "") => (true, true),
            (Histogram | GaugeHistogram, "_bucket") | (GaugeHistogram, "_gcount") => (true, true),
            (GaugeHistogram, "_gsum") => (true, false),
            _ => (false, false),
        }
    }

    fn whole_number(self) -> bool {
        use MetricType::*;
        matches!(
            (self.metric_type, self.suffix),
            (Histogram | GaugeHistogram, "_bucket" | "_count" | "_gcount") | (Summary, "_count")
        )
    }

    fn may_carry_exemplar(self) -> bool {
        use MetricType::*;
        matches!(
            (self.metric_type, self.suffix),
            (Histogram | GaugeHistogram, "_bucket") | (Counter, "_total")
        )
    }
}

fn check_value(sample: &Sample<'_>, role: SampleRole<'_>, family: &str, offset: usize) -> Check {
    let value = sample.value;
    let (no_nan, no_negative) = role.counter_like();
    let problem = match role.metric_type {
        MetricType::StateSet if value != 0.0 && value != 1.0 => Some("a state is 0 or 1"),
        MetricType::Info if value != 1.0 => Some("an info sample's value is 1"),
        MetricType::Summary if role.suffix.is_empty() && value < 0.0 => {
            Some("quantile values cannot be negative")
        }
        _ if no_nan && value.is_nan() => Some("counters, sums, counts and buckets cannot be NaN"),
        _ if no_negative && value < 0.0 => {
            Some("counters, sums, counts and buckets cannot be negative")
        }
        _ if role.whole_number() && value.fract() != 0.0 => {
            Some("counts and bucket values are whole numbers")
        }
        _ => None,
    };
    match problem {
        Some(rule) => violation(
            offset,
            format!(
                "{} `{family}` sample `{}` has the value {value}: {rule}",
                type_name(role.metric_type),
                sample.name
            ),
        ),
        None => Ok(()),
    }
}

/// Label names must be unique within a label set.
fn check_label_names(labels: Labels<'_>, whose: &str, offset: usize) -> Check {
    if labels.len() < 2 {
        return Ok(());
    }
    let names: Vec<&str> = labels.iter_raw().map(|(name, _)| name).collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return violation(
                offset,
                format!("{whose}label `{name}` appears twice: label names must be unique"),
            );
        }
    }
    Ok(())
}

/// The label that a sample's role adds on top of its metric's labels.
fn special_label<'f>(metric_type: MetricType, suffix: &str, family: &'f str) -> Option<&'f str> {
    match (metric_type, suffix) {
        (MetricType::Histogram | MetricType::GaugeHistogram, "_bucket") => Some("le"),
        (MetricType::Summary, "") => Some("quantile"),
        (MetricType::StateSet, "") => Some(family),
        _ => None,
    }
}

/// `le` must be a number other than NaN, with infinity written `+Inf` or `-Inf`.
fn bucket_bound(le: Option<&str>, family: &str, offset: usize) -> Check {
    let Some(le) = le else {
        return violation(offset, format!("bucket of `{family}` has no `le` label"));
    };
    match super::syntax::number(le.as_bytes()) {
        Some(bound) if bound.is_nan() => {}
        Some(bound) if bound.is_infinite() && le != "+Inf" && le != "-Inf" => {}
        Some(_) => return Ok(()),
        None => {}
    }
    violation(
        offset,
        format!(
            "bucket of `{family}` has le=\"{le}\": a bound is a number other than NaN, infinity written `+Inf`"
        ),
    )
}

/// `quantile` must be a number from 0 to 1.
fn quantile_label(quantile: Option<&str>, family: &str, offset: usize) -> Check {
    let Some(quantile) = quantile else {
        return violation(
            offset,
            format!("summary `{family}` quantile sample has no `quantile` label"),
        );
    };
    match super::syntax::number(quantile.as_bytes()) {
        Some(q) if (0.0..=1.0).contains(&q) => Ok(()),
        _ => violation(
            offset,
            format!(
                "summary `{family}` has quantile=\"{quantile}\": a quantile is a number from 0 to 1"
            ),
        ),
    }
}

/// A key for the metric a sample belongs to: its labels without the role label,
/// in name order, so that `{a="1",b="2"}` and `{b="2",a="1"}` are the same metric.
fn group_key(labels: Labels<'_>, metric_type: MetricType, special: Option<&str>) -> String {
    // The reference parser cannot tell the metrics of an info apart; neither do we.
    if metric_type == MetricType::Info {
        return String::new();
    }
    let mut pairs: Vec<(&str, Cow<'_, str>)> = labels
        .iter_decoded()
        .filter(|(name, _)| Some(*name) != special)
        .collect();
    pairs.sort_unstable();
    let mut key = String::new();
    for (name, value) in pairs {
        // Debug quoting escapes `"` and control characters, so the key is unambiguous.
        let _ = write!(key, "{name}={value:?},");
    }
    key
}

/// The suffix of `sample_name` after `family`, if it is one of `suffixes`.
fn suffix_in<'s>(sample_name: &'s str, family: &str, suffixes: &[&str]) -> Option<&'s str> {
    let suffix = sample_name.strip_prefix(family)?;
    suffixes.contains(&suffix).then_some(suffix)
}

/// The sample names a family of this type writes, as suffixes of its name.
fn sample_suffixes(metric_type: MetricType, format: Format) -> &'static [&'static str] {
    match (format, metric_type) {
        (Format::OpenMetrics, MetricType::Counter) => &["_total", "_created"],
        (Format::OpenMetrics, MetricType::Summary) => &["", "_count", "_sum", "_created"],
        (Format::OpenMetrics, MetricType::Histogram) => &["_count", "_sum", "_bucket", "_created"],
        (_, MetricType::GaugeHistogram) => &["_gcount", "_gsum", "_bucket"],
        (_, MetricType::Info) => &["_info"],
        (Format::Prometheus, MetricType::Summary) => &["", "_count", "_sum"],
        (Format::Prometheus, MetricType::Histogram) => &["_count", "_sum", "_bucket"],
        _ => &[""],
    }
}

fn type_name(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::GaugeHistogram => "gauge histogram",
        MetricType::StateSet => "stateset",
        MetricType::Info => "info",
        MetricType::Summary => "summary",
        MetricType::Unknown => "unknown",
        MetricType::Untyped => "untyped",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Format, ParseError, ParseErrorKind, Parser};

    fn strict(text: &str, format: Format) -> Result<usize, ParseError> {
        Parser::new(text, format)
            .strict(true)
            .try_fold(0, |n, s| s.map(|_| n + 1))
    }

    fn rejected(text: &str, format: Format) -> String {
        let lenient = Parser::new(text, format).try_fold(0, |n, s| s.map(|_| n + 1));
        assert!(lenient.is_ok(), "lenient mode should accept: {lenient:?}");
        let err = strict(text, format).unwrap_err();
        assert_eq!(err.kind(), ParseErrorKind::Semantic);
        err.to_string()
    }

    #[test]
    fn a_well_formed_exposition_passes_in_both_formats() {
        let prom = "# HELP rpc Latency.\n# TYPE rpc histogram\n\
            rpc_bucket{m=\"a\",le=\"0.1\"} 1\nrpc_bucket{m=\"a\",le=\"+Inf\"} 2\n\
            rpc_sum{m=\"a\"} 0.3\nrpc_count{m=\"a\"} 2\n\
            rpc_bucket{m=\"b\",le=\"0.1\"} 0\nrpc_bucket{m=\"b\",le=\"+Inf\"} 0\n\
            rpc_sum{m=\"b\"} 0\nrpc_count{m=\"b\"} 0\n\
            # TYPE q summary\nq{quantile=\"0.5\"} NaN\nq_sum 0\nq_count 0\n\
            # TYPE requests_total counter\nrequests_total 7\nup 1\n";
        assert_eq!(strict(prom, Format::Prometheus).unwrap(), 13);
        let om = "# TYPE rpc histogram\nrpc_bucket{le=\"+Inf\"} 2 # {trace=\"x\"} 0.1\n\
            rpc_sum 0.3\nrpc_count 2\nrpc_created 1.7e9\n\
            # TYPE state stateset\nstate{state=\"on\"} 1\nstate{state=\"off\"} 0\n\
            # TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(strict(om, Format::OpenMetrics).unwrap(), 7);
    }

    #[test]
    fn label_order_does_not_make_another_metric() {
        let text = "a{x=\"1\",y=\"2\"} 1 1\na{y=\"2\",x=\"1\"} 2 2\n# EOF\n";
        assert_eq!(strict(text, Format::OpenMetrics).unwrap(), 2);
        let interleaved = "a{x=\"1\"} 1\na{x=\"2\"} 1\na{x=\"1\"} 1\n";
        assert_eq!(
            rejected(interleaved, Format::Prometheus),
            "line 3, column 1 (byte 22): `a` continues a metric of family `a` after another metric began: metrics must not be interleaved"
        );
    }

    #[test]
    fn prometheus_text_follows_its_own_family_rules() {
        assert_eq!(
            rejected("# TYPE a gauge\n# TYPE a gauge\na 1\n", Format::Prometheus),
            "line 2, column 1 (byte 15): a second `# TYPE` for `a`: each metadata line may appear once per family"
        );
        assert_eq!(
            rejected("# TYPE a counter\na -1\n", Format::Prometheus),
            "line 2, column 1 (byte 17): counter `a` sample `a` has the value -1: counters, sums, counts and buckets cannot be negative"
        );
        assert_eq!(
            rejected(
                "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",
                Format::Prometheus
            ),
            "line 5, column 1 (byte 38): family `a` clashes with an earlier family over the name `a`: families must be unique and not interleaved"
        );
        assert_eq!(
            rejected(
                "# TYPE s summary\ns{quantile=\"2\"} 1\n",
                Format::Prometheus
            ),
            "line 2, column 1 (byte 17): summary `s` has quantile=\"2\": a quantile is a number from 0 to 1"
        );
    }

    #[test]
    fn point_rules_are_reported_where_the_point_began() {
        let text = "# TYPE h histogram\nh_bucket{a=\"1\",le=\"1\"} 1\nh_bucket{a=\"1\",le=\"2\"} 1\n\
            h_bucket{a=\"2\",le=\"+Inf\"} 1\n# EOF\n";
        assert_eq!(
            rejected(text, Format::OpenMetrics),
            "line 2, column 1 (byte 19): histogram `h` {a=\"1\"}: no `le=\"+Inf\"` bucket: every point needs one"
        );
        let at_the_end =
            "# TYPE h gaugehistogram\nh_bucket{le=\"+Inf\"} 2\nh_gcount 3\nh_gsum 1\n# EOF\n";
        assert_eq!(
            rejected(at_the_end, Format::OpenMetrics),
            "line 2, column 1 (byte 24): gauge histogram `h`: the count 3 differs from the `+Inf` bucket 2: they must agree"
        );
    }

    #[test]
    fn counts_are_whole_numbers_and_exemplar_labels_unique() {
        assert_eq!(
            rejected(
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\n# EOF\n",
                Format::OpenMetrics
            ),
            "line 2, column 1 (byte 19): histogram `h` sample `h_bucket` has the value 1.5: counts and bucket values are whole numbers"
        );
        assert_eq!(
            rejected(
                "# TYPE c counter\nc_total 1 # {a=\"1\",a=\"2\"} 1\n# EOF\n",
                Format::OpenMetrics
            ),
            "line 2, column 1 (byte 17): exemplar label `a` appears twice: label names must be unique"
        );
    }

    #[test]
    fn entries_are_checked_too() {
        let text = "# HELP a x\n# HELP a y\n# EOF\n";
        let mut parser = Parser::new(text, Format::OpenMetrics).strict(true);
        assert!(parser.next_entry().unwrap().is_ok());
        let err = parser.next_entry().unwrap().unwrap_err();
        assert_eq!((err.line(), err.kind()), (2, ParseErrorKind::Semantic));
        assert!(
            parser.next_entry().is_none(),
            "the parser stops after an error"
        );
    }
}
