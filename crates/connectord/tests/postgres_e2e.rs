//! Scale-out: several connectord processes on one PostgreSQL. `cargo xtask services up`
//! starts a database and prints DATABASE_URL; under CI=true a missing one fails.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use support::{Daemon, expected_rows};

const BODY: &str = "# TYPE up gauge\nup{job=\"a\",q=\"x\\\"y\"} 1\nup{job=\"b\"} NaN\nrequests_total 42 1700000000000\n";

async fn client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &std::env::var("DATABASE_URL").unwrap(),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

fn config(dir: &std::path::Path, name: &str, schema: &str, endpoint: &str) -> std::path::PathBuf {
    let path = dir.join("connectord.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\nkind = \"postgres\"\nurl_ref = \"$env:DATABASE_URL\"\n\n\
             [[connectors]]\nname = \"{name}\"\ntype = \"prometheus\"\ntarget_database = \"{schema}\"\n\
             target_table = \"samples\"\nschedule_ms = 200\n\n[connectors.config]\nendpoint = \"{endpoint}\"\n"
        ),
    )
    .unwrap();
    path
}

/// Every committed bucket holds exactly the rows of the body; no rows outside the ledger.
async fn assert_exactly_once(id: &str, schema: &str) -> usize {
    let db = client().await;
    let ledger: Vec<(i64, i64)> = db
        .query(
            "SELECT scheduled_for_ms, rows FROM connectord.ledger WHERE connector_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = expected_rows(BODY);
    for (bucket, rows) in &ledger {
        assert_eq!(*rows as usize, expected.len());
        let got: Vec<(String, Option<f64>, String)> = db
            .query(
                &format!(
                    "SELECT name, value, labels::text FROM \"{schema}\".samples \
                     WHERE timestamp = to_timestamp($1::bigint / 1000.0) ORDER BY _connectord_row"
                ),
                &[bucket],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "bucket {bucket}: partial or duplicated"
        );
        for ((name, value, labels), (want_name, want_value, want_labels)) in
            got.iter().zip(&expected)
        {
            assert_eq!((name, value), (want_name, want_value));
            let got: serde_json::Value = serde_json::from_str(labels).unwrap();
            let want: serde_json::Value = serde_json::from_str(want_labels).unwrap();
            assert_eq!(got, want);
        }
    }
    let orphans: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".samples s WHERE NOT EXISTS (SELECT 1 FROM connectord.ledger l \
                 WHERE l.connector_id = $1 AND to_timestamp(l.scheduled_for_ms / 1000.0) = s.timestamp)"
            ),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
    ledger.len()
}

async fn connector_id(name: &str) -> Option<String> {
    client()
        .await
        .query_opt(
            "SELECT id FROM connectord.connectors WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn ledger_len(id: &str) -> i64 {
    client()
        .await
        .query_one(
            "SELECT count(*) FROM connectord.ledger WHERE connector_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_database_and_commit_each_bucket_once() {
    let Some(url) = support::database_url() else {
        return;
    };
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (name, schema) = (format!("shared_{suffix}"), format!("t_{suffix}"));
    let config = config(dir.path(), &name, &schema, &server.url("/metrics"));
    let env = [("DATABASE_URL", url.as_str())];
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&config, &env)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Some(id) = connector_id(&name).await {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the connector was not created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while ledger_len(&id).await < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "20 buckets did not land"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lost: f64 = daemons
        .iter()
        .map(|d| d.get("/metrics"))
        .flat_map(|m| {
            m.lines()
                .filter(|l| {
                    // This test's connector: the database may hold other tests' too.
                    l.starts_with("connectord_lease_claims_total{")
                        && l.contains(&format!("connector_id=\"{id}\""))
                        && l.contains("result=\"lost\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    // One process killed hard mid-run, the others stopped cleanly.
    let mut daemons = daemons.into_iter();
    daemons.next().unwrap().kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for d in daemons {
        assert!(d.stop().0.success());
    }
    let buckets = assert_exactly_once(&id, &schema).await;
    assert!(buckets >= 20);
    // They split the connector's buckets rather than race for each: claims are lost
    // only while the three meet, until each has heard of the others (up to two
    // one-second refreshes of five 200 ms buckets for each latecomer). Racing for
    // every bucket loses two claims per bucket.
    #[allow(clippy::cast_precision_loss)]
    let raced = 2.0 * buckets as f64;
    assert!(
        lost <= 20.0 && lost < raced,
        "{lost} claims lost over {buckets} buckets: the runners raced for every bucket"
    );

    // `connectord rows` reads the table back from PostgreSQL, typed as SQLite's are.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args([
            "rows",
            "--connector",
            &name,
            "--limit",
            "3",
            "--since",
            "1h",
            "--config",
        ])
        .arg(&config)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let expected = expected_rows(BODY);
    for row in &rows {
        assert!(
            row["timestamp"].as_i64().unwrap() > 1_700_000_000_000,
            "{row}"
        );
        assert!(row["labels"].is_object(), "{row}");
        assert!(
            expected.iter().any(|(n, _, _)| row["name"] == n.as_str()),
            "{row}"
        );
    }
}

/// The bucket (ms) of each request a line-protocol receiver got.
fn buckets_received(receiver: &TestServer) -> Vec<i64> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let body = std::str::from_utf8(&r.body).unwrap();
            let first = body.lines().next().unwrap();
            first.rsplit(' ').next().unwrap().parse::<i64>().unwrap() / 1_000_000
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_deliver_each_bucket_once_between_them() {
    let Some(url) = support::database_url() else {
        return;
    };
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let receiver = TestServer::start(|_| Reply::status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (name, schema) = (format!("src_{suffix}"), format!("t_{suffix}"));
    let config = config(dir.path(), &name, &schema, &exporter.url("/metrics"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[destinations]]\nname = \"out_{suffix}\"\ntype = \"influx\"\nsource = \"{name}\"\n\n\
         [destinations.config]\nendpoint = \"{}\"\ngzip = false\n",
        receiver.url("/write")
    ));
    std::fs::write(&config, text).unwrap();
    let env = [("DATABASE_URL", url.as_str())];
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&config, &env)).collect();
    let db = client().await;
    let destination_id: String = loop {
        if let Some(row) = db
            .query_opt(
                "SELECT id FROM connectord.destinations WHERE name = $1",
                &[&format!("out_{suffix}")],
            )
            .await
            .unwrap()
        {
            break row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: i64 = db
            .query_one(
                "SELECT count(*) FROM connectord.delivered WHERE destination_id = $1",
                &[&destination_id],
            )
            .await
            .unwrap()
            .get(0);
        if delivered >= 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "20 buckets were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lost = 0;
    let mut logs = String::new();
    for d in daemons {
        let (status, log) = d.stop();
        assert!(status.success(), "{log}");
        logs.push_str(&log);
        // A delivery whose lease ran out (another runner took the bucket) or that a
        // stop cancelled may have reached the receiver already: at least once there,
        // never twice in the ledger.
        lost += log
            .lines()
            .filter(|l| {
                l.contains("delivery failed") && (l.contains("fenced") || l.contains("cancelled"))
            })
            .count();
    }
    let delivered: Vec<i64> = db
        .query(
            "SELECT scheduled_for_ms FROM connectord.delivered WHERE destination_id = $1 ORDER BY 1",
            &[&destination_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut received = buckets_received(&receiver);
    received.sort_unstable();
    let sent = received.len();
    let twice: Vec<String> = received
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].to_string())
        .collect();
    received.dedup();
    let missing: Vec<i64> = delivered
        .iter()
        .filter(|b| received.binary_search(b).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "delivered buckets {missing:?} never reached the receiver, whichever process sent them (received {received:?})"
    );
    // Every request beyond the ledger's deliveries (a bucket sent twice, or sent by
    // a delivery a stop cancelled before it was recorded) is a lost delivery's.
    assert!(
        sent - delivered.len() <= lost,
        "{} requests reached the receiver beyond the {} delivered buckets (unrecorded: {:?}), but only {lost} deliveries lost their lease or were cancelled:\n{}",
        sent - delivered.len(),
        delivered.len(),
        received
            .iter()
            .filter(|b| delivered.binary_search(b).is_err())
            .collect::<Vec<_>>(),
        logs.lines()
            .filter(|l| twice.iter().any(|b| l.contains(b.as_str())))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let runners: i64 = db
        .query_one(
            "SELECT count(DISTINCT runner_id) FROM connectord.deliveries \
             WHERE destination_id = $1 AND outcome = 'delivered'",
            &[&destination_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(runners >= 1);
    let lines_per_bucket = expected_rows(BODY)
        .iter()
        .filter(|(_, value, _)| value.is_some())
        .count();
    for request in receiver.requests() {
        assert_eq!(
            std::str::from_utf8(&request.body).unwrap().lines().count(),
            lines_per_bucket
        );
    }
}
