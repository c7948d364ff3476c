//! Every request decodes (snappy block format, then protobuf) back to the rows it
//! came from: one series per name and non-empty labels, labels sorted with
//! `__name__` among them, samples in timestamp order, no request over the limit,
//! every sendable row sent exactly once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use connector_core::Batch;
use destination_remote_write::proto::WriteRequest;
use destination_remote_write::{SkipReason, encode};
use proptest::prelude::*;
use prost::Message as _;

type SeriesKey = Vec<(String, String)>;

fn decode_all(batch: &Batch, max: usize) -> (BTreeMap<SeriesKey, Vec<(i64, u64)>>, usize) {
    let encoded = encode(batch, max).unwrap();
    let mut series: BTreeMap<SeriesKey, Vec<(i64, u64)>> = BTreeMap::new();
    for request in &encoded.requests {
        assert!(request.samples <= max && request.samples > 0);
        let bytes = snap::raw::Decoder::new()
            .decompress_vec(&request.body)
            .unwrap();
        assert_eq!(bytes.len(), request.uncompressed_bytes);
        let decoded = WriteRequest::decode(bytes.as_slice()).unwrap();
        let mut count = 0;
        for ts in decoded.timeseries {
            let labels: SeriesKey = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let mut sorted = labels.clone();
            sorted.sort();
            assert_eq!(labels, sorted, "labels are sorted by name");
            assert!(labels.iter().all(|(_, v)| !v.is_empty()), "no empty values");
            assert!(
                ts.samples
                    .windows(2)
                    .all(|w| w[0].timestamp <= w[1].timestamp)
            );
            count += ts.samples.len();
            series
                .entry(labels)
                .or_default()
                .extend(ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())));
        }
        assert_eq!(count, request.samples);
    }
    (series, encoded.skipped.total() as usize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn requests_decode_back_to_the_rows(
        rows in prop::collection::vec(
            (
                0i64..20,
                prop::sample::select(vec!["up", "node_load1", "a:b", "9bad", ""]),
                prop::option::of(any::<f64>()),
                prop::collection::btree_map(
                    prop::sample::select(vec!["job", "instance", "Zone", "_x", "bad-name", "__name__"]),
                    prop::sample::select(vec!["a", "", "é x", "q\"\\"]),
                    0..4,
                ),
            ),
            0..200,
        ),
        max in 1usize..50,
    ) {
        let mut batch = Batch::new(metric_rows::schema());
        let mut expected: BTreeMap<SeriesKey, Vec<(i64, u64)>> = BTreeMap::new();
        let mut unsendable = 0;
        for (ts, name, value, labels) in &rows {
            let row = batch.row().timestamp(*ts).string(name);
            let row = match value { Some(v) => row.real(*v), None => row.null() };
            row.map(labels.iter()).finish().unwrap();
            let valid_name = !name.is_empty() && !name.starts_with('9');
            let valid_labels = labels.keys().all(|k| *k != "bad-name" && *k != "__name__");
            match (value, valid_name && valid_labels) {
                (Some(v), true) => {
                    let mut key: SeriesKey = labels
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    key.push(("__name__".to_owned(), (*name).to_owned()));
                    key.sort();
                    // proto3 leaves out a double equal to 0, so -0.0 arrives as 0.0
                    // (Prometheus's own sender behaves the same).
                    let v = if *v == 0.0 { 0.0f64 } else { *v };
                    expected.entry(key).or_default().push((*ts, v.to_bits()));
                }
                _ => unsendable += 1,
            }
        }
        for samples in expected.values_mut() {
            samples.sort_by_key(|s| s.0);
        }
        let (got, skipped) = decode_all(&batch, max);
        prop_assert_eq!(skipped, unsendable);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn skipped_rows_are_counted_by_reason() {
    let mut batch = Batch::new(metric_rows::schema());
    for (name, value, labels) in [
        ("up", Some(1.0), vec![("job", "a")]),
        ("up", None, vec![]),
        ("bad name", Some(1.0), vec![]),
        ("up", Some(1.0), vec![("bad-label", "x")]),
        ("up", Some(1.0), vec![("__name__", "other")]),
    ] {
        let row = batch.row().timestamp(0).string(name);
        let row = match value {
            Some(v) => row.real(v),
            None => row.null(),
        };
        row.map(labels).finish().unwrap();
    }
    let encoded = encode(&batch, 10).unwrap();
    let counts: Vec<(SkipReason, u64)> = encoded.skipped.iter().collect();
    assert_eq!(
        counts,
        [
            (SkipReason::NullValue, 1),
            (SkipReason::InvalidMetricName, 1),
            (SkipReason::InvalidLabelName, 1),
            (SkipReason::DuplicateLabelName, 1),
        ]
    );
    assert_eq!(encoded.requests.len(), 1);
    assert_eq!(encoded.requests[0].samples, 1);
}

/// Labels stored in another order are still one series, with its samples in
/// timestamp order.
#[test]
fn one_series_whatever_the_order_its_labels_were_stored_in() {
    let mut batch = Batch::new(metric_rows::schema());
    batch
        .row()
        .timestamp(2)
        .string("up")
        .real(2.0)
        .map([("b", "2"), ("a", "1")])
        .finish()
        .unwrap();
    batch
        .row()
        .timestamp(1)
        .string("up")
        .real(1.0)
        .map([("a", "1"), ("b", "2")])
        .finish()
        .unwrap();
    batch
        .row()
        .timestamp(3)
        .string("up")
        .real(3.0)
        .map([("a", "1"), ("b", "2"), ("c", "")])
        .finish()
        .unwrap();
    let encoded = encode(&batch, 10).unwrap();
    let bytes = snap::raw::Decoder::new()
        .decompress_vec(&encoded.requests[0].body)
        .unwrap();
    assert_eq!(
        WriteRequest::decode(bytes.as_slice())
            .unwrap()
            .timeseries
            .len(),
        1
    );
    let (series, skipped) = decode_all(&batch, 10);
    assert_eq!(skipped, 0);
    let key: SeriesKey = [("__name__", "up"), ("a", "1"), ("b", "2")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
    let samples: Vec<(i64, u64)> = [1.0f64, 2.0, 3.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 + 1, v.to_bits()))
        .collect();
    assert_eq!(series, BTreeMap::from([(key, samples)]));
}
