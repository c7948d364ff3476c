//! A connector's row schema: its columns' names and types, which a [`Batch`](crate::Batch)
//! follows and from which stores create their tables.

use std::fmt;

/// The type of a column in a connector's [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    /// Unix time in milliseconds (`i64`).
    Timestamp,
    /// UTF-8 text.
    String,
    /// A 64-bit float. Sinks store NaN and ±Inf as null, so write those with
    /// [`RowWriter::null`](crate::RowWriter::null).
    Real,
    /// A JSON value (the Prometheus connector writes a label map). Stored as JSON
    /// text, which is what SQLite and PostgreSQL sinks bind directly.
    Dynamic,
    /// A 64-bit signed integer (SQLite `INTEGER`, PostgreSQL `bigint`).
    Integer,
    /// True or false (SQLite `INTEGER` 0/1, PostgreSQL `boolean`).
    Boolean,
}

impl ColumnType {
    /// The lowercase name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Timestamp => "timestamp",
            ColumnType::String => "string",
            ColumnType::Real => "real",
            ColumnType::Dynamic => "dynamic",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named, typed column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    name: String,
    ty: ColumnType,
}

impl Column {
    /// The column's name, as sinks use it for the table column.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    pub fn ty(&self) -> ColumnType {
        self.ty
    }
}

/// The ordered columns of the rows a connector emits. Every column may hold null.
///
/// ```
/// use connector_core::{ColumnType, Schema};
///
/// let schema = Schema::new([("timestamp", ColumnType::Timestamp), ("name", ColumnType::String)]);
/// assert_eq!(schema.len(), 2);
/// assert_eq!(schema.index_of("name"), Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schema {
    columns: Vec<Column>,
}

impl Schema {
    /// A schema from `(name, type)` pairs in column order.
    pub fn new<N: Into<String>>(columns: impl IntoIterator<Item = (N, ColumnType)>) -> Self {
        Schema {
            columns: columns
                .into_iter()
                .map(|(name, ty)| Column {
                    name: name.into(),
                    ty,
                })
                .collect(),
        }
    }

    /// The columns in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The position of the column called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
