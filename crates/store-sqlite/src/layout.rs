//! How a target table sits on disk. Most tables hold their rows as they come
//! (`Rows`). A table of metric samples (`metric_rows::schema()`) is `Metric`: each
//! series (name and labels) is stored once in `<table>__series`, each sample in
//! `<table>__samples` as (timestamp, series id, value), and `<table>` is a view that
//! joins them back into the row shape, so plain SQL reads the table as before.
//!
//! A node_exporter row repeats about 50 bytes of name and labels' JSON, a
//! kube-state-metrics one several hundred; a sample of the compact layout is under
//! 30 bytes on disk whatever its labels.
//!
//! Ledger positions (`first_row..=last_row`) are rowids of the table that holds one
//! record per row: the table itself for `Rows`, `<table>__samples` for `Metric`.

use connector_core::Schema;
use connector_runner::protocol::quote_ident;
use connector_runner::{StoreError, StoreErrorKind};
use rusqlite::Connection;

use crate::backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Rows,
    Metric,
}

/// `<table>__series`, where a metric table keeps each series once.
pub(crate) fn series_table(table: &str) -> String {
    format!("{table}__series")
}

/// `<table>__samples`, one record per sample of a metric table.
pub(crate) fn samples_table(table: &str) -> String {
    format!("{table}__samples")
}

impl Layout {
    /// The layout a new table of `schema` gets.
    pub(crate) fn for_schema(schema: &Schema) -> Layout {
        if metric_rows::is_metric_schema(schema) {
            Layout::Metric
        } else {
            Layout::Rows
        }
    }

    /// The layout of the existing `table`, or `None` when there is no such table.
    pub(crate) fn of(conn: &Connection, table: &str) -> Result<Option<Layout>, StoreError> {
        let samples = samples_table(table);
        let kinds: Vec<(String, String)> = conn
            .prepare_cached("SELECT name, type FROM sqlite_master WHERE name IN (?1, ?2)")
            .and_then(|mut stmt| {
                stmt.query_map([table, samples.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(Iterator::collect)
            })
            .map_err(backend("cannot read the table's kind"))?;
        let kind = |name: &str| {
            kinds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, kind)| kind.as_str())
        };
        match kind(table) {
            None => Ok(None),
            Some("table") => Ok(Some(Layout::Rows)),
            Some("view") if kind(&samples) == Some("table") => Ok(Some(Layout::Metric)),
            Some("view") => Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "`{table}` is a view without its `{samples}` table; connectord did not make it and cannot write to it"
                ),
            )),
            Some(other) => Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!("`{table}` is an {other}, not a table connectord can write to"),
            )),
        }
    }

    /// Creates `table` in this layout, in one transaction so a second process sees
    /// all of it or none.
    pub(crate) fn create(
        self,
        conn: &Connection,
        table: &str,
        columns_sql: &str,
    ) -> Result<(), StoreError> {
        let sql = match self {
            Layout::Rows => format!(
                "CREATE TABLE IF NOT EXISTS {} ({columns_sql})",
                quote_ident(table)
            ),
            // CROSS JOIN keeps samples as the outer loop, so the view reads in
            // insertion order as the row table did. A view has no rowid of its own:
            // the samples' rowid is a column, so `ORDER BY rowid` and the ledger's
            // `rowid BETWEEN first_row AND last_row` read the view as they read the
            // table.
            Layout::Metric => format!(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS {series} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, labels TEXT NOT NULL, UNIQUE (name, labels));
                 CREATE TABLE IF NOT EXISTS {samples} (timestamp INTEGER, series INTEGER NOT NULL, value REAL);
                 CREATE VIEW IF NOT EXISTS {view} AS SELECT s.timestamp AS timestamp, r.name AS name, s.value AS value, r.labels AS labels, s.rowid AS rowid \
                   FROM {samples} s CROSS JOIN {series} r ON r.id = s.series;
                 COMMIT;",
                series = quote_ident(&series_table(table)),
                samples = quote_ident(&samples_table(table)),
                view = quote_ident(table),
            ),
        };
        conn.execute_batch(&sql).map_err(|e| {
            // A failed batch may leave the transaction open.
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::backend("cannot create the target table", e)
        })
    }

    /// The view's column that stands in for the rowid a view lacks.
    pub(crate) const VIEW_ROWID: &'static str = "rowid";

    /// The table whose rowids are the ledger's row positions.
    pub(crate) fn positions_table(self, table: &str) -> String {
        match self {
            Layout::Rows => quote_ident(table),
            Layout::Metric => quote_ident(&samples_table(table)),
        }
    }

    /// `FROM ...` for reading rows with their positions, as `p.rowid`.
    pub(crate) fn rows_from(self, table: &str) -> String {
        match self {
            Layout::Rows => format!("{} p", quote_ident(table)),
            Layout::Metric => format!(
                "{} p CROSS JOIN {} r ON r.id = p.series",
                quote_ident(&samples_table(table)),
                quote_ident(&series_table(table))
            ),
        }
    }

    /// The expression that reads `column` in [`Layout::rows_from`].
    pub(crate) fn column(self, column: &str) -> String {
        match (self, column) {
            (Layout::Metric, "name" | "labels") => format!("r.{column}"),
            _ => format!("p.{}", quote_ident(column)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_rows_get_the_compact_layout_and_others_keep_rows() {
        assert_eq!(Layout::for_schema(&metric_rows::schema()), Layout::Metric);
        let other = Schema::new([
            ("timestamp", connector_core::ColumnType::Timestamp),
            ("name", connector_core::ColumnType::String),
        ]);
        assert_eq!(Layout::for_schema(&other), Layout::Rows);
    }

    #[test]
    fn the_view_reads_back_the_row_shape_in_insertion_order() {
        let conn = Connection::open_in_memory().expect("open");
        Layout::Metric.create(&conn, "m", "").expect("create");
        conn.execute_batch(
            "INSERT INTO m__series (id, name, labels) VALUES (7, 'up', '{\"job\":\"a\"}'), (3, 'x', '{}');
             INSERT INTO m__samples VALUES (1000, 7, 1.0), (1000, 3, 2.5), (2000, 7, NULL);",
        )
        .expect("insert");
        let rows: Vec<(i64, String, Option<f64>, String)> = conn
            .prepare("SELECT timestamp, name, value, labels FROM m ORDER BY rowid")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(Iterator::collect)
            .expect("read");
        assert_eq!(
            rows,
            [
                (1000, "up".into(), Some(1.0), "{\"job\":\"a\"}".into()),
                (1000, "x".into(), Some(2.5), "{}".into()),
                (2000, "up".into(), None, "{\"job\":\"a\"}".into()),
            ]
        );
        assert_eq!(Layout::of(&conn, "m").expect("of"), Some(Layout::Metric));
        assert_eq!(Layout::of(&conn, "nope").expect("of"), None);
        conn.execute_batch("CREATE VIEW v AS SELECT 1")
            .expect("view");
        let err = Layout::of(&conn, "v").expect_err("a foreign view");
        assert!(err.to_string().contains("`v__samples`"), "{err}");
    }
}
