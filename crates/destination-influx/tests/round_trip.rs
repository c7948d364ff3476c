//! Every line we write reads back, through an independent parser (the
//! `influxdb-line-protocol` crate, from InfluxDB IOx), as the row it came from:
//! the same measurement, tags (empty values left out), value and nanoseconds. A row
//! we skip is one that parser could not read back faithfully.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use connector_core::Batch;
use influxdb_line_protocol::{FieldValue, parse_lines};
use proptest::prelude::*;

/// Text with every byte line protocol treats specially, and some that it does not.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-z_:0-9]{1,4}",
            1 => Just(" ".to_owned()),
            1 => Just(",".to_owned()),
            1 => Just("=".to_owned()),
            1 => Just("\"".to_owned()),
            1 => Just("\\".to_owned()),
            1 => Just("#".to_owned()),
            1 => Just("\n".to_owned()),
            1 => Just("é€😀".to_owned()),
        ],
        1..6,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]
    #[test]
    fn a_written_line_reads_back_as_its_row(
        name in text(),
        labels in prop::collection::btree_map(text(), prop_oneof![3 => text(), 1 => Just(String::new())], 0..5),
        value in prop_oneof![
            any::<f64>(),
            -1e6f64..1e6,
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|v| v as f64),
        ],
        ms in -4_000_000_000_000i64..4_000_000_000_000,
    ) {
        let mut batch = Batch::new(metric_rows::schema());
        batch.row().timestamp(ms).string(&name).real(value).map(labels.iter()).finish().unwrap();
        let mut out = Vec::new();
        let skipped = destination_influx::encode(&batch, &mut out).unwrap();
        if skipped.total() > 0 {
            prop_assert!(out.is_empty());
            return Ok(());
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = parse_lines(&text).collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))?;
        prop_assert_eq!(lines.len(), 1, "{:?}", text);
        let line = &lines[0];
        prop_assert_eq!(line.series.measurement.as_str(), name.as_str());
        let read: BTreeMap<String, String> = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let expected: BTreeMap<String, String> =
            labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        prop_assert_eq!(read, expected, "{:?}", text);
        prop_assert_eq!(line.field_set.len(), 1);
        prop_assert_eq!(line.field_set[0].0.as_str(), "value");
        prop_assert_eq!(&line.field_set[0].1, &FieldValue::F64(value));
        prop_assert_eq!(line.timestamp, Some(ms * 1_000_000));
    }
}

/// The skip rules are not wider than they must be: ordinary metric rows, with the
/// separators escaped, are all written.
#[test]
fn ordinary_rows_with_separators_are_written_not_skipped() {
    let mut batch = Batch::new(metric_rows::schema());
    for (name, k, v) in [
        ("node_cpu_seconds_total", "mode", "idle"),
        ("a b", "k,1", "v=1"),
        ("m", "path", "C:\\Program Files\\x"),
        ("m", "quote", "say \"hi\""),
        ("m", "unicode", "ünï € 😀"),
    ] {
        batch
            .row()
            .timestamp(0)
            .string(name)
            .real(1.0)
            .map([(k, v)])
            .finish()
            .unwrap();
    }
    let mut out = Vec::new();
    let skipped = destination_influx::encode(&batch, &mut out).unwrap();
    assert_eq!(skipped.total(), 0);
    assert_eq!(parse_lines(std::str::from_utf8(&out).unwrap()).count(), 5);
}
