//! Discovery on PostgreSQL with two connectord processes: one refresh per refresh
//! bucket between them (the lease), one connector per target, and the rows labeled.
//! `cargo xtask services up` starts a database; under CI=true a missing one fails.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use serde_json::json;
use support::{Daemon, call, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refresh_once_per_bucket_and_share_the_connectors() {
    let Some(url) = support::database_url() else {
        return;
    };
    let exporter = TestServer::start(|_| Reply::ok("up 1\n")).await;
    let address = exporter.addr().to_string();
    let answers = Arc::new(AtomicUsize::new(0));
    let sd = {
        let (answers, address) = (Arc::clone(&answers), address.clone());
        TestServer::start(move |_| {
            answers.fetch_add(1, Ordering::SeqCst);
            Reply::json(&json!([
                {"targets": [address], "labels": {"__metrics_path__": "/a", "path": "a"}},
                {"targets": [address], "labels": {"__metrics_path__": "/b", "path": "b"}}
            ]))
        })
        .await
    };
    // Names of their own: the shared database keeps other tests' connectors.
    let run = format!("d{}", uuid::Uuid::new_v4().simple());
    let schema = format!("s{}", &run[1..13]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connectord.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nkind = \"postgres\"\nurl_ref = \"$env:DATABASE_URL\"\n\n\
             [[discovery]]\nname = \"{run}\"\ntype = \"http_sd\"\nurl = \"{}\"\nrefresh_ms = 500\n\n\
             [discovery.template]\ntype = \"prometheus\"\ntarget_database = \"{schema}\"\ntarget_table = \"samples\"\nschedule_ms = 500\n",
            sd.url("/sd")
        ),
    )
    .unwrap();
    let env = [("DATABASE_URL", url.as_str())];
    let first = Daemon::start(&config, &env);
    let second = Daemon::start(&config, &env);
    let managed = |d: &Daemon| -> Vec<String> {
        let r = call(d, "GET", "/v1/connectors?limit=10000", None);
        let mut names: Vec<String> = r.json()["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with(&format!("{run}/")))
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let ids = wait_for("two connectors", Duration::from_secs(15), || {
        let ids = managed(&first);
        (ids.len() == 2).then_some(ids)
    })
    .await;
    assert_eq!(managed(&second), ids);

    // Over 5 s, 10 refresh buckets: about 10 SD requests between both processes, not 20.
    let before = answers.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = answers.load(Ordering::SeqCst) - before;
    assert!(
        (8..=12).contains(&requests),
        "{requests} SD requests in 10 refresh buckets"
    );

    // Both targets' rows land, labeled, once per bucket.
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = wait_for_rows(&db, &schema).await;
    assert!(
        rows.iter().all(|(n, _)| *n == 1),
        "a (bucket, instance, path) twice: {rows:?}"
    );
    let (s1, l1) = first.stop();
    assert!(s1.success(), "{l1}");
    let (s2, l2) = second.stop();
    assert!(s2.success(), "{l2}");
    db.batch_execute(&format!(
        "DELETE FROM connectord.connectors WHERE name LIKE '{run}/%'; DELETE FROM connectord.discoveries WHERE name = '{run}'; \
         DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    ))
    .await
    .unwrap();
}

/// Rows per (bucket, labels), once both targets have a few buckets.
async fn wait_for_rows(db: &tokio_postgres::Client, schema: &str) -> Vec<(i64, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(i64, String)> = db
            .query(
                &format!("SELECT count(*), labels::text FROM \"{schema}\".samples GROUP BY timestamp, labels::text"),
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        let paths: std::collections::BTreeSet<&str> =
            rows.iter().map(|(_, l)| l.as_str()).collect();
        if rows.len() >= 6 && paths.len() == 2 {
            assert!(
                paths
                    .iter()
                    .all(|l| l.contains("\"job\": ") && l.contains("\"instance\": ")),
                "{paths:?}"
            );
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows of both targets did not land: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
