use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use connector_core::{EnvSecrets, Registry, SecretSource, TickContext, ValidatedConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::destination::DeliveryStore;
use crate::push::{IngestLimits, Ingestor, PushStore};
use crate::refresh::{Change, Known, refresh};
use crate::slots::Slots;
use crate::spec::ConnectorRecord;
use crate::store::{Sink, StateStore, TickOutcome};
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
    /// A runner not heard from for this long (it says it is alive at every refresh)
    /// is left out when the runners sharing a store split the connectors among
    /// themselves; its connectors move to the others. A runner that stops says so
    /// and its connectors move at the others' next refresh.
    pub membership_ttl: Duration,
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
            membership_ttl: Duration::from_secs(3),
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
    /// Push connectors' validated configs, the same for ingest and commit.
    pub(crate) push_configs: Arc<crate::push::configs::PushConfigs>,
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
                push_configs: Arc::default(),
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
            Arc::clone(&self.shared.push_configs),
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
        let mut slots: Slots<ValidatedConfig> = Slots::default();
        let mut known = Some(Known::new(&self.shared.config.runner_id));
        let mut refreshing: Option<tokio::task::JoinHandle<(Known, Vec<Change>)>> = None;
        let mut refresh_again = false;
        // Slots the loop dropped itself, for the next refresh to forget.
        let mut forget = Vec::new();
        // Triggers for connectors the running refresh may bring.
        let mut waiting_triggers: Vec<String> = Vec::new();
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
            if refreshing.is_none()
                && (refresh_again || Instant::now() >= next_refresh)
                && let Some(known) = known.take()
            {
                refresh_again = false;
                refreshing = Some(tokio::spawn(refresh(
                    Arc::clone(&self.shared),
                    known,
                    std::mem::take(&mut forget),
                )));
            }
            for due in slots.take_due(wall_ms()) {
                let shared = Arc::clone(&self.shared);
                ticks.spawn(async move {
                    let outcome =
                        execute_tick(&shared, &due.record, &due.config, due.scheduled_for).await;
                    (due.id, outcome)
                });
            }
            let until_due = Duration::from_millis(
                u64::try_from(slots.next_due_ms().saturating_sub(wall_ms())).unwrap_or(0),
            );
            // A refresh under way wakes the loop when it ends.
            let until_refresh = if refreshing.is_some() {
                Duration::MAX
            } else {
                next_refresh.saturating_duration_since(Instant::now())
            };
            let sleep = until_due.min(until_refresh);
            let refreshed = async {
                match refreshing.as_mut() {
                    Some(running) => running.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(sleep) => {}
                done = refreshed => {
                    refreshing = None;
                    next_refresh = Instant::now() + refresh_every;
                    let now = wall_ms();
                    match done {
                        Ok((newer, changes)) => {
                            known = Some(newer);
                            apply(&mut slots, changes, now);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the connector refresh failed; starting over from the store");
                            known = Some(Known::new(&self.shared.config.runner_id));
                        }
                    }
                    for id in std::mem::take(&mut waiting_triggers) {
                        if slots.trigger(&id) {
                            continue;
                        }
                        // This refresh may have begun before the connector was
                        // created; the one asked for since brings it.
                        if refresh_again {
                            waiting_triggers.push(id);
                        } else {
                            tracing::warn!(connector_id = %id, "trigger ignored: the connector is not enabled on this runner");
                        }
                    }
                }
                Some(done) = ticks.join_next() => {
                    if let Ok((id, outcome)) = done {
                        // A Config error disabled it in the store already: stop now,
                        // not at the next refresh.
                        let disabled = outcome == Some(TickOutcome::Config);
                        slots.finished(&id, disabled);
                        if disabled {
                            forget.push(id);
                        }
                    }
                }
                Some(command) = self.commands.recv() => match command {
                    Command::Refresh => refresh_again = true,
                    Command::Trigger(id) => {
                        if refreshing.is_some() || refresh_again {
                            // A connector just created waits for the refresh that brings it.
                            if !slots.trigger(&id) {
                                waiting_triggers.push(id);
                            }
                        } else if !slots.trigger(&id) {
                            tracing::warn!(connector_id = %id, "trigger ignored: the connector is not enabled on this runner");
                        }
                    }
                },
            }
        }
        // A refresh still running would say this runner is alive after it left.
        if let Some(running) = refreshing.take() {
            running.abort();
        }
        self.stop(ticks, deliverer.take()).await;
        if let Err(e) = self.shared.store.leave(&self.shared.config.runner_id).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot tell the other runners this one stopped; they take over its connectors after the membership ttl"
            );
        }
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
}

/// Brings the loop's slots up to date with a refresh.
fn apply(slots: &mut Slots<ValidatedConfig>, changes: Vec<Change>, now_ms: i64) {
    for change in changes {
        match change {
            Change::Start(record, config, owned) => slots.insert(record, config, owned, now_ms),
            Change::Owned(record, owned) => {
                // The refresher saw the same spec, so the slot keeps it.
                let _ = slots.keep(record, owned, now_ms);
            }
            Change::Stop(id) => slots.stop(&id),
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
