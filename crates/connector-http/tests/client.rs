//! The toolkit against real HTTP(S) servers on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_core::{ErrorKind, MapSecrets, TickContext};
use connector_http::testing::{Reply, TestCert, TestServer};
use connector_http::{Auth, HttpClient, HttpError, TlsConfig};
use serde_json::json;

fn ctx() -> TickContext {
    TickContext::new("c", 0).with_secrets(Arc::new(MapSecrets::new().with("TOKEN", "t0ken")))
}

async fn get(
    server: &TestServer,
    ctx: &TickContext,
) -> Result<connector_http::Response, HttpError> {
    HttpClient::new()
        .get(&server.url("/x"))
        .timeout_ms(1_000)
        .send(ctx)
        .await
}

#[tokio::test]
async fn a_json_body_arrives_with_auth_and_counts_its_bytes() {
    let server = TestServer::start(|_| Reply::json(&json!({"a": 1})).gzip()).await;
    let ctx = ctx();
    let auth = Auth::Bearer {
        token_ref: "$env:TOKEN".parse().unwrap(),
    };
    let response = HttpClient::new()
        .get(&server.url("/x?y=1"))
        .auth(&auth)
        .header(http::header::ACCEPT, "application/json")
        .send(&ctx)
        .await
        .unwrap();
    assert_eq!(
        response.json::<serde_json::Value>().unwrap(),
        json!({"a": 1})
    );
    assert_eq!(response.content_type(), Some("application/json"));
    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/x?y=1");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert_eq!(seen.headers["accept"], "application/json");
    assert!(
        ctx.source_bytes() > 0 && ctx.source_bytes() < 64,
        "{}",
        ctx.source_bytes()
    );
    assert_eq!(ctx.retries(), 0);
}

#[tokio::test]
async fn statuses_map_to_kinds_and_retries_are_counted() {
    for (status, kind, attempts) in [
        (429, ErrorKind::Transient, 4),
        (503, ErrorKind::Transient, 4),
        (404, ErrorKind::Permanent, 1),
        (401, ErrorKind::Permanent, 1),
    ] {
        let server = TestServer::start(move |_| Reply::status(status)).await;
        let ctx = ctx();
        let err = get(&server, &ctx).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        assert_eq!(server.count(), attempts, "{status}");
        assert_eq!(ctx.retries(), attempts as u64 - 1, "{status}");
        if attempts > 1 {
            assert!(err.to_string().ends_with("(after 4 attempts)"), "{err}");
        }
    }
}

#[tokio::test]
async fn any_status_hands_back_every_answer_once() {
    for status in [200, 400, 422, 429, 503] {
        let server = TestServer::start(move |_| Reply::status(status)).await;
        let response = HttpClient::new()
            .get(&server.url("/x"))
            .any_status()
            .send(&ctx())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(server.count(), 1, "{status}: not retried");
    }
    let server = TestServer::start(|_| Reply::status(302)).await;
    let err = HttpClient::new()
        .get(&server.url("/x"))
        .any_status()
        .send(&ctx())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Permanent,
        "a redirect is still refused"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_capped() {
    let server = TestServer::start(|n| match n {
        0 => Reply::status(503).header("retry-after", "1"),
        _ => Reply::ok("fine"),
    })
    .await;
    let started = Instant::now();
    let response = get(&server, &ctx()).await.unwrap();
    assert_eq!(response.body(), b"fine");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );

    let server = TestServer::start(|_| Reply::status(429).header("retry-after", "3600")).await;
    let started = Instant::now();
    let err = get(&server, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(server.count(), 1, "no wait of an hour");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        err.to_string()
            .contains("the server asked to retry after 3600 s, longer than the 30 s"),
        "{err}"
    );
}

#[tokio::test]
async fn timeouts_bound_the_whole_exchange_and_are_transient() {
    let server = TestServer::start(|_| Reply::ok("late").delay(Duration::from_secs(5))).await;
    let started = Instant::now();
    let err = HttpClient::new()
        .get(&server.url("/"))
        .timeout_ms(200)
        .retries(1)
        .send(&ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        err.to_string()
            .contains("timed out after 200 ms (after 2 attempts)"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connection_errors_carry_their_cause_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = HttpClient::new()
        .get(&format!("http://127.0.0.1:{port}/"))
        .retries(0)
        .action("poll")
        .send(&ctx())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!("poll http://127.0.0.1:{port}/: cannot connect")),
        "{text}"
    );
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
}

#[tokio::test]
async fn bodies_are_capped_before_and_after_gzip() {
    let big = "x".repeat(10_000);
    let server = TestServer::start(move |n| match n {
        0 => Reply::ok(big.clone()),
        _ => Reply::ok(big.clone()).gzip(),
    })
    .await;
    for _ in 0..2 {
        let err = HttpClient::new()
            .get(&server.url("/"))
            .body_limit(1_000)
            .send(&ctx())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(
            err.to_string()
                .ends_with("body exceeds the limit of 1000 bytes"),
            "{err}"
        );
    }
    let corrupt =
        TestServer::start(|_| Reply::ok("not gzip").header("content-encoding", "gzip")).await;
    let err = get(&corrupt, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        format!("{err:#}").contains("the gzip body is corrupt: "),
        "{err:#}"
    );
}

#[tokio::test]
async fn redirects_are_permanent_and_not_followed() {
    let server =
        TestServer::start(|_| Reply::status(301).header("location", "http://elsewhere/")).await;
    let err = get(&server, &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string().contains("redirected to http://elsewhere/"),
        "{err}"
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn tls_with_a_ca_file_and_insecure_skip_verify() {
    let server = TestServer::start_tls(|_| Reply::ok("secure")).await;
    let ca = server.ca_file().unwrap().to_string_lossy().into_owned();
    let with_ca = TlsConfig {
        ca_file: Some(ca),
        ..TlsConfig::default()
    };
    let client = HttpClient::new();
    let response = client
        .get(&server.url("/"))
        .tls(Some(&with_ca))
        .send(&ctx())
        .await
        .unwrap();
    assert_eq!(response.body(), b"secure");

    // The web PKI does not know the test CA: Permanent, not retried as a network
    // blip would be.
    let unknown = ctx();
    let err = client
        .get(&server.url("/"))
        .send(&unknown)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(unknown.retries(), 0);
    assert!(
        err.to_string().ends_with(
            "the server's TLS certificate was refused: its issuer is unknown: name the CA that signed it (or the certificate itself) in tls.ca_file"
        ),
        "{err}"
    );

    let insecure = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    let response = client
        .get(&server.url("/"))
        .tls(Some(&insecure))
        .send(&ctx())
        .await
        .unwrap();
    assert_eq!(response.body(), b"secure");
}

#[tokio::test]
async fn a_self_signed_certificate_named_as_the_ca_file_is_pinned() {
    let server = TestServer::start_tls_with(|_| Reply::ok("pinned"), TestCert::SelfSigned).await;
    let pinned = TlsConfig {
        ca_file: Some(server.ca_file().unwrap().to_string_lossy().into_owned()),
        ..TlsConfig::default()
    };
    let response = HttpClient::new()
        .get(&server.url("/"))
        .tls(Some(&pinned))
        .send(&ctx())
        .await
        .unwrap();
    assert_eq!(response.body(), b"pinned");
}

#[tokio::test]
async fn certificate_failures_are_permanent_and_say_what_is_wrong() {
    for (cert, problem) in [
        (TestCert::Expired, "it has expired"),
        (
            TestCert::OtherName,
            "it is valid for example.invalid, not for 127.0.0.1",
        ),
    ] {
        let server = TestServer::start_tls_with(|_| Reply::ok("x"), cert).await;
        let trusted = TlsConfig {
            ca_file: Some(server.ca_file().unwrap().to_string_lossy().into_owned()),
            ..TlsConfig::default()
        };
        let ctx = ctx();
        let started = Instant::now();
        let err = HttpClient::new()
            .get(&server.url("/"))
            .tls(Some(&trusted))
            .send(&ctx)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{cert:?}: {err:#}");
        assert!(
            err.to_string().contains(&format!(
                "the server's TLS certificate was refused: {problem}"
            )),
            "{cert:?}: {err}"
        );
        assert_eq!((ctx.retries(), server.count()), (0, 0), "{cert:?}");
        assert!(started.elapsed() < Duration::from_millis(500), "no backoff");
    }
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let server = TestServer::start_mtls(|_| Reply::ok("mutual")).await;
    let path = |p: Option<std::path::PathBuf>| Some(p.unwrap().to_string_lossy().into_owned());
    let ca_only = TlsConfig {
        ca_file: path(server.ca_file()),
        ..TlsConfig::default()
    };
    let client = HttpClient::new();
    let err = client
        .get(&server.url("/"))
        .tls(Some(&ca_only))
        .retries(0)
        .send(&ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err:#}");
    let with_cert = TlsConfig {
        cert_file: path(server.client_cert_file()),
        key_file: path(server.client_key_file()),
        ..ca_only
    };
    let response = client
        .get(&server.url("/"))
        .tls(Some(&with_cert))
        .send(&ctx())
        .await
        .unwrap();
    assert_eq!(response.body(), b"mutual");
}

#[tokio::test]
async fn tls_files_that_cannot_work_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let fifo = dir.path().join("fifo.pem");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let unreadable = |p: &std::path::Path| {
        format!(
            "tls.ca_file: cannot read `{}` as a regular file",
            p.display()
        )
    };
    let cases = [
        (
            dir.path().join("missing.pem"),
            unreadable(&dir.path().join("missing.pem")),
        ),
        (dir.path().to_path_buf(), unreadable(dir.path())),
        (fifo.clone(), unreadable(&fifo)),
        (
            "/dev/zero".into(),
            unreadable(std::path::Path::new("/dev/zero")),
        ),
        (
            big.clone(),
            format!(
                "tls.ca_file: `{}` is larger than 1048576 bytes",
                big.display()
            ),
        ),
        (
            not_pem.clone(),
            format!("tls.ca_file: `{}` holds no certificate", not_pem.display()),
        ),
    ];
    for (path, expected) in cases {
        let tls = TlsConfig {
            ca_file: Some(path.to_string_lossy().into_owned()),
            ..TlsConfig::default()
        };
        let started = Instant::now();
        let err = HttpClient::with_tls(&tls).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path:?} blocked"
        );
        assert_eq!(err.kind(), ErrorKind::Config);
        // One message for missing and unreadable alike, with no cause behind it.
        assert_eq!(format!("{err:#}"), expected);
    }
    let half = TlsConfig {
        cert_file: Some("c.pem".into()),
        ..TlsConfig::default()
    };
    assert_eq!(
        half.validate("tls").unwrap_err().to_string(),
        "tls.cert_file: needs tls.key_file too"
    );
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_and_sends_nothing() {
    let server = TestServer::start(|_| Reply::ok("")).await;
    let auth = Auth::Basic {
        username: "u".into(),
        password_ref: "$env:NOPE".parse().unwrap(),
    };
    let err = HttpClient::new()
        .get(&server.url("/"))
        .auth(&auth)
        .send(&ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "token resolve: environment variable `NOPE` is not set"
    );
    assert_eq!(server.count(), 0);
}
