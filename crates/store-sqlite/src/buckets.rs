//! Reading committed buckets back for destinations: the next one a destination has
//! not delivered, and its rows by rowid range, in chunks. Reads use a connection of
//! their own per target file, so they never wait behind the sink's commits.

use std::path::Path;
use std::sync::{Arc, Mutex};

use connector_core::{Batch, ColumnType, Schema};
use connector_runner::{BucketChunk, PendingBucket, StoreError, StoreErrorKind, Target};
use rusqlite::{Connection, OptionalExtension, params};

use crate::layout::Layout;
use crate::{STATE_FILE, SqliteStore, backend, lock, query_row_cached};

impl SqliteStore {
    /// The reading connection of `database`, with the state database attached.
    pub(crate) fn bucket_reader(
        &self,
        database: &str,
    ) -> Result<Arc<Mutex<Connection>>, StoreError> {
        let mut readers = lock(&self.bucket_readers);
        if let Some(conn) = readers.get(database) {
            return Ok(Arc::clone(conn));
        }
        let path = self.database_path(database);
        if !path.exists() {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                format!(
                    "{} does not exist yet: the source has not committed",
                    path.display()
                ),
            ));
        }
        let conn = crate::open_connection(&path)?;
        crate::schema::ensure_ledger(&conn)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS state",
            [self.data_dir.join(STATE_FILE).to_string_lossy()],
        )
        .map_err(backend("cannot attach the state database"))?;
        let conn = Arc::new(Mutex::new(conn));
        readers.insert(database.to_owned(), Arc::clone(&conn));
        Ok(conn)
    }

    pub(crate) fn next_bucket_blocking(
        &self,
        destination_id: &str,
        source: &Target,
        from_ms: i64,
    ) -> Result<Option<PendingBucket>, StoreError> {
        let conn = self.bucket_reader(&source.database)?;
        let conn = lock(&conn);
        query_row_cached(
            &conn,
            "SELECT l.scheduled_for_ms, l.rows, l.first_row, l.last_row FROM _connectord_ledger l \
             WHERE l.connector_id = ?1 AND l.target_table = ?4 AND l.scheduled_for_ms >= ?2 \
             AND l.first_row IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM state.delivered d \
                 WHERE d.destination_id = ?3 AND d.scheduled_for_ms = l.scheduled_for_ms) \
             ORDER BY l.scheduled_for_ms LIMIT 1",
            params![source.connector_id, from_ms, destination_id, source.table],
            |r| {
                Ok(PendingBucket {
                    scheduled_for_ms: r.get(0)?,
                    rows: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    first_row: r.get(2)?,
                    last_row: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(backend("cannot find the next undelivered bucket"))
    }

    pub(crate) fn read_bucket_blocking(
        &self,
        source: &Target,
        schema: &Arc<Schema>,
        bucket: &PendingBucket,
        after_row: i64,
        limit: usize,
    ) -> Result<BucketChunk, StoreError> {
        let conn = self.bucket_reader(&source.database)?;
        let conn = lock(&conn);
        read_range(
            &conn,
            &self.database_path(&source.database),
            source,
            schema,
            bucket,
            after_row,
            limit,
        )
    }
}

fn read_range(
    conn: &Connection,
    path: &Path,
    source: &Target,
    schema: &Arc<Schema>,
    bucket: &PendingBucket,
    after_row: i64,
    limit: usize,
) -> Result<BucketChunk, StoreError> {
    let layout = Layout::of(conn, &source.table)?.ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::NotFound,
            format!(
                "table `{}` in {} is gone, though its ledger names rows in it",
                source.table,
                path.display()
            ),
        )
    })?;
    let columns: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| layout.column(c.name()))
        .collect();
    let sql = format!(
        "SELECT p.rowid, {} FROM {} WHERE p.rowid > ?1 AND p.rowid <= ?2 ORDER BY p.rowid LIMIT ?3",
        columns.join(", "),
        layout.rows_from(&source.table)
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(backend("cannot read the bucket's rows"))?;
    let mut rows = stmt
        .query(params![
            after_row,
            bucket.last_row,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])
        .map_err(backend("cannot read the bucket's rows"))?;
    let mut batch = Batch::with_capacity(Arc::clone(schema), limit.min(65_536));
    let mut last_row = after_row;
    while let Some(row) = rows
        .next()
        .map_err(backend("cannot read the bucket's rows"))?
    {
        let rowid: i64 = row
            .get(0)
            .map_err(backend("cannot read the bucket's rows"))?;
        let bad = |detail: String| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "{} table `{}` row {rowid}: {detail}",
                    path.display(),
                    source.table
                ),
            )
        };
        let not_utf8 =
            |column: &str| bad(format!("column `{column}` holds text that is not UTF-8"));
        let mut writer = batch.row();
        for (i, column) in schema.columns().iter().enumerate() {
            use rusqlite::types::ValueRef;
            let value = row
                .get_ref(i + 1)
                .map_err(backend("cannot read the bucket's rows"))?;
            writer = match (column.ty(), value) {
                (_, ValueRef::Null) => writer.null(),
                (ColumnType::Timestamp, ValueRef::Integer(v)) => writer.timestamp(v),
                (ColumnType::Integer, ValueRef::Integer(v)) => writer.integer(v),
                (ColumnType::Boolean, ValueRef::Integer(v)) => writer.boolean(v != 0),
                (ColumnType::Real, ValueRef::Real(v)) => writer.real(v),
                #[allow(clippy::cast_precision_loss)]
                (ColumnType::Real, ValueRef::Integer(v)) => writer.real(v as f64),
                (ColumnType::String, ValueRef::Text(t)) => {
                    writer.string(std::str::from_utf8(t).map_err(|_| not_utf8(column.name()))?)
                }
                (ColumnType::Dynamic, ValueRef::Text(t)) => {
                    writer.json_text(std::str::from_utf8(t).map_err(|_| not_utf8(column.name()))?)
                }
                (ty, other) => {
                    return Err(bad(format!(
                        "column `{}` holds a {:?} value where a {ty} is expected",
                        column.name(),
                        other.data_type()
                    )));
                }
            };
        }
        writer.finish().map_err(|e| bad(e.to_string()))?;
        last_row = rowid;
    }
    Ok(BucketChunk {
        rows: batch,
        last_row,
    })
}
