//! Metric rows as Remote-Write 1.0 request bodies.

use std::collections::HashMap;
use std::fmt;

use connector_core::Batch;
use metric_rows::{MetricReader, MetricRow, RowError, ShapeError};
use prost::Message as _;

use crate::proto::{Label, Sample, TimeSeries, WriteRequest};

/// Why a row was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `value` is null: the row has no sample to send.
    NullValue,
    /// `name` is not a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    InvalidMetricName,
    /// A label name is not a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    InvalidLabelName,
    /// Two labels share a name (a `__name__` label among them included).
    DuplicateLabelName,
    /// `labels` is not a JSON object of strings.
    LabelsNotAnObject,
    /// The timestamp or the name is null.
    NotAMetricRow,
}

impl metric_rows::SkipReason for SkipReason {
    const ALL: &'static [SkipReason] = &[
        SkipReason::NullValue,
        SkipReason::InvalidMetricName,
        SkipReason::InvalidLabelName,
        SkipReason::DuplicateLabelName,
        SkipReason::LabelsNotAnObject,
        SkipReason::NotAMetricRow,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SkipReason::NullValue => "null_value",
            SkipReason::InvalidMetricName => "invalid_metric_name",
            SkipReason::InvalidLabelName => "invalid_label_name",
            SkipReason::DuplicateLabelName => "duplicate_label_name",
            SkipReason::LabelsNotAnObject => "labels_not_an_object",
            SkipReason::NotAMetricRow => "not_a_metric_row",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(metric_rows::SkipReason::as_str(*self))
    }
}

/// How many rows were skipped, by reason.
pub type Skipped = metric_rows::Skipped<SkipReason>;

/// One request body, ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The `WriteRequest`, snappy block-compressed (`Content-Encoding: snappy`).
    pub body: Vec<u8>,
    /// Samples in it.
    pub samples: usize,
    /// The protobuf size before compression.
    pub uncompressed_bytes: usize,
}

/// The requests for a batch, in order, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// At most `max_samples_per_send` samples each.
    pub requests: Vec<Request>,
    /// A series continues from one request into the next, so the requests must
    /// reach the receiver in order (Prometheus refuses a sample older than the
    /// series' newest). When false, every series sits in one request and they may be
    /// sent at once.
    pub ordered: bool,
    /// Rows not sent, by reason.
    pub skipped: Skipped,
}

/// Groups the rows of `batch` into series (`__name__` plus the row's labels with
/// non-empty values, sorted by name), each series' samples in timestamp order, and
/// cuts them into requests of at most `max_samples_per_send` samples (a series may
/// continue in the next request, as Prometheus's own sender does).
pub fn encode(batch: &Batch, max_samples_per_send: usize) -> Result<Encoded, ShapeError> {
    let mut reader = MetricReader::new(batch.schema())?;
    let mut skipped = Skipped::default();
    let mut series: Vec<TimeSeries> = Vec::new();
    // Rows of one series almost always carry byte-identical stored labels (one
    // connector writes them), so the stored text finds the series without parsing
    // the labels, which was most of a row's cost. A first sighting parses, checks and
    // normalises them; differently written text for one series still meets it in
    // `by_series`. foldhash, seeded per process: hashing was the largest cost after
    // the key compare (perf).
    let mut by_text: HashMap<(&str, &str), Slot, Hasher> = HashMap::default();
    let mut by_series: HashMap<Vec<u8>, usize, Hasher> = HashMap::default();
    let mut key = Vec::new();
    for row in batch.rows() {
        let raw = match reader.read_raw(&row) {
            Ok(raw) => raw,
            Err(e) => {
                skipped.add(skip_reason(e));
                continue;
            }
        };
        let Some(value) = raw.value else {
            skipped.add(SkipReason::NullValue);
            continue;
        };
        let slot = match by_text.get(&(raw.name, raw.labels_json)) {
            Some(&slot) => slot,
            None => {
                let slot = match reader.labels(raw.labels_json) {
                    Err(e) => Slot::Skip(skip_reason(e)),
                    Ok(labels) => {
                        let metric = MetricRow {
                            timestamp_ms: raw.timestamp_ms,
                            name: raw.name,
                            value: raw.value,
                            labels,
                        };
                        match series_key(&metric, &mut key) {
                            Err(reason) => Slot::Skip(reason),
                            Ok(()) => Slot::Series(match by_series.get(key.as_slice()) {
                                Some(&at) => at,
                                None => {
                                    series.push(TimeSeries {
                                        labels: labels_of(&metric),
                                        samples: Vec::new(),
                                    });
                                    by_series.insert(key.clone(), series.len() - 1);
                                    series.len() - 1
                                }
                            }),
                        }
                    }
                };
                by_text.insert((raw.name, raw.labels_json), slot);
                slot
            }
        };
        match slot {
            Slot::Series(at) => series[at].samples.push(Sample {
                value,
                timestamp: raw.timestamp_ms,
            }),
            Slot::Skip(reason) => skipped.add(reason),
        }
    }
    for s in &mut series {
        // Stable: two samples at one timestamp keep their row order.
        s.samples.sort_by_key(|sample| sample.timestamp);
    }
    let (requests, ordered) = requests(series, max_samples_per_send.max(1));
    Ok(Encoded {
        requests,
        ordered,
        skipped,
    })
}

type Hasher = foldhash::fast::RandomState;

/// What the rows with one stored (name, labels) text become.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Series(usize),
    Skip(SkipReason),
}

fn skip_reason(e: RowError) -> SkipReason {
    match e {
        RowError::LabelsNotAnObject => SkipReason::LabelsNotAnObject,
        RowError::WrongType => SkipReason::NotAMetricRow,
    }
}

/// Builds the series' identity into `key` (length-prefixed, so no value can fake a
/// boundary), or says why the row cannot be sent.
fn series_key(metric: &MetricRow<'_, '_>, key: &mut Vec<u8>) -> Result<(), SkipReason> {
    if !is_metric_name(metric.name) {
        return Err(SkipReason::InvalidMetricName);
    }
    key.clear();
    push_part(key, metric.name);
    let mut previous: Option<&str> = None;
    for (name, value) in metric.labels {
        if !relabel::is_valid_label_name(name) {
            return Err(SkipReason::InvalidLabelName);
        }
        if name == "__name__" || previous == Some(name.as_ref()) {
            return Err(SkipReason::DuplicateLabelName);
        }
        previous = Some(name);
        if value.is_empty() {
            continue;
        }
        push_part(key, name);
        push_part(key, value);
    }
    Ok(())
}

fn push_part(key: &mut Vec<u8>, part: &str) {
    key.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// `__name__` and the non-empty labels, sorted by name (the reader sorts the row's
/// labels; `__name__` goes where it sorts among them).
fn labels_of(metric: &MetricRow<'_, '_>) -> Vec<Label> {
    let mut labels: Vec<Label> = Vec::with_capacity(metric.labels.len() + 1);
    let mut name_placed = false;
    for (name, value) in metric.labels {
        if value.is_empty() {
            continue;
        }
        if !name_placed && name.as_ref() > "__name__" {
            labels.push(name_label(metric.name));
            name_placed = true;
        }
        labels.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    if !name_placed {
        labels.push(name_label(metric.name));
    }
    labels
}

fn name_label(name: &str) -> Label {
    Label {
        name: "__name__".to_owned(),
        value: name.to_owned(),
    }
}

/// The requests, and whether a series continues from one into the next.
fn requests(series: Vec<TimeSeries>, max_samples: usize) -> (Vec<Request>, bool) {
    let mut out = Vec::new();
    let mut split = false;
    let mut current = WriteRequest::default();
    let mut in_current = 0;
    for mut s in series {
        // A series that fits moves into the request whole; only one cut across
        // requests copies its labels.
        while in_current + s.samples.len() > max_samples {
            split = true;
            let rest = s.samples.split_off(max_samples - in_current);
            in_current += s.samples.len();
            current.timeseries.push(TimeSeries {
                labels: s.labels.clone(),
                samples: std::mem::replace(&mut s.samples, rest),
            });
            out.push(finish(std::mem::take(&mut current), in_current));
            in_current = 0;
        }
        if !s.samples.is_empty() {
            in_current += s.samples.len();
            current.timeseries.push(s);
        }
        if in_current == max_samples {
            out.push(finish(std::mem::take(&mut current), in_current));
            in_current = 0;
        }
    }
    if in_current > 0 {
        out.push(finish(current, in_current));
    }
    (out, split)
}

fn finish(request: WriteRequest, samples: usize) -> Request {
    let bytes = request.encode_to_vec();
    let body = snap::raw::Encoder::new()
        .compress_vec(&bytes)
        .unwrap_or_default();
    Request {
        body,
        samples,
        uncompressed_bytes: bytes.len(),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, as Prometheus 2.42 checks metric names.
fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}
