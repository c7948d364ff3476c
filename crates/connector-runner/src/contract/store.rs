//! The lease, ledger, state and history half of the contract.

use std::sync::Arc;
use std::time::Duration;

use connector_core::{Batch, ColumnType, Schema};
use serde_json::json;

use super::{ContractStore, Opened, metric_batch, metric_schema, read_all, spec, unique};
use crate::protocol::TICKS_KEPT;
use crate::{
    ConnectorState, ListQuery, Origin, RowQuery, StatusChange, StoreErrorKind, Target, TickOutcome,
    TickRecord,
};

const LEASE: Duration = Duration::from_secs(30);

fn target(id: &str, database: &str) -> Target {
    Target {
        connector_id: id.into(),
        database: database.into(),
        table: "samples".into(),
    }
}

/// Claims are exclusive until they expire, tokens only grow, done buckets stay done,
/// and expiries are on the store's clock.
pub async fn claims_are_exclusive_until_expiry_and_tokens_increase<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let c = unique("c");
    let a = store
        .claim_task(&c, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .claim_task(&c, 1000, "runner-b", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    // The holder may claim its own live lease again (a retry after a lost reply).
    let again = store
        .claim_task(&c, 1000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(again.token > a.token);
    let other = store
        .claim_task(&c, 2000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(other.token > again.token);
    let short = store
        .claim_task(&c, 3000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = store
        .claim_task(&c, 3000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > short.token);
    assert_eq!(taken.runner_id, "runner-b");
    store.finish_task(&again).await.unwrap();
    assert!(
        store
            .claim_task(&c, 1000, "runner-a", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    let now = store.now_ms().await.unwrap();
    assert!(taken.expires_at_ms >= now + 29_000, "{taken:?} vs {now}");
}

/// Sixteen runners race for one bucket: exactly one wins.
pub async fn sixteen_runners_race_for_one_bucket_and_one_wins<S: ContractStore>(o: Opened<S>) {
    let c = unique("c");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&o.store);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_task(&c, 7000, &format!("runner-{i}"), LEASE)
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(lease) = task.await.unwrap() {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
}

/// A bucket commits once; a runner whose lease was taken over commits nothing.
pub async fn a_bucket_commits_once_and_a_stale_lease_commits_nothing<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let lease = store
        .claim_task(&c, 5000, "runner-a", LEASE)
        .await
        .unwrap()
        .unwrap();
    let report = store
        .commit(&target(&c, &db), &lease, metric_batch(10, 5000))
        .await
        .unwrap();
    assert_eq!(report.rows, 10);
    assert!(report.bytes > 0);
    let rows = read_all(&**store, &db, "samples", Some(metric_schema())).await;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.iter().filter(|r| r[2].is_null()).count(), 5);

    let again = store
        .commit(&target(&c, &db), &lease, metric_batch(10, 5000))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), StoreErrorKind::AlreadyCommitted);
    assert_eq!(read_all(&**store, &db, "samples", None).await.len(), 10);

    // Runner A stalls past its lease; B takes the bucket over; A's late commit is refused.
    let stale = store
        .claim_task(&c, 6000, "runner-a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_task(&c, 6000, "runner-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(&target(&c, &db), &stale, metric_batch(3, 6000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced);
    assert!(err.to_string().contains("stale"), "{err}");
    assert_eq!(read_all(&**store, &db, "samples", None).await.len(), 10);
    store
        .commit(&target(&c, &db), &fresh, metric_batch(3, 6000))
        .await
        .unwrap();
    assert_eq!(read_all(&**store, &db, "samples", None).await.len(), 13);
}

/// A table that exists with other columns is never written into.
pub async fn a_table_with_other_columns_is_refused<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let lease = store.claim_task(&c, 1, "r", LEASE).await.unwrap().unwrap();
    store
        .commit(&target(&c, &db), &lease, metric_batch(1, 1))
        .await
        .unwrap();
    let other = Arc::new(Schema::new([("a", ColumnType::String)]));
    let mut batch = Batch::new(other);
    batch.row().string("x").finish().unwrap();
    let lease = store.claim_task(&c, 2, "r", LEASE).await.unwrap().unwrap();
    let err = store
        .commit(&target(&c, &db), &lease, batch)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
    let text = err.to_string();
    assert!(
        text.contains("samples") && text.contains("pick another target_table"),
        "{text}"
    );
    assert_eq!(read_all(&**store, &db, "samples", None).await.len(), 1);
}

/// Every column type lands and reads back as written; nulls stay null.
pub async fn every_column_type_round_trips<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    let schema = Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("device_id", ColumnType::String),
        ("value", ColumnType::Real),
        ("count", ColumnType::Integer),
        ("ok", ColumnType::Boolean),
        ("extra", ColumnType::Dynamic),
    ]));
    let mut batch = Batch::new(Arc::clone(&schema));
    batch
        .row()
        .timestamp(1_700_000_000_123)
        .string("d-1 \"é\"")
        .real(-0.5)
        .integer(i64::MAX)
        .boolean(true)
        .json(&json!({"a": [1, "b"]}))
        .finish()
        .unwrap();
    batch
        .row()
        .timestamp(1_700_000_000_000)
        .null()
        .null()
        .null()
        .null()
        .null()
        .finish()
        .unwrap();
    batch
        .row()
        .timestamp(1_699_999_999_000)
        .string("")
        .real(1e300)
        .integer(-7)
        .boolean(false)
        .json(&json!(null))
        .finish()
        .unwrap();
    let lease = store.claim_task(&c, 10, "r", LEASE).await.unwrap().unwrap();
    store
        .commit(
            &Target {
                connector_id: c.clone(),
                database: db.clone(),
                table: "typed".into(),
            },
            &lease,
            batch,
        )
        .await
        .unwrap();
    let read = store
        .read_rows(&RowQuery {
            database: db.clone(),
            table: "typed".into(),
            schema: Some(schema),
            since_ms: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        read.columns,
        ["timestamp", "device_id", "value", "count", "ok", "extra"]
    );
    assert_eq!(
        read.rows,
        [
            vec![
                json!(1_700_000_000_123i64),
                json!("d-1 \"é\""),
                json!(-0.5),
                json!(i64::MAX),
                json!(true),
                json!({"a": [1, "b"]})
            ],
            vec![
                json!(1_700_000_000_000i64),
                json!(null),
                json!(null),
                json!(null),
                json!(null),
                json!(null)
            ],
            vec![
                json!(1_699_999_999_000i64),
                json!(""),
                json!(1e300),
                json!(-7),
                json!(false),
                json!(null)
            ],
        ]
    );
}

/// Rows read back newest first, filtered by `since_ms`, cut at `limit`; a table
/// that does not exist is NotFound.
pub async fn rows_read_back_newest_first_with_since_and_limit<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (c, db) = (unique("c"), unique("d"));
    for (bucket, rows) in [(1_000, 2), (2_000, 3), (3_000, 1)] {
        let lease = store
            .claim_task(&c, bucket, "r", LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .commit(&target(&c, &db), &lease, metric_batch(rows, bucket))
            .await
            .unwrap();
    }
    let query = |since_ms, limit| RowQuery {
        database: db.clone(),
        table: "samples".into(),
        schema: Some(metric_schema()),
        since_ms,
        limit,
    };
    let stamps = |rows: Vec<Vec<serde_json::Value>>| -> Vec<i64> {
        rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
    };
    let all = store.read_rows(&query(None, 100)).await.unwrap();
    assert_eq!(stamps(all.rows), [3000, 2000, 2000, 2000, 1000, 1000]);
    let recent = store.read_rows(&query(Some(2_000), 100)).await.unwrap();
    assert_eq!(stamps(recent.rows), [3000, 2000, 2000, 2000]);
    let two = store.read_rows(&query(None, 2)).await.unwrap();
    assert_eq!(stamps(two.rows), [3000, 2000]);
    let labels = &store.read_rows(&query(None, 1)).await.unwrap().rows[0][3];
    assert_eq!(labels, &json!({"i": "0", "q": "\"quoted\"\n"}));
    let missing = RowQuery {
        table: "nothing_here".into(),
        ..query(None, 1)
    };
    assert_eq!(
        store.read_rows(&missing).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
}

/// Connectors are upserted by name; a changed spec re-enables a Config-disabled one.
pub async fn connectors_are_upserted_by_name_and_keep_their_status<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (name, db) = (unique("n"), unique("d"));
    let created = store
        .upsert_connector(&spec(&name, &db), Origin::File)
        .await
        .unwrap();
    assert_eq!(
        (created.state, created.origin),
        (ConnectorState::Enabled, Origin::File)
    );
    let same = store
        .upsert_connector(&spec(&name, &db), Origin::File)
        .await
        .unwrap();
    assert_eq!(same.id, created.id);
    store
        .set_status(
            &created.id,
            StatusChange::Disabled("token resolve: environment variable `T` is not set".into()),
        )
        .await
        .unwrap();
    let disabled = store.get_connector(&created.id).await.unwrap().unwrap();
    assert_eq!(disabled.state, ConnectorState::Disabled);
    assert!(
        disabled
            .disabled_reason
            .unwrap()
            .starts_with("token resolve:")
    );
    let again = store
        .upsert_connector(&spec(&name, &db), Origin::File)
        .await
        .unwrap();
    assert_eq!(again.state, ConnectorState::Disabled);
    let mut fixed = spec(&name, &db);
    fixed.schedule_ms = 2000;
    let fixed = store.upsert_connector(&fixed, Origin::File).await.unwrap();
    assert_eq!(
        (fixed.state, fixed.disabled_reason),
        (ConnectorState::Enabled, None)
    );
    assert_eq!(fixed.spec.schedule_ms, 2000);
    store
        .set_status(&created.id, StatusChange::Failed("boom".into()))
        .await
        .unwrap();
    let failed = store.get_connector(&created.id).await.unwrap().unwrap();
    assert_eq!(failed.last_error.as_deref(), Some("boom"));
    store
        .set_status(&created.id, StatusChange::Succeeded)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_connector(&created.id)
            .await
            .unwrap()
            .unwrap()
            .last_error,
        None
    );
    let missing = store
        .set_status(&unique("x"), StatusChange::Succeeded)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::NotFound);
}

/// Create, conflict, update (also renaming), state changes, list and delete.
pub async fn create_update_delete_and_state_changes<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let (a_name, b_name, db) = (unique("a"), unique("b"), unique("d"));
    let a = store
        .create_connector(&spec(&a_name, &db), Origin::Api)
        .await
        .unwrap();
    assert_eq!(a.origin, Origin::Api);
    let err = store
        .create_connector(&spec(&a_name, &db), Origin::Api)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        format!("a connector named `{a_name}` already exists")
    );
    let b = store
        .create_connector(&spec(&b_name, &db), Origin::Api)
        .await
        .unwrap();
    let err = store
        .update_connector(&b.id, &spec(&a_name, &db))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        StoreErrorKind::Conflict,
        "renaming onto a taken name"
    );
    let renamed = unique("r");
    let mut changed = spec(&renamed, &db);
    changed.config = json!({"endpoint": "http://127.0.0.1:2/metrics"});
    let updated = store.update_connector(&b.id, &changed).await.unwrap();
    assert_eq!(
        (updated.id.as_str(), updated.spec.name.as_str()),
        (b.id.as_str(), renamed.as_str())
    );
    assert_eq!(updated.spec.config, changed.config);
    let paused = store
        .set_state(&a.id, ConnectorState::Paused)
        .await
        .unwrap();
    assert_eq!(paused.state, ConnectorState::Paused);
    let listed: Vec<_> = store
        .list_connectors()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.id == a.id || r.id == b.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|r| r.id == a.id && r.state == ConnectorState::Paused)
    );
    store.delete_connector(&a.id).await.unwrap();
    assert!(store.get_connector(&a.id).await.unwrap().is_none());
    assert_eq!(
        store.delete_connector(&a.id).await.unwrap_err().kind(),
        StoreErrorKind::NotFound
    );
    let missing = store
        .update_connector(&a.id, &spec(&unique("z"), &db))
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), StoreErrorKind::NotFound);
}

/// Pages come in id order, each after the last id of the one before, filtered by
/// state, type and org, in one query each.
pub async fn connectors_page_in_id_order_with_filters<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let db = unique("d");
    let org = unique("org").to_ascii_lowercase();
    let mut ids = Vec::new();
    let mut in_org = Vec::new();
    for i in 0..7 {
        let mut s = spec(&unique("p"), &db);
        if i % 3 == 0 {
            s.connector_type = "other".into();
        }
        if i >= 5 {
            s.org_id.clone_from(&org);
        }
        let record = store.create_connector(&s, Origin::Api).await.unwrap();
        assert_eq!(record.spec.org_id, s.org_id, "the org is stored");
        if i >= 5 {
            in_org.push(record.id.clone());
        }
        if i % 2 == 0 {
            store
                .set_state(&record.id, ConnectorState::Paused)
                .await
                .unwrap();
        }
        ids.push(record.id);
    }
    ids.sort();
    let mine = |page: Vec<crate::ConnectorRecord>| -> Vec<String> {
        page.into_iter()
            .map(|r| r.id)
            .filter(|id| ids.contains(id))
            .collect()
    };
    // Walk every connector of the store in pages of 3; ours come back in id order.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_page(&ListQuery {
                after: after.clone(),
                limit: 3,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let ordered: Vec<_> = page.iter().map(|r| r.id.clone()).collect();
        let mut sorted = ordered.clone();
        sorted.sort();
        assert_eq!(ordered, sorted);
        walked.extend(mine(page));
    }
    assert_eq!(walked, ids);
    let paused = store
        .list_page(&ListQuery {
            state: Some(ConnectorState::Paused),
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(paused.iter().all(|r| r.state == ConnectorState::Paused));
    assert_eq!(mine(paused).len(), 4);
    let other = store
        .list_page(&ListQuery {
            connector_type: Some("other".into()),
            state: Some(ConnectorState::Enabled),
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(other.iter().all(|r| r.spec.connector_type == "other"));
    assert_eq!(
        mine(other).len(),
        1,
        "i = 3 only: of type other and not paused"
    );
    let of_org = store
        .list_page(&ListQuery {
            org_id: Some(org.clone()),
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    in_org.sort();
    assert_eq!(
        of_org.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        in_org,
        "exactly the org's connectors, in id order"
    );
}

/// Names a store keeps for itself are refused when a connector is created or updated.
pub async fn reserved_target_names_are_refused<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    assert!(
        !o.reserved.is_empty(),
        "a store lists the names it reserves"
    );
    let ok = store
        .create_connector(&spec(&unique("ok"), &unique("d")), Origin::Api)
        .await
        .unwrap();
    for (field, name) in &o.reserved {
        let mut bad = spec(&unique("n"), &unique("d"));
        match *field {
            "target_database" => bad.target_database = (*name).into(),
            _ => bad.target_table = (*name).into(),
        }
        for err in [
            store.create_connector(&bad, Origin::Api).await.unwrap_err(),
            store
                .upsert_connector(&bad, Origin::File)
                .await
                .unwrap_err(),
            store.update_connector(&ok.id, &bad).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), StoreErrorKind::Invalid, "{field} {name}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{field}: `{name}` is reserved")),
                "{err}"
            );
        }
    }
}

pub(super) fn tick(connector_id: &str, i: i64) -> TickRecord {
    TickRecord {
        connector_id: connector_id.into(),
        scheduled_for_ms: i * 1000,
        started_at_ms: i * 1000 + 3,
        outcome: if i == 2 {
            TickOutcome::Permanent
        } else {
            TickOutcome::Ok
        },
        rows: 10,
        source_bytes: 100,
        sink_bytes: 80,
        duration_ms: 4,
        error: (i == 2).then(|| "line 3, column 1 (byte 20): expected a metric name".into()),
        runner_id: "r".into(),
    }
}

/// The history reads newest first, keeps `TICKS_KEPT` per connector, and the newest
/// tick also comes with the connector's record (listing needs no query per connector).
pub async fn tick_history_is_newest_first_trimmed_and_beside_the_connector<S: ContractStore>(
    o: Opened<S>,
) {
    let store = &o.store;
    let record = store
        .create_connector(&spec(&unique("n"), &unique("d")), Origin::Api)
        .await
        .unwrap();
    assert_eq!(record.last_tick, None);
    for i in 0..5 {
        store.record_tick(&tick(&record.id, i)).await.unwrap();
    }
    let ticks = store.ticks(&record.id, 3).await.unwrap();
    assert_eq!(
        ticks.iter().map(|t| t.scheduled_for_ms).collect::<Vec<_>>(),
        [4000, 3000, 2000]
    );
    assert_eq!(ticks[2], tick(&record.id, 2));
    let listed = store.list_connectors().await.unwrap();
    let mine = listed.iter().find(|r| r.id == record.id).unwrap();
    assert_eq!(mine.last_tick, Some(tick(&record.id, 4)));
    for i in 5..TICKS_KEPT + 5 {
        store.record_tick(&tick(&record.id, i)).await.unwrap();
    }
    let kept = store.ticks(&record.id, usize::MAX >> 1).await.unwrap();
    assert_eq!(kept.len() as i64, TICKS_KEPT);
    assert_eq!(kept.last().unwrap().scheduled_for_ms, 5000);
    store.delete_connector(&record.id).await.unwrap();
    assert!(store.ticks(&record.id, 10).await.unwrap().is_empty());
}

/// A renewal extends only the current token's lease, and never a done bucket's.
pub async fn renewal_only_while_the_token_matches<S: ContractStore>(o: Opened<S>) {
    let store = &o.store;
    let c = unique("c");
    let lease = store
        .claim_task(&c, 1000, "a", Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    let renewed = store.renew_task(&lease, LEASE).await.unwrap().unwrap();
    assert!(renewed.expires_at_ms > lease.expires_at_ms + 20_000);
    assert_eq!(renewed.token, lease.token);
    let short = store
        .claim_task(&c, 2000, "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .claim_task(&c, 2000, "b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(store.renew_task(&short, LEASE).await.unwrap().is_none());
    store.finish_task(&renewed).await.unwrap();
    assert!(store.renew_task(&renewed, LEASE).await.unwrap().is_none());
}

/// The store's clock, which leases are measured on, is close to real time.
pub async fn the_store_clock_is_close_to_real_time<S: ContractStore>(o: Opened<S>) {
    let store_now = o.store.now_ms().await.unwrap();
    let wall = crate::protocol::wall_clock_ms();
    assert!(
        (store_now - wall).abs() < 5_000,
        "store {store_now}, wall {wall}"
    );
}
