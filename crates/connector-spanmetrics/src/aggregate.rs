//! Calls, duration histograms and sums per label set: what a request stages, what a
//! bucket adds up to, and the running totals kept as the connector's state. All three
//! share one protobuf encoding.

use std::collections::HashMap;

use prost::Message as _;

/// The label set the series past the cardinality limit share.
pub const OVERFLOW_LABEL: (&str, &str) = ("otel_metric_overflow", "true");

/// Series and their totals: staged per request, and the connector's state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Aggregate {
    /// One entry per label set.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<SeriesTotals>,
    /// Spans counted in the overflow series because the label sets had reached the limit.
    #[prost(uint64, tag = "2")]
    pub overflow_spans: u64,
}

/// The totals of one label set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SeriesTotals {
    /// Label names and values, alternating, in the connector's label order.
    #[prost(string, repeated, tag = "1")]
    pub labels: Vec<String>,
    /// Spans.
    #[prost(uint64, tag = "2")]
    pub calls: u64,
    /// Spans per histogram bucket (not cumulative), one more than the bounds (`+Inf`).
    #[prost(uint64, repeated, tag = "3")]
    pub buckets: Vec<u64>,
    /// Sum of the durations, in the histogram's unit.
    #[prost(double, tag = "4")]
    pub sum: f64,
}

impl SeriesTotals {
    fn empty(labels: Vec<String>, buckets: usize) -> Self {
        SeriesTotals {
            labels,
            calls: 0,
            buckets: vec![0; buckets],
            sum: 0.0,
        }
    }

    /// Adds another series' totals (same buckets).
    pub fn add(&mut self, other: &SeriesTotals) {
        self.calls += other.calls;
        self.sum += other.sum;
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    /// The label pairs.
    pub fn label_pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.labels
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str(), pair[1].as_str()))
    }
}

/// Builds an [`Aggregate`], folding label sets past `limit` into the overflow series.
#[derive(Debug)]
pub struct Accumulator<'b> {
    bounds: &'b [f64],
    limit: usize,
    index: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
    series: Vec<SeriesTotals>,
    overflow: Option<usize>,
    overflow_spans: u64,
    key: Vec<u8>,
}

/// A label set as one byte string: lengths before each part, so no value can fake a
/// boundary.
fn push_key(key: &mut Vec<u8>, part: &str) {
    key.extend_from_slice(&(part.len() as u64).to_le_bytes());
    key.extend_from_slice(part.as_bytes());
}

impl<'b> Accumulator<'b> {
    /// Empty, for histograms with `bounds`.
    pub fn new(bounds: &'b [f64], limit: usize) -> Self {
        Accumulator {
            bounds,
            limit,
            index: HashMap::default(),
            series: Vec::new(),
            overflow: None,
            overflow_spans: 0,
            key: Vec::with_capacity(256),
        }
    }

    /// Starts from a previous aggregate (the state). A series whose bucket count does
    /// not match `bounds` (the buckets were changed) starts again from zero.
    pub fn from_aggregate(bounds: &'b [f64], limit: usize, previous: Aggregate) -> Self {
        let mut acc = Self::new(bounds, limit);
        acc.overflow_spans = previous.overflow_spans;
        for mut series in previous.series {
            if series.buckets.len() != bounds.len() + 1 {
                series = SeriesTotals::empty(series.labels, bounds.len() + 1);
            }
            let pairs: Vec<(String, String)> = series
                .label_pairs()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            let at = acc.slot(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())), true);
            acc.series[at] = series;
        }
        acc
    }

    /// The series for these labels, created if new; past the limit, the overflow
    /// series (`force` creates it anyway, for restoring state).
    fn slot<'l>(
        &mut self,
        labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
        force: bool,
    ) -> usize {
        self.key.clear();
        for (name, value) in labels.clone() {
            push_key(&mut self.key, name);
            push_key(&mut self.key, value);
        }
        if let Some(&at) = self.index.get(&self.key) {
            return at;
        }
        let is_overflow = {
            let mut l = labels.clone();
            l.next() == Some(OVERFLOW_LABEL) && l.next().is_none()
        };
        if !force
            && !is_overflow
            && self.index.len() - usize::from(self.overflow.is_some()) >= self.limit
        {
            return self.overflow_slot();
        }
        let at = self.series.len();
        let owned: Vec<String> = labels
            .flat_map(|(n, v)| [n.to_owned(), v.to_owned()])
            .collect();
        self.series
            .push(SeriesTotals::empty(owned, self.bounds.len() + 1));
        self.index.insert(self.key.clone(), at);
        if is_overflow {
            self.overflow = Some(at);
        }
        at
    }

    fn overflow_slot(&mut self) -> usize {
        if let Some(at) = self.overflow {
            return at;
        }
        self.slot(std::iter::once(OVERFLOW_LABEL), true)
    }

    /// Counts one span of `duration` (in the histogram's unit); returns whether it
    /// went to the overflow series.
    pub fn add_span<'l>(
        &mut self,
        labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
        duration: f64,
    ) -> bool {
        let at = self.slot(labels, false);
        let bucket = self.bounds.partition_point(|bound| *bound < duration);
        let series = &mut self.series[at];
        series.calls += 1;
        series.sum += duration;
        series.buckets[bucket] += 1;
        let overflowed = Some(at) == self.overflow;
        if overflowed {
            self.overflow_spans += 1;
        }
        overflowed
    }

    /// Adds a series' totals; returns the index it went to (its own, or the overflow).
    pub fn add_totals(&mut self, totals: &SeriesTotals) -> usize {
        let at = self.slot(totals.label_pairs(), false);
        if Some(at) == self.overflow && totals.label_pairs().ne(std::iter::once(OVERFLOW_LABEL)) {
            self.overflow_spans += totals.calls;
        }
        if totals.buckets.len() == self.bounds.len() + 1 {
            self.series[at].add(totals);
        }
        at
    }

    /// Adds the overflow count of a staged aggregate.
    pub fn add_overflow_spans(&mut self, spans: u64) {
        self.overflow_spans += spans;
    }

    /// The series so far, by index.
    pub fn series(&self) -> &[SeriesTotals] {
        &self.series
    }

    /// Label sets so far.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The aggregate.
    pub fn finish(self) -> Aggregate {
        Aggregate {
            series: self.series,
            overflow_spans: self.overflow_spans,
        }
    }
}

impl Aggregate {
    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes [`Aggregate::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [2.0, 4.0, 10.0];

    #[test]
    fn spans_land_in_the_first_bucket_at_or_above_them() {
        let mut acc = Accumulator::new(&BOUNDS, 10);
        for d in [0.5, 2.0, 2.0001, 4.0, 10.0, 11.0] {
            acc.add_span([("a", "1")].into_iter(), d);
        }
        let agg = acc.finish();
        assert_eq!(agg.series[0].buckets, [2, 2, 1, 1]);
        assert_eq!(agg.series[0].calls, 6);
        assert!((agg.series[0].sum - 29.5001).abs() < 1e-9);
    }

    #[test]
    fn label_sets_past_the_limit_share_the_overflow_series() {
        let mut acc = Accumulator::new(&BOUNDS, 2);
        for name in ["a", "b", "c", "d", "a"] {
            acc.add_span([("span_name", name)].into_iter(), 1.0);
        }
        let agg = acc.finish();
        let names: Vec<_> = agg
            .series
            .iter()
            .map(|s| (s.labels.join("="), s.calls))
            .collect();
        assert_eq!(
            names,
            [
                ("span_name=a".to_owned(), 2),
                ("span_name=b".to_owned(), 1),
                ("otel_metric_overflow=true".to_owned(), 2)
            ]
        );
        assert_eq!(agg.overflow_spans, 2);
    }

    #[test]
    fn a_value_cannot_fake_a_label_boundary() {
        let mut acc = Accumulator::new(&BOUNDS, 10);
        acc.add_span([("a", "x"), ("b", "y")].into_iter(), 1.0);
        acc.add_span([("a", "x\u{0}b"), ("", "y")].into_iter(), 1.0);
        assert_eq!(acc.len(), 2);
    }

    #[test]
    fn state_round_trips_and_changed_buckets_restart() {
        let mut acc = Accumulator::new(&BOUNDS, 10);
        acc.add_span([("a", "1")].into_iter(), 3.0);
        let bytes = acc.finish().to_bytes();
        let back = Aggregate::from_bytes(&bytes).unwrap();
        assert_eq!(back.series[0].buckets, [0, 1, 0, 0]);
        let other = [1.0];
        let acc = Accumulator::from_aggregate(&other, 10, back);
        assert_eq!(acc.series()[0].buckets, [0, 0]);
        assert_eq!(acc.series()[0].calls, 0);
    }
}
