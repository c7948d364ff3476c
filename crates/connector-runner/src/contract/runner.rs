//! The runner half of the contract: the runner driving scripted connectors against
//! the store, for outcome handling per error kind, panics, tick timeouts, triggers,
//! lease renewal and clean shutdown.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_core::{
    Batch, ColumnType, Connector, ConnectorError, ErrorKind, Registry, Schema, TickContext,
    async_trait, config_from_json,
};

use super::{ContractStore, Opened, read_all, unique};
use crate::{
    ConnectorSpec, ConnectorState, Origin, Runner, RunnerConfig, StateStore, TickOutcome,
    TickRecord,
};

/// One tick's behaviour in a script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Emit this many rows.
    Rows(usize),
    /// Fail with this kind.
    Fail(ErrorKind),
    /// Panic.
    Panic,
    /// Sleep, then emit one row.
    Sleep(Duration),
}

/// Plays its script one step per tick; `Rows(1)` once the script runs out.
#[derive(Clone, Default, Debug)]
pub struct Scripted {
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

struct Setup<S> {
    store: Arc<S>,
    connector: Scripted,
    id: String,
    database: String,
    registry: Arc<Registry>,
}

async fn setup<S: ContractStore>(o: &Opened<S>, script: Vec<Step>) -> Setup<S> {
    let connector = Scripted::default();
    connector.script.lock().unwrap().extend(script);
    let mut registry = Registry::new();
    registry.register(connector.clone()).unwrap();
    let database = unique("d");
    let spec = ConnectorSpec {
        name: unique("scripted"),
        connector_type: "scripted".into(),
        target_database: database.clone(),
        target_table: "t".into(),
        schedule_ms: 100,
        config: serde_json::Value::Null,
        retention: None,
        org_id: crate::DEFAULT_ORG.into(),
    };
    let id = o
        .store
        .upsert_connector(&spec, Origin::Api)
        .await
        .unwrap()
        .id;
    Setup {
        store: Arc::clone(&o.store),
        connector,
        id,
        database,
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

impl<S: ContractStore> Setup<S> {
    fn runner(&self, config: RunnerConfig) -> Runner {
        Runner::new(
            Arc::clone(&self.store) as Arc<dyn StateStore>,
            Arc::clone(&self.store) as Arc<dyn crate::Sink>,
            Arc::clone(&self.registry),
            config,
        )
    }

    async fn history(&self) -> Vec<TickRecord> {
        let mut history = self.store.ticks(&self.id, 100).await.unwrap();
        history.reverse();
        history
    }

    /// Runs until `done(history)` holds (oldest first), then stops the runner cleanly.
    async fn run_until(
        &self,
        tick_timeout: Duration,
        done: impl Fn(&[TickRecord]) -> bool,
    ) -> Vec<TickRecord> {
        let runner = self.runner(config(tick_timeout));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let history = self.history().await;
            if done(&history) {
                break;
            }
            assert!(Instant::now() < deadline, "timed out; history: {history:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        task.await.unwrap();
        self.history().await
    }
}

fn outcomes(history: &[TickRecord]) -> Vec<TickOutcome> {
    history.iter().map(|t| t.outcome).collect()
}

/// Transient and Permanent errors set `last_error` and ticking goes on, on one phase.
pub async fn runner_transient_and_permanent_errors_keep_ticking<S: ContractStore>(o: Opened<S>) {
    let s = setup(
        &o,
        vec![
            Step::Fail(ErrorKind::Transient),
            Step::Fail(ErrorKind::Permanent),
        ],
    )
    .await;
    let history = s.run_until(Duration::from_secs(5), |h| h.len() >= 2).await;
    assert_eq!(
        outcomes(&history)[..2],
        [TickOutcome::Transient, TickOutcome::Permanent]
    );
    assert_eq!(
        history[1].error.as_deref(),
        Some("scripted permanent failure")
    );
    assert_eq!(history[1].rows, 0);
    let history = s
        .run_until(Duration::from_secs(5), |h| {
            h.iter().any(|t| t.outcome == TickOutcome::Ok)
        })
        .await;
    assert_eq!(history.last().unwrap().outcome, TickOutcome::Ok);
    let record = s.store.get_connector(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.last_error),
        (ConnectorState::Enabled, None)
    );
    let scheduled = s.connector.scheduled.lock().unwrap().clone();
    for pair in scheduled.windows(2) {
        assert!(pair[1] > pair[0]);
        assert_eq!((pair[1] - pair[0]) % 100, 0, "{scheduled:?}");
    }
}

/// A Config error disables the connector, which then does not tick.
pub async fn runner_a_config_error_disables_the_connector<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, vec![Step::Fail(ErrorKind::Config)]).await;
    let history = s.run_until(Duration::from_secs(5), |h| !h.is_empty()).await;
    assert_eq!(outcomes(&history), [TickOutcome::Config]);
    let record = s.store.get_connector(&s.id).await.unwrap().unwrap();
    assert_eq!(record.state, ConnectorState::Disabled);
    assert_eq!(
        record.disabled_reason.as_deref(),
        Some("scripted config failure")
    );
    let runner = s.runner(config(Duration::from_secs(5)));
    tokio::time::timeout(
        Duration::from_millis(500),
        runner.run(std::future::pending::<()>()),
    )
    .await
    .unwrap_err();
    assert_eq!(s.store.ticks(&s.id, 10).await.unwrap().len(), 1);
}

/// A panicking connector fails that tick only.
pub async fn runner_a_panic_fails_that_tick_only<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, vec![Step::Panic, Step::Rows(3)]).await;
    let history = s.run_until(Duration::from_secs(5), |h| h.len() >= 2).await;
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

/// A tick past the runner's timeout is stopped and commits nothing.
pub async fn runner_a_tick_past_the_timeout_commits_nothing<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, vec![Step::Sleep(Duration::from_secs(3))]).await;
    let history = s
        .run_until(Duration::from_millis(300), |h| h.len() >= 2)
        .await;
    assert_eq!(history[0].outcome, TickOutcome::Timeout);
    assert_eq!(
        history[0].error.as_deref(),
        Some("tick timed out after 300 ms")
    );
    assert!(history[0].duration_ms < 1000, "{:?}", history[0]);
    assert_eq!(history[1].outcome, TickOutcome::Ok);
    let rows = read_all(&*s.store, &s.database, "t", None).await;
    let stamps: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert!(!stamps.contains(&history[0].scheduled_for_ms), "{stamps:?}");
}

/// Stopping the runner waits for the tick in flight, which commits.
pub async fn runner_stopping_waits_for_the_tick_in_flight<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, vec![Step::Sleep(Duration::from_millis(600))]).await;
    let runner = s.runner(config(Duration::from_secs(5)));
    let started = Arc::clone(&s.connector.scheduled);
    let stop = async move {
        while started.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let begun = Instant::now();
    runner.run(stop).await;
    assert!(begun.elapsed() >= Duration::from_millis(600));
    let history = s.store.ticks(&s.id, 10).await.unwrap();
    assert_eq!(outcomes(&history), [TickOutcome::Ok]);
    assert_eq!(history[0].rows, 1);
}

/// A trigger runs a tick for now, whatever the schedule.
pub async fn runner_trigger_runs_a_tick_now<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, Vec::new()).await;
    let mut spec = s.store.get_connector(&s.id).await.unwrap().unwrap().spec;
    spec.schedule_ms = 3_600_000;
    s.store.upsert_connector(&spec, Origin::Api).await.unwrap();
    let runner = s.runner(config(Duration::from_secs(5)));
    let handle = runner.handle();
    let (id, store) = (s.id.clone(), Arc::clone(&s.store));
    let stop = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = crate::protocol::wall_clock_ms();
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

/// A trigger sent right after a create ticks the new connector even when a refresh
/// that began before the create was still running: that refresh ends without the
/// connector, and the trigger waits for the one the create asked for.
pub async fn runner_a_trigger_right_after_a_create_is_not_lost<S: ContractStore>(o: Opened<S>) {
    let s = setup(&o, Vec::new()).await;
    let base = s.store.get_connector(&s.id).await.unwrap().unwrap().spec;
    // Back-to-back refreshes, so one is nearly always under way.
    let runner = s.runner(RunnerConfig {
        refresh_interval: Duration::from_millis(1),
        ..config(Duration::from_secs(5))
    });
    let handle = runner.handle();
    let store = Arc::clone(&s.store);
    let stop = async move {
        let mut created = Vec::new();
        for _ in 0..20 {
            let spec = ConnectorSpec {
                name: unique("late"),
                schedule_ms: 3_600_000,
                ..base.clone()
            };
            let id = store.upsert_connector(&spec, Origin::Api).await.unwrap().id;
            handle.refresh();
            handle.trigger(&id);
            created.push(id);
        }
        loop {
            let mut untriggered = 0;
            for id in &created {
                if store.ticks(id, 1).await.unwrap().is_empty() {
                    untriggered += 1;
                }
            }
            if untriggered == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), runner.run(stop))
        .await
        .expect("every connector triggered right after its create ticked");
}

/// A tick longer than its lease still commits, because the runner renews the lease.
pub async fn runner_a_tick_longer_than_its_lease_commits_because_it_renews<S: ContractStore>(
    o: Opened<S>,
) {
    let s = setup(&o, vec![Step::Sleep(Duration::from_millis(1500))]).await;
    let runner = s.runner(RunnerConfig {
        lease: Duration::from_millis(400),
        ..config(Duration::from_secs(5))
    });
    let (store, id) = (Arc::clone(&s.store), s.id.clone());
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
