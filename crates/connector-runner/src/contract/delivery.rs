//! The delivery half of the contract: destinations kept like connectors, committed
//! buckets read back whole and in order, a ledger that passes a bucket once and
//! refuses a fenced delivery, and the runner delivering every bucket exactly once
//! through transient failures, halts and dead letters.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_core::{
    Batch, ConnectorError, Delivered, Destination, ErrorKind, Registry, TickContext, Value,
    async_trait, config_from_json,
};

use super::runner::Scripted;
use super::{ContractStore, Opened, metric_batch, metric_schema, unique};
use crate::{
    ConnectorSpec, ConnectorState, DeliveryOutcome, DeliveryRecord, DeliveryStore, DestinationSpec,
    OnPermanent, Origin, Runner, RunnerConfig, Sink, Start, StateStore, StoreErrorKind, Target,
};

const LEASE: Duration = Duration::from_secs(10);

fn destination_spec(name: &str, source: &str) -> DestinationSpec {
    DestinationSpec {
        name: name.into(),
        destination_type: "recording".into(),
        source: source.into(),
        start: Start::Earliest,
        on_permanent: OnPermanent::Halt,
        config: serde_json::Value::Null,
    }
}

fn target(connector_id: &str, database: &str) -> Target {
    Target {
        connector_id: connector_id.into(),
        database: database.into(),
        table: "samples".into(),
    }
}

async fn commit_bucket<S: ContractStore>(store: &S, target: &Target, bucket: i64, rows: usize) {
    let lease = store
        .claim_task(&target.connector_id, bucket, "r", LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .commit(target, &lease, metric_batch(rows, bucket))
        .await
        .unwrap();
}

fn attempt(destination_id: &str, bucket: i64, outcome: DeliveryOutcome) -> DeliveryRecord {
    DeliveryRecord {
        destination_id: destination_id.into(),
        scheduled_for_ms: bucket,
        started_at_ms: 1,
        outcome,
        rows: 3,
        skipped: 1,
        bytes: 100,
        requests: 1,
        retries: 0,
        duration_ms: 5,
        error: (!outcome.passes_bucket() || outcome == DeliveryOutcome::DeadLetter)
            .then(|| format!("scripted {outcome}")),
        runner_id: "r".into(),
    }
}

/// Dead letters are kept for the newest `DEAD_LETTERS_KEPT` buckets per destination.
pub async fn dead_letters_keep_the_newest<S: ContractStore>(o: Opened<S>) {
    use crate::protocol::DEAD_LETTERS_KEPT;
    let store = &o.store;
    let dest = store
        .create_destination(
            &destination_spec(&unique("dest"), "s"),
            Origin::Api,
            i64::MIN,
        )
        .await
        .unwrap();
    let id = dest.id.as_str();
    for bucket in 0..DEAD_LETTERS_KEPT + 3 {
        let lease = store
            .claim_task(id, bucket, "r", LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .record_delivery(&lease, &attempt(id, bucket, DeliveryOutcome::DeadLetter), 3)
            .await
            .unwrap();
    }
    let letters = store
        .dead_letters(id, 10 * DEAD_LETTERS_KEPT as usize)
        .await
        .unwrap();
    assert_eq!(letters.len() as i64, DEAD_LETTERS_KEPT);
    let mut buckets: Vec<i64> = letters.iter().map(|l| l.scheduled_for_ms).collect();
    buckets.sort_unstable();
    assert_eq!(buckets.first(), Some(&3));
    assert_eq!(buckets.last(), Some(&(DEAD_LETTERS_KEPT + 2)));
}

/// Destinations are created, upserted by name, updated, paused and deleted like
/// connectors; a taken name is a conflict and a missing one is not found.
pub async fn destinations_are_kept_like_connectors<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let name = unique("dest");
    let spec = destination_spec(&name, "src");
    let created = store
        .create_destination(&spec, Origin::Api, 42)
        .await
        .unwrap();
    assert_eq!(
        (created.spec.clone(), created.state, created.start_ms),
        (spec.clone(), ConnectorState::Enabled, 42)
    );
    assert_eq!(created.delivered_through_ms, None);
    let err = store
        .create_destination(&spec, Origin::Api, 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        format!("a destination named `{name}` already exists")
    );

    let again = store
        .upsert_destination(&spec, Origin::Api, 7)
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.start_ms),
        (created.id.as_str(), 42)
    );

    store
        .set_destination_status(&created.id, crate::StatusChange::Disabled("halted".into()))
        .await
        .unwrap();
    let mut changed = spec.clone();
    changed.on_permanent = OnPermanent::DeadLetter;
    changed.config = serde_json::json!({"k": "v"});
    let updated = store
        .update_destination(&created.id, &changed)
        .await
        .unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(
        (updated.state, updated.disabled_reason),
        (ConnectorState::Enabled, None),
        "a changed spec is the operator's fix"
    );
    let paused = store
        .set_destination_state(&created.id, ConnectorState::Paused)
        .await
        .unwrap();
    assert_eq!(paused.state, ConnectorState::Paused);
    assert!(
        store
            .list_destinations()
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == created.id)
    );
    store.delete_destination(&created.id).await.unwrap();
    assert!(store.get_destination(&created.id).await.unwrap().is_none());
    assert_eq!(
        store
            .delete_destination(&created.id)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
}

/// The next bucket is the oldest undelivered one; its rows read back in chunks, in
/// commit order, exactly as committed (nulls, JSON with quotes and newlines).
pub async fn committed_buckets_read_back_whole_oldest_first<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let t = target(&c, &db);
    commit_bucket(&**store, &t, 3000, 7).await;
    commit_bucket(&**store, &t, 1000, 5).await;
    commit_bucket(&**store, &t, 2000, 0).await;
    // Another connector's bucket in the same table is not this source's.
    commit_bucket(&**store, &target(&unique("c"), &db), 500, 4).await;

    let first = store
        .next_bucket("d1", &t, i64::MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.scheduled_for_ms, first.rows), (1000, 5));
    assert_eq!(first.last_row - first.first_row + 1, 5);
    let mut after = first.first_row - 1;
    let mut read = Vec::new();
    loop {
        let chunk = store
            .read_bucket(&t, metric_schema(), &first, after, 2)
            .await
            .unwrap();
        if chunk.rows.is_empty() {
            break;
        }
        assert!(chunk.rows.len() <= 2);
        after = chunk.last_row;
        read.extend(chunk.rows.rows().map(|row| shown(&row)));
    }
    let expected: Vec<Vec<String>> = metric_batch(5, 1000)
        .rows()
        .map(|row| shown(&row))
        .collect();
    assert_eq!(read, expected);

    assert_eq!(
        store
            .next_bucket("d1", &t, 1001)
            .await
            .unwrap()
            .map(|b| (b.scheduled_for_ms, b.rows)),
        Some((2000, 0)),
        "an empty bucket is still a bucket to pass"
    );
    let missing = Target {
        database: unique("d"),
        ..t.clone()
    };
    let none = store.next_bucket("d1", &missing, i64::MIN).await;
    assert!(
        matches!(&none, Ok(None))
            || matches!(&none, Err(e) if e.kind() == StoreErrorKind::NotFound),
        "{none:?}"
    );
}

/// A row's values as text, JSON compared by meaning (PostgreSQL's jsonb re-spaces it).
fn shown(row: &connector_core::Row<'_>) -> Vec<String> {
    (0..4)
        .map(|c| match row.at(c) {
            Value::Dynamic(text) => serde_json::from_str::<serde_json::Value>(text)
                .unwrap()
                .to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A delivered bucket is passed once: a second delivery and a fenced one write
/// nothing; a dead letter passes the bucket and is listed; a failed attempt goes to
/// the history only.
pub async fn the_delivery_ledger_passes_a_bucket_once<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let t = target(&c, &db);
    for bucket in [1000, 2000, 3000] {
        commit_bucket(&**store, &t, bucket, 3).await;
    }
    let dest = store
        .create_destination(
            &destination_spec(&unique("dest"), "s"),
            Origin::Api,
            i64::MIN,
        )
        .await
        .unwrap();
    let id = dest.id.as_str();

    let lease = store
        .claim_task(id, 1000, "r", LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .record_delivery(&lease, &attempt(id, 1000, DeliveryOutcome::Transient), 3)
        .await
        .unwrap();
    assert_eq!(
        store
            .next_bucket(id, &t, i64::MIN)
            .await
            .unwrap()
            .unwrap()
            .scheduled_for_ms,
        1000,
        "a failed attempt does not pass the bucket"
    );
    store
        .record_delivery(&lease, &attempt(id, 1000, DeliveryOutcome::Delivered), 3)
        .await
        .unwrap();
    let again = store
        .record_delivery(&lease, &attempt(id, 1000, DeliveryOutcome::Delivered), 3)
        .await
        .unwrap_err();
    assert_eq!(again.kind(), StoreErrorKind::AlreadyCommitted);
    assert_eq!(
        store
            .next_bucket(id, &t, i64::MIN)
            .await
            .unwrap()
            .unwrap()
            .scheduled_for_ms,
        2000
    );

    // Runner A stalls past its lease, B takes the bucket: A's delivery is refused.
    let stale = store
        .claim_task(id, 2000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_task(id, 2000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .record_delivery(&stale, &attempt(id, 2000, DeliveryOutcome::Delivered), 3)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);
    assert_eq!(
        store
            .next_bucket(id, &t, i64::MIN)
            .await
            .unwrap()
            .unwrap()
            .scheduled_for_ms,
        2000,
        "a fenced delivery wrote nothing"
    );
    store
        .record_delivery(&fresh, &attempt(id, 2000, DeliveryOutcome::DeadLetter), 3)
        .await
        .unwrap();
    let letters = store.dead_letters(id, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].scheduled_for_ms,
            letters[0].rows,
            letters[0].error.as_str()
        ),
        (2000, 3, "scripted dead_letter")
    );
    assert_eq!(
        store
            .next_bucket(id, &t, i64::MIN)
            .await
            .unwrap()
            .unwrap()
            .scheduled_for_ms,
        3000
    );

    let history = store.deliveries(id, 10).await.unwrap();
    let outcomes: Vec<_> = history.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::DeadLetter,
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Transient
        ]
    );
    assert_eq!(history[2], attempt(id, 1000, DeliveryOutcome::Transient));
    let record = store.get_destination(id).await.unwrap().unwrap();
    assert_eq!(record.delivered_through_ms, Some(2000));
    assert_eq!(
        record.last_delivery.map(|d| d.outcome),
        Some(DeliveryOutcome::DeadLetter)
    );
    store.delete_destination(id).await.unwrap();
    assert!(store.deliveries(id, 10).await.unwrap().is_empty());
    assert!(store.dead_letters(id, 10).await.unwrap().is_empty());
    // A delivery that was in flight when the destination was deleted writes nothing.
    let late = store
        .claim_task(id, 3000, "r", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .record_delivery(&late, &attempt(id, 3000, DeliveryOutcome::Delivered), 3)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound);
    assert!(store.deliveries(id, 10).await.unwrap().is_empty());
}

/// What a [`Recording`] destination does on one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Accept the rows.
    Accept,
    /// Fail with this kind.
    Fail(ErrorKind),
}

/// One call of a [`Recording`] destination: the bucket and the rows' `n` values.
pub type Call = (i64, Vec<f64>);

/// Records every call (bucket, rows' values) and plays its script; accepts once the
/// script runs out.
#[derive(Clone, Default, Debug)]
pub struct Recording {
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Every call so far.
    pub calls: Arc<Mutex<Vec<Call>>>,
}

#[async_trait]
impl Destination for Recording {
    const TYPE_ID: &'static str = "recording";
    type Config = ();

    fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
        config_from_json(raw)
    }

    async fn deliver(
        &self,
        ctx: &TickContext,
        _: &(),
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError> {
        let values = rows
            .rows()
            .map(|r| match r.at(1) {
                Value::Real(v) => v,
                _ => f64::NAN,
            })
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push((ctx.scheduled_for_ms(), values));
        ctx.record_sent_bytes(10);
        match self.script.lock().unwrap().pop_front() {
            Some(Reply::Fail(kind)) => {
                Err(ConnectorError::new(kind, format!("receiver says {kind}")))
            }
            _ => Ok(Delivered {
                rows: rows.len() as u64,
                bytes: 10,
                requests: 1,
                skipped: Vec::new(),
            }),
        }
    }
}

struct DeliverySetup<S> {
    store: Arc<S>,
    source: String,
    source_id: String,
    recording: Recording,
    registry: Arc<Registry>,
}

async fn delivery_setup<S: ContractStore>(o: &Opened<S>, script: Vec<Reply>) -> DeliverySetup<S> {
    let recording = Recording::default();
    recording.script.lock().unwrap().extend(script);
    let mut registry = Registry::new();
    registry.register(Scripted::default()).unwrap();
    registry.register_destination(recording.clone()).unwrap();
    let source = unique("scripted");
    let spec = ConnectorSpec {
        name: source.clone(),
        connector_type: "scripted".into(),
        target_database: unique("d"),
        target_table: "t".into(),
        schedule_ms: 100,
        config: serde_json::Value::Null,
        retention: None,
        org_id: crate::DEFAULT_ORG.into(),
    };
    let source_id = o
        .store
        .upsert_connector(&spec, Origin::Api)
        .await
        .unwrap()
        .id;
    DeliverySetup {
        store: Arc::clone(&o.store),
        source,
        source_id,
        recording,
        registry: Arc::new(registry),
    }
}

impl<S: ContractStore> DeliverySetup<S> {
    /// Runs connector and destination until `done` holds for the destination's
    /// calls, then stops the runner cleanly.
    async fn run_for(&self, time: Duration) {
        let deadline = Instant::now() + time;
        self.run_until(|_, _| Instant::now() >= deadline).await;
    }

    async fn run_until(&self, done: impl Fn(&[Call], &S) -> bool) {
        let runner = Runner::new(
            Arc::clone(&self.store) as Arc<dyn StateStore>,
            Arc::clone(&self.store) as Arc<dyn Sink>,
            Arc::clone(&self.registry),
            RunnerConfig {
                lease: LEASE,
                lease_margin: Duration::from_millis(100),
                refresh_interval: Duration::from_millis(100),
                delivery_chunk_rows: 2,
                delivery_backoff_max: Duration::from_millis(200),
                ..RunnerConfig::default()
            },
        )
        .with_deliveries(Arc::clone(&self.store) as Arc<dyn DeliveryStore>);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let calls = self.recording.calls.lock().unwrap().clone();
            if done(&calls, &self.store) {
                break;
            }
            assert!(Instant::now() < deadline, "timed out; calls: {calls:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    async fn committed_buckets(&self) -> Vec<i64> {
        let mut buckets: Vec<i64> = self
            .store
            .ticks(&self.source_id, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.outcome == crate::TickOutcome::Ok)
            .map(|t| t.scheduled_for_ms)
            .collect();
        buckets.sort_unstable();
        buckets
    }
}

/// The runner delivers every committed bucket, oldest first, each once, whole.
pub async fn runner_delivers_every_bucket_in_order_once<S: ContractStore>(o: Opened<S>) {
    let s = delivery_setup(&o, Vec::new()).await;
    let dest = s
        .store
        .create_destination(
            &destination_spec(&unique("dest"), &s.source),
            Origin::Api,
            i64::MIN,
        )
        .await
        .unwrap();
    s.run_until(|calls, _| calls.len() >= 5).await;
    let calls = s.recording.calls.lock().unwrap().clone();
    let buckets: Vec<i64> = calls.iter().map(|(b, _)| *b).collect();
    assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
    assert!(calls.iter().all(|(_, rows)| rows == &[0.0]), "{calls:?}");
    let committed = s.committed_buckets().await;
    assert_eq!(
        buckets[..],
        committed[..buckets.len()],
        "every committed bucket, in order"
    );
    let history = s.store.deliveries(&dest.id, 100).await.unwrap();
    assert!(
        history
            .iter()
            .all(|d| d.outcome == DeliveryOutcome::Delivered)
    );
    assert_eq!(history.len(), calls.len());
    assert!(history.iter().all(|d| d.bytes == 10 && d.rows == 1));
}

/// A transient failure retries the same bucket; a permanent one halts the
/// destination at that bucket, naming it, and a resume delivers it.
pub async fn runner_transient_retries_and_permanent_halts<S: ContractStore>(o: Opened<S>) {
    let s = delivery_setup(
        &o,
        vec![
            Reply::Fail(ErrorKind::Transient),
            Reply::Accept,
            Reply::Fail(ErrorKind::Permanent),
        ],
    )
    .await;
    let dest = s
        .store
        .create_destination(
            &destination_spec(&unique("dest"), &s.source),
            Origin::Api,
            i64::MIN,
        )
        .await
        .unwrap();
    let id = dest.id.clone();
    s.run_until(|calls, _| calls.len() >= 3).await;
    // Give a halted destination the chance to (wrongly) go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = s.recording.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[0].0, calls[1].0,
        "a transient failure retries the same bucket"
    );
    assert!(calls[2].0 > calls[1].0);
    let record = s.store.get_destination(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ConnectorState::Disabled);
    assert_eq!(
        record.disabled_reason,
        Some(format!(
            "halted at bucket {}: receiver says permanent",
            calls[2].0
        ))
    );
    let outcomes: Vec<_> = s
        .store
        .deliveries(&id, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::Halted,
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Transient
        ]
    );
    s.store
        .set_destination_state(&id, ConnectorState::Enabled)
        .await
        .unwrap();
    let halted_at = calls[2].0;
    s.run_until(|calls, _| calls.len() >= 4).await;
    let calls = s.recording.calls.lock().unwrap().clone();
    assert_eq!(
        calls[3].0, halted_at,
        "a resume tries the halted bucket again"
    );
}

/// Under `on_permanent = "dead_letter"` a refused bucket is recorded and the next
/// one goes; `start = "latest"` skips what was committed before the destination.
pub async fn runner_dead_letters_and_starts_latest<S: ContractStore>(o: Opened<S>) {
    let s = delivery_setup(&o, vec![Reply::Fail(ErrorKind::Permanent)]).await;
    // Let the source commit a few buckets before the destination exists.
    s.run_for(Duration::from_millis(500)).await;
    let before = s.committed_buckets().await;
    assert!(!before.is_empty());
    let mut spec = destination_spec(&unique("dest"), &s.source);
    spec.on_permanent = OnPermanent::DeadLetter;
    spec.start = Start::Latest;
    let start_ms = s.store.now_ms().await.unwrap();
    let dest = s
        .store
        .create_destination(&spec, Origin::Api, start_ms)
        .await
        .unwrap();
    s.run_until(|calls, _| calls.len() >= 3).await;
    let calls = s.recording.calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .all(|(b, _)| *b >= start_ms && !before.contains(b)),
        "start = latest: {calls:?} before {start_ms}"
    );
    assert!(calls[1].0 > calls[0].0, "a dead letter passes the bucket");
    let letters = s.store.dead_letters(&dest.id, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].scheduled_for_ms, calls[0].0);
    assert_eq!(letters[0].error, "receiver says permanent");
    let record = s.store.get_destination(&dest.id).await.unwrap().unwrap();
    assert_eq!(record.state, ConnectorState::Enabled);
}
