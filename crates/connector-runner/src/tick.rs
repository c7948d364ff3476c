//! One tick of a periodic connector: claim the bucket, run the connector under the
//! lease (renewed, timed out, cancelled at shutdown, a panic kept to the tick), commit,
//! and record the outcome everywhere. Push buckets share the commit mapping and the
//! recording.

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_core::{ErrorKind, TickContext, ValidatedConfig};
use tracing::Instrument as _;

use crate::parts::PartCommit;
use crate::runner::{Shared, wall_ms};
use crate::spec::ConnectorRecord;
use crate::store::{
    CommitReport, StatusChange, StoreError, StoreErrorKind, TickOutcome, TickRecord,
};
use crate::telemetry::TickSample;

enum Ran {
    Done(
        Result<
            Result<connector_core::Batch, connector_core::ConnectorError>,
            tokio::task::JoinError,
        >,
    ),
    TimedOut,
    LeaseLost,
    Cancelled,
}

/// Waits for the tick up to the tick timeout, renewing the lease every third of its
/// length meanwhile. A refused renewal means another runner owns the bucket now.
async fn drive_tick(
    shared: &Shared,
    tick: tokio::task::JoinHandle<Result<connector_core::Batch, connector_core::ConnectorError>>,
    lease: &mut crate::store::Lease,
) -> Ran {
    let abort = tick.abort_handle();
    let deadline = tokio::time::sleep(shared.config.tick_timeout);
    let every = (shared.config.lease / 3).max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut cancel = shared.cancel.subscribe();
    let cancelled = async move {
        // The guard `wait_for` returns is not `Send`: drop it here, not across the loop.
        let _ = cancel.wait_for(|cancelled| *cancelled).await.is_ok();
    };
    tokio::pin!(tick, deadline, cancelled);
    loop {
        tokio::select! {
            done = &mut tick => return Ran::Done(done),
            () = &mut cancelled => {
                abort.abort();
                return Ran::Cancelled;
            }
            () = &mut deadline => {
                abort.abort();
                return Ran::TimedOut;
            }
            _ = renew.tick() => match shared.store.renew_task(lease, shared.config.lease).await {
                Ok(Some(renewed)) => *lease = renewed,
                Ok(None) => {
                    abort.abort();
                    return Ran::LeaseLost;
                }
                // The commit-time check against the last known expiry still protects the bucket.
                Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot renew the lease"),
            },
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Claims the bucket, runs the tick, commits, and records the outcome everywhere.
pub(crate) async fn execute_tick(
    shared: &Shared,
    record: &ConnectorRecord,
    config: &ValidatedConfig,
    scheduled_for: i64,
) -> Option<TickOutcome> {
    let span = tracing::info_span!(
        "tick",
        connector_id = %record.id,
        connector = %record.spec.name,
        scheduled_for = scheduled_for,
    );
    run_tick(shared, record, config, scheduled_for)
        .instrument(span)
        .await
}

async fn run_tick(
    shared: &Shared,
    record: &ConnectorRecord,
    config: &ValidatedConfig,
    scheduled_for: i64,
) -> Option<TickOutcome> {
    let ctx = TickContext::new(&record.id, scheduled_for)
        .with_secrets(Arc::clone(&shared.config.secrets));
    let started = Started {
        scheduled_for,
        at: Instant::now(),
        at_ms: wall_ms(),
    };
    let ended = claim_and_run(shared, record, config, &ctx).await?;
    Some(finish(shared, record, &ctx, &started, ended).await)
}

/// When and for which bucket a tick started.
pub(crate) struct Started {
    pub(crate) scheduled_for: i64,
    pub(crate) at: Instant,
    pub(crate) at_ms: i64,
}

/// Claims the bucket and runs the tick under the lease; `None` when another runner
/// holds the bucket (nothing to record).
async fn claim_and_run(
    shared: &Shared,
    record: &ConnectorRecord,
    config: &ValidatedConfig,
    ctx: &TickContext,
) -> Option<Ended> {
    let id = record.id.as_str();
    let claimed = shared
        .store
        .claim_task(
            id,
            ctx.scheduled_for_ms(),
            &shared.config.runner_id,
            shared.config.lease,
        )
        .await;
    let mut lease = match claimed {
        Ok(Some(lease)) => {
            shared.telemetry.record_claim(id, true);
            lease
        }
        Ok(None) => {
            shared.telemetry.record_claim(id, false);
            tracing::debug!("bucket taken by another runner");
            return None;
        }
        Err(e) => {
            return Some(Ended::failed(
                store_failure(&e, TickOutcome::StoreError),
                format!("the state store failed to claim the bucket: {e:#}"),
            ));
        }
    };

    shared.lock_running().start(id, ctx);
    let parts = PartCommit::start(
        Arc::clone(&shared.sink),
        crate::source_target(record),
        trusted(shared, &lease),
    );
    let tick = {
        let registry = Arc::clone(&shared.registry);
        let ctx = parts.tick_context(ctx.clone());
        let config = config.clone();
        // A task of its own, so a panicking connector fails this tick only.
        tokio::spawn(async move { registry.tick(&ctx, &config).await })
    };
    // Every way out but the commit below drops `parts`, which rolls back the rows
    // handed over so far.
    let ran = drive_tick(shared, tick, &mut lease).await;
    shared.lock_running().contexts.remove(id);
    Some(match ran {
        Ran::TimedOut => Ended::failed(
            TickOutcome::Timeout,
            format!(
                "tick timed out after {} ms",
                shared.config.tick_timeout.as_millis()
            ),
        ),
        Ran::Cancelled => Ended::failed(
            TickOutcome::Cancelled,
            format!(
                "cancelled: connectord stopped and the tick ran past the {} ms shutdown grace; nothing committed",
                shared.config.shutdown_grace.as_millis()
            ),
        ),
        Ran::LeaseLost => Ended::fenced(
            "the lease was lost during the tick (another runner took the bucket); nothing committed",
        ),
        Ran::Done(Err(join)) => Ended::failed(
            TickOutcome::Panic,
            if join.is_panic() {
                format!("connector panicked: {}", panic_message(&*join.into_panic()))
            } else {
                "tick was cancelled".to_owned()
            },
        ),
        Ran::Done(Ok(Err(e))) => {
            let message = format!("{e:#}");
            match e.kind() {
                ErrorKind::Transient => Ended::failed(TickOutcome::Transient, message),
                ErrorKind::Config => Ended {
                    outcome: TickOutcome::Config,
                    status: Some(StatusChange::Disabled(message.clone())),
                    error: Some(message),
                    rows: 0,
                    sink_bytes: 0,
                    done: None,
                },
                _ => Ended::failed(TickOutcome::Permanent, message),
            }
        }
        Ran::Done(Ok(Ok(batch))) => commit(shared, parts, &lease, batch).await,
    })
}

/// How a tick ended, before it is recorded.
pub(crate) struct Ended {
    pub(crate) outcome: TickOutcome,
    /// `None` leaves the connector's status as it was.
    pub(crate) status: Option<StatusChange>,
    pub(crate) error: Option<String>,
    pub(crate) rows: u64,
    pub(crate) sink_bytes: u64,
    /// The lease of the bucket that committed: it is marked done with the rest of
    /// the tick's record, so nobody claims it again.
    pub(crate) done: Option<crate::store::Lease>,
}

impl Ended {
    /// Another runner's bucket now: not the connector's fault, so its status stays.
    pub(crate) fn fenced(message: impl Into<String>) -> Self {
        Ended {
            outcome: TickOutcome::Fenced,
            status: None,
            error: Some(message.into()),
            rows: 0,
            sink_bytes: 0,
            done: None,
        }
    }

    pub(crate) fn failed(outcome: TickOutcome, message: String) -> Self {
        Ended {
            outcome,
            status: Some(StatusChange::Failed(message.clone())),
            error: Some(message),
            rows: 0,
            sink_bytes: 0,
            done: None,
        }
    }

    /// How a commit ended, for ticks and push buckets alike.
    pub(crate) fn from_commit(committed: Result<CommitReport, StoreError>) -> Self {
        match committed {
            Ok(report) => Ended {
                outcome: TickOutcome::Ok,
                status: Some(StatusChange::Succeeded),
                error: None,
                rows: report.rows,
                sink_bytes: report.bytes,
                done: None,
            },
            // Losing a race is not the connector's fault: its status stays as it was.
            Err(e)
                if matches!(
                    e.kind(),
                    StoreErrorKind::AlreadyCommitted | StoreErrorKind::Fenced
                ) =>
            {
                Ended::fenced(format!("commit refused: {e:#}"))
            }
            Err(e) => Ended::failed(
                store_failure(&e, TickOutcome::SinkError),
                format!("commit failed: {e:#}"),
            ),
        }
    }
}

/// The outcome of a tick the store failed: `otherwise`, but `Transient` for a full
/// disk, which is the store's weather rather than a fault: the next bucket may well
/// commit.
fn store_failure(e: &StoreError, otherwise: TickOutcome) -> TickOutcome {
    if e.kind() == StoreErrorKind::Full {
        TickOutcome::Transient
    } else {
        otherwise
    }
}

/// The lease as the store checks it: its end less the safety margin, so a commit
/// never lands after another runner could have taken the bucket over.
fn trusted(shared: &Shared, lease: &crate::store::Lease) -> crate::store::Lease {
    let margin = i64::try_from(shared.config.lease_margin.as_millis()).unwrap_or(i64::MAX);
    crate::store::Lease {
        expires_at_ms: lease.expires_at_ms.saturating_sub(margin),
        ..lease.clone()
    }
}

/// Commits the tick's batch, after the rows it handed over, under the lease. The
/// store refuses it once the lease can no longer be trusted: the lease's end less the
/// safety margin, on the store's clock, checked inside the commit's transaction
/// rather than by a round trip before it.
async fn commit(
    shared: &Shared,
    parts: PartCommit,
    lease: &crate::store::Lease,
    batch: connector_core::Batch,
) -> Ended {
    let committed = parts.finish(batch, trusted(shared, lease)).await;
    let mut ended = Ended::from_commit(committed);
    if ended.outcome == TickOutcome::Ok {
        ended.done = Some(lease.clone());
    }
    ended
}

/// Records a tick everywhere: metrics, logs, the connector's status and its history.
/// Every message goes through the tick's redaction first. What the store cannot
/// record is kept in [`Telemetry`](crate::telemetry::Telemetry) for the API to show.
pub(crate) async fn finish(
    shared: &Shared,
    record: &ConnectorRecord,
    ctx: &TickContext,
    started: &Started,
    ended: Ended,
) -> TickOutcome {
    let Ended {
        outcome,
        status,
        error,
        rows,
        sink_bytes,
        done,
    } = ended;
    let id = record.id.as_str();
    let error = error.map(|e| ctx.redact(&e));
    let status = status.map(|status| match status {
        StatusChange::Failed(m) => StatusChange::Failed(ctx.redact(&m)),
        StatusChange::Disabled(m) => StatusChange::Disabled(ctx.redact(&m)),
        StatusChange::Succeeded => StatusChange::Succeeded,
    });
    let duration = started.at.elapsed();
    let source_bytes = ctx.source_bytes();
    #[allow(clippy::cast_precision_loss)]
    shared.telemetry.record_tick(
        id,
        &TickSample {
            outcome,
            duration_seconds: duration.as_secs_f64(),
            source_bytes,
            retries: ctx.retries(),
            rows,
            sink_bytes,
            finished_at_seconds: wall_ms() as f64 / 1000.0,
        },
    );
    if outcome == TickOutcome::Ok {
        tracing::info!(
            rows,
            source_bytes,
            duration_ms = duration.as_millis() as u64,
            "tick committed"
        );
    } else {
        tracing::warn!(
            outcome = outcome.as_str(),
            error = error.as_deref().unwrap_or(""),
            "tick failed"
        );
    }

    let history = TickRecord {
        connector_id: record.id.clone(),
        scheduled_for_ms: started.scheduled_for,
        started_at_ms: started.at_ms,
        outcome,
        rows,
        source_bytes,
        sink_bytes,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        error,
        runner_id: shared.config.runner_id.clone(),
    };
    // Shown by the API until the store has it: a store that hangs (a held lock, a
    // database gone) must not hide the tick that found it so.
    shared.telemetry.set_unrecorded(id, Some(history.clone()));
    let end = crate::store::TickEnd {
        done: done.as_ref(),
        status: status.as_ref(),
        tick: &history,
    };
    match shared.store.end_tick(end).await {
        Ok(()) => shared.telemetry.set_unrecorded(id, None),
        // The bucket's ledger row still prevents a second commit if it stays undone.
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "cannot record the tick's end (bucket done, status, history)"
        ),
    }
    outcome
}
