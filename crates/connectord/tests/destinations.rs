//! Destinations end to end: a live connectord scrapes an exporter on 127.0.0.1 and
//! delivers every committed bucket to a receiver on 127.0.0.1, managed over the API.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use serde_json::json;
use support::{Daemon, Declared, call, connector, ledger, wait_for, write_config};

const BODY: &str = "# TYPE http_requests_total counter\n\
http_requests_total{method=\"get\",code=\"200\"} 1027\n\
http_requests_total{method=\"post\",code=\"500\"} 3\n\
temperature{room=\"a b,c=d\"} NaN\nup 1\n";

fn source(server: &TestServer) -> Declared<'static> {
    Declared {
        name: "app",
        table: "app",
        schedule_ms: 200,
        config: format!("endpoint = \"{}\"", server.url("/metrics")),
    }
}

/// Lines received, by their timestamp (the bucket, in ns).
fn lines_by_bucket(receiver: &TestServer) -> BTreeMap<i64, Vec<String>> {
    let mut by_bucket: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for request in receiver.requests() {
        for line in std::str::from_utf8(&request.body).unwrap().lines() {
            let ns: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            by_bucket
                .entry(ns / 1_000_000)
                .or_default()
                .push(line.to_owned());
        }
    }
    by_bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_bucket_reaches_the_receiver_once_in_order() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let receiver = TestServer::start(|_| Reply::status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[source(&exporter)]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[destinations]]\nname = \"out\"\ntype = \"influx\"\nsource = \"app\"\n\n\
         [destinations.config]\nendpoint = \"{}\"\ngzip = false\n",
        receiver.url("/write?db=metrics")
    ));
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "app")
    })
    .await;
    wait_for("4 delivered buckets", Duration::from_secs(30), || {
        (lines_by_bucket(&receiver).len() >= 4).then_some(())
    })
    .await;

    let list = call(&daemon, "GET", "/v1/destinations", None).json();
    let out = &list["destinations"][0];
    assert_eq!(out["name"], "out");
    assert_eq!(out["source"], "app");
    assert_eq!(out["origin"], "file");
    assert_eq!(out["state"], "enabled");
    assert_eq!(out["last_delivery"]["outcome"], "delivered", "{out}");
    assert_eq!(out["last_delivery"]["skipped"], 1, "the NaN sample: {out}");
    let dest_id = out["id"].as_str().unwrap().to_owned();
    let history = call(
        &daemon,
        "GET",
        &format!("/v1/destinations/{dest_id}/deliveries?limit=3"),
        None,
    )
    .json();
    assert_eq!(history["deliveries"].as_array().unwrap().len(), 3);
    let metrics = daemon.get("/metrics");
    let rows_line = metrics
        .lines()
        .find(|l| l.starts_with("connectord_destination_rows_delivered_total{"))
        .unwrap();
    assert!(
        rows_line.contains(&format!(
            "connector_id=\"{dest_id}\",connector_type_id=\"influx\",org_id=\"default\""
        )),
        "{rows_line}"
    );
    assert!(metrics.contains("connectord_destination_egress_bytes_total{"));
    assert!(metrics.contains("connectord_destination_lag_seconds{"));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");

    let committed: Vec<i64> = ledger(dir.path(), &id).iter().map(|(b, _)| *b).collect();
    let delivered = lines_by_bucket(&receiver);
    let requests: Vec<i64> = receiver
        .requests()
        .iter()
        .map(|r| {
            let first = std::str::from_utf8(&r.body)
                .unwrap()
                .lines()
                .next()
                .unwrap();
            first.rsplit(' ').next().unwrap().parse::<i64>().unwrap() / 1_000_000
        })
        .collect();
    assert!(
        requests.windows(2).all(|w| w[0] < w[1]),
        "oldest first, each once: {requests:?}"
    );
    for (bucket, lines) in &delivered {
        assert!(committed.contains(bucket), "{bucket} was never committed");
        let ns = bucket * 1_000_000;
        assert_eq!(
            lines,
            &[
                format!("http_requests_total,code=200,method=get value=1027 {ns}"),
                format!("http_requests_total,code=500,method=post value=3 {ns}"),
                format!("up value=1 {ns}"),
            ],
            "bucket {bucket}"
        );
    }
    // Every bucket committed before the last delivered one was delivered.
    let last = *delivered.keys().last().unwrap();
    let expected: Vec<i64> = committed.iter().copied().filter(|b| *b <= last).collect();
    assert_eq!(delivered.keys().copied().collect::<Vec<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bucket_halts_the_destination_and_a_resume_delivers_it() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let receiver = TestServer::start(|n| {
        if n == 0 {
            Reply::status(400).body("partial write: unable to parse line 2")
        } else {
            Reply::status(204)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[source(&exporter)]);
    let daemon = Daemon::start(&config, &[]);
    let created = call(
        &daemon,
        "POST",
        "/v1/destinations",
        Some(json!({
            "name": "grafana", "type": "influx", "source": "app",
            "config": {"endpoint": receiver.url("/api/v1/push/influx/write"), "gzip": false},
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let halted = wait_for("the halt", Duration::from_secs(30), || {
        let d = call(&daemon, "GET", &format!("/v1/destinations/{id}"), None).json();
        (d["state"] == "disabled").then_some(d)
    })
    .await;
    let reason = halted["disabled_reason"].as_str().unwrap();
    let first_bucket = lines_by_bucket(&receiver).keys().next().copied().unwrap();
    assert_eq!(
        reason,
        format!(
            "halted at bucket {first_bucket}: influx write {}: HTTP 400 Bad Request: partial write: unable to parse line 2",
            receiver.url("/api/v1/push/influx/write")
        )
    );
    assert_eq!(halted["last_delivery"]["outcome"], "halted");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.count(),
        1,
        "a halted destination sends nothing more"
    );
    let metrics = daemon.get("/metrics");
    assert!(
        metrics.contains(&format!(
            "connectord_destination_state{{connector_id=\"{id}\",connector_type_id=\"influx\",org_id=\"default\",state=\"disabled\"}} 1"
        )),
        "{metrics}"
    );

    let resumed = call(
        &daemon,
        "POST",
        &format!("/v1/destinations/{id}/resume"),
        None,
    );
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    wait_for(
        "the halted bucket delivered",
        Duration::from_secs(30),
        || (receiver.count() >= 3).then_some(()),
    )
    .await;
    let requests = receiver.requests();
    assert_eq!(
        requests[0].body, requests[1].body,
        "the resume sends the bucket it stopped at"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_delivery_goes_on() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let receiver = TestServer::start(|n| {
        if n < 2 {
            Reply::status(422).body("out of bounds")
        } else {
            Reply::status(204)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[source(&exporter)]);
    let daemon = Daemon::start(&config, &[]);
    let created = call(
        &daemon,
        "POST",
        "/v1/destinations",
        Some(json!({
            "name": "rw", "type": "prometheus_remote_write", "source": "app",
            "on_permanent": "dead_letter", "start": "latest",
            "config": {"endpoint": receiver.url("/api/v1/write")},
        })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    wait_for(
        "deliveries after two dead letters",
        Duration::from_secs(30),
        || (receiver.count() >= 4).then_some(()),
    )
    .await;
    let letters = call(
        &daemon,
        "GET",
        &format!("/v1/destinations/{id}/dead-letters"),
        None,
    )
    .json();
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .ends_with("HTTP 422 Unprocessable Entity: out of bounds"),
        "{letters:?}"
    );
    assert!(letters[0]["bucket"].as_i64() > letters[1]["bucket"].as_i64());
    let record = call(&daemon, "GET", &format!("/v1/destinations/{id}"), None).json();
    assert_eq!(record["state"], "enabled");
    assert!(record["starts_at"].is_i64(), "{record}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_destinations_are_refused_with_the_field_named() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[source(&exporter)]);
    let daemon = Daemon::start(&config, &[]);
    let post = |body: serde_json::Value| {
        let r = call(&daemon, "POST", "/v1/destinations", Some(body));
        let message = if r.status >= 400 {
            r.error().1
        } else {
            String::new()
        };
        (r.status, message)
    };
    assert_eq!(
        post(
            json!({"name": "x", "type": "influx", "source": "nope", "config": {"endpoint": "http://127.0.0.1:1/write"}})
        ),
        (
            400,
            "source: no connector named `nope`; create the source connector first".to_owned()
        )
    );
    assert_eq!(
        post(
            json!({"name": "x", "type": "influx", "source": "app", "config": {"endpoint": "http://127.0.0.1:1/write", "max_request_bytes": 1}})
        ),
        (
            400,
            "config: max_request_bytes: 1 is out of range, expected 1024 to 67108864".to_owned()
        )
    );
    assert_eq!(
        post(json!({"name": "x", "type": "kafka", "source": "app"})),
        (
            400,
            "type: unknown destination type `kafka`; known types: influx, prometheus_remote_write"
                .to_owned()
        )
    );
    let (status, message) =
        post(json!({"name": "x", "type": "influx", "source": "app", "start": "now"}));
    assert_eq!(status, 400);
    assert!(message.contains("unknown variant `now`"), "{message}");
    let body = json!({"name": "x", "type": "influx", "source": "app", "config": {"endpoint": "http://127.0.0.1:1/write"}});
    assert_eq!(post(body.clone()).0, 201);
    assert_eq!(
        post(body),
        (409, "a destination named `x` already exists".to_owned())
    );
    let types = call(&daemon, "GET", "/v1/destination-types", None).json();
    assert_eq!(
        types,
        json!({"types": [{"type": "influx"}, {"type": "prometheus_remote_write"}]})
    );
    daemon.stop();
}
