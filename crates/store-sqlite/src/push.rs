//! Push sources: staging accepted requests in the target file, and committing a
//! closed bucket from them with its ledger row in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::Schema;
use connector_runner::protocol::wall_clock_ms;
use connector_runner::{
    BuildBucket, CommitReport, DEDUP_WINDOW_MS, Lease, PushStore, StageItem, StagedBucket,
    StoreError, StoreErrorKind, Target,
};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::sink::{TargetDb, ensure_table, write_bucket};
use crate::{SqliteStore, backend, lock};

fn bucket_committed(
    tx: &rusqlite::Transaction<'_>,
    connector_id: &str,
    bucket_ms: i64,
) -> Result<bool, StoreError> {
    tx.query_row(
        "SELECT 1 FROM _connectord_ledger WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
        params![connector_id, bucket_ms],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(backend("cannot read the ledger"))
}

fn stage_items(db: &mut TargetDb, items: &[StageItem]) -> Result<Vec<Option<i64>>, StoreError> {
    let tx = db
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start the staging transaction"))?;
    let mut buckets = Vec::with_capacity(items.len());
    let now = wall_clock_ms();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO _connectord_staged (connector_id, bucket_ms, staged_at_ms, body) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(backend("cannot prepare the staging insert"))?;
        let mut remember = tx
            .prepare_cached(
                "INSERT INTO _connectord_seen (connector_id, key, seen_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (connector_id, key) DO UPDATE SET seen_at_ms = excluded.seen_at_ms
                 WHERE seen_at_ms < ?4",
            )
            .map_err(backend("cannot prepare the idempotency check"))?;
        for item in items {
            if let Some(key) = &item.key {
                let fresh = remember
                    .execute(params![item.connector_id, key, now, now - DEDUP_WINDOW_MS])
                    .map_err(backend("cannot record the idempotency key"))?;
                if fresh == 0 {
                    buckets.push(None);
                    continue;
                }
            }
            // Under this file's write lock no commit runs: a bucket not in the ledger
            // now gets this item in its commit.
            let bucket = if bucket_committed(&tx, &item.connector_id, item.bucket_ms)? {
                item.open_bucket_ms
            } else {
                item.bucket_ms
            };
            if bucket != item.bucket_ms && bucket_committed(&tx, &item.connector_id, bucket)? {
                return Err(StoreError::new(
                    StoreErrorKind::Invalid,
                    format!(
                        "connector `{}`: buckets {} and {bucket} are both committed already",
                        item.connector_id, item.bucket_ms
                    ),
                ));
            }
            insert
                .execute(params![item.connector_id, bucket, now, item.body])
                .map_err(backend("cannot stage the request"))?;
            buckets.push(Some(bucket));
        }
    }
    tx.commit()
        .map_err(backend("cannot commit the staged requests"))?;
    Ok(buckets)
}

fn commit_staged(
    db: &mut TargetDb,
    target: &Target,
    lease: &Lease,
    schema: &Arc<Schema>,
    build: BuildBucket,
) -> Result<CommitReport, StoreError> {
    ensure_table(db, &target.table, schema)?;
    let tx = db
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start a transaction"))?;
    if bucket_committed(&tx, &target.connector_id, lease.scheduled_for_ms)? {
        return Err(StoreError::already_committed(lease));
    }
    let staged: Vec<Vec<u8>> = {
        let mut read = tx
            .prepare_cached(
                "SELECT body FROM _connectord_staged WHERE connector_id = ?1 AND bucket_ms = ?2 ORDER BY id",
            )
            .map_err(backend("cannot read the staged requests"))?;
        read.query_map(params![target.connector_id, lease.scheduled_for_ms], |r| {
            r.get(0)
        })
        .and_then(Iterator::collect)
        .map_err(backend("cannot read the staged requests"))?
    };
    let state: Option<Vec<u8>> = tx
        .query_row(
            "SELECT state FROM _connectord_push_state WHERE connector_id = ?1",
            [&target.connector_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("cannot read the connector's state"))?;
    let committed = build(&staged, state.as_deref()).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "the connector could not build bucket {} from {} staged requests",
                lease.scheduled_for_ms,
                staged.len()
            ),
        )
        .with_cause(e)
    })?;
    if committed.batch.schema() != schema {
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            "the connector built rows of another schema than it declares",
        ));
    }
    let report = write_bucket(&tx, target, lease, &committed.batch)?;
    tx.execute(
        "INSERT INTO _connectord_push_state (connector_id, bucket_ms, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (connector_id) DO UPDATE SET bucket_ms = excluded.bucket_ms, state = excluded.state",
        params![target.connector_id, lease.scheduled_for_ms, committed.state],
    )
    .map_err(backend("cannot write the connector's state"))?;
    tx.execute(
        "DELETE FROM _connectord_staged WHERE connector_id = ?1 AND bucket_ms = ?2",
        params![target.connector_id, lease.scheduled_for_ms],
    )
    .map_err(backend("cannot remove the committed staged requests"))?;
    tx.execute(
        "DELETE FROM _connectord_seen WHERE connector_id = ?1 AND seen_at_ms < ?2",
        params![target.connector_id, wall_clock_ms() - DEDUP_WINDOW_MS],
    )
    .map_err(backend("cannot forget old idempotency keys"))?;
    tx.commit().map_err(backend("cannot commit the bucket"))?;
    Ok(report)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn stage(
        &self,
        database: &str,
        items: Vec<StageItem>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let store = self.clone();
        let database = database.to_owned();
        tokio::task::spawn_blocking(move || {
            let db = store.target(&database)?;
            let mut db = lock(&db);
            // An acknowledged request must survive a power cut, not only a crash: this
            // transaction syncs (FULL), while row commits keep NORMAL.
            db.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(backend("cannot make staging synchronous"))?;
            let staged = stage_items(&mut db, &items);
            let restored = db
                .conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(backend("cannot restore the synchronous mode"));
            let buckets = staged?;
            restored?;
            Ok(buckets)
        })
        .await
        .map_err(|e| StoreError::backend("staging task failed", e))?
    }

    async fn staged(&self, database: &str) -> Result<Vec<StagedBucket>, StoreError> {
        let store = self.clone();
        let database = database.to_owned();
        tokio::task::spawn_blocking(move || {
            let db = store.target(&database)?;
            let db = lock(&db);
            let mut read = db
                .conn
                .prepare_cached(
                    "SELECT connector_id, bucket_ms, count(*), sum(length(body)) FROM _connectord_staged
                     GROUP BY connector_id, bucket_ms ORDER BY bucket_ms, connector_id",
                )
                .map_err(backend("cannot list the staged buckets"))?;
            read.query_map([], |r| {
                Ok(StagedBucket {
                    connector_id: r.get(0)?,
                    bucket_ms: r.get(1)?,
                    requests: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                })
            })
            .and_then(Iterator::collect)
            .map_err(backend("cannot list the staged buckets"))
        })
        .await
        .map_err(|e| StoreError::backend("staging task failed", e))?
    }

    async fn commit_staged(
        &self,
        target: &Target,
        lease: &Lease,
        schema: Arc<Schema>,
        build: BuildBucket,
    ) -> Result<CommitReport, StoreError> {
        let store = self.clone();
        let (target, lease) = (target.clone(), lease.clone());
        tokio::task::spawn_blocking(move || {
            let db = store.target(&target.database)?;
            let mut db = lock(&db);
            let report = commit_staged(&mut db, &target, &lease, &schema, build)?;
            // Full means a checkpoint is already pending.
            let _ = db.checkpoint.try_send(());
            Ok(report)
        })
        .await
        .map_err(|e| StoreError::backend("commit task failed", e))?
    }

    async fn push_state(&self, target: &Target) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let db = store.target(&target.database)?;
            let db = lock(&db);
            db.conn
                .query_row(
                    "SELECT state FROM _connectord_push_state WHERE connector_id = ?1",
                    [&target.connector_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend("cannot read the connector's state"))
        })
        .await
        .map_err(|e| StoreError::backend("read task failed", e))?
    }
}
