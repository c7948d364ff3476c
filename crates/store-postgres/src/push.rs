//! Push sources: staging accepted requests, and committing a closed bucket from
//! what every process staged for it, with its ledger row, in one transaction.
//!
//! Staging and committing one connector serialize on an advisory lock (shared for
//! staging, exclusive for a commit), so a request is either staged before a bucket's
//! commit reads it, or sees the bucket's ledger row and goes to the open bucket.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use connector_core::Schema;
use connector_runner::protocol::wall_clock_ms;
use connector_runner::{
    BuildBucket, CommitReport, DEDUP_WINDOW_MS, Lease, PushStore, StageItem, StagedBucket,
    StoreError, StoreErrorKind, Target,
};

use crate::sink::{reserve_positions, write_bucket};
use crate::{PgStore, backend};

/// The advisory lock key of a connector's staging.
const LOCK_KEY: &str = "hashtextextended('connectord.staged:' || $1, 0)";

async fn committed(
    tx: &tokio_postgres::Transaction<'_>,
    connector_id: &str,
    bucket_ms: i64,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM connectord.ledger WHERE connector_id = $1 AND scheduled_for_ms = $2",
            &[&connector_id, &bucket_ms],
        )
        .await
        .map_err(backend("cannot read the ledger"))?
        .is_some())
}

/// Records the items' idempotency keys; `false` for an item whose key was staged
/// within the window (before, or earlier in this call), which must not be staged.
async fn remember_keys(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[StageItem],
) -> Result<Vec<bool>, StoreError> {
    let mut fresh = vec![true; items.len()];
    let mut keyed: Vec<(usize, &str, &[u8])> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(key) = &item.key {
            if keyed
                .iter()
                .any(|(_, c, k)| *c == item.connector_id && *k == key.as_slice())
            {
                fresh[i] = false;
            } else {
                keyed.push((i, item.connector_id.as_str(), key.as_slice()));
            }
        }
    }
    if keyed.is_empty() {
        return Ok(fresh);
    }
    let connectors: Vec<&str> = keyed.iter().map(|(_, c, _)| *c).collect();
    let keys: Vec<&[u8]> = keyed.iter().map(|(_, _, k)| *k).collect();
    let now = wall_clock_ms();
    // A key seen longer ago than the window counts as new and is seen again now.
    let inserted: Vec<(String, Vec<u8>)> = tx
        .query(
            "INSERT INTO connectord.seen (connector_id, key, seen_at_ms)
             SELECT c, k, $3 FROM unnest($1::text[], $2::bytea[]) AS u(c, k)
             ON CONFLICT (connector_id, key) DO UPDATE SET seen_at_ms = excluded.seen_at_ms
             WHERE connectord.seen.seen_at_ms < $4
             RETURNING connector_id, key",
            &[&connectors, &keys, &now, &(now - DEDUP_WINDOW_MS)],
        )
        .await
        .map_err(backend("cannot record the idempotency keys"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (i, connector, key) in keyed {
        fresh[i] = inserted
            .iter()
            .any(|(c, k)| c == connector && k.as_slice() == key);
    }
    Ok(fresh)
}

#[async_trait]
impl PushStore for PgStore {
    async fn stage(
        &self,
        database: &str,
        items: Vec<StageItem>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(backend("cannot start the staging transaction"))?;
        // In one order, so two stagers never wait on each other in a cycle.
        let connectors: BTreeSet<&str> = items.iter().map(|i| i.connector_id.as_str()).collect();
        for connector in &connectors {
            tx.execute(
                &format!("SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"),
                &[connector],
            )
            .await
            .map_err(backend("cannot take the staging lock"))?;
        }
        let fresh = remember_keys(&tx, &items).await?;
        let items: Vec<&StageItem> = items
            .iter()
            .zip(&fresh)
            .filter_map(|(item, fresh)| fresh.then_some(item))
            .collect();
        let mut buckets = Vec::with_capacity(items.len());
        let mut checked: Vec<((&str, i64), bool)> = Vec::new();
        for item in &items {
            let key = (item.connector_id.as_str(), item.bucket_ms);
            let done = match checked.iter().find(|(k, _)| *k == key) {
                Some((_, done)) => *done,
                None => {
                    let done = committed(&tx, key.0, key.1).await?;
                    checked.push((key, done));
                    done
                }
            };
            if !done {
                buckets.push(item.bucket_ms);
            } else if committed(&tx, key.0, item.open_bucket_ms).await? {
                return Err(StoreError::new(
                    StoreErrorKind::Invalid,
                    format!(
                        "connector `{}`: buckets {} and {} are both committed already",
                        item.connector_id, item.bucket_ms, item.open_bucket_ms
                    ),
                ));
            } else {
                buckets.push(item.open_bucket_ms);
            }
        }
        let ids: Vec<&str> = items.iter().map(|i| i.connector_id.as_str()).collect();
        let bodies: Vec<&[u8]> = items.iter().map(|i| i.body.as_slice()).collect();
        tx.execute(
            "INSERT INTO connectord.staged (connector_id, target_database, bucket_ms, staged_at_ms, body)
             SELECT c, $2, b, $3, d FROM unnest($1::text[], $4::bigint[], $5::bytea[]) AS u(c, b, d)",
            &[&ids, &database, &wall_clock_ms(), &buckets, &bodies],
        )
        .await
        .map_err(backend("cannot stage the requests"))?;
        // Synchronous, unlike the bookkeeping transactions: acknowledged data waits
        // for its WAL flush, and concurrent stagers share one.
        tx.commit()
            .await
            .map_err(backend("cannot commit the staged requests"))?;
        let mut staged = buckets.into_iter();
        Ok(fresh
            .into_iter()
            .map(|fresh| if fresh { staged.next() } else { None })
            .collect())
    }

    async fn staged(&self, database: &str) -> Result<Vec<StagedBucket>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT connector_id, bucket_ms, count(*), sum(length(body))::bigint FROM connectord.staged
                 WHERE target_database = $1 GROUP BY connector_id, bucket_ms ORDER BY bucket_ms, connector_id",
                &[&database],
            )
            .await
            .map_err(backend("cannot list the staged buckets"))?;
        Ok(rows
            .iter()
            .map(|r| StagedBucket {
                connector_id: r.get(0),
                bucket_ms: r.get(1),
                requests: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                bytes: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
            .collect())
    }

    async fn commit_staged(
        &self,
        target: &Target,
        lease: &Lease,
        schema: Arc<Schema>,
        build: BuildBucket,
    ) -> Result<CommitReport, StoreError> {
        let mut client = self.pool.get().await?;
        let layout = self.ensure_table(&mut client, target, &schema).await?;
        // Positions come from another connection: reserved inside this transaction,
        // their row lock would make every commit wait for this one.
        let positions = self.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(backend("cannot start a transaction"))?;
        tx.execute(
            &format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"),
            &[&target.connector_id],
        )
        .await
        .map_err(backend("cannot take the staging lock"))?;
        if committed(&tx, &target.connector_id, lease.scheduled_for_ms).await? {
            return Err(StoreError::already_committed(lease));
        }
        let staged: Vec<Vec<u8>> = tx
            .query(
                "SELECT body FROM connectord.staged WHERE connector_id = $1 AND bucket_ms = $2 ORDER BY id",
                &[&target.connector_id, &lease.scheduled_for_ms],
            )
            .await
            .map_err(backend("cannot read the staged requests"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let state: Option<Vec<u8>> = tx
            .query_opt(
                "SELECT state FROM connectord.push_state WHERE connector_id = $1",
                &[&target.connector_id],
            )
            .await
            .map_err(backend("cannot read the connector's state"))?
            .map(|r| r.get(0));
        let requests = staged.len();
        let built = tokio::task::spawn_blocking(move || build(&staged, state.as_deref()))
            .await
            .map_err(|e| StoreError::backend("the bucket's build failed", e))?;
        let committed = built.map_err(|e| {
            StoreError::new(
                StoreErrorKind::Invalid,
                format!(
                    "the connector could not build bucket {} from {requests} staged requests",
                    lease.scheduled_for_ms
                ),
            )
            .with_cause(e)
        })?;
        if committed.batch.schema() != &schema {
            return Err(StoreError::new(
                StoreErrorKind::Invalid,
                "the connector built rows of another schema than it declares",
            ));
        }
        let series = self
            .series_ids(&positions, layout, target, &committed.batch)
            .await?;
        let first_row = reserve_positions(&positions, committed.batch.len()).await?;
        drop(positions);
        let report = write_bucket(
            &tx,
            target,
            lease,
            &committed.batch,
            first_row,
            series.as_deref(),
        )
        .await?;
        tx.execute(
            "INSERT INTO connectord.push_state (connector_id, bucket_ms, state) VALUES ($1, $2, $3)
             ON CONFLICT (connector_id) DO UPDATE SET bucket_ms = excluded.bucket_ms, state = excluded.state",
            &[&target.connector_id, &lease.scheduled_for_ms, &committed.state],
        )
        .await
        .map_err(backend("cannot write the connector's state"))?;
        tx.execute(
            "DELETE FROM connectord.staged WHERE connector_id = $1 AND bucket_ms = $2",
            &[&target.connector_id, &lease.scheduled_for_ms],
        )
        .await
        .map_err(backend("cannot remove the committed staged requests"))?;
        tx.execute(
            "DELETE FROM connectord.seen WHERE connector_id = $1 AND seen_at_ms < $2",
            &[&target.connector_id, &(wall_clock_ms() - DEDUP_WINDOW_MS)],
        )
        .await
        .map_err(backend("cannot forget old idempotency keys"))?;
        tx.commit()
            .await
            .map_err(backend("cannot commit the bucket"))?;
        Ok(report)
    }

    async fn push_state(&self, target: &Target) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT state FROM connectord.push_state WHERE connector_id = $1",
                &[&target.connector_id],
            )
            .await
            .map_err(backend("cannot read the connector's state"))?
            .map(|r| r.get(0)))
    }
}
