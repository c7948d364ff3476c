//! Delivery: one task per enabled destination follows its source's committed buckets,
//! oldest first, and sends each under a lease, recording it in the delivery ledger
//! only when every chunk of it was accepted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connector_core::{Delivered, ErrorKind, Schema, TickContext, ValidatedConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::destination::{
    DeliveryOutcome, DeliveryRecord, DeliveryStore, DestinationRecord, OnPermanent, PendingBucket,
    source_target,
};
use crate::runner::{Shared, wall_ms};
use crate::spec::{ConnectorRecord, ConnectorState};
use crate::store::{Lease, StatusChange, StoreErrorKind};
use crate::telemetry::DeliverySample;

/// How often an idle destination looks for a new bucket.
const POLL: Duration = Duration::from_millis(250);

/// Every connector by name, as the runner last listed them (`None` before that).
type Sources = watch::Receiver<Option<Arc<HashMap<String, ConnectorRecord>>>>;

struct Follower {
    spec: crate::destination::DestinationSpec,
    retire: Arc<AtomicBool>,
}

/// Runs until `stop` turns true: keeps one task per enabled destination, started,
/// restarted on a change of spec and retired when paused, disabled or deleted.
pub(crate) async fn run(
    shared: Arc<Shared>,
    deliveries: Arc<dyn DeliveryStore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sources: Sources = shared.connectors.subscribe();
    // A destination's series carry its source's org, known from the runner's first
    // listing of connectors: begin with it, so no series starts without its org.
    tokio::select! {
        _ = stop.wait_for(|stopping| *stopping) => return,
        _ = sources.wait_for(Option::is_some) => {}
    }
    let mut followers: HashMap<String, Follower> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        refresh(
            &shared,
            &deliveries,
            &sources,
            &mut followers,
            &mut tasks,
            &stop,
        )
        .await;
        tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => break,
            () = tokio::time::sleep(shared.config.refresh_interval) => {}
            Some(_) = tasks.join_next() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn refresh(
    shared: &Arc<Shared>,
    deliveries: &Arc<dyn DeliveryStore>,
    sources: &Sources,
    followers: &mut HashMap<String, Follower>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) {
    let destinations = match deliveries.list_destinations().await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot read destinations from the state store"
            );
            return;
        }
    };
    let listing = sources.borrow().clone();
    shared.telemetry.set_destinations(&destinations, |d| {
        listing
            .as_ref()
            .and_then(|all| all.get(&d.spec.source))
            .map(|c| c.spec.org_id.clone())
    });
    let mut seen = std::collections::HashSet::new();
    for destination in destinations {
        if destination.state != ConnectorState::Enabled {
            continue;
        }
        seen.insert(destination.id.clone());
        if followers
            .get(&destination.id)
            .is_some_and(|f| f.spec == destination.spec && !f.retire.load(Ordering::Relaxed))
        {
            continue;
        }
        if let Some(old) = followers.remove(&destination.id) {
            old.retire.store(true, Ordering::Relaxed);
        }
        let config = match destination.spec.validate(&shared.registry) {
            Ok(config) => config,
            Err(e) => {
                disable(shared, &**deliveries, &destination.id, format!("{e:#}")).await;
                continue;
            }
        };
        let retire = Arc::new(AtomicBool::new(false));
        followers.insert(
            destination.id.clone(),
            Follower {
                spec: destination.spec.clone(),
                retire: Arc::clone(&retire),
            },
        );
        let span = tracing::info_span!(
            "destination",
            destination_id = %destination.id,
            destination = %destination.spec.name,
        );
        let follow = Follow {
            shared: Arc::clone(shared),
            deliveries: Arc::clone(deliveries),
            sources: sources.clone(),
            destination,
            config,
            retire,
            stop: stop.clone(),
        };
        tasks.spawn(follow.run().instrument(span));
    }
    followers.retain(|id, follower| {
        let keep = seen.contains(id);
        if !keep {
            follower.retire.store(true, Ordering::Relaxed);
        }
        keep
    });
}

async fn disable(shared: &Shared, deliveries: &dyn DeliveryStore, id: &str, reason: String) {
    tracing::warn!(destination_id = %id, %reason, "disabling destination");
    if let Err(e) = deliveries
        .set_destination_status(id, StatusChange::Disabled(reason))
        .await
    {
        tracing::error!(
            error = format!("{e:#}"),
            "cannot record the destination's disabled state"
        );
    }
    shared
        .telemetry
        .set_destination_state(id, ConnectorState::Disabled);
}

/// One destination's delivery loop.
struct Follow {
    shared: Arc<Shared>,
    deliveries: Arc<dyn DeliveryStore>,
    sources: Sources,
    destination: DestinationRecord,
    config: ValidatedConfig,
    retire: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
}

/// What one step of the loop found.
enum Step {
    /// Nothing to deliver now.
    Idle,
    /// A bucket passed: look for the next one at once.
    Passed,
    /// The attempt failed and the same bucket is tried after a backoff.
    Retry,
    /// The destination stopped (halted, disabled, or connectord is stopping).
    Stop,
}

impl Follow {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut source_problem: Option<String> = None;
        loop {
            if self.retire.load(Ordering::Relaxed) || *self.stop.borrow() {
                return;
            }
            let wait = match self.step(&mut source_problem).await {
                Step::Passed => {
                    failures = 0;
                    continue;
                }
                Step::Idle => {
                    failures = 0;
                    POLL
                }
                Step::Retry => {
                    failures = failures.saturating_add(1);
                    backoff(failures, self.shared.config.delivery_backoff_max)
                }
                Step::Stop => return,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = self.stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    async fn step(&mut self, source_problem: &mut Option<String>) -> Step {
        let id = self.destination.id.clone();
        let Some(connectors) = self.sources.borrow().clone() else {
            // The runner has not listed the connectors yet.
            return Step::Idle;
        };
        let Some(source) = connectors.get(&self.destination.spec.source).cloned() else {
            let problem = format!(
                "source connector `{}` does not exist; waiting for it",
                self.destination.spec.source
            );
            self.report_source_problem(source_problem, problem).await;
            return Step::Idle;
        };
        let Some(connector) = self.shared.registry.get(&source.spec.connector_type) else {
            let problem = format!(
                "source connector `{}` has type `{}`, which this connectord does not know",
                source.spec.name, source.spec.connector_type
            );
            self.report_source_problem(source_problem, problem).await;
            return Step::Idle;
        };
        let schema = connector.schema();
        if let Err(e) = self
            .destination
            .spec
            .check_source_schema(&self.shared.registry, &schema)
        {
            disable(&self.shared, &*self.deliveries, &id, format!("{e:#}")).await;
            return Step::Stop;
        }
        *source_problem = None;
        let target = source_target(&source);
        let from = self.destination.search_from_ms();
        let bucket = match self.deliveries.next_bucket(&id, &target, from).await {
            Ok(Some(bucket)) => bucket,
            Ok(None) => {
                self.shared
                    .telemetry
                    .set_destination_oldest_undelivered(&id, None);
                return Step::Idle;
            }
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                // The source has not committed yet: its table does not exist.
                self.shared
                    .telemetry
                    .set_destination_oldest_undelivered(&id, None);
                return Step::Idle;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot find the next bucket");
                return Step::Retry;
            }
        };
        self.shared
            .telemetry
            .set_destination_oldest_undelivered(&id, Some(bucket.scheduled_for_ms));
        let claimed = self
            .shared
            .store
            .claim_task(
                &id,
                bucket.scheduled_for_ms,
                &self.shared.config.runner_id,
                self.shared.config.lease,
            )
            .await;
        let lease = match claimed {
            Ok(Some(lease)) => lease,
            Ok(None) => return Step::Idle,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot claim the bucket");
                return Step::Retry;
            }
        };
        let attempt = Attempt {
            follow: self,
            target: &target,
            schema,
            bucket,
            started: Instant::now(),
            started_ms: wall_ms(),
            ctx: TickContext::new(&id, bucket.scheduled_for_ms)
                .with_secrets(Arc::clone(&self.shared.config.secrets)),
        };
        let (outcome, last_error) = attempt.run(lease).await;
        self.destination.last_error = last_error;
        match outcome {
            DeliveryOutcome::Delivered | DeliveryOutcome::DeadLetter => {
                self.destination.delivered_through_ms = Some(
                    self.destination
                        .delivered_through_ms
                        .map_or(bucket.scheduled_for_ms, |t| t.max(bucket.scheduled_for_ms)),
                );
                Step::Passed
            }
            DeliveryOutcome::Halted | DeliveryOutcome::Config | DeliveryOutcome::Cancelled => {
                Step::Stop
            }
            DeliveryOutcome::Transient | DeliveryOutcome::Fenced | DeliveryOutcome::StoreError => {
                Step::Retry
            }
        }
    }

    async fn report_source_problem(&mut self, shown: &mut Option<String>, problem: String) {
        if shown.as_deref() == Some(problem.as_str()) {
            return;
        }
        tracing::warn!(%problem, "destination waiting");
        if let Err(e) = self
            .deliveries
            .set_destination_status(&self.destination.id, StatusChange::Failed(problem.clone()))
            .await
        {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot record the destination's status"
            );
        }
        self.destination.last_error = Some(problem.clone());
        *shown = Some(problem);
    }
}

fn backoff(failures: u32, max: Duration) -> Duration {
    let seconds = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(seconds).min(max)
}

/// One delivery attempt of one bucket, under its lease.
struct Attempt<'a> {
    follow: &'a Follow,
    target: &'a crate::store::Target,
    schema: Arc<Schema>,
    bucket: PendingBucket,
    started: Instant,
    started_ms: i64,
    ctx: TickContext,
}

/// Why sending a bucket did not complete.
enum Failed {
    Destination(connector_core::ConnectorError),
    Store(String),
    LeaseLost,
    Cancelled,
}

impl Attempt<'_> {
    /// Sends the bucket, records the attempt everywhere, and says how it ended.
    /// Returns the outcome and the error it left as the destination's `last_error`.
    async fn run(self, mut lease: Lease) -> (DeliveryOutcome, Option<String>) {
        let shared = &self.follow.shared;
        let id = self.follow.destination.id.clone();
        shared.lock_running().start(&id, &self.ctx);
        let sent = self.send(&mut lease).await;
        shared.lock_running().contexts.remove(&id);
        let (mut outcome, delivered, error) = match sent {
            Ok(delivered) => (DeliveryOutcome::Delivered, delivered, None),
            Err((delivered, failed)) => {
                let (outcome, message) = match failed {
                    Failed::Destination(e) => {
                        let message = self.ctx.redact(&format!("{e:#}"));
                        (
                            match e.kind() {
                                ErrorKind::Transient => DeliveryOutcome::Transient,
                                ErrorKind::Config => DeliveryOutcome::Config,
                                _ => match self.follow.destination.spec.on_permanent {
                                    OnPermanent::Halt => DeliveryOutcome::Halted,
                                    OnPermanent::DeadLetter => DeliveryOutcome::DeadLetter,
                                },
                            },
                            message,
                        )
                    }
                    Failed::Store(message) => (DeliveryOutcome::StoreError, message),
                    Failed::LeaseLost => (
                        DeliveryOutcome::Fenced,
                        "the lease was lost during the delivery (another runner took the bucket); not recorded"
                            .to_owned(),
                    ),
                    Failed::Cancelled => (
                        DeliveryOutcome::Cancelled,
                        "connectord stopped during the delivery; the bucket is delivered again later"
                            .to_owned(),
                    ),
                };
                (outcome, delivered, Some(message))
            }
        };
        let mut record = DeliveryRecord {
            destination_id: id.clone(),
            scheduled_for_ms: self.bucket.scheduled_for_ms,
            started_at_ms: self.started_ms,
            outcome,
            rows: delivered.rows,
            skipped: delivered.skipped_rows(),
            bytes: self.ctx.sent_bytes(),
            requests: delivered.requests,
            retries: self.ctx.retries(),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
            runner_id: shared.config.runner_id.clone(),
        };
        if outcome.passes_bucket() {
            let trusted_until = lease.expires_at_ms
                - i64::try_from(shared.config.lease_margin.as_millis()).unwrap_or(0);
            let now = shared.store.now_ms().await.unwrap_or(i64::MAX);
            let recorded = if now >= trusted_until {
                Err("the lease expired before the delivery was recorded".to_owned())
            } else {
                self.follow
                    .deliveries
                    .record_delivery(&lease, &record, self.bucket.rows)
                    .await
                    .map_err(|e| format!("{e:#}"))
            };
            match recorded {
                Ok(()) => {}
                Err(message) => {
                    outcome = DeliveryOutcome::Fenced;
                    record.outcome = outcome;
                    record.error = Some(format!("delivery not recorded: {message}"));
                    self.record_attempt(&lease, &record).await;
                }
            }
        } else {
            self.record_attempt(&lease, &record).await;
        }
        let status = match outcome {
            // Clearing an error that is not there would be a write per bucket.
            DeliveryOutcome::Delivered | DeliveryOutcome::DeadLetter => self
                .follow
                .destination
                .last_error
                .is_some()
                .then_some(StatusChange::Succeeded),
            DeliveryOutcome::Halted => Some(StatusChange::Disabled(format!(
                "halted at bucket {}: {}",
                self.bucket.scheduled_for_ms,
                record.error.as_deref().unwrap_or_default()
            ))),
            DeliveryOutcome::Config => Some(StatusChange::Disabled(
                record.error.clone().unwrap_or_default(),
            )),
            DeliveryOutcome::Transient | DeliveryOutcome::StoreError => Some(StatusChange::Failed(
                record.error.clone().unwrap_or_default(),
            )),
            DeliveryOutcome::Fenced | DeliveryOutcome::Cancelled => None,
        };
        if let Some(status) = status {
            if let StatusChange::Disabled(_) = status {
                shared
                    .telemetry
                    .set_destination_state(&id, ConnectorState::Disabled);
            }
            if let Err(e) = self
                .follow
                .deliveries
                .set_destination_status(&id, status)
                .await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot record the destination's status"
                );
            }
        }
        #[allow(clippy::cast_precision_loss)]
        shared.telemetry.record_delivery(
            &id,
            &DeliverySample {
                outcome,
                rows: delivered.rows,
                skipped: delivered.skipped_rows(),
                bytes: record.bytes,
                requests: delivered.requests,
                retries: record.retries,
                duration_seconds: self.started.elapsed().as_secs_f64(),
            },
        );
        match &record.error {
            None => tracing::info!(
                bucket = self.bucket.scheduled_for_ms,
                rows = delivered.rows,
                skipped = record.skipped,
                bytes = record.bytes,
                "bucket delivered"
            ),
            Some(error) => tracing::warn!(
                bucket = self.bucket.scheduled_for_ms,
                outcome = outcome.as_str(),
                %error,
                "delivery failed"
            ),
        }
        let last_error = match outcome {
            DeliveryOutcome::Delivered | DeliveryOutcome::DeadLetter => None,
            DeliveryOutcome::Fenced | DeliveryOutcome::Cancelled => {
                self.follow.destination.last_error.clone()
            }
            _ => record.error,
        };
        (outcome, last_error)
    }

    /// A failed attempt goes to the history only; the bucket stays undelivered.
    async fn record_attempt(&self, lease: &Lease, record: &DeliveryRecord) {
        if let Err(e) = self
            .follow
            .deliveries
            .record_delivery(lease, record, self.bucket.rows)
            .await
        {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot record the delivery attempt"
            );
        }
    }

    /// Reads the bucket in chunks and delivers each, renewing the lease meanwhile.
    async fn send(&self, lease: &mut Lease) -> Result<Delivered, (Delivered, Failed)> {
        let shared = &self.follow.shared;
        let mut total = Delivered::default();
        let mut rows_read: u64 = 0;
        let mut after = self.bucket.first_row - 1;
        while after < self.bucket.last_row {
            let read = self.follow.deliveries.read_bucket(
                self.target,
                Arc::clone(&self.schema),
                &self.bucket,
                after,
                shared.config.delivery_chunk_rows,
            );
            let chunk = match self.under_lease(lease, read).await {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    return Err((
                        total,
                        Failed::Store(format!(
                            "cannot read bucket {}: {e:#}",
                            self.bucket.scheduled_for_ms
                        )),
                    ));
                }
                Err(failed) => return Err((total, failed)),
            };
            if chunk.rows.is_empty() {
                break;
            }
            rows_read += chunk.rows.len() as u64;
            after = chunk.last_row;
            let deliver = shared
                .registry
                .deliver(&self.ctx, &self.follow.config, &chunk.rows);
            match self.under_lease(lease, deliver).await {
                Ok(Ok(delivered)) => total.add(&delivered),
                Ok(Err(e)) => return Err((total, Failed::Destination(e))),
                Err(failed) => return Err((total, failed)),
            }
        }
        // A bucket whose rows are not all there (deleted by hand, say) is not passed
        // as delivered: the operator has to see it.
        if rows_read != self.bucket.rows {
            return Err((
                total,
                Failed::Store(format!(
                    "bucket {}: the ledger says {} rows were committed but {rows_read} were read back",
                    self.bucket.scheduled_for_ms, self.bucket.rows
                )),
            ));
        }
        Ok(total)
    }

    /// Drives `work`, renewing the lease every third of its length, until it ends,
    /// the lease is lost or connectord cancels work past its shutdown grace.
    async fn under_lease<T>(
        &self,
        lease: &mut Lease,
        work: impl Future<Output = T>,
    ) -> Result<T, Failed> {
        let shared = &self.follow.shared;
        let every = (shared.config.lease / 3).max(Duration::from_millis(10));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut cancel = shared.cancel.subscribe();
        let cancelled = async move {
            let _ = cancel.wait_for(|cancelled| *cancelled).await.is_ok();
        };
        tokio::pin!(work, cancelled);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                () = &mut cancelled => return Err(Failed::Cancelled),
                _ = renew.tick() => match shared.store.renew_task(lease, shared.config.lease).await {
                    Ok(Some(renewed)) => *lease = renewed,
                    Ok(None) => return Err(Failed::LeaseLost),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot renew the lease"),
                },
            }
        }
    }
}
