//! Metric rows (`timestamp`, `name`, `value`, `labels`) as Influx line protocol.
//!
//! One row is one line: `name,tag=value,... value=<float> <nanoseconds>`. The
//! measurement is the row's `name`, the tags are its labels sorted by key (as
//! InfluxDB recommends) with empty values left out, the one field is `value`, and
//! the timestamp is the row's, in nanoseconds.
//!
//! What line protocol cannot carry is skipped and counted, never sent garbled:
//! a null or non-finite value (the format has no NaN), a newline anywhere (it ends
//! the line), a name starting with `#` (a comment line), an empty name or label
//! name, and a backslash that a reader would take for an escape (at the end, or
//! before `,`, `=`, a space or another backslash). Readers disagree on those:
//! InfluxDB 2's parser keeps `\\` as two bytes where VictoriaMetrics reads one.

use std::fmt;

use connector_core::{Batch, Row, Schema};
use metric_rows::{MetricReader, RowError, ShapeError};

/// Why a row was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `value` is null (the source had NaN or ±Inf, stored as null).
    NullValue,
    /// `value` is NaN or ±Inf: line protocol has no such floats.
    NotFinite,
    /// `name` is empty, starts with `#`, or holds a newline or an ambiguous backslash.
    NameNotWritable,
    /// A label name is empty, or a label holds a newline or an ambiguous backslash.
    LabelNotWritable,
    /// `labels` is not a JSON object of strings.
    LabelsNotAnObject,
    /// The timestamp in nanoseconds does not fit in 64 bits.
    TimestampOutOfRange,
    /// The timestamp or the name is null.
    NotAMetricRow,
}

impl metric_rows::SkipReason for SkipReason {
    const ALL: &'static [SkipReason] = &[
        SkipReason::NullValue,
        SkipReason::NotFinite,
        SkipReason::NameNotWritable,
        SkipReason::LabelNotWritable,
        SkipReason::LabelsNotAnObject,
        SkipReason::TimestampOutOfRange,
        SkipReason::NotAMetricRow,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SkipReason::NullValue => "null_value",
            SkipReason::NotFinite => "not_finite",
            SkipReason::NameNotWritable => "name_not_writable",
            SkipReason::LabelNotWritable => "label_not_writable",
            SkipReason::LabelsNotAnObject => "labels_not_an_object",
            SkipReason::TimestampOutOfRange => "timestamp_out_of_range",
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

/// Writes metric rows as lines, reusing its buffers from row to row.
#[derive(Debug)]
pub struct Encoder<'a> {
    reader: MetricReader<'a>,
    skipped: Skipped,
}

impl<'a> Encoder<'a> {
    /// An encoder for rows of `schema`.
    pub fn new(schema: &Schema) -> Result<Self, ShapeError> {
        Ok(Encoder {
            reader: MetricReader::new(schema)?,
            skipped: Skipped::default(),
        })
    }

    /// Appends the line of `row` to `out` and returns its length, or writes nothing
    /// and counts why.
    pub fn row(&mut self, row: &Row<'a>, out: &mut Vec<u8>) -> Option<usize> {
        let start = out.len();
        match self.write(row, out) {
            Ok(()) => Some(out.len() - start),
            Err(reason) => {
                out.truncate(start);
                self.skipped.add(reason);
                None
            }
        }
    }

    /// The rows skipped so far, by reason.
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    fn write(&mut self, row: &Row<'a>, out: &mut Vec<u8>) -> Result<(), SkipReason> {
        let metric = self.reader.read(row).map_err(|e| match e {
            RowError::LabelsNotAnObject => SkipReason::LabelsNotAnObject,
            RowError::WrongType => SkipReason::NotAMetricRow,
        })?;
        let value = match metric.value {
            Some(v) if v.is_finite() => v,
            Some(_) => return Err(SkipReason::NotFinite),
            None => return Err(SkipReason::NullValue),
        };
        let nanos = metric
            .timestamp_ms
            .checked_mul(1_000_000)
            .ok_or(SkipReason::TimestampOutOfRange)?;
        if metric.name.starts_with('#') {
            return Err(SkipReason::NameNotWritable);
        }
        write_escaped(out, metric.name, MEASUREMENT).map_err(|()| SkipReason::NameNotWritable)?;
        // The reader sorts labels by name (byte order), as InfluxDB recommends: it
        // sorts tags itself otherwise.
        for (key, value) in metric.labels {
            if value.is_empty() {
                continue;
            }
            out.push(b',');
            write_escaped(out, key, TAG).map_err(|()| SkipReason::LabelNotWritable)?;
            out.push(b'=');
            write_escaped(out, value, TAG).map_err(|()| SkipReason::LabelNotWritable)?;
        }
        out.extend_from_slice(b" value=");
        write_float(out, value);
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(nanos).as_bytes());
        out.push(b'\n');
        Ok(())
    }
}

/// A float field value. Whole numbers (most exporter values: counts, states, bytes)
/// are written as integers, which line protocol reads as floats without an `i`
/// suffix; itoa does that in a third of ryu's time (ryu was 12 % of encoding
/// node_exporter rows, per `perf`).
fn write_float(out: &mut Vec<u8>, value: f64) {
    /// Below 2^53 every whole float is exactly an integer and back.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

/// Every row of `batch` as line protocol, appended to `out`; returns what was
/// skipped.
pub fn encode(batch: &Batch, out: &mut Vec<u8>) -> Result<Skipped, ShapeError> {
    let mut encoder = Encoder::new(batch.schema())?;
    for row in batch.rows() {
        encoder.row(&row, out);
    }
    Ok(encoder.skipped)
}

/// What a byte means where it is written.
const PLAIN: u8 = 0;
const ESCAPE: u8 = 1;
const BACKSLASH: u8 = 2;
const NEVER: u8 = 3;

/// Byte classes for a measurement: `,` and space are escaped.
const MEASUREMENT: &[u8; 256] = &classes(false);
/// Byte classes for tag keys and values: `,`, `=` and space are escaped.
const TAG: &[u8; 256] = &classes(true);

const fn classes(escape_equals: bool) -> [u8; 256] {
    let mut table = [PLAIN; 256];
    table[b',' as usize] = ESCAPE;
    table[b' ' as usize] = ESCAPE;
    if escape_equals {
        table[b'=' as usize] = ESCAPE;
    }
    table[b'\\' as usize] = BACKSLASH;
    table[b'\n' as usize] = NEVER;
    table[b'\r' as usize] = NEVER;
    table
}

/// Appends `text` escaped per `classes`; `Err` (having written part of it) when
/// line protocol cannot carry it: empty, a newline, or a backslash a reader would
/// take for an escape.
fn write_escaped(out: &mut Vec<u8>, text: &str, classes: &[u8; 256]) -> Result<(), ()> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(());
    }
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match classes[usize::from(b)] {
            PLAIN => {}
            ESCAPE => {
                out.extend_from_slice(&bytes[plain_from..i]);
                out.push(b'\\');
                plain_from = i;
            }
            BACKSLASH => match bytes.get(i + 1) {
                None | Some(b',' | b'=' | b' ' | b'\\') => return Err(()),
                Some(_) => {}
            },
            _ => return Err(()),
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use connector_core::Batch;

    use metric_rows::SkipReason as _;

    use super::*;

    fn lines(rows: &[(i64, &str, Option<f64>, &str)]) -> (String, Skipped) {
        let mut batch = Batch::new(metric_rows::schema());
        for (ts, name, value, labels) in rows {
            let row = batch.row().timestamp(*ts).string(name);
            let row = match value {
                Some(v) => row.real(*v),
                None => row.null(),
            };
            row.json(&serde_json::from_str(labels).unwrap())
                .finish()
                .unwrap();
        }
        let mut out = Vec::new();
        let skipped = encode(&batch, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), skipped)
    }

    #[test]
    fn a_row_is_one_line_with_sorted_tags_and_nanoseconds() {
        let (text, skipped) = lines(&[
            (
                1_700_000_000_000,
                "up",
                Some(1.0),
                r#"{"job":"node","instance":"a:9100"}"#,
            ),
            (1_700_000_000_000, "temp", Some(-0.000015), r#"{}"#),
            (5, "big", Some(1e300), r#"{"empty":""}"#),
        ]);
        assert_eq!(
            text,
            "up,instance=a:9100,job=node value=1 1700000000000000000\n\
             temp value=-0.000015 1700000000000000000\n\
             big value=1e300 5000000\n"
        );
        assert_eq!(skipped.total(), 0);
    }

    #[test]
    fn separators_are_escaped_where_they_would_split() {
        let (text, _) = lines(&[(
            0,
            "a b,c=d",
            Some(2.5),
            r#"{"k 1":"v,1","k=2":"v=2","q":"say \"hi\"","u":"ünï €","path":"C:\\tmp"}"#,
        )]);
        assert_eq!(
            text,
            "a\\ b\\,c=d,k\\ 1=v\\,1,k\\=2=v\\=2,path=C:\\tmp,q=say\\ \"hi\",u=ünï\\ € value=2.5 0\n"
        );
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_skipped_and_counted() {
        let (text, skipped) = lines(&[
            (0, "ok", Some(1.0), "{}"),
            (0, "nan", None, "{}"),
            (0, "#comment", Some(1.0), "{}"),
            (0, "two\nlines", Some(1.0), "{}"),
            (0, "m", Some(1.0), r#"{"a":"ends with \\"}"#),
            (0, "m", Some(1.0), r#"{"a":"\\\\ double"}"#),
            (0, "m", Some(1.0), r#"{"a":"new\nline"}"#),
            (0, "m", Some(1.0), r#"{"":"x"}"#),
            (0, "m", Some(1.0), r#"{"a":1}"#),
            (i64::MAX / 1000, "m", Some(1.0), "{}"),
        ]);
        assert_eq!(text, "ok value=1 0\n");
        let counts: Vec<(&str, u64)> = skipped.iter().map(|(r, n)| (r.as_str(), n)).collect();
        assert_eq!(
            counts,
            [
                ("null_value", 1),
                ("name_not_writable", 2),
                ("label_not_writable", 4),
                ("labels_not_an_object", 1),
                ("timestamp_out_of_range", 1),
            ]
        );
    }
}
