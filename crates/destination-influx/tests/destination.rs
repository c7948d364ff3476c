//! The `influx` destination over real HTTP on 127.0.0.1: headers, gzip, auth,
//! splitting by `max_request_bytes`, halving on 413, retries and refusals.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;

use connector_core::testing::DeliveryHarness;
use connector_core::{Batch, ErrorKind};
use connector_http::testing::{Reply, TestServer};
use destination_influx::InfluxDestination;
use serde_json::json;

fn rows(n: usize) -> Batch {
    let mut batch = Batch::new(metric_rows::schema());
    for i in 0..n {
        let row = batch
            .row()
            .timestamp(1_700_000_000_000)
            .string("node_load1");
        let row = if i == 1 {
            row.null()
        } else {
            row.real(i as f64)
        };
        row.map([
            ("instance", format!("host {i}")),
            ("job", "node".to_owned()),
        ])
        .finish()
        .unwrap();
    }
    batch
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn harness() -> DeliveryHarness<InfluxDestination> {
    DeliveryHarness::new(InfluxDestination::new()).secret("GRAFANA_KEY", "glc_s3cr3t-key")
}

#[tokio::test]
async fn lines_go_gzipped_with_basic_auth_and_nulls_are_counted() {
    let server = TestServer::start(|_| Reply::status(204)).await;
    let config = json!({
        "endpoint": server.url("/api/v1/push/influx/write"),
        "auth": {"type": "basic", "username": "123456", "password_ref": "$env:GRAFANA_KEY"},
    });
    let run = harness().deliver(&config, &rows(4)).await;
    let sent = run.result.unwrap();
    assert_eq!((sent.rows, sent.requests), (3, 1));
    assert_eq!(sent.skipped, [("null_value", 1)]);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/v1/push/influx/write");
    assert_eq!(request.headers["content-encoding"], "gzip");
    assert_eq!(request.headers["content-type"], "text/plain; charset=utf-8");
    // base64("123456:glc_s3cr3t-key")
    assert_eq!(
        request.headers["authorization"],
        "Basic MTIzNDU2OmdsY19zM2NyM3Qta2V5"
    );
    assert_eq!(sent.bytes, request.body.len() as u64);
    assert_eq!(run.sent_bytes, sent.bytes);
    assert_eq!(
        gunzip(&request.body),
        "node_load1,instance=host\\ 0,job=node value=0 1700000000000000000\n\
         node_load1,instance=host\\ 2,job=node value=2 1700000000000000000\n\
         node_load1,instance=host\\ 3,job=node value=3 1700000000000000000\n"
    );
}

#[tokio::test]
async fn a_bucket_larger_than_max_request_bytes_is_split_on_line_boundaries() {
    let server = TestServer::start(|_| Reply::status(204)).await;
    let config =
        json!({"endpoint": server.url("/write?db=m"), "max_request_bytes": 1024, "gzip": false});
    let run = harness().deliver(&config, &rows(100)).await;
    let sent = run.result.unwrap();
    let seen = server.requests();
    assert!(seen.len() >= 6, "{} requests", seen.len());
    assert_eq!(sent.requests, seen.len() as u64);
    let mut all = String::new();
    for request in &seen {
        assert!(request.body.len() <= 1024);
        assert!(request.body.ends_with(b"\n"));
        assert!(request.headers.get("content-encoding").is_none());
        all.push_str(std::str::from_utf8(&request.body).unwrap());
    }
    let mut whole = Vec::new();
    destination_influx::encode(&rows(100), &mut whole).unwrap();
    assert_eq!(all.as_bytes(), whole, "every line once, in order");
    assert_eq!(sent.rows, 99);
}

#[tokio::test]
async fn a_413_halves_the_request_and_sends_both_halves() {
    let server = TestServer::start(|n| {
        if n == 0 {
            Reply::status(413).body("request too large")
        } else {
            Reply::status(204)
        }
    })
    .await;
    let config = json!({"endpoint": server.url("/influx/write"), "gzip": false});
    let sent = harness().deliver(&config, &rows(9)).await.result.unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    let lines = |i: usize| seen[i].body.iter().filter(|b| **b == b'\n').count();
    assert_eq!((lines(0), lines(1), lines(2)), (8, 4, 4));
    assert_eq!(
        [seen[1].body.clone(), seen[2].body.clone()].concat(),
        seen[0].body
    );
    assert_eq!((sent.rows, sent.requests), (8, 2));
}

#[tokio::test]
async fn a_400_is_permanent_with_the_receivers_words_and_no_secret() {
    let server = TestServer::start(|_| {
        Reply::status(400)
            .body("{\"error\":\"unable to parse 'x': missing fields glc_s3cr3t-key\"}\n")
    })
    .await;
    let config = json!({
        "endpoint": server.url("/write"),
        "auth": {"type": "basic", "username": "1", "password_ref": "$env:GRAFANA_KEY"},
    });
    let run = harness().deliver(&config, &rows(2)).await;
    let err = run.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let shown = run.shown_error.unwrap();
    assert!(
        shown.starts_with(&format!(
            "influx write {}: HTTP 400 Bad Request: {{\"error\":\"unable to parse 'x': missing fields",
            server.url("/write")
        )),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert_eq!(server.count(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_503_is_retried_and_then_delivered() {
    let server = TestServer::start(|n| {
        if n < 2 {
            Reply::status(503).header("retry-after", "0")
        } else {
            Reply::status(204)
        }
    })
    .await;
    let config = json!({"endpoint": server.url("/write")});
    let run = harness().deliver(&config, &rows(3)).await;
    assert_eq!(run.result.unwrap().rows, 2);
    assert_eq!(run.retries, 2);
    let bodies: Vec<_> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the same body each time"
    );
    assert_eq!(
        run.sent_bytes,
        3 * bodies[0].len() as u64,
        "retries count as egress"
    );
}

#[tokio::test]
async fn configs_are_checked_with_the_key_named() {
    let check = |raw: serde_json::Value| {
        use connector_core::Destination as _;
        InfluxDestination::new()
            .validate_config(&raw)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        check(json!({"endpoint": "http://h/write", "max_request_bytes": 10})),
        "max_request_bytes: 10 is out of range, expected 1024 to 67108864"
    );
    assert!(
        check(json!({"endpoint": "http://h/write", "gzipp": true}))
            .starts_with("unknown field `gzipp`")
    );
    assert!(check(json!({"endpoint": "ftp://h/write"})).contains("scheme `ftp` is not supported"));
}
