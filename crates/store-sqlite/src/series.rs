//! Writing samples of a metric table (`Layout::Metric`): each row's series (name and
//! labels) becomes an id, found in memory or inserted once, and the sample is
//! stored as (timestamp, series id, value).
//!
//! The ids of a table are loaded whole on first use and kept for the life of the
//! target file's connection. Series are never deleted, so an id once seen stays
//! right even when another process adds series to the same file. An id inserted in
//! a transaction that then fails is not: a failed write forgets the table's ids and
//! the next one loads them again.

use std::collections::HashMap;

use connector_core::{Batch, Value};
use connector_runner::protocol::quote_ident;
use connector_runner::{StoreError, StoreErrorKind};
use rusqlite::{Connection, OptionalExtension, params};

use crate::layout::{samples_table, series_table};
use crate::{backend, query_row_cached};

/// The series ids of every metric table of one target file.
#[derive(Default)]
pub(crate) struct SeriesCache {
    tables: HashMap<String, SeriesIds>,
}

impl SeriesCache {
    /// The ids of `table`, loaded on first use.
    fn ids(&mut self, conn: &Connection, table: &str) -> Result<&mut SeriesIds, StoreError> {
        if !self.tables.contains_key(table) {
            let loaded = SeriesIds::load(conn, table)?;
            self.tables.insert(table.to_owned(), loaded);
        }
        self.tables
            .get_mut(table)
            .ok_or_else(|| StoreError::new(StoreErrorKind::Invalid, "series ids vanished"))
    }

    /// Drops what was learnt about `table`, after a write to it failed.
    pub(crate) fn forget(&mut self, table: &str) {
        self.tables.remove(table);
    }
}

struct SeriesIds {
    ids: metric_rows::SeriesIds,
}

impl SeriesIds {
    fn load(conn: &Connection, table: &str) -> Result<SeriesIds, StoreError> {
        let mut ids = metric_rows::SeriesIds::default();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id, name, labels FROM {} ORDER BY id",
                quote_ident(&series_table(table))
            ))
            .map_err(backend("cannot load the table's series"))?;
        let mut rows = stmt
            .query([])
            .map_err(backend("cannot load the table's series"))?;
        while let Some(row) = rows
            .next()
            .map_err(backend("cannot load the table's series"))?
        {
            let id: i64 = row
                .get(0)
                .map_err(backend("cannot load the table's series"))?;
            let name: String = row
                .get(1)
                .map_err(backend("cannot load the table's series"))?;
            let labels: String = row
                .get(2)
                .map_err(backend("cannot load the table's series"))?;
            ids.insert(&name, &labels, id);
        }
        Ok(SeriesIds { ids })
    }

    fn id(
        &mut self,
        conn: &Connection,
        table: &str,
        name: &str,
        labels: &str,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.ids.get(name, labels) {
            return Ok(id);
        }
        let series = quote_ident(&series_table(table));
        let inserted: Option<i64> = query_row_cached(
            conn,
            &format!(
                "INSERT INTO {series} (name, labels) VALUES (?1, ?2) ON CONFLICT DO NOTHING RETURNING id"
            ),
            params![name, labels],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("cannot add a series"))?;
        let id = match inserted {
            Some(id) => id,
            // Another process added it since the ids were loaded.
            None => query_row_cached(
                conn,
                &format!("SELECT id FROM {series} WHERE name = ?1 AND labels = ?2"),
                params![name, labels],
                |r| r.get(0),
            )
            .map_err(backend("cannot find a series"))?,
        };
        self.ids.insert(name, labels, id);
        Ok(id)
    }
}

/// Samples per INSERT statement, as `ROWS_PER_INSERT` for row tables.
const SAMPLES_PER_INSERT: usize = 128;

/// Inserts the batch's rows (in `metric_rows::schema()`'s column order) into the
/// samples table of `table`, adding series as they first appear.
pub(crate) fn insert_samples(
    conn: &Connection,
    cache: &mut SeriesCache,
    table: &str,
    batch: &Batch,
) -> Result<(), StoreError> {
    let ids = cache.ids(conn, table)?;
    let mut series = Vec::with_capacity(batch.len());
    for (index, row) in batch.rows().enumerate() {
        let Some((name, labels)) = metric_rows::series_of(&row) else {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "table `{table}`: row {index} of the batch has no name or no labels, which a metric table needs for its series"
                ),
            ));
        };
        series.push(ids.id(conn, table, name, labels)?);
    }
    let samples = quote_ident(&samples_table(table));
    let mut rows = batch.rows().zip(series);
    while rows.len() > 0 {
        let chunk = rows.len().min(SAMPLES_PER_INSERT);
        let mut statement = conn
            .prepare_cached(&format!(
                "INSERT INTO {samples} VALUES {}",
                vec!["(?,?,?)"; chunk].join(",")
            ))
            .map_err(backend("cannot prepare the sample insert"))?;
        let mut index = 1;
        for (row, id) in rows.by_ref().take(chunk) {
            match row.at(0) {
                Value::Timestamp(ms) => statement.raw_bind_parameter(index, ms),
                _ => statement.raw_bind_parameter(index, rusqlite::types::Null),
            }
            .map_err(backend("cannot bind a sample"))?;
            statement
                .raw_bind_parameter(index + 1, id)
                .map_err(backend("cannot bind a sample"))?;
            match row.at(2) {
                Value::Real(v) => statement.raw_bind_parameter(index + 2, v),
                _ => statement.raw_bind_parameter(index + 2, rusqlite::types::Null),
            }
            .map_err(backend("cannot bind a sample"))?;
            index += 3;
        }
        statement
            .raw_execute()
            .map_err(backend("cannot insert samples"))?;
    }
    Ok(())
}
