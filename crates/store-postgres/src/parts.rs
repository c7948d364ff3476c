//! Commits in parts (`Sink::commit_parts`) into metric tables: the samples a
//! connector hands over during its tick are copied into the bucket's transaction as
//! they arrive, so one connector's parse and PostgreSQL's insert run at once.
//!
//! A bucket's rows are one range of positions, reserved before they are written,
//! but the row count is known only at the last part. The first part reserves a
//! block of positions ([`BLOCK_ROWS`]); the bucket takes the front of it, and the rest
//! stays a gap, as a failed commit leaves one.
//!
//! Copying as the parts come needs every series id before the rows: new series are
//! added in statements outside the bucket's transaction (`series.rs`), and the
//! connection is busy with the COPY. A part with a series this process has not seen,
//! or a tick with more rows than the block, ends the copy (rolled back) and the tick
//! commits whole from the parts kept until then, as it would without parts. A
//! steady scrape repeats its series, so from its second tick on it copies as it
//! parses.

use std::sync::Arc;

use connector_core::Batch;
use connector_runner::protocol::to_i64;
use connector_runner::{
    CommitReport, Lease, Part, Parts, Sink as _, StoreError, Target, aborted, join_parts,
    schema_mismatch,
};

use crate::copy::SamplesCopy;
use crate::layout::Layout;
use crate::sink::{reserve_positions, write_ledger};
use crate::{PgStore, backend};

/// Positions reserved for a bucket copied in parts, unless
/// [`PgStore::with_parts_block`] says otherwise. A million a tick leaves the 63-bit
/// position space lasting centuries at 10,000 connectors every 15 s; a tick with
/// more rows commits whole.
pub(crate) const BLOCK_ROWS: usize = 1 << 20;

/// How the copy of a tick's parts ended.
enum Copied {
    Committed(CommitReport),
    /// The copy was given up, nothing written: commit the kept parts whole, with the
    /// last part's lease when it came.
    Whole(Option<Lease>),
}

impl PgStore {
    pub(crate) async fn commit_in_parts(
        &self,
        target: &Target,
        mut parts: Parts,
    ) -> Result<CommitReport, StoreError> {
        let first = match parts.next().await {
            Part::Rows(first) => first,
            Part::Last(batch, last) => return self.commit(target, &last, batch).await,
            Part::Abort => return Err(aborted()),
        };
        let mut kept = Vec::new();
        let (whole, last) = match self
            .copy_parts(target, first, &mut parts, &mut kept)
            .await?
        {
            Copied::Committed(report) => return Ok(report),
            Copied::Whole(Some(last)) => (join_parts(kept)?, last),
            Copied::Whole(None) => parts.collect_after(kept).await?,
        };
        self.commit(target, &last, whole).await
    }

    /// Copies parts into the bucket's transaction until the last, keeping each in
    /// `kept` in case the copy has to be given up.
    async fn copy_parts(
        &self,
        target: &Target,
        first: Batch,
        parts: &mut Parts,
        kept: &mut Vec<Batch>,
    ) -> Result<Copied, StoreError> {
        let mut client = self.pool.get().await?;
        let schema = Arc::clone(first.schema());
        let layout = self.ensure_table(&mut client, target, &schema).await?;
        let known = match layout {
            Layout::Metric => self.series.known(target, &first)?,
            Layout::Rows => None,
        };
        let Some(first_ids) = known else {
            kept.push(first);
            return Ok(Copied::Whole(None));
        };
        let first_row = reserve_positions(&client, self.parts_block).await?;
        let tx = client
            .transaction()
            .await
            .map_err(backend("cannot begin the commit's transaction"))?;
        let mut copy = SamplesCopy::start(&tx, target).await?;
        let mut report = CommitReport { rows: 0, bytes: 0 };
        let (mut batch, mut ids, mut last) = (first, first_ids, None);
        loop {
            copy.write(&batch, &ids, first_row + to_i64(report.rows))
                .await?;
            report.rows += batch.len() as u64;
            report.bytes += batch.payload_bytes() as u64;
            kept.push(batch);
            if let Some(last) = last {
                // The ledger statement goes out right behind the end of the COPY, not
                // a round trip later (node_exporter into PostgreSQL, one connector:
                // 525-532 k samples/s before, 557-590 k after, runs alternated). A
                // failed COPY fails the transaction, and its error is the one reported.
                let rows = to_i64(report.rows);
                let (copied, ledger) = tokio::join!(
                    copy.finish(),
                    write_ledger(&tx, target, &last, rows, first_row)
                );
                copied?;
                ledger?;
                tx.commit()
                    .await
                    .map_err(backend("cannot commit the bucket"))?;
                return Ok(Copied::Committed(report));
            }
            (batch, last) = match parts.next().await {
                Part::Rows(batch) => (batch, None),
                Part::Last(batch, lease) => (batch, Some(lease)),
                Part::Abort => return Err(aborted()),
            };
            if !batch.follows(&schema) {
                return Err(schema_mismatch());
            }
            let fits = report.rows as usize + batch.len() <= self.parts_block;
            match self.series.known(target, &batch)? {
                Some(known) if fits => ids = known,
                _ => {
                    drop(copy);
                    tx.rollback()
                        .await
                        .map_err(backend("cannot roll back the copy of the tick's parts"))?;
                    kept.push(batch);
                    return Ok(Copied::Whole(last));
                }
            }
        }
    }
}
