//! Large metric batches: the ledger row and the samples in one transaction, the
//! samples through `COPY ... FROM STDIN BINARY`.
//!
//! The one-statement commit (`sink::write_bucket`) sends the rows as arrays and
//! inserts them from `unnest`, one heap insert at a time; COPY inserts them in
//! groups (`heap_multi_insert`) and skips the arrays. It costs round trips of its
//! own (begin, ledger row, COPY, commit), so it is only for batches of at least
//! [`COPY_FROM_ROWS`] rows, where they are a small part of the work; the ticks that
//! the scheduling bench counts round trips for keep the one statement.

use connector_core::Batch;
use connector_runner::protocol::to_i64;
use connector_runner::{CommitReport, Lease, StoreError, Target};
use postgres_types::Type;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;

use crate::backend;
use crate::layout::Layout;
use crate::schema::ROW_POSITION;
use crate::sink::{Cell, LEDGER_INSERT, cell, ledger_failure, ledger_params, refusal};

/// Metric batches with at least this many rows go in through COPY.
pub(crate) const COPY_FROM_ROWS: usize = 1_000;

/// Writes the ledger row of (connector, bucket), refusing a bucket committed before,
/// a fenced lease or one whose end has come, then the batch's samples from position
/// `first_row` on, and commits (synchronously, as every commit). Nothing of a
/// refused or failed commit remains: the transaction rolls back.
pub(crate) async fn write_samples_by_copy(
    client: &mut Client,
    target: &Target,
    lease: &Lease,
    batch: &Batch,
    first_row: i64,
    series: &[i64],
) -> Result<CommitReport, StoreError> {
    let rows = to_i64(batch.len() as u64);
    let tx = client
        .transaction()
        .await
        .map_err(backend("cannot begin the commit's transaction"))?;
    let ledger = tx
        .query_typed(
            LEDGER_INSERT,
            &ledger_params(target, lease, &rows, &first_row),
        )
        .await
        .map_err(ledger_failure(lease, "cannot write the ledger row"))?;
    if ledger.is_empty() {
        tx.rollback()
            .await
            .map_err(backend("cannot roll back a refused commit"))?;
        return Err(refusal(&*client, lease).await);
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {} (\"timestamp\", series, value, {ROW_POSITION}) FROM STDIN BINARY",
            Layout::Metric.positions_table(&target.database, &target.table)
        ))
        .await
        .map_err(backend("cannot start copying the samples"))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TIMESTAMPTZ, Type::INT8, Type::FLOAT8, Type::INT8],
    );
    let mut writer = std::pin::pin!(writer);
    for ((row, id), position) in batch.rows().zip(series).zip(first_row..) {
        writer
            .as_mut()
            .write(&[
                &cell(row.at(0)),
                &Cell::Integer(*id),
                &cell(row.at(2)),
                &position,
            ])
            .await
            .map_err(backend("cannot copy the samples"))?;
    }
    writer
        .finish()
        .await
        .map_err(backend("cannot copy the samples"))?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the bucket"))?;
    Ok(CommitReport {
        rows: batch.len() as u64,
        bytes: batch.payload_bytes() as u64,
    })
}
