//! The sink: target files, their tables and ledger, commits, and reading rows back.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use connector_core::{Batch, ColumnType, Schema, Value};
use connector_runner::protocol::{
    check_fencing, check_lease_time, quote_ident, to_i64, wall_clock_ms,
};
use connector_runner::{
    CommitReport, Lease, RowQuery, RowsRead, Sink, StoreError, StoreErrorKind, TableStats, Target,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::layout::Layout;
use crate::series::SeriesCache;
use crate::{STATE_FILE, SqliteStore, backend, lock, query_row_cached};

pub(crate) struct TargetDb {
    pub(crate) conn: Connection,
    /// Tables whose columns were checked against a row schema on this connection,
    /// with their layout. Keyed by the schema too: another connector may write
    /// another shape to the same table, and must be refused rather than trusted.
    checked: HashMap<(String, Arc<Schema>), Layout>,
    /// Series ids of the metric tables written through this connection.
    pub(crate) series: SeriesCache,
    /// Wakes the checkpointer after a commit; dropping it stops the checkpointer.
    pub(crate) checkpoint: SyncSender<()>,
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp | ColumnType::Integer | ColumnType::Boolean => "INTEGER",
        ColumnType::Real => "REAL",
        _ => "TEXT",
    }
}

impl SqliteStore {
    /// The open target file of `database`, opened (and its ledger created) on first
    /// use. Blocking: runs on the blocking pool.
    pub(crate) fn target(&self, database: &str) -> Result<Arc<Mutex<TargetDb>>, StoreError> {
        let mut targets = lock(&self.targets);
        if let Some(db) = targets.get(database) {
            return Ok(Arc::clone(db));
        }
        let path = self.database_path(database);
        let conn = crate::open_connection(&path)?;
        // A new file hands pages freed by retention back to the file system in small
        // steps (`prune`); an older file reuses them for its next commits.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(backend("cannot set incremental auto-vacuum"))?;
        crate::schema::ensure_ledger(&conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend("cannot hand checkpoints to the checkpointer"))?;
        let checkpoint = crate::checkpoint::spawn(path)?;
        let state_path = self.data_dir.join(STATE_FILE);
        conn.execute(
            "ATTACH DATABASE ?1 AS state",
            [state_path.to_string_lossy()],
        )
        .map_err(backend("cannot attach the state database"))?;
        let db = Arc::new(Mutex::new(TargetDb {
            conn,
            checked: HashMap::new(),
            series: SeriesCache::default(),
            checkpoint,
        }));
        targets.insert(database.to_owned(), Arc::clone(&db));
        Ok(db)
    }
}

/// The row columns of `table`: a metric view's stand-in rowid is not one.
fn table_columns(
    conn: &Connection,
    table: &str,
    layout: Layout,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT name, type FROM pragma_table_info(?1)")
        .map_err(backend("cannot read the table's columns"))?;
    let mut columns: Vec<(String, String)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(Iterator::collect)
        .map_err(backend("cannot read the table's columns"))?;
    if layout == Layout::Metric {
        columns.retain(|(name, _)| name != Layout::VIEW_ROWID);
    }
    Ok(columns)
}

/// Creates `table` for rows of `schema` when it does not exist, checks its columns
/// when it does, and tells how it is laid out.
pub(crate) fn ensure_table(
    db: &mut TargetDb,
    table: &str,
    schema: &Arc<Schema>,
) -> Result<Layout, StoreError> {
    let key = (table.to_owned(), Arc::clone(schema));
    if let Some(layout) = db.checked.get(&key) {
        return Ok(*layout);
    }
    let layout = match Layout::of(&db.conn, table)? {
        Some(layout) => layout,
        None => {
            let columns: Vec<String> = schema
                .columns()
                .iter()
                .map(|c| format!("{} {}", quote_ident(c.name()), sql_type(c.ty())))
                .collect();
            let layout = Layout::for_schema(schema);
            layout.create(&db.conn, table, &columns.join(", "))?;
            layout
        }
    };
    let existing = table_columns(&db.conn, table, layout)?;
    let wanted: Vec<(String, String)> = schema
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), sql_type(c.ty()).to_owned()))
        .collect();
    StoreError::check_columns(table, &existing, &wanted)?;
    db.checked.insert(key, layout);
    Ok(layout)
}

/// Rows per INSERT statement: one statement per row spends most of its time in the
/// statement machinery rather than the b-tree, so rows go in multi-row VALUES lists.
const ROWS_PER_INSERT: usize = 64;

fn insert_statement(table: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    format!(
        "INSERT INTO {} VALUES {}",
        quote_ident(table),
        vec![row; rows].join(",")
    )
}

fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    batch: &Batch,
) -> Result<(), StoreError> {
    let columns = batch.schema().len();
    let mut rows = batch.rows();
    while rows.len() > 0 {
        let chunk = rows.len().min(ROWS_PER_INSERT);
        // Cached: the full-size statement is prepared once per connection and table.
        let mut statement = tx
            .prepare_cached(&insert_statement(table, columns, chunk))
            .map_err(backend("cannot prepare the row insert"))?;
        let mut index = 1;
        for row in rows.by_ref().take(chunk) {
            for column in 0..columns {
                match row.at(column) {
                    Value::Null => statement.raw_bind_parameter(index, rusqlite::types::Null),
                    Value::Timestamp(ms) => statement.raw_bind_parameter(index, ms),
                    Value::Real(v) => statement.raw_bind_parameter(index, v),
                    Value::Integer(v) => statement.raw_bind_parameter(index, v),
                    Value::Boolean(v) => statement.raw_bind_parameter(index, v),
                    Value::String(s) | Value::Dynamic(s) => statement.raw_bind_parameter(index, s),
                }
                .map_err(backend("cannot bind a row value"))?;
                index += 1;
            }
        }
        statement
            .raw_execute()
            .map_err(backend("cannot insert rows"))?;
    }
    Ok(())
}

/// Runs `write` in one transaction on the target file and commits it when `write`
/// succeeds. A failure forgets `table`'s series ids: series added in the
/// transaction were rolled back, and SQLite may hand their ids out again.
pub(crate) fn in_transaction(
    db: &mut TargetDb,
    table: &str,
    write: impl FnOnce(&rusqlite::Transaction<'_>, &mut SeriesCache) -> Result<CommitReport, StoreError>,
) -> Result<CommitReport, StoreError> {
    let written = (|| {
        let tx = db
            .conn
            .transaction()
            .map_err(backend("cannot start a transaction"))?;
        let report = write(&tx, &mut db.series)?;
        tx.commit().map_err(backend("cannot commit the rows"))?;
        Ok(report)
    })();
    if written.is_err() {
        db.series.forget(table);
    }
    written
}

impl SqliteStore {
    /// Runs `write` on the blocking pool with `database`'s target file locked, then
    /// wakes the file's checkpointer; a full disk is named as such.
    pub(crate) async fn write_target(
        &self,
        database: &str,
        write: impl FnOnce(&mut TargetDb) -> Result<CommitReport, StoreError> + Send + 'static,
    ) -> Result<CommitReport, StoreError> {
        let store = self.clone();
        let database = database.to_owned();
        tokio::task::spawn_blocking(move || {
            let db = store.target(&database)?;
            let mut db = lock(&db);
            let report = write(&mut db).map_err(|e| store.name_full(e))?;
            // Full means a checkpoint is already pending.
            let _ = db.checkpoint.try_send(());
            Ok(report)
        })
        .await
        .map_err(|e| StoreError::backend("sink task failed", e))?
    }
}

/// Writes the ledger row of (connector, bucket) and the bucket's rows, inside the
/// caller's transaction, refusing a bucket committed before or a fenced lease.
pub(crate) fn write_bucket(
    tx: &rusqlite::Transaction<'_>,
    series: &mut SeriesCache,
    layout: Layout,
    target: &Target,
    lease: &Lease,
    batch: &Batch,
) -> Result<CommitReport, StoreError> {
    let rows = to_i64(batch.len() as u64);
    let first_row = begin_bucket(tx, layout, target, lease, rows)?;
    check_lease_time(lease, wall_clock_ms())?;
    write_rows(tx, series, layout, &target.table, batch)?;
    check_consecutive(tx, &target.table, first_row, rows)?;
    Ok(CommitReport {
        rows: batch.len() as u64,
        bytes: batch.payload_bytes() as u64,
    })
}

/// Inserts the ledger row of the bucket, for `rows` rows, and checks the lease's
/// token: the first write of a commit. Returns the rowid the bucket's first row gets.
/// The caller checks the lease's end against the freshest lease it has.
pub(crate) fn begin_bucket(
    tx: &rusqlite::Transaction<'_>,
    layout: Layout,
    target: &Target,
    lease: &Lease,
    rows: i64,
) -> Result<i64, StoreError> {
    // The ledger row first: it takes this file's write lock, and a second commit of the
    // bucket stops here on the primary key. Under that lock nobody else inserts into
    // the table, so the rows get the rowids after the current largest, in order.
    let inserted = query_row_cached(
        tx,
        &format!(
            "INSERT INTO _connectord_ledger (connector_id, scheduled_for_ms, target_table, token, rows, committed_at_ms, first_row, last_row) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, m + 1, m + ?5 FROM (SELECT coalesce(max(rowid), 0) AS m FROM {}) RETURNING first_row",
            layout.positions_table(&target.table)
        ),
        params![
            target.connector_id,
            lease.scheduled_for_ms,
            target.table,
            lease.token,
            rows,
            wall_clock_ms()
        ],
        |r| r.get::<_, i64>(0),
    );
    let first_row = match inserted {
        Ok(first) => first,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(StoreError::already_committed(lease));
        }
        Err(e) => return Err(StoreError::backend("cannot write the ledger row", e)),
    };
    check_token(tx, target, lease)?;
    Ok(first_row)
}

/// The fencing check against the attached state file: a runner whose lease was taken
/// over stops here.
fn check_token(
    tx: &rusqlite::Transaction<'_>,
    target: &Target,
    lease: &Lease,
) -> Result<(), StoreError> {
    let current: Option<i64> = query_row_cached(
        tx,
        "SELECT token FROM state.leases WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
        params![target.connector_id, lease.scheduled_for_ms],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend("cannot read the fencing token"))?;
    check_fencing(lease, current)
}

/// Inserts a batch's rows into `table` as its layout keeps them.
pub(crate) fn write_rows(
    tx: &rusqlite::Transaction<'_>,
    series: &mut SeriesCache,
    layout: Layout,
    table: &str,
    batch: &Batch,
) -> Result<(), StoreError> {
    match layout {
        Layout::Rows => insert_rows(tx, table, batch),
        Layout::Metric => crate::series::insert_samples(tx, series, table, batch),
    }
}

/// Checks that the bucket's `rows` rows got the rowids from `first_row` on, as the
/// ledger row says and destinations read them back.
pub(crate) fn check_consecutive(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    first_row: i64,
    rows: i64,
) -> Result<(), StoreError> {
    if rows > 0 && tx.last_insert_rowid() != first_row + rows - 1 {
        // Only a table whose rowids reached 2^63 makes SQLite pick them at random.
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "table `{table}`: the rows did not get consecutive rowids, so destinations could not read the bucket back"
            ),
        ));
    }
    Ok(())
}

/// One stored value as JSON, typed by the connector's schema where SQLite's own
/// types are coarser (JSON is TEXT, booleans are INTEGER).
fn json_value(
    value: rusqlite::types::ValueRef<'_>,
    declared: Option<ColumnType>,
    column: &str,
    rowid: i64,
) -> Result<serde_json::Value, StoreError> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) if declared == Some(ColumnType::Boolean) => (i != 0).into(),
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => {
            serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        }
        ValueRef::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            if declared == Some(ColumnType::Dynamic) {
                serde_json::from_str(&text).map_err(|e| {
                    StoreError::new(
                        StoreErrorKind::Invalid,
                        format!("row {rowid}: column `{column}` holds text that is not JSON"),
                    )
                    .with_cause(e)
                })?
            } else {
                text.into_owned().into()
            }
        }
        ValueRef::Blob(_) => {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "row {rowid}: column `{column}` holds a blob, which connectord never writes"
                ),
            ));
        }
    })
}

fn read_rows(path: &std::path::Path, query: &RowQuery) -> Result<RowsRead, StoreError> {
    let not_found = || {
        StoreError::new(
            StoreErrorKind::NotFound,
            format!(
                "table `{}` in {} does not exist yet: has a tick committed?",
                query.table,
                path.display()
            ),
        )
    };
    if !path.exists() {
        return Err(not_found());
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::backend(format!("cannot open {}", path.display()), e))?;
    let layout = Layout::of(&conn, &query.table)?.ok_or_else(not_found)?;
    let columns: Vec<String> = table_columns(&conn, &query.table, layout)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if columns.is_empty() {
        return Err(not_found());
    }
    let declared: Vec<Option<ColumnType>> = columns
        .iter()
        .map(|c| declared_type(query.schema.as_deref(), c))
        .collect();
    let has_timestamp = columns.iter().any(|c| c == "timestamp");
    let filter = match (query.since_ms, has_timestamp) {
        (None, _) => "",
        (Some(_), true) => &format!("WHERE {} >= ?2", layout.column("timestamp")),
        (Some(_), false) => {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "table `{}` has no `timestamp` column to filter on",
                    query.table
                ),
            ));
        }
    };
    let order = if has_timestamp {
        format!("{} DESC, p.rowid DESC", layout.column("timestamp"))
    } else {
        "p.rowid DESC".to_owned()
    };
    let selected: Vec<String> = columns.iter().map(|c| layout.column(c)).collect();
    let sql = format!(
        "SELECT p.rowid, {} FROM {} {filter} ORDER BY {order} LIMIT ?1",
        selected.join(", "),
        layout.rows_from(&query.table)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(backend("cannot read the table"))?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut rows = match query.since_ms {
        Some(since) => stmt.query(params![limit, since]),
        None => stmt.query(params![limit]),
    }
    .map_err(backend("cannot read the table"))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend("cannot read the table"))? {
        let rowid: i64 = row.get(0).map_err(backend("cannot read the table"))?;
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let value = row
                .get_ref(i + 1)
                .map_err(backend("cannot read the table"))?;
            values.push(json_value(value, declared[i], column, rowid)?);
        }
        out.push(values);
    }
    Ok(RowsRead { columns, rows: out })
}

fn table_stats(path: &std::path::Path, table: &str) -> Result<TableStats, StoreError> {
    let not_found = || {
        StoreError::new(
            StoreErrorKind::NotFound,
            format!("table `{table}` in {} does not exist", path.display()),
        )
    };
    if !path.exists() {
        return Err(not_found());
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::backend(format!("cannot open {}", path.display()), e))?;
    let layout = Layout::of(&conn, table)?.ok_or_else(not_found)?;
    let count = |sql: String| -> Result<u64, StoreError> {
        conn.query_row(&sql, [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(backend("cannot count the table's rows"))
    };
    let rows = count(format!(
        "SELECT count(*) FROM {}",
        layout.positions_table(table)
    ))?;
    let series = match layout {
        Layout::Rows => None,
        Layout::Metric => Some(count(format!(
            "SELECT count(*) FROM {}",
            quote_ident(&crate::layout::series_table(table))
        ))?),
    };
    Ok(TableStats { rows, series })
}

fn declared_type(schema: Option<&Schema>, column: &str) -> Option<ColumnType> {
    let schema = schema?;
    schema.index_of(column).map(|i| schema.columns()[i].ty())
}

#[async_trait]
impl Sink for SqliteStore {
    async fn commit(
        &self,
        target: &Target,
        lease: &Lease,
        batch: Batch,
    ) -> Result<CommitReport, StoreError> {
        let (target, lease) = (target.clone(), lease.clone());
        self.write_target(&target.database.clone(), move |db| {
            let layout = ensure_table(db, &target.table, batch.schema())?;
            in_transaction(db, &target.table, |tx, series| {
                write_bucket(tx, series, layout, &target, &lease, &batch)
            })
        })
        .await
    }

    fn writes_parts(&self) -> bool {
        true
    }

    async fn commit_parts(
        &self,
        target: &Target,
        lease: &Lease,
        parts: connector_runner::Parts,
    ) -> Result<CommitReport, StoreError> {
        self.commit_in_parts(target, lease, parts).await
    }

    async fn prune(
        &self,
        target: &Target,
        before_ms: i64,
        max_buckets: usize,
        max_rows: u64,
    ) -> Result<connector_runner::PruneReport, StoreError> {
        let store = self.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let db = store.target(&target.database)?;
            let mut db = lock(&db);
            crate::prune::prune(&mut db, &target, before_ms, max_buckets, max_rows)
        })
        .await
        .map_err(|e| StoreError::backend("prune task failed", e))?
    }

    async fn read_rows(&self, query: &RowQuery) -> Result<RowsRead, StoreError> {
        let path = self.database_path(&query.database);
        let query = query.clone();
        tokio::task::spawn_blocking(move || read_rows(&path, &query))
            .await
            .map_err(|e| StoreError::backend("read task failed", e))?
    }

    async fn table_stats(&self, database: &str, table: &str) -> Result<TableStats, StoreError> {
        let path = self.database_path(database);
        let table = table.to_owned();
        tokio::task::spawn_blocking(move || table_stats(&path, &table))
            .await
            .map_err(|e| StoreError::backend("read task failed", e))?
    }
}
