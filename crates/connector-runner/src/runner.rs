use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use connector_core::{Drive, EnvSecrets, Registry, SecretSource, TickContext, ValidatedConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::destination::DeliveryStore;
use crate::push::{IngestLimits, Ingestor, PushStore};
use crate::schedule::{due_bucket, next_firing, phase_ms};
use crate::spec::{ConnectorRecord, ConnectorState};
use crate::store::{Sink, StateStore, StatusChange, TickOutcome};
use crate::telemetry::Telemetry;
use crate::tick::execute_tick;

/// How a [`Runner`] behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This runner's id in leases and tick history; unique per process.
    pub runner_id: String,
    /// A tick that runs longer is stopped and counted as `timeout`.
    pub tick_timeout: Duration,
    /// How long a claim holds its bucket. The runner renews it every third of this while
    /// the tick runs, so a tick may run longer than its lease, and a dead runner's bucket
    /// is free again within this time.
    pub lease: Duration,
    /// The runner stops trusting a lease this long before it expires, so clock skew and
    /// a slow commit cannot make two runners commit one bucket.
    pub lease_margin: Duration,
    /// How often the runner re-reads connectors from the state store.
    pub refresh_interval: Duration,
    /// Where `$env:NAME` references resolve.
    pub secrets: Arc<dyn SecretSource>,
    /// When the runner is told to stop, ticks in flight get this long to finish; then
    /// they are cancelled before they commit.
    pub shutdown_grace: Duration,
    /// Rows of a bucket read back and handed to a destination at once: memory stays
    /// flat however far behind a destination is.
    pub delivery_chunk_rows: usize,
    /// The longest wait before a destination tries a failed bucket again (the wait
    /// doubles from one second up to this).
    pub delivery_backoff_max: Duration,
    /// Retention for connectors that do not set their own; `None` keeps rows forever.
    pub default_retention: Option<Duration>,
    /// How often rows past retention are pruned.
    pub prune_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            runner_id: uuid::Uuid::new_v4().to_string(),
            tick_timeout: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            lease_margin: Duration::from_secs(2),
            refresh_interval: Duration::from_secs(1),
            secrets: Arc::new(EnvSecrets),
            shutdown_grace: Duration::from_secs(10),
            delivery_chunk_rows: 10_000,
            delivery_backoff_max: Duration::from_secs(30),
            default_retention: None,
            prune_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
enum Command {
    Refresh,
    Trigger(String),
}

/// Sends commands to a running [`Runner`] and reads its per-connector series.
#[derive(Debug, Clone)]
pub struct RunnerHandle {
    commands: mpsc::UnboundedSender<Command>,
    telemetry: Arc<Telemetry>,
}

impl RunnerHandle {
    /// Re-reads connectors from the state store now rather than at the next refresh.
    pub fn refresh(&self) {
        let _ = self.commands.send(Command::Refresh);
    }

    /// Runs one tick of the connector now, for `scheduled_for` = now.
    pub fn trigger(&self, connector_id: impl Into<String>) {
        let _ = self.commands.send(Command::Trigger(connector_id.into()));
    }

    /// The runner's per-connector series and the ticks the store could not record.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) config: RunnerConfig,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The ticks and deliveries running now, told when connectord stops.
    running: std::sync::Mutex<Running>,
    /// Set past the shutdown grace: ticks and deliveries still running are cancelled.
    pub(crate) cancel: watch::Sender<bool>,
    /// Set when the stop begins: no tick or delivery starts after it.
    stopping: watch::Sender<bool>,
    /// Every connector by name, as of the newest refresh (`None` before the first):
    /// destinations find their sources here rather than listing them again.
    pub(crate) connectors: watch::Sender<Option<Arc<HashMap<String, ConnectorRecord>>>>,
}

struct Slot {
    record: ConnectorRecord,
    config: ValidatedConfig,
    phase_ms: i64,
    next_due_ms: i64,
    in_flight: bool,
    triggered: bool,
}

/// Schedules and runs the ticks of every enabled connector in a state store.
pub struct Runner {
    shared: Arc<Shared>,
    deliveries: Option<Arc<dyn DeliveryStore>>,
    push: Option<PushParts>,
    commands: mpsc::UnboundedReceiver<Command>,
    handle: RunnerHandle,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("runner_id", &self.shared.config.runner_id)
            .finish_non_exhaustive()
    }
}

/// What [`Runner::with_push`] hands to [`Runner::run`].
struct PushParts {
    store: Arc<dyn PushStore>,
    queue: mpsc::Receiver<crate::push::ingest::Pending>,
    ingestor: Ingestor,
}

pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Runner {
    /// A runner over `store`, committing to `sink`, with the connector types of `registry`.
    pub fn new(
        store: Arc<dyn StateStore>,
        sink: Arc<dyn Sink>,
        registry: Arc<Registry>,
        config: RunnerConfig,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let telemetry = Arc::new(Telemetry::new());
        Runner {
            shared: Arc::new(Shared {
                store,
                sink,
                registry,
                config,
                telemetry: Arc::clone(&telemetry),
                running: std::sync::Mutex::default(),
                cancel: watch::Sender::new(false),
                stopping: watch::Sender::new(false),
                connectors: watch::Sender::new(None),
            }),
            deliveries: None,
            push: None,
            commands: rx,
            handle: RunnerHandle {
                commands: tx,
                telemetry,
            },
        }
    }

    /// Also delivers to the destinations in `deliveries`, each following its source's
    /// committed buckets (see [`DeliveryStore`]).
    pub fn with_deliveries(mut self, deliveries: Arc<dyn DeliveryStore>) -> Self {
        self.deliveries = Some(deliveries);
        self
    }

    /// Also runs push connectors: they stage into `store`, and the runner commits
    /// their closed buckets. Requests reach them through [`Runner::ingestor`].
    pub fn with_push(mut self, store: Arc<dyn PushStore>, limits: IngestLimits) -> Self {
        let (ingestor, queue) = Ingestor::new(
            Arc::clone(&self.shared.registry),
            self.shared.connectors.subscribe(),
            Arc::clone(&self.shared.telemetry),
            limits,
        );
        self.push = Some(PushParts {
            store,
            queue,
            ingestor,
        });
        self
    }

    /// Takes pushed requests for this runner's push connectors (after
    /// [`Runner::with_push`]); they are staged once [`Runner::run`] runs.
    pub fn ingestor(&self) -> Option<Ingestor> {
        self.push.as_ref().map(|p| p.ingestor.clone())
    }

    /// A handle to trigger ticks and refreshes while [`Runner::run`] runs.
    pub fn handle(&self) -> RunnerHandle {
        self.handle.clone()
    }

    /// Runs until `shutdown` completes. Then no tick starts and no source request is
    /// retried; ticks in flight get [`RunnerConfig::shutdown_grace`] to finish and are
    /// cancelled after it. Every commit is one transaction and a cancelled tick never
    /// reaches its commit, so stopping never leaves a bucket half-committed.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut slots: HashMap<String, Slot> = HashMap::new();
        let mut ticks: JoinSet<(String, Option<TickOutcome>)> = JoinSet::new();
        let refresh_every = self.shared.config.refresh_interval;
        let mut next_refresh = Instant::now();
        let mut deliverer = self.deliveries.clone().map(|deliveries| {
            tokio::spawn(crate::deliverer::run(
                Arc::clone(&self.shared),
                deliveries,
                self.shared.stopping.subscribe(),
            ))
        });
        let pruner = tokio::spawn(crate::pruner::run(
            Arc::clone(&self.shared),
            self.shared.stopping.subscribe(),
        ));
        let push_tasks = self.push.take().map(|push| {
            let stager = tokio::spawn(crate::push::ingest::stage_loop(
                Arc::clone(&push.store),
                push.queue,
            ));
            let committer = tokio::spawn(crate::push::committer::run(
                Arc::clone(&self.shared),
                push.store,
                Arc::clone(&push.ingestor.staged_bytes),
                push.ingestor.limits().grace,
                self.shared.stopping.subscribe(),
            ));
            (stager, committer)
        });
        tokio::pin!(shutdown);
        loop {
            if Instant::now() >= next_refresh {
                self.refresh(&mut slots).await;
                next_refresh = Instant::now() + refresh_every;
            }
            let now = wall_ms();
            for (id, slot) in &mut slots {
                if slot.in_flight {
                    continue;
                }
                let scheduled_for = if slot.triggered {
                    slot.triggered = false;
                    now
                } else if now >= slot.next_due_ms {
                    // The newest due bucket: buckets missed while down are not replayed.
                    let schedule_ms = slot.record.spec.schedule_ms;
                    slot.next_due_ms = next_firing(now, schedule_ms, slot.phase_ms);
                    due_bucket(now, schedule_ms, slot.phase_ms)
                } else {
                    continue;
                };
                slot.in_flight = true;
                let shared = Arc::clone(&self.shared);
                let record = slot.record.clone();
                let config = slot.config.clone();
                let id = id.clone();
                ticks.spawn(async move {
                    let outcome = execute_tick(&shared, &record, &config, scheduled_for).await;
                    (id, outcome)
                });
            }
            let next_due = slots
                .values()
                .filter(|s| !s.in_flight)
                .map(|s| s.next_due_ms)
                .min()
                .unwrap_or(i64::MAX);
            let until_due = Duration::from_millis(
                u64::try_from(next_due.saturating_sub(wall_ms())).unwrap_or(0),
            );
            let sleep = until_due.min(next_refresh.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(sleep) => {}
                Some(done) = ticks.join_next() => {
                    if let Ok((id, outcome)) = done {
                        if outcome == Some(TickOutcome::Config) {
                            // Disabled in the store already: stop now, not at the next refresh.
                            slots.remove(&id);
                        } else if let Some(slot) = slots.get_mut(&id) {
                            slot.in_flight = false;
                        }
                    }
                }
                Some(command) = self.commands.recv() => match command {
                    Command::Refresh => next_refresh = Instant::now(),
                    Command::Trigger(id) => {
                        if let Some(slot) = slots.get_mut(&id) {
                            slot.triggered = true;
                        } else {
                            tracing::warn!(connector_id = %id, "trigger ignored: the connector is not enabled on this runner");
                        }
                    }
                },
            }
        }
        self.stop(ticks, deliverer.take()).await;
        // It stops between two prune batches once the stop begins.
        let _ = pruner.await;
        if let Some((stager, mut committer)) = push_tasks {
            // A request still waiting for its stage gets no 2xx (the client retries);
            // those acknowledged are staged, and the next start commits them.
            stager.abort();
            // The committer stops after the bucket it is on, history recorded.
            let grace = self.shared.config.shutdown_grace;
            if tokio::time::timeout(grace, &mut committer).await.is_err() {
                // Each commit is one transaction: stopping between them loses nothing.
                tracing::warn!("stopping: push commits ran past the shutdown grace");
                committer.abort();
            }
        }
        tracing::info!("runner stopped");
    }

    async fn stop(
        &self,
        mut ticks: JoinSet<(String, Option<TickOutcome>)>,
        deliverer: Option<tokio::task::JoinHandle<()>>,
    ) {
        /// After the cancel, how long cancelled ticks get to record their outcome.
        const RECORD_BOUND: Duration = Duration::from_secs(5);
        self.shared.stopping.send_replace(true);
        self.shared.lock_running().stop();
        if let Some(deliverer) = deliverer {
            ticks.spawn(async move {
                let _ = deliverer.await;
                (String::new(), None)
            });
        }
        let in_flight = ticks.len();
        if in_flight == 0 {
            return;
        }
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(
            in_flight,
            grace_ms = grace.as_millis() as u64,
            "stopping: waiting for ticks in flight"
        );
        if tokio::time::timeout(grace, drain(&mut ticks)).await.is_ok() {
            return;
        }
        tracing::warn!(
            still_running = ticks.len(),
            "stopping: the shutdown grace is over, cancelling the ticks still running (nothing of theirs is committed)"
        );
        self.shared.cancel.send_replace(true);
        if tokio::time::timeout(RECORD_BOUND, drain(&mut ticks))
            .await
            .is_err()
        {
            tracing::warn!("stopping: ticks that could not record their cancellation were aborted");
            ticks.abort_all();
        }
    }

    async fn refresh(&self, slots: &mut HashMap<String, Slot>) {
        let records = match self.shared.store.list_connectors().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot read connectors from the state store"
                );
                return;
            }
        };
        self.shared.telemetry.set_connectors(&records);
        self.shared.connectors.send_replace(Some(Arc::new(
            records
                .iter()
                .map(|r| (r.spec.name.clone(), r.clone()))
                .collect(),
        )));
        // A set: with thousands of connectors a list made each refresh quadratic.
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        for record in records {
            if record.state != ConnectorState::Enabled {
                continue;
            }
            seen.insert(record.id.clone());
            if slots
                .get(&record.id)
                .is_some_and(|s| s.record.spec == record.spec)
            {
                if let Some(slot) = slots.get_mut(&record.id) {
                    slot.record = record;
                }
                continue;
            }
            let config = match record.spec.validate(&self.shared.registry) {
                Ok(config) => config,
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::warn!(connector_id = %record.id, connector = %record.spec.name, %reason, "disabling connector: its spec does not validate");
                    if let Err(e) = self
                        .shared
                        .store
                        .set_status(&record.id, StatusChange::Disabled(reason))
                        .await
                    {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "cannot record the disabled state"
                        );
                    }
                    continue;
                }
            };
            if self
                .shared
                .registry
                .get(&record.spec.connector_type)
                .is_some_and(|c| c.drive() == Drive::Push)
            {
                // Driven by requests and the push committer, not by a schedule.
                continue;
            }
            let phase = phase_ms(&record.id, record.spec.schedule_ms);
            let next_due_ms = next_firing(wall_ms(), record.spec.schedule_ms, phase);
            let in_flight = slots.get(&record.id).is_some_and(|s| s.in_flight);
            slots.insert(
                record.id.clone(),
                Slot {
                    record,
                    config,
                    phase_ms: phase,
                    next_due_ms,
                    in_flight,
                    triggered: false,
                },
            );
        }
        // A tick in flight finishes even if its connector was paused meanwhile.
        slots.retain(|id, slot| seen.contains(id) || slot.in_flight);
        for slot in slots.values_mut() {
            if !seen.contains(&slot.record.id) {
                slot.next_due_ms = i64::MAX;
            }
        }
    }
}

async fn drain<T: 'static>(ticks: &mut JoinSet<T>) {
    while ticks.join_next().await.is_some() {}
}

/// The contexts of the ticks running now, and whether connectord is stopping. One
/// lock holds both, so a tick whose claim ends as the stop begins is told too: it
/// either is in `contexts` when `stop` walks them or sees `stopping` when it starts.
#[derive(Debug, Default)]
pub(crate) struct Running {
    stopping: bool,
    pub(crate) contexts: HashMap<String, TickContext>,
}

impl Running {
    pub(crate) fn start(&mut self, id: &str, ctx: &TickContext) {
        if self.stopping {
            ctx.request_stop();
        }
        self.contexts.insert(id.to_owned(), ctx.clone());
    }

    fn stop(&mut self) {
        self.stopping = true;
        for ctx in self.contexts.values() {
            ctx.request_stop();
        }
    }
}

impl Shared {
    pub(crate) fn lock_running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
