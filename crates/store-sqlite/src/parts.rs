//! Commits in parts (`Sink::commit_parts`): the rows a connector hands over during
//! its tick go into the bucket's transaction as they arrive, so one connector's
//! parse and its commit run on two cores.
//!
//! The transaction begins with the first part, not with the tick: a slow fetch
//! holds neither a thread nor the target file's write lock. From the first part to
//! the last, the write lock is held, as it is during any commit; connectors hand
//! rows over only while they build them from memory.

use std::sync::Arc;

use connector_core::Batch;
use connector_runner::protocol::{check_lease_time, to_i64, wall_clock_ms};
use connector_runner::{
    CommitReport, Lease, Part, Parts, StoreError, Target, aborted, schema_mismatch,
};
use rusqlite::params;

use crate::sink::{
    TargetDb, begin_bucket, check_consecutive, ensure_table, in_transaction, write_rows,
};
use crate::{SqliteStore, backend};

impl SqliteStore {
    pub(crate) async fn commit_in_parts(
        &self,
        target: &Target,
        lease: &Lease,
        mut parts: Parts,
    ) -> Result<CommitReport, StoreError> {
        let first = parts.next().await;
        if matches!(first, Part::Abort) {
            return Err(aborted());
        }
        let (target, lease) = (target.clone(), lease.clone());
        self.write_target(&target.database.clone(), move |db| {
            write_parts(db, &target, &lease, first, parts)
        })
        .await
    }
}

/// The rows a part carries, after checking it follows the first part's schema.
fn rows_of<'a>(
    part: &'a Part,
    schema: &Arc<connector_core::Schema>,
) -> Result<Option<&'a Batch>, StoreError> {
    let batch = match part {
        Part::Rows(batch) | Part::Last(batch, _) => batch,
        Part::Abort => return Ok(None),
    };
    if !batch.follows(schema) {
        return Err(schema_mismatch());
    }
    Ok(Some(batch))
}

fn write_parts(
    db: &mut TargetDb,
    target: &Target,
    lease: &Lease,
    first: Part,
    mut parts: Parts,
) -> Result<CommitReport, StoreError> {
    let schema = match &first {
        Part::Rows(batch) | Part::Last(batch, _) => Arc::clone(batch.schema()),
        Part::Abort => return Err(aborted()),
    };
    let layout = ensure_table(db, &target.table, &schema)?;
    in_transaction(db, &target.table, |tx, series| {
        // The row count is known at the end; the ledger row is completed then.
        let first_row = begin_bucket(tx, layout, target, lease, 0)?;
        let mut report = CommitReport { rows: 0, bytes: 0 };
        let mut part = first;
        loop {
            let Some(batch) = rows_of(&part, &schema)? else {
                return Err(aborted());
            };
            write_rows(tx, series, layout, &target.table, batch)?;
            report.rows += batch.len() as u64;
            report.bytes += batch.payload_bytes() as u64;
            if let Part::Last(_, last) = &part {
                let rows = to_i64(report.rows);
                check_consecutive(tx, &target.table, first_row, rows)?;
                tx.execute(
                    "UPDATE _connectord_ledger SET rows = ?1, last_row = ?2 \
                     WHERE connector_id = ?3 AND scheduled_for_ms = ?4",
                    params![
                        rows,
                        first_row + rows - 1,
                        target.connector_id,
                        lease.scheduled_for_ms
                    ],
                )
                .map_err(backend("cannot complete the ledger row"))?;
                // The lease's end, as the runner knows it now: it renewed the lease
                // during the tick, so the lease the commit began with may have
                // ended. Its token was checked at the first part; a runner that took
                // the bucket over since cannot commit it while this transaction holds
                // its ledger row.
                check_lease_time(last, wall_clock_ms())?;
                return Ok(report);
            }
            part = parts.next_blocking();
        }
    })
}
