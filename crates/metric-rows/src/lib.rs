//! Committed metric rows as destinations read them: `timestamp`, `name`, `value`
//! and `labels` (a JSON object of strings), wherever those columns sit in the
//! source's schema. One place decides what a metric row is, for every protocol a
//! destination speaks (Influx line protocol, Prometheus remote write).
//!
//! ```
//! use connector_core::Batch;
//! use metric_rows::MetricReader;
//!
//! let mut batch = Batch::new(metric_rows::schema());
//! batch.row().timestamp(1_000).string("up").real(1.0).map([("job", "node")]).finish()?;
//! let mut reader = MetricReader::new(batch.schema())?;
//! for row in batch.rows() {
//!     let metric = reader.read(&row)?;
//!     assert_eq!((metric.name, metric.value, metric.timestamp_ms), ("up", Some(1.0), 1_000));
//!     assert_eq!(metric.labels.len(), 1);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod series_ids;

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use connector_core::{ColumnType, Row, Schema, Value};
use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess, Visitor};

pub use series_ids::SeriesIds;

/// The metric-row schema: `timestamp`, `name`, `value` (null for NaN and ±Inf) and
/// `labels` (a JSON object of strings), in that order. Sources that produce metric
/// rows use it, so producers and readers agree by construction.
pub fn schema() -> Arc<Schema> {
    static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
        Arc::new(Schema::new([
            ("timestamp", ColumnType::Timestamp),
            ("name", ColumnType::String),
            ("value", ColumnType::Real),
            ("labels", ColumnType::Dynamic),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// True when `candidate` is [`schema()`]: the stores keep such tables in their compact
/// layout, each series once.
pub fn is_metric_schema(candidate: &Schema) -> bool {
    *candidate == *schema()
}

/// The series of a row of [`schema()`]: its name and its labels' JSON text as the
/// producer wrote them; `None` when either is null.
pub fn series_of<'a>(row: &Row<'a>) -> Option<(&'a str, &'a str)> {
    match (row.at(1), row.at(3)) {
        (Value::String(name), Value::Dynamic(labels)) => Some((name, labels)),
        _ => None,
    }
}

/// A reason a destination leaves a row out: a closed set with stable names.
pub trait SkipReason: Copy + Eq + fmt::Debug + 'static {
    /// Every reason, in a stable order.
    const ALL: &'static [Self];

    /// The snake_case name used in reports and metrics labels.
    fn as_str(self) -> &'static str;
}

/// How many rows were left out, by reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped<R> {
    counts: Vec<u64>,
    reasons: std::marker::PhantomData<R>,
}

impl<R: SkipReason> Default for Skipped<R> {
    fn default() -> Self {
        Skipped {
            counts: vec![0; R::ALL.len()],
            reasons: std::marker::PhantomData,
        }
    }
}

impl<R: SkipReason> Skipped<R> {
    /// Counts one row left out for `reason`.
    pub fn add(&mut self, reason: R) {
        if let Some(i) = R::ALL.iter().position(|r| *r == reason) {
            self.counts[i] += 1;
        }
    }

    /// Rows left out for `reason`.
    pub fn count(&self, reason: R) -> u64 {
        R::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts[i])
    }

    /// Rows left out for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The reasons with at least one row, and their counts.
    pub fn iter(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .filter(|(_, n)| *n > 0)
    }

    /// The counts by reason name, as a destination reports them
    /// (`Delivered::skipped`).
    pub fn by_name(&self) -> Vec<(&'static str, u64)> {
        self.iter()
            .map(|(reason, n)| (reason.as_str(), n))
            .collect()
    }
}

/// The rows do not have the shape of metric rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the source's rows have no `{column}` column of type {expected}; this destination takes metric rows (timestamp, name, value, labels)"
)]
pub struct ShapeError {
    column: &'static str,
    expected: &'static str,
}

/// A metric row that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// `labels` is not a JSON object of strings.
    #[error("labels are not a JSON object of strings")]
    LabelsNotAnObject,
    /// A column holds a value of another type than its schema says.
    #[error("a column holds a value of another type than the schema says")]
    WrongType,
}

/// A label: name and value, borrowed from the row unless JSON escapes forced a copy.
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One metric row, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricRow<'a, 'r> {
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// The metric name.
    pub name: &'a str,
    /// `None` when the column is null (the source had NaN or ±Inf).
    pub value: Option<f64>,
    /// The labels, sorted by name (byte order); empty values kept.
    pub labels: &'r [Label<'a>],
}

/// Reads metric rows, reusing one label list from row to row: no allocation per row
/// unless a label has JSON escapes.
#[derive(Debug)]
pub struct MetricReader<'a> {
    timestamp: usize,
    name: usize,
    value: usize,
    labels_column: usize,
    labels: Vec<Label<'a>>,
}

impl<'a> MetricReader<'a> {
    /// A reader for rows of `schema`, which must have the four metric columns.
    pub fn new(schema: &Schema) -> Result<Self, ShapeError> {
        let find = |column: &'static str, ty: ColumnType| {
            schema
                .index_of(column)
                .filter(|&i| schema.columns()[i].ty() == ty)
                .ok_or(ShapeError {
                    column,
                    expected: ty.as_str(),
                })
        };
        Ok(MetricReader {
            timestamp: find("timestamp", ColumnType::Timestamp)?,
            name: find("name", ColumnType::String)?,
            value: find("value", ColumnType::Real)?,
            labels_column: find("labels", ColumnType::Dynamic)?,
            labels: Vec::new(),
        })
    }

    /// Reads one row of the batch the reader was made for.
    pub fn read<'r>(&'r mut self, row: &Row<'a>) -> Result<MetricRow<'a, 'r>, RowError> {
        let raw = self.read_raw(row)?;
        let labels = self.labels(raw.labels_json)?;
        Ok(MetricRow {
            timestamp_ms: raw.timestamp_ms,
            name: raw.name,
            value: raw.value,
            labels,
        })
    }

    /// Reads one row without parsing its labels, for callers that can tell by the
    /// labels' stored text that they have seen them before (parsing them is most of
    /// the cost of a row).
    pub fn read_raw(&self, row: &Row<'a>) -> Result<RawMetricRow<'a>, RowError> {
        let Value::Timestamp(timestamp_ms) = row.at(self.timestamp) else {
            return Err(RowError::WrongType);
        };
        let Value::String(name) = row.at(self.name) else {
            return Err(RowError::WrongType);
        };
        let value = match row.at(self.value) {
            Value::Real(v) => Some(v),
            Value::Null => None,
            _ => return Err(RowError::WrongType),
        };
        let labels_json = match row.at(self.labels_column) {
            Value::Dynamic(json) => json,
            Value::Null => "",
            _ => return Err(RowError::WrongType),
        };
        Ok(RawMetricRow {
            timestamp_ms,
            name,
            value,
            labels_json,
        })
    }

    /// Parses a row's stored labels (`""` for none), sorted by name.
    pub fn labels<'r>(&'r mut self, labels_json: &'a str) -> Result<&'r [Label<'a>], RowError> {
        self.labels.clear();
        if !labels_json.is_empty() {
            let mut de = serde_json::Deserializer::from_str(labels_json);
            LabelsInto(&mut self.labels)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|_| RowError::LabelsNotAnObject)?;
        }
        self.labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(&self.labels)
    }
}

/// A metric row with its labels as stored (JSON text; `""` when null).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawMetricRow<'a> {
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// The metric name.
    pub name: &'a str,
    /// `None` when the column is null.
    pub value: Option<f64>,
    /// The stored labels, unparsed.
    pub labels_json: &'a str,
}

/// A JSON string, borrowed from the row when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deserializes a JSON object of strings into the reader's reused label list.
struct LabelsInto<'v, 'a>(&'v mut Vec<Label<'a>>);

impl<'de> DeserializeSeed<'de> for LabelsInto<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsInto<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of strings")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some((Text(key), Text(value))) = map.next_entry::<Text<'de>, Text<'de>>()? {
            self.0.push((key, value));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use connector_core::Batch;

    use super::*;

    #[test]
    fn series_come_from_name_and_labels_and_keys_do_not_run_together() {
        assert!(is_metric_schema(&schema()));
        let other = Schema::new([("name", ColumnType::String)]);
        assert!(!is_metric_schema(&other));
        let mut batch = Batch::new(schema());
        batch
            .row()
            .timestamp(1)
            .string("up")
            .real(1.0)
            .map([("a", "b")])
            .finish()
            .unwrap();
        batch
            .row()
            .timestamp(1)
            .string("up")
            .real(1.0)
            .null()
            .finish()
            .unwrap();
        let rows: Vec<_> = batch.rows().collect();
        assert_eq!(series_of(&rows[0]), Some(("up", "{\"a\":\"b\"}")));
        assert_eq!(series_of(&rows[1]), None);
    }

    #[test]
    fn columns_are_found_by_name_and_labels_come_sorted_and_borrowed() {
        let schema = Arc::new(Schema::new([
            ("labels", ColumnType::Dynamic),
            ("value", ColumnType::Real),
            ("name", ColumnType::String),
            ("timestamp", ColumnType::Timestamp),
        ]));
        let mut batch = Batch::new(schema);
        batch
            .row()
            .json(&serde_json::json!({"z": "1", "a": "q\"x", "m": ""}))
            .null()
            .string("n")
            .timestamp(7)
            .finish()
            .unwrap();
        let mut reader = MetricReader::new(batch.schema()).unwrap();
        let row = batch.rows().next().unwrap();
        let metric = reader.read(&row).unwrap();
        assert_eq!(
            (metric.timestamp_ms, metric.name, metric.value),
            (7, "n", None)
        );
        let labels: Vec<(&str, &str)> = metric
            .labels
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(labels, [("a", "q\"x"), ("m", ""), ("z", "1")]);
        assert!(matches!(metric.labels[2].1, Cow::Borrowed(_)));
        assert!(
            matches!(metric.labels[0].1, Cow::Owned(_)),
            "an escaped value is unescaped"
        );
    }

    #[test]
    fn other_shapes_and_bad_labels_are_refused() {
        let other = Schema::new([
            ("timestamp", ColumnType::Timestamp),
            ("name", ColumnType::String),
        ]);
        assert_eq!(
            MetricReader::new(&other).unwrap_err().to_string(),
            "the source's rows have no `value` column of type real; this destination takes metric rows (timestamp, name, value, labels)"
        );
        let mut batch = Batch::new(schema());
        batch
            .row()
            .timestamp(0)
            .string("m")
            .real(1.0)
            .json(&serde_json::json!({"a": 1}))
            .finish()
            .unwrap();
        let mut reader = MetricReader::new(batch.schema()).unwrap();
        let row = batch.rows().next().unwrap();
        assert_eq!(reader.read(&row).unwrap_err(), RowError::LabelsNotAnObject);
    }
}
