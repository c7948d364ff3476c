//! The airq connector against a real HTTP server on 127.0.0.1, through the harness.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use airq_connector::Airq;
use connector_core::testing::Harness;
use connector_core::{ErrorKind, Value};
use connector_http::testing::{Reply, TestServer};
use serde_json::json;

fn harness() -> Harness<Airq> {
    Harness::new(Airq::default())
        .scheduled_for_ms(60_000)
        .secret("AIRQ_TOKEN", "t0ken")
}

fn config(server: &TestServer) -> serde_json::Value {
    json!({"endpoint": server.url("/v1/readings"), "token_ref": "$env:AIRQ_TOKEN", "timeout_ms": 1000})
}

#[tokio::test]
async fn a_good_body_gives_one_row_per_reading() {
    let server = TestServer::start(|_| {
        Reply::json(&json!({"devices": [
            {"id": "d-1", "room": "kitchen", "readings": {"co2_ppm": 612, "temperature_c": 21.5}},
            {"id": "d-2", "room": "hall", "readings": {}}
        ]}))
    })
    .await;
    let recorded = harness().run_recorded(&config(&server)).await;
    let batch = recorded.result.unwrap();
    assert_eq!(batch.len(), 2);
    let row = batch.rows().next().unwrap();
    assert_eq!(row.get("timestamp"), Some(Value::Timestamp(60_000)));
    assert_eq!(row.get("device_id"), Some(Value::String("d-1")));
    assert_eq!(row.get("room"), Some(Value::String("kitchen")));
    assert_eq!(row.get("metric"), Some(Value::String("co2_ppm")));
    assert_eq!(row.get("value"), Some(Value::Real(612.0)));
    assert!(recorded.source_bytes > 100);
    let seen = &server.requests()[0];
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert_eq!(seen.headers["accept"], "application/json");
}

#[tokio::test]
async fn a_config_typo_fails_at_validation_with_serde_words() {
    let err = harness()
        .run(&json!({"endpoint": "http://h/", "token": "$env:AIRQ_TOKEN"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "unknown field `token`, expected one of `endpoint`, `token_ref`, `timeout_ms`"
    );
    let err = harness()
        .run(&json!({"endpoint": "file:///etc/passwd", "token_ref": "$env:AIRQ_TOKEN"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "endpoint: scheme `file` is not supported, use http:// or https://"
    );
}

#[tokio::test]
async fn a_500_is_retried_then_transient() {
    let server = TestServer::start(|_| Reply::status(500)).await;
    let recorded = harness().run_recorded(&config(&server)).await;
    let err = recorded.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(server.count(), 4);
    assert_eq!(recorded.retries, 3);
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn a_404_is_permanent_at_once() {
    let server = TestServer::start(|_| Reply::status(404)).await;
    let err = harness().run(&config(&server)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(server.count(), 1);
    assert_eq!(
        err.to_string(),
        format!("poll {}: HTTP 404 Not Found", server.url("/v1/readings"))
    );
}

#[tokio::test]
async fn bad_json_is_permanent_with_serde_position() {
    let server =
        TestServer::start(|_| Reply::text("{\"devices\": [oops]}", "application/json")).await;
    let err = harness().run(&config(&server)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(
        format!("{err:#}"),
        format!(
            "poll {}: the body is not the expected JSON: expected value at line 1 column 14",
            server.url("/v1/readings")
        )
    );
}

#[tokio::test]
async fn a_missing_secret_disables_and_sends_nothing() {
    let server = TestServer::start(|_| Reply::json(&json!({"devices": []}))).await;
    let err = Harness::new(Airq::default())
        .run(&config(&server))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "token resolve: environment variable `AIRQ_TOKEN` is not set"
    );
    assert_eq!(server.count(), 0);
}
