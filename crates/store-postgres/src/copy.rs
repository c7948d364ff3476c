//! Large metric batches: the ledger row and the samples in one transaction, the
//! samples' chunks (`layout.rs`) through `COPY ... FROM STDIN BINARY`.
//!
//! The one-statement commit (`sink::write_bucket`) inserts a bucket as one chunk;
//! COPY streams chunks as the parts of a tick come. It costs round trips of its own
//! (begin, ledger row, COPY, commit), so it is only for batches of at least
//! [`COPY_FROM_ROWS`] rows, where they are a small part of the work; the ticks that
//! the scheduling bench counts round trips for keep the one statement.

use std::ops::Range;
use std::pin::Pin;

use connector_core::Batch;
use connector_runner::protocol::to_i64;
use connector_runner::{CommitReport, Lease, StoreError, Target};
use postgres_types::Type;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};

use crate::backend;
use crate::layout::{CHUNK_COLUMNS, CHUNK_ROWS, Layout};
use crate::sink::{Cell, cell, write_ledger};

/// Metric batches with at least this many rows go in through COPY.
pub(crate) const COPY_FROM_ROWS: usize = 1_000;

// The one-statement commit writes a bucket as a single chunk.
const _: () = assert!(COPY_FROM_ROWS <= CHUNK_ROWS);

/// One chunk of samples as the columns of its record: timestamps, series ids,
/// values, each an array.
pub(crate) struct Chunk<'a> {
    pub(crate) timestamps: Vec<Cell<'a>>,
    pub(crate) series: &'a [i64],
    pub(crate) values: Vec<Cell<'a>>,
}

/// Rows `rows` of `batch` (in `metric_rows::schema()`'s column order) as one chunk,
/// row `i` with series id `series[i]`.
pub(crate) fn chunk<'a>(batch: &'a Batch, series: &'a [i64], rows: Range<usize>) -> Chunk<'a> {
    let mut timestamps = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len());
    // By index: skipping the rows before a chunk walked them one by one, for each
    // chunk of the batch.
    for row in rows.clone() {
        timestamps.push(cell(batch.get(row, 0)));
        values.push(cell(batch.get(row, 2)));
    }
    Chunk {
        timestamps,
        series: &series[rows],
        values,
    }
}

/// The chunks of `batch`, [`CHUNK_ROWS`] rows at most, each with its first row's
/// offset in the batch.
fn chunks<'a>(batch: &'a Batch, series: &'a [i64]) -> impl Iterator<Item = (usize, Chunk<'a>)> {
    (0..batch.len()).step_by(CHUNK_ROWS).map(move |start| {
        let end = (start + CHUNK_ROWS).min(batch.len());
        (start, chunk(batch, series, start..end))
    })
}

/// A COPY into a metric table's chunks, open in a transaction. Dropped unfinished,
/// it fails the COPY, and the transaction with it.
pub(crate) struct SamplesCopy {
    writer: Pin<Box<BinaryCopyInWriter>>,
}

impl SamplesCopy {
    pub(crate) async fn start(tx: &Transaction<'_>, target: &Target) -> Result<Self, StoreError> {
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({CHUNK_COLUMNS}) FROM STDIN BINARY",
                Layout::Metric.positions_table(&target.database, &target.table)
            ))
            .await
            .map_err(backend("cannot start copying the samples"))?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::INT8,
                Type::TIMESTAMPTZ_ARRAY,
                Type::INT8_ARRAY,
                Type::FLOAT8_ARRAY,
            ],
        );
        Ok(SamplesCopy {
            writer: Box::pin(writer),
        })
    }

    /// Copies the samples of `batch` (in `metric_rows::schema()`'s column order),
    /// row `i` with series id `series[i]` at position `first_row + i`, in chunks.
    pub(crate) async fn write(
        &mut self,
        batch: &Batch,
        series: &[i64],
        first_row: i64,
    ) -> Result<(), StoreError> {
        for (offset, chunk) in chunks(batch, series) {
            let first = first_row + to_i64(offset as u64);
            let last = first + to_i64(chunk.series.len() as u64) - 1;
            self.writer
                .as_mut()
                .write(&[
                    &first,
                    &last,
                    &chunk.timestamps,
                    &chunk.series,
                    &chunk.values,
                ])
                .await
                .map_err(backend("cannot copy the samples"))?;
        }
        Ok(())
    }

    /// Ends the COPY; the rows are then part of the transaction.
    pub(crate) async fn finish(mut self) -> Result<(), StoreError> {
        self.writer
            .as_mut()
            .finish()
            .await
            .map_err(backend("cannot copy the samples"))?;
        Ok(())
    }
}

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
    write_ledger(&tx, target, lease, rows, first_row).await?;
    let mut copy = SamplesCopy::start(&tx, target).await?;
    copy.write(batch, series, first_row).await?;
    copy.finish().await?;
    tx.commit()
        .await
        .map_err(backend("cannot commit the bucket"))?;
    Ok(CommitReport {
        rows: batch.len() as u64,
        bytes: batch.payload_bytes() as u64,
    })
}
