//! The runner driving scripted connectors against the real SQLite store: outcome
//! handling per error kind, panics, tick timeouts, triggers and clean shutdown.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_core::{
    Batch, ColumnType, Connector, ConnectorError, ErrorKind, Registry, Schema, TickContext,
    async_trait, config_from_json,
};
use connector_runner::{
    ConnectorSpec, ConnectorState, Origin, Runner, RunnerConfig, StateStore, TickOutcome,
    TickRecord,
};
use store_sqlite::SqliteStore;

#[derive(Debug, Clone)]
enum Step {
    Rows(usize),
    Fail(ErrorKind),
    Panic,
    Sleep(Duration),
}

/// Plays its script one step per tick; `Rows(1)` once the script runs out.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    scheduled: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl Connector for Scripted {
    const TYPE_ID: &'static str = "scripted";
    type Config = ();

    fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new([
            ("timestamp", ColumnType::Timestamp),
            ("n", ColumnType::Real),
        ]))
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
        config_from_json(raw)
    }

    async fn tick(&self, ctx: &TickContext, _: &()) -> Result<Batch, ConnectorError> {
        self.scheduled.lock().unwrap().push(ctx.scheduled_for_ms());
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Rows(1));
        let rows = match step {
            Step::Rows(n) => n,
            Step::Fail(kind) => {
                return Err(ConnectorError::new(
                    kind,
                    format!("scripted {kind} failure"),
                ));
            }
            Step::Panic => panic!("scripted panic"),
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                1
            }
        };
        let mut batch = Batch::new(self.schema());
        for i in 0..rows {
            batch
                .row()
                .timestamp(ctx.scheduled_for_ms())
                .real(i as f64)
                .finish()?;
        }
        Ok(batch)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    connector: Scripted,
    id: String,
    registry: Arc<Registry>,
}

async fn setup(script: Vec<Step>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let connector = Scripted::default();
    connector.script.lock().unwrap().extend(script);
    let mut registry = Registry::new();
    registry.register(connector.clone()).unwrap();
    let spec = ConnectorSpec {
        name: "scripted".into(),
        connector_type: "scripted".into(),
        target_database: "db".into(),
        target_table: "t".into(),
        schedule_ms: 100,
        config: serde_json::Value::Null,
    };
    let id = store.upsert_connector(&spec, Origin::Api).await.unwrap().id;
    Setup {
        _dir: dir,
        store,
        connector,
        id,
        registry: Arc::new(registry),
    }
}

fn config(tick_timeout: Duration) -> RunnerConfig {
    RunnerConfig {
        tick_timeout,
        lease: Duration::from_secs(10),
        lease_margin: Duration::from_millis(100),
        refresh_interval: Duration::from_millis(100),
        ..RunnerConfig::default()
    }
}

/// Runs until `done(history)` holds (oldest first), then stops the runner cleanly.
async fn run_until(
    s: &Setup,
    tick_timeout: Duration,
    done: impl Fn(&[TickRecord]) -> bool,
) -> Vec<TickRecord> {
    let runner = Runner::new(
        s.store.clone(),
        s.store.clone(),
        s.registry.clone(),
        config(tick_timeout),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut history = s.store.ticks(&s.id, 100).await.unwrap();
        history.reverse();
        if done(&history) {
            break;
        }
        assert!(Instant::now() < deadline, "timed out; history: {history:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    let mut history = s.store.ticks(&s.id, 100).await.unwrap();
    history.reverse();
    history
}

fn outcomes(history: &[TickRecord]) -> Vec<TickOutcome> {
    history.iter().map(|t| t.outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_permanent_errors_keep_ticking_and_set_last_error() {
    let s = setup(vec![
        Step::Fail(ErrorKind::Transient),
        Step::Fail(ErrorKind::Permanent),
    ])
    .await;
    let history = run_until(&s, Duration::from_secs(5), |h| h.len() >= 2).await;
    assert_eq!(
        outcomes(&history)[..2],
        [TickOutcome::Transient, TickOutcome::Permanent]
    );
    assert_eq!(
        history[1].error.as_deref(),
        Some("scripted permanent failure")
    );
    assert_eq!(history[1].rows, 0);
    let history = run_until(&s, Duration::from_secs(5), |h| {
        h.iter().any(|t| t.outcome == TickOutcome::Ok)
    })
    .await;
    // The failures did not stop the schedule, and success cleared last_error.
    assert_eq!(history.last().unwrap().outcome, TickOutcome::Ok);
    let record = s.store.get_connector(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.last_error),
        (ConnectorState::Enabled, None)
    );
    // Buckets are 100 ms apart, on one phase.
    let scheduled = s.connector.scheduled.lock().unwrap().clone();
    for pair in scheduled.windows(2) {
        assert!(pair[1] > pair[0]);
        assert_eq!((pair[1] - pair[0]) % 100, 0, "{scheduled:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_error_disables_the_connector() {
    let s = setup(vec![Step::Fail(ErrorKind::Config)]).await;
    let history = run_until(&s, Duration::from_secs(5), |h| !h.is_empty()).await;
    assert_eq!(outcomes(&history), [TickOutcome::Config]);
    let record = s.store.get_connector(&s.id).await.unwrap().unwrap();
    assert_eq!(record.state, ConnectorState::Disabled);
    assert_eq!(
        record.disabled_reason.as_deref(),
        Some("scripted config failure")
    );
    // A disabled connector does not tick.
    let runner = Runner::new(
        s.store.clone(),
        s.store.clone(),
        s.registry.clone(),
        config(Duration::from_secs(5)),
    );
    tokio::time::timeout(
        Duration::from_millis(500),
        runner.run(std::future::pending::<()>()),
    )
    .await
    .unwrap_err();
    assert_eq!(s.store.ticks(&s.id, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_that_tick_only() {
    let s = setup(vec![Step::Panic, Step::Rows(3)]).await;
    let history = run_until(&s, Duration::from_secs(5), |h| h.len() >= 2).await;
    assert_eq!(
        outcomes(&history)[..2],
        [TickOutcome::Panic, TickOutcome::Ok]
    );
    assert_eq!(
        history[0].error.as_deref(),
        Some("connector panicked: scripted panic")
    );
    assert_eq!(history[1].rows, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_past_the_timeout_is_stopped_and_commits_nothing() {
    let s = setup(vec![Step::Sleep(Duration::from_secs(3))]).await;
    let history = run_until(&s, Duration::from_millis(300), |h| h.len() >= 2).await;
    assert_eq!(history[0].outcome, TickOutcome::Timeout);
    assert_eq!(
        history[0].error.as_deref(),
        Some("tick timed out after 300 ms")
    );
    assert!(history[0].duration_ms < 1000, "{:?}", history[0]);
    assert_eq!(history[1].outcome, TickOutcome::Ok);
    let conn = rusqlite::Connection::open(s.store.database_path("db")).unwrap();
    let stamps: Vec<i64> = conn
        .prepare("SELECT timestamp FROM t")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!stamps.contains(&history[0].scheduled_for_ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_waits_for_the_tick_in_flight() {
    let s = setup(vec![Step::Sleep(Duration::from_millis(600))]).await;
    let runner = Runner::new(
        s.store.clone(),
        s.store.clone(),
        s.registry.clone(),
        config(Duration::from_secs(5)),
    );
    let started = Arc::clone(&s.connector.scheduled);
    let stop = async move {
        while started.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let begun = Instant::now();
    runner.run(stop).await;
    // The stop came while the slow tick ran; run() returned only after it committed.
    assert!(begun.elapsed() >= Duration::from_millis(600));
    let history = s.store.ticks(&s.id, 10).await.unwrap();
    assert_eq!(outcomes(&history), [TickOutcome::Ok]);
    assert_eq!(history[0].rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_runs_a_tick_now() {
    let s = setup(Vec::new()).await;
    let mut spec = s.store.get_connector(&s.id).await.unwrap().unwrap().spec;
    spec.schedule_ms = 3_600_000;
    s.store.upsert_connector(&spec, Origin::Api).await.unwrap();
    let runner = Runner::new(
        s.store.clone(),
        s.store.clone(),
        s.registry.clone(),
        config(Duration::from_secs(5)),
    );
    let handle = runner.handle();
    let id = s.id.clone();
    let store = s.store.clone();
    let stop = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        handle.trigger(&id);
        while store.ticks(&id, 1).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tick = store.ticks(&id, 1).await.unwrap().remove(0);
        assert!(
            tick.scheduled_for_ms >= before,
            "a triggered tick is for now"
        );
    };
    tokio::time::timeout(Duration::from_secs(5), runner.run(stop))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&s.store.ticks(&s.id, 10).await.unwrap()),
        [TickOutcome::Ok]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_longer_than_its_lease_commits_because_the_runner_renews() {
    let s = setup(vec![Step::Sleep(Duration::from_millis(1500))]).await;
    let runner_config = RunnerConfig {
        lease: Duration::from_millis(400),
        ..config(Duration::from_secs(5))
    };
    let runner = Runner::new(
        s.store.clone(),
        s.store.clone(),
        s.registry.clone(),
        runner_config,
    );
    let store = s.store.clone();
    let id = s.id.clone();
    let stop = async move {
        while store.ticks(&id, 1).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), runner.run(stop))
        .await
        .unwrap();
    let history = s.store.ticks(&s.id, 10).await.unwrap();
    let first = history.last().unwrap();
    assert_eq!(first.outcome, TickOutcome::Ok, "{history:?}");
    assert!(first.duration_ms >= 1500, "{first:?}");
}
