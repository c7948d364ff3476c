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
    BuildBucket, CommitReport, Lease, PushStore, StageItem, StagedBucket, StoreError,
    StoreErrorKind, Target,
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

#[async_trait]
impl PushStore for PgStore {
    async fn stage(&self, database: &str, items: Vec<StageItem>) -> Result<Vec<i64>, StoreError> {
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
        Ok(buckets)
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
        self.ensure_table(&mut client, target, &schema).await?;
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
        let first_row = reserve_positions(&positions, committed.batch.len()).await?;
        drop(positions);
        let report = write_bucket(&tx, target, lease, &committed.batch, first_row).await?;
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
