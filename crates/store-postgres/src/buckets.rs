//! Reading committed buckets back for destinations: the next one a destination has
//! not delivered, and its rows by position range, in chunks.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use connector_core::{Batch, ColumnType, Schema};
use connector_runner::protocol::quote_ident;
use connector_runner::{BucketChunk, PendingBucket, StoreError, StoreErrorKind, Target};
use tokio_postgres::Client;

use crate::backend;
use crate::layout::Layout;
use crate::schema::ROW_POSITION;

pub(crate) async fn next_bucket(
    client: &Client,
    destination_id: &str,
    source: &Target,
    from_ms: i64,
) -> Result<Option<PendingBucket>, StoreError> {
    let row = client
        .query_opt(
            "SELECT l.scheduled_for_ms, l.rows, l.first_row, l.last_row FROM connectord.ledger l \
             WHERE l.connector_id = $1 AND l.target_database = $2 AND l.target_table = $3 \
             AND l.scheduled_for_ms >= $4 AND l.first_row IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM connectord.delivered d \
                 WHERE d.destination_id = $5 AND d.scheduled_for_ms = l.scheduled_for_ms) \
             ORDER BY l.scheduled_for_ms LIMIT 1",
            &[
                &source.connector_id,
                &source.database,
                &source.table,
                &from_ms,
                &destination_id,
            ],
        )
        .await
        .map_err(backend("cannot find the next undelivered bucket"))?;
    Ok(row.map(|r| PendingBucket {
        scheduled_for_ms: r.get(0),
        rows: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
        first_row: r.get(2),
        last_row: r.get(3),
    }))
}

fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) async fn read_bucket(
    client: &Client,
    source: &Target,
    schema: &Arc<Schema>,
    bucket: &PendingBucket,
    after_row: i64,
    limit: usize,
) -> Result<BucketChunk, StoreError> {
    // JSON leaves as text, so the batch takes it as stored, without a parse tree.
    let columns: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| {
            let q = quote_ident(c.name());
            if c.ty() == ColumnType::Dynamic {
                format!("{q}::text")
            } else {
                q
            }
        })
        .collect();
    let layout = Layout::of(client, &source.database, &source.table)
        .await?
        .ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::NotFound,
                format!(
                    "table `{}.{}` of a committed bucket does not exist; was it dropped?",
                    source.database, source.table
                ),
            )
        })?;
    let sql = format!(
        "SELECT {ROW_POSITION}, {} FROM {} WHERE {ROW_POSITION} > $1 AND {ROW_POSITION} <= $2 \
         ORDER BY {ROW_POSITION} LIMIT $3",
        columns.join(", "),
        layout.rows_between(&source.database, &source.table)
    );
    let rows = client
        .query(
            &sql,
            &[
                &after_row,
                &bucket.last_row,
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(backend("cannot read the bucket's rows"))?;
    let mut batch = Batch::with_capacity(Arc::clone(schema), rows.len());
    let mut last_row = after_row;
    for row in &rows {
        let position: i64 = row.get(0);
        let bad = |detail: String| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "table `{}.{}` row at position {position}: {detail}",
                    source.database, source.table
                ),
            )
        };
        let mut writer = batch.row();
        for (i, column) in schema.columns().iter().enumerate() {
            let at = i + 1;
            let read = |e: tokio_postgres::Error| {
                bad(format!("column `{}` cannot be read: {e}", column.name()))
            };
            writer = match column.ty() {
                ColumnType::Timestamp => {
                    match row.try_get::<_, Option<SystemTime>>(at).map_err(read)? {
                        Some(t) => writer.timestamp(unix_ms(t)),
                        None => writer.null(),
                    }
                }
                ColumnType::Real => match row.try_get::<_, Option<f64>>(at).map_err(read)? {
                    Some(v) => writer.real(v),
                    None => writer.null(),
                },
                ColumnType::Integer => match row.try_get::<_, Option<i64>>(at).map_err(read)? {
                    Some(v) => writer.integer(v),
                    None => writer.null(),
                },
                ColumnType::Boolean => match row.try_get::<_, Option<bool>>(at).map_err(read)? {
                    Some(v) => writer.boolean(v),
                    None => writer.null(),
                },
                ColumnType::Dynamic => match row.try_get::<_, Option<&str>>(at).map_err(read)? {
                    Some(v) => writer.json_text(v),
                    None => writer.null(),
                },
                _ => match row.try_get::<_, Option<&str>>(at).map_err(read)? {
                    Some(v) => writer.string(v),
                    None => writer.null(),
                },
            };
        }
        writer.finish().map_err(|e| bad(e.to_string()))?;
        last_row = position;
    }
    Ok(BucketChunk {
        rows: batch,
        last_row,
    })
}
