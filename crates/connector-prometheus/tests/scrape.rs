//! The Prometheus connector's tick against real HTTP(S) servers on 127.0.0.1.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

use std::io::Write as _;
use std::time::{Duration, Instant};

use connector_core::testing::Harness;
use connector_core::{Batch, ConnectorError, ErrorKind, Value};
use connector_http::testing::{Reply, TestServer};
use connector_prometheus::exposition::{Format, parse};
use connector_prometheus::{ACCEPT_HEADER, PrometheusConnector};
use serde_json::json;

const BODY: &str = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
http_requests_total{method=\"get\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"500\"} 3\n\
temperature{room=\"a \\\"b\\\"\"} NaN\nup 1\n";

const BUCKET: i64 = 1_700_000_000_000;

async fn tick(config: serde_json::Value) -> Result<Batch, ConnectorError> {
    Harness::new(PrometheusConnector::new())
        .scheduled_for_ms(BUCKET)
        .secret("SCRAPE_TOKEN", "s3cr3t-token-value")
        .run(&config)
        .await
}

/// The rows a batch holds, as (name, value, labels JSON) with timestamps checked.
fn rows(batch: &Batch) -> Vec<(String, Option<f64>, serde_json::Value)> {
    batch
        .rows()
        .map(|r| {
            assert_eq!(r.get("timestamp"), Some(Value::Timestamp(BUCKET)));
            let Some(Value::String(name)) = r.get("name") else {
                panic!("name")
            };
            let value = match r.get("value") {
                Some(Value::Real(v)) => Some(v),
                Some(Value::Null) => None,
                other => panic!("value {other:?}"),
            };
            let Some(Value::Dynamic(labels)) = r.get("labels") else {
                panic!("labels")
            };
            (
                name.to_owned(),
                value,
                serde_json::from_str(labels).unwrap(),
            )
        })
        .collect()
}

/// What the rows must be: the parse of the body, with the bucket's timestamp.
fn expected(body: &str, format: Format) -> Vec<(String, Option<f64>, serde_json::Value)> {
    parse(body, format)
        .unwrap()
        .iter()
        .map(|s| {
            let labels: serde_json::Map<_, _> = s
                .labels
                .iter_decoded()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.into_owned())))
                .collect();
            (
                s.name.to_owned(),
                s.value.is_finite().then_some(s.value),
                labels.into(),
            )
        })
        .collect()
}

#[tokio::test]
async fn http_scrape_emits_one_row_per_sample_at_the_bucket_time() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let batch = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap();
    assert_eq!(rows(&batch), expected(BODY, Format::Prometheus));
    assert_eq!(batch.len(), 4);
    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/metrics");
    assert_eq!(seen.headers["accept"], ACCEPT_HEADER);
    let accept = seen.headers["accept"].to_str().unwrap();
    assert!(
        accept.starts_with("application/openmetrics-text;version=1.0.0;q="),
        "{accept}"
    );
    assert!(
        accept.contains("text/plain;version=0.0.4;q=0.5"),
        "{accept}"
    );
    assert_eq!(seen.headers["accept-encoding"], "gzip");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn https_scrape_with_a_private_ca() {
    let server = TestServer::start_tls(|_| Reply::ok(BODY)).await;
    let ca = server.ca_file().unwrap();
    let batch = tick(json!({"endpoint": server.url("/metrics"), "tls": {"ca_file": ca}}))
        .await
        .unwrap();
    assert_eq!(batch.len(), 4);
    // Without the CA the certificate is not trusted: Permanent at once (it would
    // fail the same way on every retry), saying what is wrong with it.
    let err = tick(json!({"endpoint": server.url("/metrics"), "timeout_ms": 1000}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .contains("the server's TLS certificate was refused: its issuer is unknown"),
        "{err}"
    );
    let err = tick(
        json!({"endpoint": server.url("/metrics"), "tls": {"ca_file": "/nonexistent/ca.pem"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .starts_with("tls.ca_file: cannot read `/nonexistent/ca.pem`"),
        "{err}"
    );
}

#[tokio::test]
async fn gzip_bodies_are_decoded() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(BODY.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let server = TestServer::start(move |_| {
        Reply::ok(compressed.clone()).header("content-encoding", "gzip")
    })
    .await;
    let batch = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap();
    assert_eq!(rows(&batch), expected(BODY, Format::Prometheus));
}

#[tokio::test]
async fn the_content_type_picks_the_parser() {
    // Float-second timestamps and `# EOF` are OpenMetrics; as Prometheus text they are an error.
    let om = "# TYPE a gauge\na{x=\"1\"} 1.5 1700000000.5\n# EOF\n";
    let server = TestServer::start(move |n| {
        let content_type = if n == 0 {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4"
        };
        Reply::ok(om).header("content-type", content_type)
    })
    .await;
    let batch = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap();
    assert_eq!(rows(&batch), expected(om, Format::OpenMetrics));
    let err = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("integer timestamp"), "{err}");
}

#[tokio::test]
async fn bearer_and_basic_auth_resolve_env_references_at_tick_time() {
    let server = TestServer::start(|_| Reply::ok("up 1\n")).await;
    tick(json!({"endpoint": server.url("/metrics"), "auth": {"type": "bearer", "token_ref": "$env:SCRAPE_TOKEN"}}))
        .await
        .unwrap();
    tick(json!({"endpoint": server.url("/metrics"), "auth": {"type": "basic", "username": "prom", "password_ref": "$env:SCRAPE_TOKEN"}}))
        .await
        .unwrap();
    let seen = server.requests();
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer s3cr3t-token-value"
    );
    // base64("prom:s3cr3t-token-value")
    assert_eq!(
        seen[1].headers["authorization"],
        "Basic cHJvbTpzM2NyM3QtdG9rZW4tdmFsdWU="
    );

    let err = tick(json!({"endpoint": server.url("/metrics"), "auth": {"type": "bearer", "token_ref": "$env:NOT_SET_ANYWHERE"}}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "token resolve: environment variable `NOT_SET_ANYWHERE` is not set"
    );
    assert_eq!(server.count(), 2, "no request without the secret");
}

#[tokio::test]
async fn retryable_failures_retry_three_times_with_backoff_then_fail_transient() {
    for status in [503, 500, 429] {
        let server = TestServer::start(move |_| Reply::status(status)).await;
        let started = Instant::now();
        let err = tick(json!({"endpoint": server.url("/metrics")}))
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Transient, "{status}");
        assert_eq!(server.count(), 4, "{status}: one attempt and three retries");
        assert!(err.to_string().ends_with("(after 4 attempts)"), "{err}");
        // 100 + 200 + 400 ms, plus at most half again of jitter.
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    }
}

#[tokio::test]
async fn a_retry_that_succeeds_lands_the_rows() {
    let server = TestServer::start(|n| {
        if n < 2 {
            Reply::status(429)
        } else {
            Reply::ok(BODY)
        }
    })
    .await;
    let recorded = Harness::new(PrometheusConnector::new())
        .run_recorded(&json!({"endpoint": server.url("/metrics")}))
        .await;
    assert_eq!(recorded.result.unwrap().len(), 4);
    assert_eq!(server.count(), 3);
    assert_eq!(recorded.retries, 2, "two 429s, each retried");
    assert_eq!(recorded.source_bytes, BODY.len() as u64);
}

#[tokio::test]
async fn other_client_errors_are_permanent_without_retry() {
    for status in [404, 401, 403, 400] {
        let server = TestServer::start(move |_| Reply::status(status)).await;
        let err = tick(json!({"endpoint": server.url("/metrics")}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{status}");
        assert_eq!(server.count(), 1, "{status}: no retry");
        assert!(
            err.to_string()
                .starts_with(&format!("scrape {}: HTTP {status}", server.url("/metrics"))),
            "{err}"
        );
    }
}

#[tokio::test]
async fn timeouts_bound_each_request_and_are_retried() {
    let server = TestServer::start(|_| Reply::ok(BODY).delay(Duration::from_secs(5))).await;
    let started = Instant::now();
    let err = tick(json!({"endpoint": server.url("/metrics"), "timeout_ms": 200}))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        err.to_string()
            .contains("timed out after 200 ms (after 4 attempts)"),
        "{err}"
    );
    assert_eq!(server.count(), 4);
    assert!(
        elapsed >= Duration::from_millis(4 * 200 + 700),
        "{elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn connection_errors_are_retried_then_transient() {
    // Bind a port, then free it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = tick(json!({"endpoint": format!("http://127.0.0.1:{port}/metrics")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn bodies_over_the_limit_fail_permanent() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let err = tick(json!({"endpoint": server.url("/metrics"), "body_size_limit_bytes": 64}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .ends_with("body exceeds body_size_limit_bytes (64 bytes)"),
        "{err}"
    );
    // The limit holds after decompression too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'#'; 100_000]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1000);
    let server =
        TestServer::start(move |_| Reply::ok(bomb.clone()).header("content-encoding", "gzip"))
            .await;
    let err = tick(json!({"endpoint": server.url("/metrics"), "body_size_limit_bytes": 10_000}))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("body exceeds body_size_limit_bytes (10000 bytes)"),
        "{err}"
    );
}

#[tokio::test]
async fn sample_limit_fails_the_whole_scrape() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let err = tick(json!({"endpoint": server.url("/metrics"), "sample_limit": 3}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .ends_with("more than sample_limit (3) samples"),
        "{err}"
    );
    assert_eq!(
        tick(json!({"endpoint": server.url("/metrics"), "sample_limit": 4}))
            .await
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn strict_config_rejects_what_lenient_scrapes_keep() {
    // Every line is well formed, but the buckets are not cumulative.
    let om = "# TYPE lat histogram\nlat_bucket{le=\"1\"} 5\nlat_bucket{le=\"+Inf\"} 3\n# EOF\n";
    let server = TestServer::start(move |_| {
        Reply::ok(om).header(
            "content-type",
            "application/openmetrics-text; version=1.0.0",
        )
    })
    .await;
    let batch = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap();
    assert_eq!(rows(&batch), expected(om, Format::OpenMetrics));
    assert_eq!(batch.len(), 2);

    let err = tick(json!({"endpoint": server.url("/metrics"), "strict": true}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(
        err.to_string(),
        format!(
            "parse body of {}: line 3, column 1 (byte 42): bucket le=\"+Inf\" of `lat` counts 3 but the bucket below it counts 5: buckets are cumulative",
            server.url("/metrics")
        )
    );
}

#[tokio::test]
async fn a_body_that_is_not_exposition_text_is_permanent_with_its_position() {
    let html = "<!DOCTYPE html>\n<html><body>502</body></html>\n";
    let garbage = "up 1\nok{a=\"1\"} 2\nok{a=\"2\" 3\nlater 4\n";
    let server = TestServer::start(move |n| {
        if n == 0 {
            Reply::ok(html).header("content-type", "text/html")
        } else {
            Reply::ok(garbage)
        }
    })
    .await;
    let err = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(
        err.to_string(),
        format!(
            "parse body of {}: line 1, column 1 (byte 0): expected a metric name, found `<!DOCTYPE html>`",
            server.url("/metrics")
        )
    );
    let err = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("line 3, column 10 (byte 26)"),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server =
        TestServer::start(|_| Reply::status(301).header("location", "http://elsewhere/metrics"))
            .await;
    let err = tick(json!({"endpoint": server.url("/metrics")}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string().ends_with(
            "redirected to http://elsewhere/metrics; point the connector at the final URL"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn target_labels_join_every_row_and_clashes_are_exported() {
    let body = "up{job=\"app\",zone=\"a\"} 1\nother 2\n";
    let server = TestServer::start(move |_| Reply::ok(body)).await;
    let endpoint = server.url("/metrics");
    let labels = json!({"job": "node", "instance": "h:9100"});
    let batch = tick(json!({"endpoint": endpoint, "labels": labels}))
        .await
        .unwrap();
    assert_eq!(
        rows(&batch),
        [
            (
                "up".to_owned(),
                Some(1.0),
                json!({"zone": "a", "exported_job": "app", "job": "node", "instance": "h:9100"})
            ),
            (
                "other".to_owned(),
                Some(2.0),
                json!({"job": "node", "instance": "h:9100"})
            ),
        ]
    );
    let batch = tick(json!({"endpoint": endpoint, "labels": labels, "honor_labels": true}))
        .await
        .unwrap();
    assert_eq!(
        rows(&batch)[0].2,
        json!({"zone": "a", "job": "app", "instance": "h:9100"})
    );
    // Without `labels`, rows are the exposition's own labels, exactly.
    let batch = tick(json!({"endpoint": endpoint})).await.unwrap();
    assert_eq!(rows(&batch), expected(body, Format::Prometheus));
}

/// Each per-sample label limit fails the whole scrape with the sample and the limit
/// named, with and without target labels (the two ways a row's labels are written),
/// and a value is measured decoded: `escaped`'s ten `\"` are 20 bytes raw, 10 decoded.
#[tokio::test]
async fn label_limits_fail_the_scrape_naming_the_sample_and_the_limit() {
    const PASSING: &str = "ok{a=\"1\",b=\"2\"} 1\n\
        escaped{abcdefghij=\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\"} 1\n";
    let cases = [
        (
            "wide{a=\"1\",b=\"2\",c=\"3\"} 1",
            "sample `wide`: 3 labels, more than label_limit (2)",
        ),
        (
            "long_name{abcdefghijk=\"1\"} 1",
            "sample `long_name`: a label name of 11 bytes, longer than label_name_length_limit (10)",
        ),
        (
            "long_value{a=\"12345678901\"} 1",
            "sample `long_value`: label `a` has a value of 11 bytes, longer than label_value_length_limit (10)",
        ),
        (
            "repeated{a=\"1\",a=\"3\"} 1",
            "sample `repeated`: label name \"a\" is not unique: invalid sample",
        ),
    ];
    let limits =
        json!({"label_limit": 2, "label_name_length_limit": 10, "label_value_length_limit": 10});
    for target_labels in [json!({}), json!({"job": "node"})] {
        let with = |server: &TestServer| {
            let mut config = limits.clone();
            config["endpoint"] = json!(server.url("/metrics"));
            config["labels"] = target_labels.clone();
            config
        };
        for (line, expected) in cases {
            let body = format!("{PASSING}{line}\n");
            let server = TestServer::start(move |_| Reply::ok(body.clone())).await;
            let err = tick(with(&server)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
            assert!(err.to_string().contains(expected), "{line}: {err}");
        }
        let server = TestServer::start(|_| Reply::ok(PASSING)).await;
        let batch = tick(with(&server)).await.unwrap();
        assert_eq!(batch.len(), 2);
    }
}
