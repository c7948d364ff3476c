//! The sink: target schemas and tables, the ledger, one-statement commits, and reading
//! rows back.

use std::error::Error as StdError;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{BufMut as _, BytesMut};
use connector_core::{Batch, ColumnType, Schema, Value};
use connector_runner::protocol::{check_fencing, check_lease_time, quote_ident, to_i64};
use connector_runner::{
    CommitReport, Lease, Parts, RowQuery, RowsRead, Sink, StoreError, StoreErrorKind, TableStats,
    Target,
};
use postgres_types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::copy::{COPY_FROM_ROWS, chunk, write_samples_by_copy};
use crate::layout::{CHUNK_COLUMNS, Layout};
use crate::schema::ROW_POSITION;
use crate::{PgStore, backend, is_unique_violation};

fn pg_type(ty: ColumnType) -> (Type, &'static str, &'static str) {
    // (parameter type, DDL type, information_schema data_type)
    match ty {
        ColumnType::Timestamp => (Type::TIMESTAMPTZ, "timestamptz", "timestamp with time zone"),
        ColumnType::Real => (Type::FLOAT8, "double precision", "double precision"),
        ColumnType::Dynamic => (Type::JSONB, "jsonb", "jsonb"),
        ColumnType::Integer => (Type::INT8, "bigint", "bigint"),
        ColumnType::Boolean => (Type::BOOL, "boolean", "boolean"),
        _ => (Type::TEXT, "text", "text"),
    }
}

/// One value on its way into a commit's column array.
#[derive(Debug)]
pub(crate) enum Cell<'a> {
    Null,
    Time(SystemTime),
    Text(&'a str),
    Real(f64),
    Json(&'a str),
    Integer(i64),
    Boolean(bool),
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Time(t) => t.to_sql(ty, out),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::Real(v) => v.to_sql(ty, out),
            Cell::Integer(v) => v.to_sql(ty, out),
            Cell::Boolean(v) => v.to_sql(ty, out),
            Cell::Json(text) => {
                // jsonb's binary form is a version byte, then the JSON text.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::FLOAT8,
            Type::JSONB,
            Type::JSON,
            Type::INT8,
            Type::BOOL,
        ]
        .contains(ty)
    }

    postgres_types::to_sql_checked!();
}

pub(crate) fn cell(value: Value<'_>) -> Cell<'_> {
    match value {
        Value::Null => Cell::Null,
        Value::Timestamp(ms) => {
            let offset = Duration::from_millis(ms.unsigned_abs());
            Cell::Time(if ms >= 0 {
                UNIX_EPOCH + offset
            } else {
                UNIX_EPOCH - offset
            })
        }
        Value::String(s) => Cell::Text(s),
        Value::Real(v) => Cell::Real(v),
        Value::Dynamic(s) => Cell::Json(s),
        Value::Integer(v) => Cell::Integer(v),
        Value::Boolean(v) => Cell::Boolean(v),
    }
}

/// A table's `(name, data type)` columns in order; empty when it does not exist.
async fn table_columns(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .map_err(backend("cannot read the table's columns"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

impl PgStore {
    /// Creates the target table for rows of `schema` when it does not exist,
    /// checks its columns when it does, and tells how it is laid out.
    pub(crate) async fn ensure_table(
        &self,
        client: &mut Client,
        target: &Target,
        schema: &Arc<Schema>,
    ) -> Result<Layout, StoreError> {
        // Keyed by the schema too: another connector may write another shape to the
        // same table, and must be refused rather than trusted.
        let key = (
            target.database.clone(),
            target.table.clone(),
            Arc::clone(schema),
        );
        if let Some(layout) = self
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(*layout);
        }
        let columns: Vec<String> = schema
            .columns()
            .iter()
            .map(|c| format!("{} {}", quote_ident(c.name()), pg_type(c.ty()).1))
            .collect();
        let tx = client
            .transaction()
            .await
            .map_err(backend("cannot start a transaction"))?;
        // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: serialize.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&crate::schema::MIGRATION_LOCK],
        )
        .await
        .map_err(backend("cannot take the schema lock"))?;
        let existing = Layout::of(&tx, &target.database, &target.table).await?;
        let layout = existing.unwrap_or_else(|| Layout::for_schema(schema));
        // Row tables run their (idempotent) statements even when they exist, so a
        // table from before positions existed gains its column.
        if existing.is_none() || layout == Layout::Rows {
            tx.batch_execute(&layout.create_sql(
                &target.database,
                &target.table,
                &columns.join(", "),
            ))
            .await
            .map_err(backend("cannot create the target table"))?;
        }
        let mut existing = table_columns(&tx, &target.database, &target.table).await?;
        existing.retain(|(name, _)| name != ROW_POSITION);
        tx.commit()
            .await
            .map_err(backend("cannot commit the target table"))?;
        let wanted: Vec<(String, String)> = schema
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), pg_type(c.ty()).2.to_owned()))
            .collect();
        StoreError::check_columns(
            &format!("{}.{}", target.database, target.table),
            &existing,
            &wanted,
        )?;
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, layout);
        Ok(layout)
    }
}

#[async_trait]
impl Sink for PgStore {
    async fn commit(
        &self,
        target: &Target,
        lease: &Lease,
        batch: Batch,
    ) -> Result<CommitReport, StoreError> {
        let mut client = self.pool.get().await?;
        let layout = self
            .ensure_table(&mut client, target, batch.schema())
            .await?;
        let series = self.series_ids(&client, layout, target, &batch).await?;
        let first_row = reserve_positions(&client, batch.len()).await?;
        if let Some(series) = series.as_deref().filter(|s| s.len() >= COPY_FROM_ROWS) {
            return write_samples_by_copy(&mut client, target, lease, &batch, first_row, series)
                .await;
        }
        // One statement is one transaction, committed synchronously.
        write_bucket(
            &*client,
            target,
            lease,
            &batch,
            first_row,
            series.as_deref(),
        )
        .await
    }

    fn writes_parts(&self) -> bool {
        true
    }

    async fn commit_parts(
        &self,
        target: &Target,
        _lease: &Lease,
        parts: Parts,
    ) -> Result<CommitReport, StoreError> {
        self.commit_in_parts(target, parts).await
    }

    async fn prune(
        &self,
        target: &Target,
        before_ms: i64,
        max_buckets: usize,
        max_rows: u64,
    ) -> Result<connector_runner::PruneReport, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(backend("cannot start the prune"))?;
        // The ledger rows go first (locked by the delete); the rows follow by their
        // position ranges, so a bucket is never half pruned. The oldest bucket always
        // goes; the ones after it while the running row count stays within the budget.
        let buckets = tx
            .query(
                "DELETE FROM connectord.ledger WHERE (connector_id, scheduled_for_ms) IN ( \
                   SELECT connector_id, scheduled_for_ms FROM ( \
                     SELECT connector_id, scheduled_for_ms, rows, \
                       (sum(rows) OVER (ORDER BY scheduled_for_ms))::bigint AS running \
                     FROM connectord.ledger \
                     WHERE connector_id = $1 AND scheduled_for_ms < $2 AND target_database = $3 \
                     AND target_table = $4 AND first_row IS NOT NULL \
                     ORDER BY scheduled_for_ms LIMIT $5) oldest \
                   WHERE running - rows = 0 OR running <= $6) \
                 RETURNING first_row, last_row",
                &[
                    &target.connector_id,
                    &before_ms,
                    &target.database,
                    &target.table,
                    &to_i64(max_buckets as u64),
                    &to_i64(max_rows),
                ],
            )
            .await
            .map_err(backend("cannot prune ledger rows"))?;
        let mut report = connector_runner::PruneReport::default();
        let layout = Layout::of(&tx, &target.database, &target.table)
            .await?
            .unwrap_or(Layout::Rows);
        let delete = layout.delete_between_sql(&target.database, &target.table);
        for bucket in &buckets {
            let (first, last): (i64, i64) = (bucket.get(0), bucket.get(1));
            let deleted: i64 = tx
                .query_one(&delete, &[&first, &last])
                .await
                .map_err(backend("cannot prune rows"))?
                .get(0);
            report.rows += u64::try_from(deleted).unwrap_or(0);
            report.buckets += 1;
        }
        tx.commit()
            .await
            .map_err(backend("cannot commit the prune"))?;
        Ok(report)
    }

    async fn table_stats(&self, database: &str, table: &str) -> Result<TableStats, StoreError> {
        let client = self.pool.get().await?;
        let layout = Layout::of(&*client, database, table)
            .await?
            .ok_or_else(|| {
                StoreError::new(
                    StoreErrorKind::NotFound,
                    format!("table `{database}.{table}` does not exist"),
                )
            })?;
        let count = |sql: String| {
            let client = &client;
            async move {
                client
                    .query_one(&sql, &[])
                    .await
                    .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
                    .map_err(backend("cannot count the table's rows"))
            }
        };
        let rows = count(layout.count_sql(database, table)).await?;
        let series = match layout {
            Layout::Rows => None,
            Layout::Metric => Some(
                count(format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(database),
                    quote_ident(&crate::layout::series_table(table))
                ))
                .await?,
            ),
        };
        Ok(TableStats { rows, series })
    }

    async fn read_rows(&self, query: &RowQuery) -> Result<RowsRead, StoreError> {
        let client = self.pool.get().await?;
        let mut columns = table_columns(&*client, &query.database, &query.table).await?;
        columns.retain(|(name, _)| name != ROW_POSITION);
        if columns.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                format!(
                    "table `{}.{}` does not exist yet: has a tick committed?",
                    query.database, query.table
                ),
            ));
        }
        let has_timestamp = columns.iter().any(|(c, _)| c == "timestamp");
        if query.since_ms.is_some() && !has_timestamp {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "table `{}.{}` has no `timestamp` column to filter on",
                    query.database, query.table
                ),
            ));
        }
        // Timestamps leave as Unix ms, like SQLite's; everything else as its JSON form.
        let select: Vec<String> = columns
            .iter()
            .map(|(name, ty)| {
                let q = quote_ident(name);
                if ty.starts_with("timestamp") {
                    format!("(extract(epoch FROM {q}) * 1000)::bigint AS {q}")
                } else {
                    q
                }
            })
            .collect();
        let table = format!(
            "{}.{}",
            quote_ident(&query.database),
            quote_ident(&query.table)
        );
        // Positions break ties: rows of one bucket come newest first, as in SQLite.
        let (filter, order) = if has_timestamp {
            (
                "WHERE $2::bigint IS NULL OR \"timestamp\" >= to_timestamp($2::bigint / 1000.0)",
                "ORDER BY \"timestamp\" DESC, _connectord_row DESC",
            )
        } else {
            ("WHERE $2::bigint IS NULL", "")
        };
        let sql = format!(
            "SELECT to_jsonb(x)::text FROM (SELECT {}, {ROW_POSITION} FROM {table} {filter} {order} LIMIT $1) x {}",
            select.join(", "),
            if has_timestamp {
                "ORDER BY x.\"timestamp\" DESC, x._connectord_row DESC"
            } else {
                ""
            }
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&sql, &[&limit, &query.since_ms])
            .await
            .map_err(backend("cannot read the table"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let text: String = row.get(0);
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| {
                    StoreError::backend("PostgreSQL returned a row that is not JSON", e)
                })?;
            out.push(
                columns
                    .iter()
                    .map(|(name, _)| object.remove(name).unwrap_or(serde_json::Value::Null))
                    .collect(),
            );
        }
        Ok(RowsRead {
            columns: columns.into_iter().map(|(name, _)| name).collect(),
            rows: out,
        })
    }
}

/// Reserves `rows` row positions in a statement of its own
/// (`connectord.reserve_rows`): its row lock ends with it, so commits never wait on
/// each other's flush. A failed commit leaves a gap, which costs nothing.
pub(crate) async fn reserve_positions(client: &Client, rows: usize) -> Result<i64, StoreError> {
    let rows = to_i64(rows as u64);
    Ok(client
        .query_typed_one("SELECT connectord.reserve_rows($1)", &[(&rows, Type::INT8)])
        .await
        .map_err(backend("cannot reserve row positions"))?
        .get(0))
}

/// Writes the ledger row of (connector, bucket) and the bucket's rows from position
/// `first_row` on in one statement, refusing a bucket committed before, a fenced
/// lease, or one whose (margin-reduced) end has come on the database's clock. Outside
/// a transaction the statement is its own: the commit is one round trip.
///
/// The rows travel as one array per column and go in through `unnest`, so the
/// statement needs no prepare round trip, whatever the batch's size.
///
/// `series` holds each row's series id when the table has the metric layout: the
/// batch, under [`COPY_FROM_ROWS`] rows, then goes in as one chunk.
pub(crate) async fn write_bucket(
    client: &impl GenericClient,
    target: &Target,
    lease: &Lease,
    batch: &Batch,
    first_row: i64,
    series: Option<&[i64]>,
) -> Result<CommitReport, StoreError> {
    /// Parameters before the column arrays.
    const FIXED: usize = 8;
    let rows = to_i64(batch.len() as u64);
    let columns = match series {
        Some(series) => chunk_columns(batch, series),
        None => row_columns(batch),
    };
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + FIXED + 1, c.sql_type))
        .collect();
    let written = match series {
        Some(_) => format!(
            "INSERT INTO {} ({CHUNK_COLUMNS}) \
             SELECT $7, $7 + $6 - 1, {} WHERE $6 > 0 AND EXISTS (SELECT 1 FROM ledger)",
            Layout::Metric.positions_table(&target.database, &target.table),
            arrays.join(", ")
        ),
        None => {
            let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name)).collect();
            let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
            format!(
                "INSERT INTO {}.{} ({names}, {ROW_POSITION}) \
                 SELECT {aliases}, $7 + n - 1 FROM unnest({arrays}) WITH ORDINALITY AS u({aliases}, n) \
                 WHERE EXISTS (SELECT 1 FROM ledger)",
                quote_ident(&target.database),
                quote_ident(&target.table),
                names = names.join(", "),
                aliases = aliases.join(", "),
                arrays = arrays.join(", "),
            )
        }
    };
    let sql = format!(
        "WITH ledger AS ({LEDGER_INSERT}), written AS ({written}) SELECT count(*) FROM ledger"
    );
    let mut params = ledger_params(target, lease, &rows, &first_row);
    params.extend(
        columns
            .iter()
            .map(|c| (&c.cells as &(dyn ToSql + Sync), c.array_type.clone())),
    );
    let written = client
        .query_typed_one(&sql, &params)
        .await
        .map_err(ledger_failure(lease, "cannot write the bucket"))?
        .get::<_, i64>(0);
    if written == 0 {
        return Err(refusal(client, lease).await);
    }
    Ok(CommitReport {
        rows: batch.len() as u64,
        bytes: batch.payload_bytes() as u64,
    })
}

/// The bucket's ledger row, inserted only from the lease row with the caller's token
/// whose (margin-reduced) end is still ahead on the database's clock; `RETURNING 1`
/// says it went in. Parameters: [`ledger_params`]. Every commit path writes its
/// ledger row with this statement.
const LEDGER_INSERT: &str = "INSERT INTO connectord.ledger (connector_id, scheduled_for_ms, target_database, target_table, \
       token, rows, first_row, last_row) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $7 + $6 - 1 FROM connectord.leases \
     WHERE connector_id = $1 AND scheduled_for_ms = $2 AND token = $5 \
       AND (extract(epoch FROM now()) * 1000)::bigint < $8 \
     RETURNING 1";

/// The error of a statement that inserts the ledger row: its primary key refuses a
/// bucket committed before.
fn ledger_failure<'a>(
    lease: &'a Lease,
    what: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError + 'a {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::already_committed(lease)
        } else {
            StoreError::backend(what, e)
        }
    }
}

/// The parameters `$1` to `$8` of [`LEDGER_INSERT`].
fn ledger_params<'a>(
    target: &'a Target,
    lease: &'a Lease,
    rows: &'a i64,
    first_row: &'a i64,
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    vec![
        (&target.connector_id, Type::TEXT),
        (&lease.scheduled_for_ms, Type::INT8),
        (&target.database, Type::TEXT),
        (&target.table, Type::TEXT),
        (&lease.token, Type::INT8),
        (rows, Type::INT8),
        (first_row, Type::INT8),
        (&lease.expires_at_ms, Type::INT8),
    ]
}

/// Writes the ledger row of (connector, bucket) in `tx`, naming why when it is
/// refused: the bucket committed before, a fenced lease or one whose end has come.
/// The caller then drops `tx`, which rolls everything back.
pub(crate) async fn write_ledger(
    tx: &Transaction<'_>,
    target: &Target,
    lease: &Lease,
    rows: i64,
    first_row: i64,
) -> Result<(), StoreError> {
    let ledger = tx
        .query_typed(
            LEDGER_INSERT,
            &ledger_params(target, lease, &rows, &first_row),
        )
        .await
        .map_err(ledger_failure(lease, "cannot write the ledger row"))?;
    if ledger.is_empty() {
        return Err(refusal(tx, lease).await);
    }
    Ok(())
}

/// Why the lease could not commit: its token is no longer the bucket's, or its end
/// has come. Read after the refusal, on the failure path only.
async fn refusal(client: &impl GenericClient, lease: &Lease) -> StoreError {
    let read = client
        .query_typed_one(
            "SELECT (SELECT token FROM connectord.leases WHERE connector_id = $1 AND scheduled_for_ms = $2), \
             (extract(epoch FROM now()) * 1000)::bigint",
            &[
                (&lease.connector_id, Type::TEXT),
                (&lease.scheduled_for_ms, Type::INT8),
            ],
        )
        .await;
    let (current, now_ms) = match read {
        Ok(row) => (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1)),
        Err(e) => return StoreError::backend("cannot read the fencing token", e),
    };
    check_fencing(lease, current)
        .and_then(|()| check_lease_time(lease, now_ms))
        .err()
        // Both held again by the time they were read: the lease was renewed meanwhile.
        .unwrap_or_else(|| {
            StoreError::new(
                StoreErrorKind::Fenced,
                format!(
                    "the lease on bucket {} had run out when the commit began; nothing committed",
                    lease.scheduled_for_ms
                ),
            )
        })
}

/// One column of a commit: its values as an array parameter.
struct Column<'a> {
    name: &'a str,
    sql_type: &'static str,
    array_type: Type,
    cells: Vec<Cell<'a>>,
}

/// A metric batch as one chunk's columns: timestamps, series ids and values.
fn chunk_columns<'a>(batch: &'a Batch, series: &'a [i64]) -> Vec<Column<'a>> {
    let chunk = chunk(batch, series, 0..batch.len());
    vec![
        Column {
            name: "timestamp",
            sql_type: "timestamptz",
            array_type: Type::TIMESTAMPTZ_ARRAY,
            cells: chunk.timestamps,
        },
        Column {
            name: "series",
            sql_type: "bigint",
            array_type: Type::INT8_ARRAY,
            cells: chunk.series.iter().map(|id| Cell::Integer(*id)).collect(),
        },
        Column {
            name: "value",
            sql_type: "double precision",
            array_type: Type::FLOAT8_ARRAY,
            cells: chunk.values,
        },
    ]
}

/// A batch's columns as its schema declares them.
fn row_columns(batch: &Batch) -> Vec<Column<'_>> {
    batch
        .schema()
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let (_, sql_type, _) = pg_type(column.ty());
            Column {
                name: column.name(),
                sql_type,
                array_type: array_type(column.ty()),
                cells: batch.rows().map(|row| cell(row.at(i))).collect(),
            }
        })
        .collect()
}

fn array_type(ty: ColumnType) -> Type {
    match pg_type(ty).0 {
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::JSONB => Type::JSONB_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::BOOL => Type::BOOL_ARRAY,
        _ => Type::TEXT_ARRAY,
    }
}

impl PgStore {
    /// Each row's series id when `layout` is the metric one.
    pub(crate) async fn series_ids(
        &self,
        client: &Client,
        layout: Layout,
        target: &Target,
        batch: &Batch,
    ) -> Result<Option<Vec<i64>>, StoreError> {
        match layout {
            Layout::Rows => Ok(None),
            Layout::Metric => self.series.resolve(client, target, batch).await.map(Some),
        }
    }
}
