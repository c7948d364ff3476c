//! Series ids of metric tables (`Layout::Metric`): found in this process's memory, or
//! added and looked up in two statements for all of a batch's new series at once.
//!
//! New series are added outside the bucket's transaction, in statements of their
//! own: an id in memory is then always of a committed series, whatever happens to
//! the bucket, and series are never deleted. A series added for a bucket that then
//! fails to commit stays, unused, which costs one row.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use connector_core::Batch;
use connector_runner::protocol::quote_ident;
use connector_runner::{StoreError, StoreErrorKind, Target};
use tokio_postgres::Client;

use crate::backend;
use crate::layout::series_table;

use metric_rows::SeriesIds;

/// The series ids of each (schema, table).
#[derive(Default)]
pub(crate) struct SeriesCache {
    tables: Mutex<HashMap<(String, String), SeriesIds>>,
}

/// The name and labels of row `index` of a metric batch.
fn name_and_labels<'b>(
    target: &Target,
    batch: &'b Batch,
    index: usize,
    row: &connector_core::Row<'b>,
) -> Result<(&'b str, &'b str), StoreError> {
    metric_rows::series_of(row).ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "table `{}.{}`: row {index} of the batch has no name or no labels, which a metric table needs for its series ({} rows)",
                target.database,
                target.table,
                batch.len()
            ),
        )
    })
}

/// Rows of a batch whose series this process has not seen: (row, name, labels).
type Missing<'b> = Vec<(usize, &'b str, &'b str)>;

impl SeriesCache {
    /// Each row's series id as this process knows it (0 where it does not), and the
    /// rows it does not know; with `stop_at_new`, the walk ends at the first of them.
    fn lookup<'b>(
        &self,
        target: &Target,
        batch: &'b Batch,
        stop_at_new: bool,
    ) -> Result<(Vec<i64>, Missing<'b>), StoreError> {
        let mut ids = Vec::with_capacity(batch.len());
        let mut missing = Vec::new();
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let mut known = tables.get_mut(&(target.database.clone(), target.table.clone()));
        for (index, row) in batch.rows().enumerate() {
            let (name, labels) = name_and_labels(target, batch, index, &row)?;
            match known.as_mut().and_then(|k| k.get(name, labels)) {
                Some(id) => ids.push(id),
                None => {
                    ids.push(0);
                    missing.push((index, name, labels));
                    if stop_at_new {
                        break;
                    }
                }
            }
        }
        Ok((ids, missing))
    }

    /// The series id of every row of `batch` when this process knows them all,
    /// without touching the database; `None` when one is new.
    pub(crate) fn known(
        &self,
        target: &Target,
        batch: &Batch,
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let (ids, missing) = self.lookup(target, batch, true)?;
        Ok(missing.is_empty().then_some(ids))
    }

    /// The series id of every row of `batch` (in `metric_rows::schema()`'s column
    /// order), adding the series this process has not seen.
    pub(crate) async fn resolve(
        &self,
        client: &Client,
        target: &Target,
        batch: &Batch,
    ) -> Result<Vec<i64>, StoreError> {
        let (mut ids, missing) = self.lookup(target, batch, false)?;
        if missing.is_empty() {
            return Ok(ids);
        }
        let table_key = (target.database.clone(), target.table.clone());
        let series = format!(
            "{}.{}",
            quote_ident(&target.database),
            quote_ident(&series_table(&target.table))
        );
        let names: Vec<&str> = missing.iter().map(|m| m.1).collect();
        let labels: Vec<&str> = missing.iter().map(|m| m.2).collect();
        client
            .execute(
                &format!(
                    "INSERT INTO {series} (name, labels) SELECT name, labels::jsonb FROM unnest($1::text[], $2::text[]) AS i(name, labels) \
                     ON CONFLICT (name, md5(labels::text)) DO NOTHING"
                ),
                &[&names, &labels],
            )
            .await
            .map_err(backend("cannot add series"))?;
        let found = client
            .query(
                &format!(
                    "SELECT i.n, s.id FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(name, labels, n) \
                     JOIN {series} s ON s.name = i.name AND md5(s.labels::text) = md5(i.labels::jsonb::text) \
                     ORDER BY i.n"
                ),
                &[&names, &labels],
            )
            .await
            .map_err(backend("cannot look up series"))?;
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let known = tables.entry(table_key).or_default();
        let mut resolved = 0;
        // In the batch's order, which the next scrape repeats (`SeriesIds`).
        for row in found {
            let (n, id): (i64, i64) = (row.get(0), row.get(1));
            let Some(&(index, name, labels)) =
                usize::try_from(n - 1).ok().and_then(|i| missing.get(i))
            else {
                continue;
            };
            ids[index] = id;
            known.insert(name, labels, id);
            resolved += 1;
        }
        if resolved < missing.len() {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "table `{}.{}`: {} of {} new series were neither added nor found",
                    target.database,
                    target.table,
                    missing.len() - resolved,
                    missing.len()
                ),
            ));
        }
        Ok(ids)
    }
}
