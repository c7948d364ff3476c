//! Commits the closed buckets of push connectors: every (connector, bucket) with
//! staged data whose window closed more than the grace ago, oldest first, each under
//! a lease, also those that closed while connectord was down.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use connector_core::{Drive, TickContext};
use tokio::sync::watch;

use super::{BuildBucket, PushStore, StagedBucket};
use crate::runner::{Shared, wall_ms};
use crate::spec::ConnectorRecord;
use crate::store::TickOutcome;
use crate::tick::{Ended, Started, finish};

/// How often the committer looks for closed buckets. A bucket commits at most this
/// long after its grace ends.
const PASS_EVERY: Duration = Duration::from_millis(250);

pub(crate) async fn run(
    shared: Arc<Shared>,
    store: Arc<dyn PushStore>,
    staged_bytes: Arc<std::sync::atomic::AtomicU64>,
    grace: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut listing = shared.connectors.subscribe();
    loop {
        let connectors = listing.borrow_and_update().clone();
        if let Some(connectors) = connectors {
            let total = pass(&shared, &*store, &connectors, grace).await;
            if let Some(total) = total {
                staged_bytes.store(total, Ordering::Relaxed);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PASS_EVERY) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// One look at every push connector's staged buckets. Returns the bytes still staged
/// over all of them, when every database could be read.
async fn pass(
    shared: &Shared,
    store: &dyn PushStore,
    connectors: &HashMap<String, ConnectorRecord>,
    grace: Duration,
) -> Option<u64> {
    let push: HashMap<&str, &ConnectorRecord> = connectors
        .values()
        .filter(|r| {
            shared
                .registry
                .get(&r.spec.connector_type)
                .is_some_and(|c| c.drive() == Drive::Push)
        })
        .map(|r| (r.id.as_str(), r))
        .collect();
    let databases: BTreeSet<&str> = push
        .values()
        .map(|r| r.spec.target_database.as_str())
        .collect();
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let mut total = Some(0u64);
    let mut per_connector: HashMap<&str, u64> = HashMap::new();
    for database in databases {
        let staged = match store.staged(database).await {
            Ok(staged) => staged,
            Err(e) => {
                tracing::error!(
                    database,
                    error = format!("{e:#}"),
                    "cannot list staged buckets"
                );
                total = None;
                continue;
            }
        };
        for bucket in staged {
            let Some(record) = push.get(bucket.connector_id.as_str()) else {
                // Staged for a connector deleted since, or of another target file's
                // connector that shares this database: not ours to commit.
                continue;
            };
            let schedule = i64::try_from(record.spec.schedule_ms).unwrap_or(i64::MAX);
            let closes_at = bucket
                .bucket_ms
                .saturating_add(schedule)
                .saturating_add(grace_ms);
            let committed =
                wall_ms() >= closes_at && commit_bucket(shared, store, record, &bucket).await;
            if !committed {
                *per_connector.entry(record.id.as_str()).or_default() += bucket.bytes;
                total = total.map(|t| t + bucket.bytes);
            }
        }
    }
    for id in push.keys() {
        shared
            .telemetry
            .set_staged_bytes(id, per_connector.get(id).copied().unwrap_or(0));
    }
    total
}

/// Commits one closed bucket under a lease; `true` when its staged data is gone
/// (committed now, or by another runner).
async fn commit_bucket(
    shared: &Shared,
    store: &dyn PushStore,
    record: &ConnectorRecord,
    bucket: &StagedBucket,
) -> bool {
    let claimed = shared
        .store
        .claim_task(
            &record.id,
            bucket.bucket_ms,
            &shared.config.runner_id,
            shared.config.lease,
        )
        .await;
    let lease = match claimed {
        Ok(Some(lease)) => lease,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(connector_id = %record.id, error = format!("{e:#}"), "cannot claim a push bucket");
            return false;
        }
    };
    let started = Started {
        scheduled_for: bucket.bucket_ms,
        at: Instant::now(),
        at_ms: wall_ms(),
    };
    let ctx = TickContext::new(&record.id, bucket.bucket_ms);
    let mut ended = build_and_commit(shared, store, record, &lease).await;
    let done = ended.outcome == TickOutcome::Ok;
    if done {
        ended.done = Some(lease);
    }
    finish(shared, record, &ctx, &started, ended).await;
    done
}

async fn build_and_commit(
    shared: &Shared,
    store: &dyn PushStore,
    record: &ConnectorRecord,
    lease: &crate::store::Lease,
) -> Ended {
    let config = match shared.push_configs.get(&shared.registry, record) {
        Ok(config) => config,
        Err(e) => {
            return Ended::failed(
                TickOutcome::Permanent,
                format!("the connector's spec does not validate: {e:#}"),
            );
        }
    };
    let Some(connector) = shared.registry.get(&record.spec.connector_type).cloned() else {
        return Ended::failed(
            TickOutcome::Permanent,
            format!("unknown connector type `{}`", record.spec.connector_type),
        );
    };
    let schema = connector.schema();
    let bucket_ms = lease.scheduled_for_ms;
    // What the build saw of the state, for `/metrics` once the commit has landed.
    let figures = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&figures);
    let build: BuildBucket = Arc::new(move |staged, state| {
        let committed = match connector.push() {
            Some(push) => push.commit(&config, bucket_ms, staged, state),
            None => Err(connector_core::ConnectorError::config(
                "not a push connector",
            )),
        }?;
        *seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((committed.series, committed.overflowed));
        Ok(committed)
    });
    let target = crate::source_target(record);
    let committed = store.commit_staged(&target, lease, schema, build).await;
    if let Ok(report) = &committed {
        shared
            .telemetry
            .record_contribution(&record.id, report.bytes);
        let figures = *figures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((series, overflowed)) = figures {
            shared
                .telemetry
                .set_push_series(&record.id, series, overflowed);
        }
    }
    Ended::from_commit(committed)
}
