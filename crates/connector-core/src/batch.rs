use std::sync::Arc;

use crate::json_string::push_json_entry;
use crate::schema::{ColumnType, Schema};

/// Why a row could not be appended to a [`Batch`]. The row is rolled back; rows
/// appended before it stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A value of the wrong type was written to a column.
    #[error("column `{column}` is {expected}, but a {got} value was written to it")]
    TypeMismatch {
        /// The column's name.
        column: String,
        /// The column's type.
        expected: ColumnType,
        /// The type of the value written.
        got: ColumnType,
    },
    /// More values were written than the schema has columns.
    #[error("the row has more values than the schema's {columns} columns")]
    TooManyValues {
        /// The number of columns in the schema.
        columns: usize,
    },
    /// [`RowWriter::finish`] was called before every column had a value.
    #[error("the row has no value for column `{column}` (write null explicitly)")]
    MissingValue {
        /// The first column without a value.
        column: String,
    },
    /// Text given as JSON to a dynamic column does not parse as JSON.
    #[error("column `{column}` was given text that is not JSON: {reason}")]
    InvalidJson {
        /// The column's name.
        column: String,
        /// serde_json's words, with the position.
        reason: String,
    },
    /// [`Batch::append`] was given a batch of another schema.
    #[error("cannot append a batch of another schema")]
    SchemaMismatch,
}

impl From<BatchError> for crate::ConnectorError {
    fn from(err: BatchError) -> Self {
        crate::ConnectorError::permanent("row does not match the connector's schema")
            .with_source(err)
    }
}

/// Text of many rows in one buffer: appending never allocates per row.
#[derive(Debug, Clone)]
struct TextColumn {
    text: String,
    ends: Vec<usize>,
    nulls: Vec<bool>,
}

impl TextColumn {
    /// Room for `rows` rows' boundaries; the text grows as it comes, its size unknown.
    fn with_capacity(rows: usize) -> Self {
        TextColumn {
            text: String::new(),
            ends: Vec::with_capacity(rows),
            nulls: Vec::with_capacity(rows),
        }
    }

    /// An empty column with room for as many rows and bytes of text as this one.
    fn empty_like(&self) -> Self {
        TextColumn {
            text: String::with_capacity(self.text.len()),
            ends: Vec::with_capacity(self.ends.len()),
            nulls: Vec::with_capacity(self.nulls.len()),
        }
    }

    fn get(&self, row: usize) -> Option<&str> {
        if self.nulls[row] {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some(&self.text[start..self.ends[row]])
    }

    fn close_row(&mut self, null: bool) {
        self.ends.push(self.text.len());
        self.nulls.push(null);
    }

    fn append(&mut self, other: TextColumn) {
        let offset = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|end| end + offset));
        self.nulls.extend(other.nulls);
    }

    fn truncate(&mut self, rows: usize) {
        let end = if rows == 0 { 0 } else { self.ends[rows - 1] };
        self.text.truncate(end);
        self.ends.truncate(rows);
        self.nulls.truncate(rows);
    }
}

#[derive(Debug, Clone)]
enum ColumnData {
    Timestamp(Vec<Option<i64>>),
    String(TextColumn),
    Real(Vec<Option<f64>>),
    Dynamic(TextColumn),
    Integer(Vec<Option<i64>>),
    Boolean(Vec<Option<bool>>),
}

impl ColumnData {
    fn new(ty: ColumnType, rows: usize) -> Self {
        match ty {
            ColumnType::Timestamp => ColumnData::Timestamp(Vec::with_capacity(rows)),
            ColumnType::String => ColumnData::String(TextColumn::with_capacity(rows)),
            ColumnType::Real => ColumnData::Real(Vec::with_capacity(rows)),
            ColumnType::Dynamic => ColumnData::Dynamic(TextColumn::with_capacity(rows)),
            ColumnType::Integer => ColumnData::Integer(Vec::with_capacity(rows)),
            ColumnType::Boolean => ColumnData::Boolean(Vec::with_capacity(rows)),
        }
    }

    /// An empty column of the same type with room for `rows` rows, and for as much
    /// text as this one holds.
    fn empty_like(&self, rows: usize) -> Self {
        match self {
            ColumnData::String(t) => ColumnData::String(t.empty_like()),
            ColumnData::Dynamic(t) => ColumnData::Dynamic(t.empty_like()),
            ColumnData::Timestamp(_) => ColumnData::new(ColumnType::Timestamp, rows),
            ColumnData::Real(_) => ColumnData::new(ColumnType::Real, rows),
            ColumnData::Integer(_) => ColumnData::new(ColumnType::Integer, rows),
            ColumnData::Boolean(_) => ColumnData::new(ColumnType::Boolean, rows),
        }
    }

    /// Appends `other`'s values; false, with nothing appended, when its type differs.
    fn append(&mut self, other: ColumnData) -> bool {
        match (self, other) {
            (ColumnData::Timestamp(a), ColumnData::Timestamp(b))
            | (ColumnData::Integer(a), ColumnData::Integer(b)) => a.extend(b),
            (ColumnData::Real(a), ColumnData::Real(b)) => a.extend(b),
            (ColumnData::Boolean(a), ColumnData::Boolean(b)) => a.extend(b),
            (ColumnData::String(a), ColumnData::String(b))
            | (ColumnData::Dynamic(a), ColumnData::Dynamic(b)) => a.append(b),
            _ => return false,
        }
        true
    }

    fn truncate(&mut self, rows: usize) {
        match self {
            ColumnData::Timestamp(v) | ColumnData::Integer(v) => v.truncate(rows),
            ColumnData::Real(v) => v.truncate(rows),
            ColumnData::Boolean(v) => v.truncate(rows),
            ColumnData::String(t) | ColumnData::Dynamic(t) => t.truncate(rows),
        }
    }

    fn get(&self, row: usize) -> Value<'_> {
        match self {
            ColumnData::Timestamp(v) => v[row].map_or(Value::Null, Value::Timestamp),
            ColumnData::Real(v) => v[row].map_or(Value::Null, Value::Real),
            ColumnData::String(t) => t.get(row).map_or(Value::Null, Value::String),
            ColumnData::Dynamic(t) => t.get(row).map_or(Value::Null, Value::Dynamic),
            ColumnData::Integer(v) => v[row].map_or(Value::Null, Value::Integer),
            ColumnData::Boolean(v) => v[row].map_or(Value::Null, Value::Boolean),
        }
    }

    fn payload_bytes(&self) -> usize {
        match self {
            ColumnData::Timestamp(v) | ColumnData::Integer(v) => v.len() * 8,
            ColumnData::Real(v) => v.len() * 8,
            ColumnData::Boolean(v) => v.len(),
            ColumnData::String(t) | ColumnData::Dynamic(t) => t.text.len(),
        }
    }
}

/// One value read back from a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// No value.
    Null,
    /// Unix time in milliseconds.
    Timestamp(i64),
    /// Text.
    String(&'a str),
    /// A float (never NaN or ±Inf when written by a well-behaved connector).
    Real(f64),
    /// JSON text.
    Dynamic(&'a str),
    /// A 64-bit signed integer.
    Integer(i64),
    /// True or false.
    Boolean(bool),
}

/// The rows of one tick, stored by column for throughput.
///
/// Strings and dynamic values of all rows share one buffer per column, so appending
/// a row copies its bytes but allocates nothing per row: a connector can append
/// values borrowed straight from the bytes it fetched.
///
/// ```
/// use std::sync::Arc;
/// use connector_core::{Batch, ColumnType, Schema, Value};
///
/// let schema = Arc::new(Schema::new([
///     ("timestamp", ColumnType::Timestamp),
///     ("name", ColumnType::String),
///     ("value", ColumnType::Real),
///     ("labels", ColumnType::Dynamic),
/// ]));
/// let mut batch = Batch::new(schema);
/// batch.row()
///     .timestamp(1_700_000_000_000)
///     .string("up")
///     .real(1.0)
///     .map([("job", "node")])
///     .finish()?;
/// assert_eq!(batch.len(), 1);
/// assert_eq!(batch.get(0, 3), Value::Dynamic(r#"{"job":"node"}"#));
/// # Ok::<(), connector_core::BatchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    schema: Arc<Schema>,
    columns: Vec<ColumnData>,
    rows: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new(schema: Arc<Schema>) -> Self {
        Self::with_capacity(schema, 0)
    }

    /// An empty batch with room for `rows` rows in its fixed-width columns.
    pub fn with_capacity(schema: Arc<Schema>, rows: usize) -> Self {
        let columns = schema
            .columns()
            .iter()
            .map(|c| ColumnData::new(c.ty(), rows))
            .collect();
        Batch {
            schema,
            columns,
            rows: 0,
        }
    }

    /// Appends the rows of `other`, which must follow the same schema (the same
    /// `Arc`, or an equal one); nothing is appended otherwise.
    pub fn append(&mut self, other: Batch) -> Result<(), BatchError> {
        if !other.follows(&self.schema) {
            return Err(BatchError::SchemaMismatch);
        }
        let rows = other.rows;
        for (mine, theirs) in self.columns.iter_mut().zip(other.columns) {
            if !mine.append(theirs) {
                return Err(BatchError::SchemaMismatch);
            }
        }
        self.rows += rows;
        Ok(())
    }

    /// Moves the rows out into a batch of their own, leaving this one empty with
    /// room for as many rows again, text included. A connector handing parts over
    /// fills the next part as far: grown from nothing, a part's labels text was
    /// copied about once more by its reallocations, and in fresh pages.
    pub fn take(&mut self) -> Batch {
        let empty = Batch {
            schema: Arc::clone(&self.schema),
            columns: self
                .columns
                .iter()
                .map(|c| c.empty_like(self.rows))
                .collect(),
            rows: 0,
        };
        std::mem::replace(self, empty)
    }

    /// The schema the rows follow.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Whether the rows follow `schema`: the same `Arc`, or an equal schema.
    pub fn follows(&self, schema: &Arc<Schema>) -> bool {
        Arc::ptr_eq(&self.schema, schema) || *self.schema == **schema
    }

    /// The number of complete rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Starts a row. Write one value per column in schema order, then call
    /// [`RowWriter::finish`]; a row dropped before `finish` is rolled back.
    pub fn row(&mut self) -> RowWriter<'_> {
        RowWriter {
            batch: self,
            next: 0,
            error: None,
            finished: false,
        }
    }

    /// The value at `row`, `column`.
    ///
    /// # Panics
    ///
    /// When `row >= self.len()` or `column >= self.schema().len()`.
    pub fn get(&self, row: usize, column: usize) -> Value<'_> {
        assert!(
            row < self.rows,
            "row {row} out of range for a batch of {} rows",
            self.rows
        );
        self.columns[column].get(row)
    }

    /// The rows in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.rows).map(move |index| Row { batch: self, index })
    }

    /// Bytes of payload held (text bytes, 8 per number, 1 per boolean): what a sink
    /// is about to write, for metrics.
    pub fn payload_bytes(&self) -> usize {
        self.columns.iter().map(ColumnData::payload_bytes).sum()
    }

    fn rollback(&mut self) {
        let rows = self.rows;
        for column in &mut self.columns {
            column.truncate(rows);
        }
    }
}

/// A view of one row of a [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    batch: &'a Batch,
    index: usize,
}

impl<'a> Row<'a> {
    /// The value in column `column` (by position).
    pub fn at(&self, column: usize) -> Value<'a> {
        self.batch.columns[column].get(self.index)
    }

    /// The value in the column called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Value<'a>> {
        self.batch.schema.index_of(name).map(|c| self.at(c))
    }

    /// The row's position in the batch.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Appends one row to a [`Batch`]; see [`Batch::row`].
///
/// Each method writes the next column. A type mismatch is remembered and reported by
/// [`finish`](RowWriter::finish), which then rolls the row back.
#[derive(Debug)]
#[must_use = "a row is only kept when `finish` is called"]
pub struct RowWriter<'b> {
    batch: &'b mut Batch,
    next: usize,
    error: Option<BatchError>,
    finished: bool,
}

impl RowWriter<'_> {
    fn slot(&mut self, got: ColumnType) -> Option<&mut ColumnData> {
        if self.error.is_some() {
            return None;
        }
        let Some(column) = self.batch.schema.columns().get(self.next) else {
            self.error = Some(BatchError::TooManyValues {
                columns: self.batch.schema.len(),
            });
            return None;
        };
        if column.ty() != got {
            self.error = Some(BatchError::TypeMismatch {
                column: column.name().to_owned(),
                expected: column.ty(),
                got,
            });
            return None;
        }
        self.next += 1;
        Some(&mut self.batch.columns[self.next - 1])
    }

    /// Writes a timestamp (Unix milliseconds).
    pub fn timestamp(mut self, unix_ms: i64) -> Self {
        if let Some(ColumnData::Timestamp(v)) = self.slot(ColumnType::Timestamp) {
            v.push(Some(unix_ms));
        }
        self
    }

    /// Writes a string; its bytes are copied into the column's shared buffer.
    pub fn string(mut self, value: &str) -> Self {
        if let Some(ColumnData::String(t)) = self.slot(ColumnType::String) {
            t.text.push_str(value);
            t.close_row(false);
        }
        self
    }

    /// Writes a float.
    pub fn real(mut self, value: f64) -> Self {
        if let Some(ColumnData::Real(v)) = self.slot(ColumnType::Real) {
            v.push(Some(value));
        }
        self
    }

    /// Writes a 64-bit integer.
    pub fn integer(mut self, value: i64) -> Self {
        if let Some(ColumnData::Integer(v)) = self.slot(ColumnType::Integer) {
            v.push(Some(value));
        }
        self
    }

    /// Writes a boolean.
    pub fn boolean(mut self, value: bool) -> Self {
        if let Some(ColumnData::Boolean(v)) = self.slot(ColumnType::Boolean) {
            v.push(Some(value));
        }
        self
    }

    /// Writes a JSON object of string keys and string values, escaping as JSON needs,
    /// straight into the column's buffer.
    pub fn map<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        if let Some(ColumnData::Dynamic(t)) = self.slot(ColumnType::Dynamic) {
            t.text.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    t.text.push(',');
                }
                push_json_entry(&mut t.text, k.as_ref(), v.as_ref());
            }
            t.text.push('}');
            t.close_row(false);
        }
        self
    }

    /// Writes any JSON value.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        if let Some(ColumnData::Dynamic(t)) = self.slot(ColumnType::Dynamic) {
            t.text.push_str(&value.to_string());
            t.close_row(false);
        }
        self
    }

    /// Writes JSON text as it is, after checking that it parses (a store reading rows
    /// back hands over what it holds without building a `serde_json::Value`).
    pub fn json_text(mut self, text: &str) -> Self {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            if self.error.is_none() {
                let column = self
                    .batch
                    .schema
                    .columns()
                    .get(self.next)
                    .map(|c| c.name().to_owned())
                    .unwrap_or_default();
                self.error = Some(BatchError::InvalidJson {
                    column,
                    reason: e.to_string(),
                });
            }
            return self;
        }
        if let Some(ColumnData::Dynamic(t)) = self.slot(ColumnType::Dynamic) {
            t.text.push_str(text);
            t.close_row(false);
        }
        self
    }

    /// Writes null to the next column, whatever its type.
    pub fn null(mut self) -> Self {
        if self.error.is_some() {
            return self;
        }
        let Some(ty) = self.batch.schema.columns().get(self.next).map(|c| c.ty()) else {
            self.error = Some(BatchError::TooManyValues {
                columns: self.batch.schema.len(),
            });
            return self;
        };
        match self.slot(ty) {
            Some(ColumnData::Timestamp(v) | ColumnData::Integer(v)) => v.push(None),
            Some(ColumnData::Real(v)) => v.push(None),
            Some(ColumnData::Boolean(v)) => v.push(None),
            Some(ColumnData::String(t) | ColumnData::Dynamic(t)) => t.close_row(true),
            None => {}
        }
        self
    }

    /// Keeps the row if every column got a value of its type; otherwise rolls it back.
    pub fn finish(mut self) -> Result<(), BatchError> {
        self.finished = true;
        let error = match self.error.take() {
            Some(error) => Some(error),
            None => self
                .batch
                .schema
                .columns()
                .get(self.next)
                .map(|c| BatchError::MissingValue {
                    column: c.name().to_owned(),
                }),
        };
        match error {
            Some(error) => {
                self.batch.rollback();
                Err(error)
            }
            None => {
                self.batch.rows += 1;
                Ok(())
            }
        }
    }
}

impl Drop for RowWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.batch.rollback();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new([
            ("timestamp", ColumnType::Timestamp),
            ("name", ColumnType::String),
            ("value", ColumnType::Real),
            ("labels", ColumnType::Dynamic),
        ]))
    }

    #[test]
    fn append_and_take_keep_every_row_in_order() {
        let row = |b: &mut Batch, i: i64| {
            let w = b.row().timestamp(i).string(&format!("n{i}"));
            let w = if i == 1 { w.null() } else { w.real(i as f64) };
            w.map([("k", format!("v{i}"))]).finish().unwrap();
        };
        let mut first = Batch::new(schema());
        row(&mut first, 0);
        row(&mut first, 1);
        let mut taken = first.take();
        assert!(first.is_empty());
        for (left, moved) in first.columns.iter().zip(&taken.columns) {
            if let (ColumnData::Dynamic(left), ColumnData::Dynamic(moved)) = (left, moved) {
                assert!(left.text.is_empty());
                assert!(
                    left.text.capacity() >= moved.text.len(),
                    "room for the text again"
                );
            }
        }
        row(&mut first, 2);
        taken.append(first).unwrap();
        let read: Vec<(Value<'_>, Value<'_>, Value<'_>)> =
            taken.rows().map(|r| (r.at(1), r.at(2), r.at(3))).collect();
        assert_eq!(
            read,
            [
                (
                    Value::String("n0"),
                    Value::Real(0.0),
                    Value::Dynamic(r#"{"k":"v0"}"#)
                ),
                (
                    Value::String("n1"),
                    Value::Null,
                    Value::Dynamic(r#"{"k":"v1"}"#)
                ),
                (
                    Value::String("n2"),
                    Value::Real(2.0),
                    Value::Dynamic(r#"{"k":"v2"}"#)
                ),
            ]
        );
        assert!(taken.follows(taken.schema()) && taken.follows(&schema()));
        let other = Batch::new(Arc::new(Schema::new([("n", ColumnType::Integer)])));
        assert!(!other.follows(taken.schema()));
        assert_eq!(taken.append(other), Err(BatchError::SchemaMismatch));
        assert_eq!(taken.len(), 3);
    }

    #[test]
    fn rows_round_trip() {
        let mut batch = Batch::new(schema());
        batch
            .row()
            .timestamp(5)
            .string("a")
            .real(1.5)
            .map([("k", "v")])
            .finish()
            .unwrap();
        batch
            .row()
            .timestamp(6)
            .string("")
            .null()
            .map::<&str, &str>([])
            .finish()
            .unwrap();
        assert_eq!(batch.len(), 2);
        let rows: Vec<_> = batch.rows().collect();
        assert_eq!(rows[0].get("name"), Some(Value::String("a")));
        assert_eq!(rows[1].at(1), Value::String(""));
        assert_eq!(rows[1].at(2), Value::Null);
        assert_eq!(rows[1].at(3), Value::Dynamic("{}"));
        assert_eq!(rows[0].get("missing"), None);
    }

    #[test]
    fn mismatched_row_rolls_back_and_keeps_earlier_rows() {
        let mut batch = Batch::new(schema());
        batch
            .row()
            .timestamp(1)
            .string("kept")
            .real(1.0)
            .map([("a", "b")])
            .finish()
            .unwrap();
        let err = batch
            .row()
            .timestamp(2)
            .string("dropped")
            .string("oops")
            .finish()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `value` is real, but a string value was written to it"
        );
        let err = batch
            .row()
            .timestamp(3)
            .string("short")
            .finish()
            .unwrap_err();
        assert_eq!(
            err,
            BatchError::MissingValue {
                column: "value".into()
            }
        );
        let err = batch
            .row()
            .timestamp(3)
            .string("long")
            .real(1.0)
            .map([("a", "b")])
            .null()
            .finish()
            .unwrap_err();
        assert_eq!(err, BatchError::TooManyValues { columns: 4 });
        {
            let _abandoned = batch.row().timestamp(9).string("abandoned");
        }
        assert_eq!(batch.len(), 1);
        batch
            .row()
            .timestamp(4)
            .string("next")
            .real(2.0)
            .map([("c", "d")])
            .finish()
            .unwrap();
        assert_eq!(batch.get(1, 1), Value::String("next"));
        assert_eq!(batch.get(1, 3), Value::Dynamic(r#"{"c":"d"}"#));
        assert_eq!(batch.get(0, 1), Value::String("kept"));
    }

    #[test]
    fn map_escapes_json() {
        let mut batch = Batch::new(schema());
        batch
            .row()
            .null()
            .null()
            .null()
            .map([("q\"", "line\nnext\\\u{1}é")])
            .finish()
            .unwrap();
        let Value::Dynamic(text) = batch.get(0, 3) else {
            panic!("not dynamic")
        };
        assert_eq!(text, r#"{"q\"":"line\nnext\\\u0001é"}"#);
        let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed["q\""], "line\nnext\\\u{1}é");
    }

    #[test]
    fn json_values_and_payload_bytes() {
        let mut batch = Batch::new(schema());
        batch
            .row()
            .timestamp(1)
            .string("abc")
            .real(0.5)
            .json(&serde_json::json!({"n": [1, 2]}))
            .finish()
            .unwrap();
        assert_eq!(batch.get(0, 3), Value::Dynamic(r#"{"n":[1,2]}"#));
        assert_eq!(batch.payload_bytes(), 8 + 3 + 8 + 11);
    }

    #[test]
    fn integer_and_boolean_columns() {
        let schema = Arc::new(Schema::new([
            ("count", ColumnType::Integer),
            ("ok", ColumnType::Boolean),
        ]));
        let mut batch = Batch::with_capacity(schema, 4);
        batch
            .row()
            .integer(i64::MIN)
            .boolean(true)
            .finish()
            .unwrap();
        batch.row().null().null().finish().unwrap();
        let err = batch.row().integer(1).real(1.0).finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `ok` is boolean, but a real value was written to it"
        );
        batch.row().integer(7).boolean(false).finish().unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.get(0, 0), Value::Integer(i64::MIN));
        assert_eq!(batch.get(0, 1), Value::Boolean(true));
        assert_eq!(
            (batch.get(1, 0), batch.get(1, 1)),
            (Value::Null, Value::Null)
        );
        assert_eq!(batch.get(2, 0), Value::Integer(7));
        assert_eq!(batch.get(2, 1), Value::Boolean(false));
        assert_eq!(batch.payload_bytes(), 3 * 8 + 3);
    }
}
