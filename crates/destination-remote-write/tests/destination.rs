//! The `prometheus_remote_write` destination over real HTTP on 127.0.0.1: the
//! protocol's headers, snappy protobuf bodies, request size, 429 handling and
//! extra headers.
#![allow(clippy::unwrap_used)]

use connector_core::testing::DeliveryHarness;
use connector_core::{Batch, Destination as _, ErrorKind};
use connector_http::testing::{Reply, TestServer};
use destination_remote_write::RemoteWriteDestination;
use destination_remote_write::proto::WriteRequest;
use prost::Message as _;
use serde_json::json;

fn rows(n: usize) -> Batch {
    let mut batch = Batch::new(metric_rows::schema());
    for i in 0..n {
        let row = batch.row().timestamp(1_000 + i as i64).string("up");
        let row = if i == 1 { row.null() } else { row.real(1.0) };
        row.map([("job", "node"), ("instance", "a")])
            .finish()
            .unwrap();
    }
    batch
}

fn decode(body: &[u8]) -> WriteRequest {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    WriteRequest::decode(raw.as_slice()).unwrap()
}

#[tokio::test]
async fn requests_carry_the_protocol_headers_and_split_by_samples() {
    let server = TestServer::start(|_| Reply::status(204)).await;
    let config = json!({
        "endpoint": server.url("/api/v1/write"),
        "max_samples_per_send": 2,
        "headers": {"X-Scope-OrgID": "team-a"},
    });
    let run = DeliveryHarness::new(RemoteWriteDestination::new())
        .deliver(&config, &rows(6))
        .await;
    let sent = run.result.unwrap();
    assert_eq!((sent.rows, sent.requests), (5, 3));
    assert_eq!(sent.skipped, [("null_value", 1)]);
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    let mut timestamps = Vec::new();
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers["content-encoding"], "snappy");
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        assert_eq!(
            request.headers["x-prometheus-remote-write-version"],
            "0.1.0"
        );
        assert_eq!(request.headers["x-scope-orgid"], "team-a");
        assert!(
            request.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("connectord/")
        );
        let write = decode(&request.body);
        for series in &write.timeseries {
            let labels: Vec<_> = series
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            assert_eq!(
                labels,
                [("__name__", "up"), ("instance", "a"), ("job", "node")]
            );
            timestamps.extend(series.samples.iter().map(|s| s.timestamp));
        }
    }
    assert_eq!(timestamps, [1000, 1002, 1003, 1004, 1005]);
    assert_eq!(
        run.sent_bytes,
        seen.iter().map(|r| r.body.len() as u64).sum::<u64>()
    );
}

#[tokio::test]
async fn a_429_is_retried_unless_retry_on_http_429_is_off() {
    let server = TestServer::start(|n| {
        if n == 0 {
            Reply::status(429).header("retry-after", "0")
        } else {
            Reply::status(204)
        }
    })
    .await;
    let config = json!({"endpoint": server.url("/api/v1/write")});
    let run = DeliveryHarness::new(RemoteWriteDestination::new())
        .deliver(&config, &rows(1))
        .await;
    assert_eq!(run.result.unwrap().rows, 1);
    assert_eq!(run.retries, 1);

    let refusing = TestServer::start(|_| Reply::status(429).body("slow down")).await;
    let config = json!({"endpoint": refusing.url("/api/v1/write"), "retry_on_http_429": false});
    let err = DeliveryHarness::new(RemoteWriteDestination::new())
        .deliver(&config, &rows(1))
        .await
        .result
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .ends_with("HTTP 429 Too Many Requests: slow down"),
        "{err}"
    );
    assert_eq!(refusing.count(), 1);
}

#[tokio::test]
async fn headers_cannot_override_the_protocol() {
    let check = |headers: serde_json::Value| {
        RemoteWriteDestination::new()
            .validate_config(&json!({"endpoint": "http://h/api/v1/write", "headers": headers}))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        check(json!({"Content-Encoding": "gzip"})).unwrap_err(),
        "headers: `Content-Encoding` is set by the protocol or the connection and cannot be overridden"
    );
    assert!(check(json!({"X-Prometheus-Remote-Write-Version": "2.0"})).is_err());
    assert!(check(json!({"Authorization": "Bearer x"})).is_err());
    assert_eq!(
        check(json!({"bad name": "x"})).unwrap_err(),
        "headers: `bad name` is not a valid header name"
    );
    assert!(check(json!({"X-Scope-OrgID": "t"})).is_ok());
    assert_eq!(
        RemoteWriteDestination::new()
            .validate_config(&json!({"endpoint": "http://h/", "max_samples_per_send": 0}))
            .unwrap_err()
            .to_string(),
        "max_samples_per_send: 0 is out of range, expected 1 to 1000000"
    );
}

#[tokio::test]
async fn requests_of_separate_series_go_out_at_once_and_all_arrive() {
    let server =
        TestServer::start(|_| Reply::status(204).delay(std::time::Duration::from_millis(200)))
            .await;
    let mut batch = Batch::new(metric_rows::schema());
    for i in 0..8 {
        batch
            .row()
            .timestamp(1_000)
            .string("up")
            .real(f64::from(i))
            .map([("i", i.to_string())])
            .finish()
            .unwrap();
    }
    let encoded = destination_remote_write::encode(&batch, 2).unwrap();
    assert!(
        !encoded.ordered,
        "one sample per series: no series spans two requests"
    );
    assert!(
        destination_remote_write::encode(&rows(6), 2)
            .unwrap()
            .ordered
    );
    let started = std::time::Instant::now();
    let sent = DeliveryHarness::new(RemoteWriteDestination::new())
        .deliver(
            &json!({"endpoint": server.url("/api/v1/write"), "max_samples_per_send": 2}),
            &batch,
        )
        .await
        .result
        .unwrap();
    assert_eq!((sent.rows, sent.requests), (8, 4));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(600),
        "four requests of 200 ms each went out together: {:?}",
        started.elapsed()
    );
    let mut values: Vec<f64> = server
        .requests()
        .iter()
        .flat_map(|r| decode(&r.body).timeseries)
        .flat_map(|s| s.samples)
        .map(|s| s.value)
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}
