//! What is staged per request and kept as state, as protobuf messages (compact, and
//! decoded field by field so a damaged record is named, never defaulted).

use otlp_common::naming::FamilyKind;

/// One label of a series.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// The Prometheus label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its value, never empty (an empty value is no label, as in Prometheus).
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One quantile of a summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantile {
    /// The quantile, 0 to 1.
    #[prost(double, tag = "1")]
    pub quantile: f64,
    /// Its value.
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// One data point of a series, already in Prometheus terms.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Point {
    /// The series' labels, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Delta temporality: added to the series' running value.
    #[prost(bool, tag = "2")]
    pub delta: bool,
    /// A gauge's or counter's value.
    #[prost(double, tag = "3")]
    pub value: f64,
    /// A histogram's upper bounds, without `+Inf`.
    #[prost(double, repeated, tag = "4")]
    pub bounds: Vec<f64>,
    /// A histogram's count per bucket (not cumulative), one more than `bounds`.
    #[prost(uint64, repeated, tag = "5")]
    pub counts: Vec<u64>,
    /// A histogram's or summary's sum.
    #[prost(double, tag = "6")]
    pub sum: f64,
    /// A histogram's or summary's count.
    #[prost(uint64, tag = "7")]
    pub count: u64,
    /// A summary's quantiles.
    #[prost(message, repeated, tag = "8")]
    pub quantiles: Vec<Quantile>,
}

/// A family's kind as stored.
pub fn kind_code(kind: FamilyKind) -> i32 {
    match kind {
        FamilyKind::Counter => 0,
        FamilyKind::Gauge => 1,
        FamilyKind::Histogram => 2,
        FamilyKind::Summary => 3,
    }
}

/// The kind a stored code names.
pub fn kind_of(code: i32) -> Option<FamilyKind> {
    Some(match code {
        0 => FamilyKind::Counter,
        1 => FamilyKind::Gauge,
        2 => FamilyKind::Histogram,
        3 => FamilyKind::Summary,
        _ => return None,
    })
}

/// The points of one family in one request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Family {
    /// The family name (a counter's samples add `_total`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// [`kind_code`].
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// The metric's description, for `# HELP`.
    #[prost(string, tag = "3")]
    pub help: String,
    /// The unit's word, for OpenMetrics' `# UNIT`; empty for none.
    #[prost(string, tag = "4")]
    pub unit: String,
    /// Its points.
    #[prost(message, repeated, tag = "5")]
    pub points: Vec<Point>,
    /// The labels every point has (its resource's and scope's), sorted: a point's own
    /// labels are laid over them ([`overlay`] with these on top). Staged once per
    /// family, not per point: per point they were more than half of what a request
    /// staged. Empty in the state, whose series carry all their labels.
    #[prost(message, repeated, tag = "6")]
    pub common: Vec<Label>,
}

/// `base` with `top` laid over it, both sorted by name: a name in both takes `top`'s
/// value; the result is sorted.
pub fn overlay(base: Vec<Label>, top: &[Label]) -> Vec<Label> {
    if top.is_empty() {
        return base;
    }
    let mut out = Vec::with_capacity(base.len() + top.len());
    let mut base = base.into_iter().peekable();
    let mut top = top.iter().peekable();
    loop {
        let next = match (base.peek(), top.peek()) {
            (Some(b), Some(t)) => match b.name.cmp(&t.name) {
                std::cmp::Ordering::Less => base.next(),
                std::cmp::Ordering::Greater => top.next().cloned(),
                std::cmp::Ordering::Equal => {
                    base.next();
                    top.next().cloned()
                }
            },
            (Some(_), None) => base.next(),
            (None, Some(_)) => top.next().cloned(),
            (None, None) => return out,
        };
        out.extend(next);
    }
}

/// What one accepted request stages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Staged {
    /// Families in the order the request had them.
    #[prost(message, repeated, tag = "1")]
    pub families: Vec<Family>,
}

/// A series as kept: its running point and when it last had one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeptSeries {
    /// The running (cumulative) point.
    #[prost(message, optional, tag = "1")]
    pub point: Option<Point>,
    /// The bucket of its last point.
    #[prost(int64, tag = "2")]
    pub seen_ms: i64,
}

/// A family as kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeptFamily {
    /// Name, kind, help and unit; `points` unused.
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Family>,
    /// Its series, sorted by labels.
    #[prost(message, repeated, tag = "2")]
    pub series: Vec<KeptSeries>,
}

/// The connector's state: every series not yet expired.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Kept {
    /// Families sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub families: Vec<KeptFamily>,
    /// Points refused at commit since the connector was created: of a new series
    /// past `max_series`, or of a family whose names clash with a kept one's.
    #[prost(uint64, tag = "2")]
    pub refused: u64,
}

/// The identity of a series as one number: its family name and its labels.
pub fn series_hash(family: &str, labels: &[Label]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x005e_71e5).hash_one((family, labels))
}
