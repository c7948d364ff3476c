//! Push sources: staging accepted requests in the target file, and committing a
//! closed bucket from them with its ledger row in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::Committed;
use connector_core::Schema;
use connector_runner::protocol::wall_clock_ms;
use connector_runner::{
    BuildBucket, CommitReport, DEDUP_WINDOW_MS, Lease, PushStore, StageItem, StagedBucket,
    StoreError, StoreErrorKind, Target,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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

/// A bucket's staged requests and the connector's state, as one read saw them.
struct Snapshot {
    staged: Vec<Vec<u8>>,
    /// The largest staged id read: the commit removes exactly these.
    last_id: i64,
    state: Option<Vec<u8>>,
    /// Which bucket left `state`.
    state_bucket: Option<i64>,
}

fn snapshot(conn: &Connection, target: &Target, bucket_ms: i64) -> Result<Snapshot, StoreError> {
    let mut read = conn
        .prepare_cached(
            "SELECT id, body FROM _connectord_staged WHERE connector_id = ?1 AND bucket_ms = ?2 ORDER BY id",
        )
        .map_err(backend("cannot read the staged requests"))?;
    let mut staged = Vec::new();
    let mut last_id = 0;
    let rows = read
        .query_map(params![target.connector_id, bucket_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(backend("cannot read the staged requests"))?;
    for row in rows {
        let (id, body) = row.map_err(backend("cannot read the staged requests"))?;
        last_id = last_id.max(id);
        staged.push(body);
    }
    let (state, state_bucket) =
        state_of(conn, &target.connector_id)?.map_or((None, None), |(s, b)| (Some(s), Some(b)));
    Ok(Snapshot {
        staged,
        last_id,
        state,
        state_bucket,
    })
}

/// The connector's state and the bucket that left it.
fn state_of(conn: &Connection, connector_id: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    conn.query_row(
        "SELECT state, bucket_ms FROM _connectord_push_state WHERE connector_id = ?1",
        [connector_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(backend("cannot read the connector's state"))
}

/// The reading connection of a target file, `None` while the file does not exist
/// (nothing was staged or committed there yet). Reads go through it rather than the
/// sink's connection, so they never wait behind staging and commits.
fn reader(
    store: &SqliteStore,
    database: &str,
) -> Result<Option<Arc<std::sync::Mutex<Connection>>>, StoreError> {
    match store.bucket_reader(database) {
        Ok(conn) => Ok(Some(conn)),
        Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the bucket's staged requests and the connector's state are still what
/// `seen` read (nothing staged for the bucket since, no other commit since).
fn unchanged(
    tx: &rusqlite::Transaction<'_>,
    target: &Target,
    bucket_ms: i64,
    seen: &Snapshot,
) -> Result<bool, StoreError> {
    let (count, last_id): (i64, i64) = tx
        .query_row(
            "SELECT count(*), coalesce(max(id), 0) FROM _connectord_staged WHERE connector_id = ?1 AND bucket_ms = ?2",
            params![target.connector_id, bucket_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend("cannot recount the staged requests"))?;
    let state_bucket: Option<i64> = tx
        .query_row(
            "SELECT bucket_ms FROM _connectord_push_state WHERE connector_id = ?1",
            [&target.connector_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend("cannot read the connector's state"))?;
    Ok(usize::try_from(count).ok() == Some(seen.staged.len())
        && last_id == seen.last_id
        && state_bucket == seen.state_bucket)
}

fn build_snapshot(
    build: &BuildBucket,
    seen: &Snapshot,
    lease: &Lease,
    schema: &Arc<Schema>,
) -> Result<Committed, StoreError> {
    let committed = build(&seen.staged, seen.state.as_deref()).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "the connector could not build bucket {} from {} staged requests",
                lease.scheduled_for_ms,
                seen.staged.len()
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
    Ok(committed)
}

/// Builds with the write lock not held, on the bucket reader's snapshot, so requests
/// keep staging meanwhile (a large bucket takes a while), then writes under the lock
/// if nothing changed. A request staged for the bucket while it built makes it build
/// again; after a few such rounds the build runs under the lock.
fn commit_staged(
    store: &SqliteStore,
    target: &Target,
    lease: &Lease,
    schema: &Arc<Schema>,
    build: &BuildBucket,
) -> Result<CommitReport, StoreError> {
    const UNLOCKED_ROUNDS: usize = 3;
    let db = store.target(&target.database)?;
    let reader = store.bucket_reader(&target.database)?;
    for round in 0..=UNLOCKED_ROUNDS {
        let locked = round == UNLOCKED_ROUNDS;
        let seen = if locked {
            None
        } else {
            let seen = snapshot(&lock(&reader), target, lease.scheduled_for_ms)?;
            let committed = build_snapshot(build, &seen, lease, schema)?;
            Some((seen, committed))
        };
        let mut guard = lock(&db);
        let db = &mut *guard;
        let layout = ensure_table(db, &target.table, schema)?;
        let tx = db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend("cannot start a transaction"))?;
        if bucket_committed(&tx, &target.connector_id, lease.scheduled_for_ms)? {
            return Err(StoreError::already_committed(lease));
        }
        let (seen, committed) = match seen {
            Some((seen, committed)) => {
                if !unchanged(&tx, target, lease.scheduled_for_ms, &seen)? {
                    continue;
                }
                (seen, committed)
            }
            None => {
                let seen = snapshot(&tx, target, lease.scheduled_for_ms)?;
                let committed = build_snapshot(build, &seen, lease, schema)?;
                (seen, committed)
            }
        };
        let report = write_bucket(&tx, &mut db.series, layout, target, lease, &committed.batch)?;
        tx.execute(
            "INSERT INTO _connectord_push_state (connector_id, bucket_ms, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (connector_id) DO UPDATE SET bucket_ms = excluded.bucket_ms, state = excluded.state",
            params![target.connector_id, lease.scheduled_for_ms, committed.state],
        )
        .map_err(backend("cannot write the connector's state"))?;
        tx.execute(
            "DELETE FROM _connectord_staged WHERE connector_id = ?1 AND bucket_ms = ?2 AND id <= ?3",
            params![target.connector_id, lease.scheduled_for_ms, seen.last_id],
        )
        .map_err(backend("cannot remove the committed staged requests"))?;
        tx.execute(
            "DELETE FROM _connectord_seen WHERE connector_id = ?1 AND seen_at_ms < ?2",
            params![target.connector_id, wall_clock_ms() - DEDUP_WINDOW_MS],
        )
        .map_err(backend("cannot forget old idempotency keys"))?;
        tx.commit().map_err(backend("cannot commit the bucket"))?;
        // Full means a checkpoint is already pending.
        let _ = db.checkpoint.try_send(());
        return Ok(report);
    }
    Err(StoreError::new(
        StoreErrorKind::Backend,
        format!(
            "bucket {} kept changing while it was built; it is tried again",
            lease.scheduled_for_ms
        ),
    ))
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
            let Some(conn) = reader(&store, &database)? else {
                return Ok(Vec::new());
            };
            let conn = lock(&conn);
            let mut read = conn
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
            let committed = commit_staged(&store, &target, &lease, &schema, &build)
                .map_err(|e| store.name_full(e));
            if committed.is_err() {
                let db = store.target(&target.database)?;
                lock(&db).series.forget(&target.table);
            }
            committed
        })
        .await
        .map_err(|e| StoreError::backend("commit task failed", e))?
    }

    async fn push_state(&self, target: &Target) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let Some(conn) = reader(&store, &target.database)? else {
                return Ok(None);
            };
            let state = state_of(&lock(&conn), &target.connector_id)?;
            Ok(state.map(|(state, _)| state))
        })
        .await
        .map_err(|e| StoreError::backend("read task failed", e))?
    }
}
