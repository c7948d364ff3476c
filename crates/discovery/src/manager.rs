//! The discovery loop: one task per discovery, refreshing on the clock grid of its
//! `refresh_ms` (and, for file_sd, when a watched file changes), syncing its managed
//! connectors and recording its status. With several processes on one store, the
//! process that claims the refresh bucket's lease refreshes; the others skip it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_core::{Registry, TickContext};
use connector_http::HttpClient;
use connector_runner::telemetry::DiscoveryRefresh;
use connector_runner::{DiscoveryRecord, DiscoveryStore, RunnerHandle, StateStore};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::file_sd::{FileCache, FileStatus};
use crate::spec::{Discovery, DiscoverySpec, SdType};
use crate::targets::Targets;

/// How often the list of discoveries is read again when nothing pokes the manager.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// A refresh's lease: long enough for a slow SD endpoint and a big sync.
const REFRESH_LEASE: Duration = Duration::from_secs(60);

/// File events arriving this close together make one refresh.
const SETTLE: Duration = Duration::from_millis(100);

/// What every discovery task shares.
#[derive(Clone)]
pub struct Manager {
    /// Discoveries and their managed connectors.
    pub discoveries: Arc<dyn DiscoveryStore>,
    /// For the refresh leases.
    pub leases: Arc<dyn StateStore>,
    /// Connector types, to build and check each target's connector.
    pub registry: Arc<Registry>,
    /// Poked after a sync that changed connectors, so they tick without waiting.
    pub runner: Option<RunnerHandle>,
    /// This process's runner id, for the leases.
    pub runner_id: String,
    /// Notified by the API when a discovery is created, changed or deleted.
    pub changed: Arc<Notify>,
    client: HttpClient,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("runner_id", &self.runner_id)
            .finish_non_exhaustive()
    }
}

struct Running {
    updated_at_ms: i64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Manager {
    /// A manager over these stores.
    pub fn new(
        discoveries: Arc<dyn DiscoveryStore>,
        leases: Arc<dyn StateStore>,
        registry: Arc<Registry>,
        runner: Option<RunnerHandle>,
        runner_id: String,
    ) -> Self {
        Manager {
            discoveries,
            leases,
            registry,
            runner,
            runner_id,
            changed: Arc::new(Notify::new()),
            client: HttpClient::new(),
        }
    }

    /// Runs until `stopping` turns true, then stops every discovery task (a refresh
    /// in flight finishes its sync: each is one transaction).
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut running: HashMap<String, Running> = HashMap::new();
        loop {
            match self.discoveries.list_discoveries().await {
                Ok(records) => self.reconcile(&mut running, records),
                Err(e) => tracing::error!(error = format!("{e:#}"), "cannot list discoveries"),
            }
            tokio::select! {
                () = until_true(&mut stopping) => break,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(LIST_EVERY) => {}
            }
        }
        for (_, r) in running.drain() {
            r.stop.send_replace(true);
            let _ = r.task.await;
        }
    }

    fn reconcile(&self, running: &mut HashMap<String, Running>, records: Vec<DiscoveryRecord>) {
        let ids: std::collections::HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        if let Some(runner) = &self.runner {
            runner.telemetry().retain_discoveries(&ids);
        }
        running.retain(|id, r| {
            let keep = ids.contains(id) && !r.task.is_finished();
            if !keep {
                r.stop.send_replace(true);
            }
            keep
        });
        for record in records {
            if running
                .get(&record.id)
                .is_some_and(|r| r.updated_at_ms == record.updated_at_ms)
            {
                continue;
            }
            if let Some(old) = running.remove(&record.id) {
                old.stop.send_replace(true);
            }
            let (stop, stopped) = watch::channel(false);
            let updated_at_ms = record.updated_at_ms;
            let id = record.id.clone();
            let task = tokio::spawn(self.clone().run_one(record, stopped));
            running.insert(
                id,
                Running {
                    updated_at_ms,
                    stop,
                    task,
                },
            );
        }
    }

    async fn run_one(self, record: DiscoveryRecord, mut stop: watch::Receiver<bool>) {
        let discovery = match DiscoverySpec::from_json(&record.spec)
            .and_then(|s| s.validate(&self.registry))
        {
            Ok(d) => d,
            Err(e) => {
                let status = json!({"refreshed_at": wall_ms(), "error": format!("the stored spec does not validate: {e}")});
                self.record_status(&record.id, status).await;
                // Waits for a change of the spec: only a task that panicked ends early
                // and is started again.
                until_true(&mut stop).await;
                return;
            }
        };
        let (events, mut file_events) = mpsc::channel::<()>(1);
        let _watcher = (discovery.spec.sd_type == SdType::File)
            .then(|| watch_files(&discovery.spec.files, events));
        let mut cache = Some(FileCache::default());
        // The first refresh of a new or changed discovery runs at once on every
        // process (a sync is idempotent); later timer refreshes take the bucket's lease.
        let mut elected = false;
        loop {
            self.refresh(&record.id, &discovery, &mut cache, elected)
                .await;
            let refresh = discovery.refresh_ms;
            let next = connector_runner::schedule::bucket_start(wall_ms(), refresh)
                + i64::try_from(refresh).unwrap_or(i64::MAX);
            let wait = Duration::from_millis(u64::try_from(next - wall_ms()).unwrap_or(0));
            tokio::select! {
                () = until_true(&mut stop) => return,
                () = tokio::time::sleep(wait) => elected = true,
                Some(()) = file_events.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while file_events.try_recv().is_ok() {}
                    elected = false;
                }
            }
        }
    }

    /// One refresh: discover, relabel, sync, record. `elected`: claim the refresh
    /// bucket first (a file change refreshes on the process that saw it).
    async fn refresh(
        &self,
        id: &str,
        discovery: &Discovery,
        cache: &mut Option<FileCache>,
        elected: bool,
    ) {
        let started = Instant::now();
        let now = wall_ms();
        let bucket = connector_runner::schedule::bucket_start(now, discovery.refresh_ms);
        let lease_key = format!("discovery:{id}");
        let lease = if elected {
            match self
                .leases
                .claim_task(&lease_key, bucket, &self.runner_id, REFRESH_LEASE)
                .await
            {
                Ok(Some(lease)) => Some(lease),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(discovery = %discovery.spec.name, error = format!("{e:#}"), "cannot claim the discovery's refresh");
                    return;
                }
            }
        } else {
            None
        };
        let ctx = TickContext::new(lease_key, bucket);
        let (found, files) = self.discover(&ctx, discovery, cache).await;
        let outcome = match found {
            Ok(labels) => self.apply(discovery, labels).await,
            Err(message) => Err(message),
        };
        let (status, synced) = match outcome {
            Ok((targets, report)) => {
                let error = crate::file_sd::failures(&files);
                let status = status_json(now, started, error, &files, &targets, Some(&report));
                (status, Some(report))
            }
            Err(message) => {
                tracing::warn!(discovery = %discovery.spec.name, error = %message, "discovery refresh failed; its connectors stay as they were");
                (
                    self.failed_status(id, now, started, message, &files).await,
                    None,
                )
            }
        };
        if let Some(runner) = &self.runner {
            let count = |key: &str| {
                status
                    .get(key)
                    .and_then(serde_json::Value::as_array)
                    .map_or(0, |a| a.len() as u64)
            };
            let report = synced.clone().unwrap_or_default();
            #[allow(clippy::cast_precision_loss)]
            let sample = DiscoveryRefresh {
                ok: synced.is_some(),
                active: count("active_targets"),
                dropped: count("dropped_targets"),
                invalid: count("invalid_targets"),
                created: report.created as u64,
                updated: report.updated as u64,
                removed: report.removed as u64,
                duration_seconds: started.elapsed().as_secs_f64(),
                at_seconds: now as f64 / 1000.0,
            };
            runner.telemetry().record_discovery(
                id,
                &discovery.spec.name,
                &discovery.spec.template.org_id,
                &sample,
            );
        }
        self.record_status(id, status).await;
        if let Some(lease) = lease
            && let Err(e) = self.leases.finish_task(&lease).await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot finish the discovery's refresh lease"
            );
        }
    }

    /// Reads the target groups: the SD's answer, or every file (a file that fails
    /// keeps its last good groups; one with none makes the refresh fail).
    async fn discover(
        &self,
        ctx: &TickContext,
        discovery: &Discovery,
        cache: &mut Option<FileCache>,
    ) -> (Result<Vec<relabel::Labels>, String>, Vec<FileStatus>) {
        if discovery.spec.sd_type == SdType::Http {
            let found =
                crate::http_sd::discover(&self.client, ctx, &discovery.spec, discovery.refresh_ms)
                    .await;
            return (found, Vec::new());
        }
        let mut taken = cache.take().unwrap_or_default();
        let patterns = discovery.spec.files.clone();
        let read = tokio::task::spawn_blocking(move || {
            let read = taken.read(&patterns);
            (taken, read)
        })
        .await;
        let Ok((back, (targets, files, complete))) = read else {
            return (Err("the file reader failed".to_owned()), Vec::new());
        };
        *cache = Some(back);
        if complete {
            return (Ok(targets), files);
        }
        let failed = crate::file_sd::failures(&files).unwrap_or_default();
        (
            Err(format!("{failed}; kept the targets from before")),
            files,
        )
    }

    /// Relabels the discovered targets, holds them to `target_limit`, and syncs the
    /// connectors; the runner is poked when a connector changed.
    async fn apply(
        &self,
        discovery: &Discovery,
        labels: Vec<relabel::Labels>,
    ) -> Result<(Targets, connector_runner::SyncReport), String> {
        let registry = Arc::clone(&self.registry);
        let d = discovery.clone();
        let targets = tokio::task::spawn_blocking(move || d.sort_targets(labels, &registry))
            .await
            .map_err(|e| format!("relabeling failed: {e}"))?;
        if targets.active.len() as u64 > discovery.target_limit {
            return Err(format!(
                "{} targets kept after relabeling, more than target_limit ({})",
                targets.active.len(),
                discovery.target_limit
            ));
        }
        let report = self
            .discoveries
            .sync_managed(&discovery.spec.name, &targets.wanted)
            .await
            .map_err(|e| format!("cannot sync the discovered connectors: {e:#}"))?;
        if report.created + report.updated + report.removed > 0
            && let Some(runner) = &self.runner
        {
            runner.refresh();
        }
        tracing::debug!(discovery = %discovery.spec.name, active = targets.active.len(), ?report, "discovery refreshed");
        Ok((targets, report))
    }

    /// The status after a failed refresh: the error, and the targets of the last good one.
    async fn failed_status(
        &self,
        id: &str,
        now: i64,
        started: Instant,
        error: String,
        files: &[FileStatus],
    ) -> serde_json::Value {
        let mut status = match self.discoveries.get_discovery(id).await {
            Ok(Some(record)) => record.status.unwrap_or_else(|| json!({})),
            _ => json!({}),
        };
        if let Some(object) = status.as_object_mut() {
            object.insert("refreshed_at".into(), now.into());
            object.insert("duration_ms".into(), elapsed_ms(started).into());
            object.insert("error".into(), error.into());
            object.insert(
                "files".into(),
                serde_json::to_value(files).unwrap_or_default(),
            );
        }
        status
    }

    async fn record_status(&self, id: &str, status: serde_json::Value) {
        if let Err(e) = self.discoveries.set_discovery_status(id, &status).await {
            tracing::warn!(discovery_id = %id, error = format!("{e:#}"), "cannot record the discovery's status");
        }
    }
}

fn status_json(
    now: i64,
    started: Instant,
    error: Option<String>,
    files: &[FileStatus],
    targets: &Targets,
    report: Option<&connector_runner::SyncReport>,
) -> serde_json::Value {
    json!({
        "refreshed_at": now,
        "duration_ms": elapsed_ms(started),
        "error": error,
        "files": files,
        "active_targets": targets.active,
        "dropped_targets": targets.dropped,
        "invalid_targets": targets.invalid,
        "last_sync": report,
    })
}

/// Waits until `flag` is true or its sender is gone (nobody can stop the task then:
/// it stops). The borrow of the value ends inside, so the caller's future stays `Send`.
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn wall_ms() -> i64 {
    connector_runner::protocol::wall_clock_ms()
}

/// Watches the directories of `patterns` (a file created in one counts) and sends
/// one event per change burst. `None` (logged) when the platform cannot watch: the
/// timer still refreshes.
fn watch_files(
    patterns: &[String],
    events: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch file_sd files; they are re-read every refresh_ms only"))
    .ok()?;
    for dir in crate::file_sd::watched_dirs(patterns) {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a file_sd directory; it is re-read every refresh_ms only");
        }
    }
    Some(watcher)
}
