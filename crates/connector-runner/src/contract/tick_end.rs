//! The two steps a tick takes after its claim: the commit, which checks the lease's
//! end on the store's clock itself, and the end, recorded in one step.

use std::time::Duration;

use super::store::tick;
use super::{ContractStore, Opened, metric_batch, read_all, spec, unique};
use crate::{Lease, Origin, StatusChange, StoreErrorKind, Target, TickEnd, TickOutcome};

const LEASE: Duration = Duration::from_secs(30);

/// A lease whose end (as the runner passes it, less its margin) has come on the
/// store's clock commits nothing, even though its token is still the bucket's; the
/// same lease with its end ahead commits.
pub async fn a_commit_past_the_lease_end_is_fenced<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let target = Target {
        connector_id: c.clone(),
        database: db.clone(),
        table: "samples".into(),
    };
    let lease = store
        .claim_task(&c, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    let now = store.now_ms().await.unwrap();
    let ended = Lease {
        expires_at_ms: now - 1,
        ..lease.clone()
    };
    let err = store
        .commit(&target, &ended, metric_batch(4, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);
    assert!(err.to_string().contains("ran out"), "{err}");
    assert!(err.to_string().contains("bucket 1000"), "{err}");
    store
        .commit(&target, &lease, metric_batch(4, 1000))
        .await
        .unwrap();
    assert_eq!(read_all(&**store, &db, "samples", None).await.len(), 4);
}

/// `end_tick` marks the committed bucket done, applies the status and appends the
/// history line, all at once; without a lease the bucket stays claimable.
pub async fn a_tick_ends_in_one_step<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let record = store
        .create_connector(&spec(&unique("n"), &unique("d")), Origin::Api)
        .await
        .unwrap();
    let id = record.id.as_str();
    store
        .claim_task(id, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    let failed = tick(id, 2);
    let status = StatusChange::Failed("line 3: expected a metric name".into());
    store
        .end_tick(TickEnd {
            done: None,
            status: Some(&status),
            tick: &failed,
        })
        .await
        .unwrap();
    let got = store.get_connector(id).await.unwrap().unwrap();
    assert_eq!(
        got.last_error.as_deref(),
        Some("line 3: expected a metric name")
    );
    assert_eq!(got.last_tick.as_ref(), Some(&failed));
    // Not done: the holder may claim it again.
    let lease = store
        .claim_task(id, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();

    let ok = tick(id, 1);
    assert_eq!(ok.outcome, TickOutcome::Ok);
    store
        .end_tick(TickEnd {
            done: Some(&lease),
            status: Some(&StatusChange::Succeeded),
            tick: &ok,
        })
        .await
        .unwrap();
    let got = store.get_connector(id).await.unwrap().unwrap();
    assert_eq!(got.last_error, None);
    assert_eq!(got.last_tick.as_ref(), Some(&ok));
    assert!(
        store
            .claim_task(id, 1000, "runner-b", Duration::from_millis(1))
            .await
            .unwrap()
            .is_none(),
        "a done bucket is never claimed again"
    );
    let history = store.ticks(id, 10).await.unwrap();
    assert_eq!(history, [ok.clone(), failed]);

    let disabled = StatusChange::Disabled("endpoint: missing".into());
    store
        .end_tick(TickEnd {
            done: None,
            status: Some(&disabled),
            tick: &tick(id, 3),
        })
        .await
        .unwrap();
    let got = store.get_connector(id).await.unwrap().unwrap();
    assert_eq!(got.state, crate::ConnectorState::Disabled);
    assert_eq!(got.disabled_reason.as_deref(), Some("endpoint: missing"));

    store.delete_connector(id).await.unwrap();
    let gone = store
        .end_tick(TickEnd {
            done: None,
            status: None,
            tick: &tick(id, 4),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), StoreErrorKind::NotFound);
}

/// Runners heard from within the ttl are live, sorted; one that stays silent past it,
/// or leaves, is not. Other tests' runners may share the store, so only these
/// runners are looked at.
pub async fn runners_are_live_while_heard_from<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (a, b) = (unique("runner-a"), unique("runner-b"));
    let long = Duration::from_secs(60);
    let mine = |live: Vec<String>| -> Vec<String> {
        live.into_iter().filter(|r| *r == a || *r == b).collect()
    };
    assert_eq!(
        mine(store.heartbeat(&b, long).await.unwrap()),
        std::slice::from_ref(&b)
    );
    let both = store.heartbeat(&a, long).await.unwrap();
    assert!(both.windows(2).all(|w| w[0] <= w[1]), "sorted: {both:?}");
    assert_eq!(mine(both), [a.clone(), b.clone()]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        mine(
            store
                .heartbeat(&a, Duration::from_millis(20))
                .await
                .unwrap()
        ),
        std::slice::from_ref(&a),
        "b was silent past the ttl"
    );
    store.leave(&a).await.unwrap();
    assert_eq!(
        mine(store.heartbeat(&b, long).await.unwrap()),
        std::slice::from_ref(&b)
    );
}
