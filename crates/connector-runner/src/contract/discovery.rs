//! Discoveries and the connectors they manage, as every store keeps them.

use std::time::Duration;

use serde_json::json;

use super::{ContractStore, Opened, spec, unique};
use crate::{ManagedConnector, Origin, StoreErrorKind};

fn managed(discovery: &str, target: &str, database: &str) -> ManagedConnector {
    let name = format!("{discovery}/{target}");
    ManagedConnector {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string(),
        spec: spec(&name, database),
    }
}

/// Create, conflict on a taken name, get, list, update, status, upsert, delete.
pub async fn discoveries_are_kept_with_their_status<S: ContractStore>(opened: Opened<S>) {
    let store = &opened.store;
    let name = unique("d");
    let spec = json!({"type": "http_sd", "url": "http://127.0.0.1:1/sd"});
    let created = store
        .create_discovery(&name, &spec, Origin::Api)
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), &created.spec, created.origin),
        (name.as_str(), &spec, Origin::Api)
    );
    assert_eq!(created.status, None);
    let err = store
        .create_discovery(&name, &spec, Origin::Api)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        format!("a discovery named `{name}` already exists")
    );
    let changed = json!({"type": "http_sd", "url": "http://127.0.0.1:2/sd"});
    let updated = store.update_discovery(&created.id, &changed).await.unwrap();
    assert_eq!(
        (updated.id.as_str(), &updated.spec),
        (created.id.as_str(), &changed)
    );
    let status = json!({"last_error": "connection refused", "active": []});
    store
        .set_discovery_status(&created.id, &status)
        .await
        .unwrap();
    let got = store.get_discovery(&created.id).await.unwrap().unwrap();
    assert_eq!(got.status.as_ref(), Some(&status));
    assert!(
        store
            .list_discoveries()
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == created.id)
    );
    let again = store
        .upsert_discovery(&name, &spec, Origin::File)
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.origin, &again.spec),
        (created.id.as_str(), Origin::File, &spec)
    );
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        store
            .update_discovery(&missing, &spec)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
    assert_eq!(
        store
            .set_discovery_status(&missing, &status)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
    store.delete_discovery(&created.id).await.unwrap();
    assert!(store.get_discovery(&created.id).await.unwrap().is_none());
    assert_eq!(
        store
            .delete_discovery(&created.id)
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::NotFound
    );
}

/// A sync creates with the given ids, rewrites changed specs, removes the rest with
/// their history, leaves other origins alone, and a target that comes back keeps
/// its id and its fencing counter.
pub async fn managed_connectors_follow_the_wanted_set<S: ContractStore>(opened: Opened<S>) {
    let store = &opened.store;
    let name = unique("d");
    let database = unique("m");
    let discovery = store
        .create_discovery(&name, &json!({}), Origin::Api)
        .await
        .unwrap();
    let (a, b, c) = (
        managed(&name, "a", &database),
        managed(&name, "b", &database),
        managed(&name, "c", &database),
    );
    let report = store
        .sync_managed(&name, &[a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!((report.created, report.updated, report.removed), (2, 0, 0));
    let got = store.get_connector(&a.id).await.unwrap().unwrap();
    assert_eq!((got.spec, got.origin), (a.spec.clone(), Origin::Discovery));
    let lease = store
        .claim_task(&a.id, 1000, "r", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.finish_task(&lease).await.unwrap();

    let mut b2 = b.clone();
    b2.spec.schedule_ms = 2000;
    let report = store
        .sync_managed(&name, &[b2.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!((report.created, report.updated, report.removed), (1, 1, 1));
    assert!(store.get_connector(&a.id).await.unwrap().is_none());
    assert_eq!(
        store
            .get_connector(&b.id)
            .await
            .unwrap()
            .unwrap()
            .spec
            .schedule_ms,
        2000
    );
    assert!(store.ticks(&a.id, 10).await.unwrap().is_empty());
    let same = store
        .sync_managed(&name, &[b2.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!((same.created, same.updated, same.removed), (0, 0, 0));

    // `a` comes back: the same id, and its next claim's token is above the old one.
    store
        .sync_managed(&name, &[a.clone(), b2.clone(), c.clone()])
        .await
        .unwrap();
    let back = store
        .claim_task(&a.id, 2000, "r", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(back.token > lease.token, "{back:?} after {lease:?}");

    // A name held by a connector of another origin is reported and left alone.
    let taken = store
        .create_connector(&spec(&format!("{name}/api"), &database), Origin::Api)
        .await
        .unwrap();
    let clash = managed(&name, "api", &database);
    let report = store
        .sync_managed(&name, &[a.clone(), clash])
        .await
        .unwrap();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(report.removed, 2);
    assert_eq!(
        store
            .get_connector(&taken.id)
            .await
            .unwrap()
            .unwrap()
            .origin,
        Origin::Api
    );

    // Deleting the discovery takes its connectors; a refresh after it makes none.
    store.delete_discovery(&discovery.id).await.unwrap();
    assert!(store.get_connector(&a.id).await.unwrap().is_none());
    assert!(store.get_connector(&taken.id).await.unwrap().is_some());
    let err = store
        .sync_managed(&name, std::slice::from_ref(&a))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NotFound);
    assert!(store.get_connector(&a.id).await.unwrap().is_none());
}
