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
use crate::{SqliteStore, backend, execute_cached};

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

/// Pages the target file's connection keeps in memory while a tick's parts come
/// in: fewer than a tick dirties. When the cache is full, SQLite writes dirty pages
/// to the WAL in the middle of the transaction (a cache spill), so the parts are
/// written out here while the connector still parses, and the commit, which the
/// tick waits for, writes only what is left. Rows are appended, so a full page is
/// not touched again. Timed inside the `ingest` bench (label-heavy, one connector):
/// from the last part's arrival to the end of the commit went from 0.55-0.74 ms to
/// 0.30-0.32 ms, and the tick's wait after its parse from 1.37-1.47 ms to
/// 0.93-1.25 ms; a first commit of 7,360 new series took as long. A commit in one
/// piece has nothing to overlap the spills with, so it keeps SQLite's default
/// cache.
const PARTS_CACHE_PAGES: i64 = 10;

/// SQLite's default page cache (2,000 KiB), restored after a commit in parts.
const DEFAULT_CACHE_SIZE: i64 = -2000;

/// Sets the page cache of `conn` to `size` (pages, or KiB when negative), twice a
/// commit in parts.
fn set_cache_size(conn: &rusqlite::Connection, size: i64) -> rusqlite::Result<()> {
    execute_cached(conn, &format!("PRAGMA cache_size = {size}"), []).map(drop)
}

fn write_parts(
    db: &mut TargetDb,
    target: &Target,
    lease: &Lease,
    first: Part,
    parts: Parts,
) -> Result<CommitReport, StoreError> {
    set_cache_size(&db.conn, PARTS_CACHE_PAGES)
        .map_err(backend("cannot set the page cache size"))?;
    let written = write_parts_spilling(db, target, lease, first, parts);
    if let Err(e) = set_cache_size(&db.conn, DEFAULT_CACHE_SIZE) {
        // Only later commits' speed is at stake, not this commit's outcome.
        tracing::warn!(error = %e, "cannot restore the page cache size after a commit in parts");
    }
    written
}

fn write_parts_spilling(
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
                execute_cached(
                    tx,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use connector_runner::contract::metric_batch;
    use connector_runner::{PartCommit, Sink, StateStore};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_in_parts_leaves_the_default_page_cache_to_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let target = Target {
            connector_id: "c".into(),
            database: "m".into(),
            table: "t".into(),
        };
        let lease = store
            .claim_task("c", 1, "r", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let sink: Arc<dyn Sink> = Arc::new(store.clone());
        let parts = PartCommit::start(sink, target.clone(), lease.clone());
        parts.taker()(metric_batch(2000, 1));
        let report = parts.finish(metric_batch(10, 1), lease).await.unwrap();
        assert_eq!(report.rows, 2010);
        let db = store.target("m").unwrap();
        let cache: i64 = db
            .lock()
            .unwrap()
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cache, DEFAULT_CACHE_SIZE);
    }
}
