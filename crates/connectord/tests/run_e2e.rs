//! `connectord run` end to end: real processes, real SQLite files, real HTTP servers.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::collections::HashSet;
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use support::{
    Daemon, Declared, assert_exactly_once, connector, ledger, ticks, wait_for, write_config,
};

const BODY: &str = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
http_requests_total{method=\"get\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"500\"} 3\n\
temperature{room=\"a \\\"b\\\"\\nc\"} NaN\nratio +Inf\nup 1\n";

const GARBAGE: &str = "up 1\nok{a=\"1\"} 2\nbroken{a=\"2\" 3\nlater 4\n";

fn endpoint(server: &TestServer) -> String {
    format!("endpoint = \"{}\"", server.url("/metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_equal_the_parse_of_the_body_at_the_bucket_time() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "app",
            table: "app",
            schedule_ms: 200,
            config: endpoint(&server),
        }],
    );
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "app")
    })
    .await;
    wait_for("3 committed buckets", Duration::from_secs(20), || {
        (ledger(dir.path(), &id).len() >= 3).then_some(())
    })
    .await;
    let health = daemon.get("/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("runner stopped"), "{log}");

    let buckets = assert_exactly_once(dir.path(), &id, "app", BODY);
    assert!(buckets >= 3);
    // Buckets sit on the clock grid (multiples of schedule_ms from the epoch): the
    // timestamp is scheduled_for, not wall time, and the phase does not shift it.
    let ledger = ledger(dir.path(), &id);
    for (bucket, _) in &ledger {
        assert_eq!(bucket % 200, 0, "{ledger:?}");
    }
    let ok_ticks: Vec<_> = ticks(dir.path(), &id)
        .into_iter()
        .filter(|t| t.0 == "ok")
        .collect();
    assert_eq!(ok_ticks.len(), ledger.len());
    for t in &ok_ticks {
        assert!(
            ledger.iter().any(|(b, _)| *b == t.1),
            "tick {t:?} has no ledger row"
        );
        assert_eq!(t.2, 5);
    }
    // Each tick was logged inside its span, carrying the connector and scheduled_for.
    assert!(
        log.contains(&format!(
            "tick{{connector_id={id} connector=app scheduled_for={}",
            ledger[0].0
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_commits_nothing_and_the_next_good_tick_lands() {
    // "flaky" serves garbage on its 2nd and 3rd scrapes; "broken" always does.
    let flaky =
        TestServer::start(|n| Reply::ok(if n == 1 || n == 2 { GARBAGE } else { BODY })).await;
    let broken = TestServer::start(|_| Reply::ok(GARBAGE)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[
            Declared {
                name: "flaky",
                table: "flaky",
                schedule_ms: 200,
                config: endpoint(&flaky),
            },
            Declared {
                name: "broken",
                table: "broken",
                schedule_ms: 200,
                config: endpoint(&broken),
            },
        ],
    );
    let daemon = Daemon::start(&config, &[]);
    let (flaky_id, ..) = wait_for("flaky", Duration::from_secs(10), || {
        connector(dir.path(), "flaky")
    })
    .await;
    let (broken_id, ..) = wait_for("broken", Duration::from_secs(10), || {
        connector(dir.path(), "broken")
    })
    .await;
    wait_for(
        "a good tick after the bad ones",
        Duration::from_secs(20),
        || {
            let t = ticks(dir.path(), &flaky_id);
            let first_bad = t.iter().position(|t| t.0 == "permanent")?;
            t[first_bad..].iter().any(|t| t.0 == "ok").then_some(())
        },
    )
    .await;
    wait_for("broken's third failure", Duration::from_secs(20), || {
        (ticks(dir.path(), &broken_id).len() >= 3).then_some(())
    })
    .await;
    let (_, state, _, last_error) = connector(dir.path(), "broken").unwrap();
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");

    // Permanent errors keep the connector ticking, with the position in last_error.
    assert_eq!(state, "enabled");
    let last_error = last_error.unwrap();
    assert!(
        last_error.ends_with(
            "line 3, column 14 (byte 30): expected `,` or `}` after the label value, found `3`"
        ),
        "{last_error}"
    );
    assert!(ledger(dir.path(), &broken_id).is_empty());
    assert_eq!(
        support::query_i64(dir.path(), "metrics.sqlite", "SELECT count(*) FROM broken"),
        0
    );

    let flaky_ticks = ticks(dir.path(), &flaky_id);
    let bad: Vec<_> = flaky_ticks.iter().filter(|t| t.0 == "permanent").collect();
    assert_eq!(bad.len(), 2, "{flaky_ticks:?}");
    let committed: HashSet<i64> = ledger(dir.path(), &flaky_id).iter().map(|l| l.0).collect();
    for t in &bad {
        assert_eq!(t.2, 0);
        assert!(t.3.as_deref().unwrap().contains("(byte 30)"));
        assert!(
            !committed.contains(&t.1),
            "a failed bucket has a ledger row"
        );
    }
    assert!(committed.len() >= 2);
    assert_exactly_once(dir.path(), &flaky_id, "flaky", BODY);
    // The good tick after the garbage cleared last_error.
    assert_eq!(connector(dir.path(), "flaky").unwrap().3, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_disables_the_connector() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "secretive",
            table: "secretive",
            schedule_ms: 200,
            config: format!(
                "{}\nauth = {{ type = \"bearer\", token_ref = \"$env:CONNECTORD_E2E_MISSING\" }}",
                endpoint(&server)
            ),
        }],
    );
    let daemon = Daemon::start(&config, &[]);
    let (_, _, reason, _) = wait_for(
        "the connector to be disabled",
        Duration::from_secs(20),
        || connector(dir.path(), "secretive").filter(|c| c.1 == "disabled"),
    )
    .await;
    assert_eq!(
        reason.as_deref(),
        Some("token resolve: environment variable `CONNECTORD_E2E_MISSING` is not set")
    );
    // Disabled means no more ticks.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (id, ..) = connector(dir.path(), "secretive").unwrap();
    assert_eq!(ticks(dir.path(), &id).len(), 1);
    assert_eq!(server.count(), 0);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_never_appears_in_logs_errors_metrics_or_storage() {
    const SECRET: &str = "zz-very-secret-token-4711";
    // Two refusals (a Permanent error each), then success.
    let server = TestServer::start(|n| {
        if n < 2 {
            Reply::status(401)
        } else {
            Reply::ok(BODY)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "authed",
            table: "authed",
            schedule_ms: 200,
            config: format!(
                "{}\nauth = {{ type = \"bearer\", token_ref = \"$env:E2E_SCRAPE_TOKEN\" }}",
                endpoint(&server)
            ),
        }],
    );
    let daemon = Daemon::start(
        &config,
        &[("E2E_SCRAPE_TOKEN", SECRET), ("RUST_LOG", "trace")],
    );
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "authed")
    })
    .await;
    wait_for("a committed bucket", Duration::from_secs(20), || {
        (!ledger(dir.path(), &id).is_empty()).then_some(())
    })
    .await;
    let metrics = daemon.get("/metrics");
    let (status, log) = daemon.stop();
    assert!(status.success());

    assert_eq!(
        server.requests()[0].headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );
    let errors: Vec<_> = ticks(dir.path(), &id)
        .into_iter()
        .filter_map(|t| t.3)
        .collect();
    assert!(
        errors.iter().any(|e| e.ends_with("HTTP 401 Unauthorized")),
        "{errors:?}"
    );
    assert!(metrics.contains("connectord_ticks_total"), "{metrics}");
    assert!(log.len() > 1000, "trace logging should be verbose");
    for (what, text) in [
        ("log", &log),
        ("metrics", &metrics),
        ("errors", &errors.join("\n")),
    ] {
        assert!(!text.contains(SECRET), "the secret leaked into the {what}");
    }
    for file in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret leaked into {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_connector_labels_for_every_series() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "observed",
            table: "observed",
            schedule_ms: 200,
            config: endpoint(&server),
        }],
    );
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "observed")
    })
    .await;
    wait_for("2 committed buckets", Duration::from_secs(20), || {
        (ledger(dir.path(), &id).len() >= 2).then_some(())
    })
    .await;
    let metrics = daemon.get("/metrics");
    daemon.stop();
    let labels =
        format!("connector_id=\"{id}\",connector_type_id=\"prometheus\",org_id=\"default\"");
    for series in [
        "connectord_ticks_total{",
        "connectord_tick_duration_seconds_bucket{",
        "connectord_rows_emitted_total{",
        "connectord_source_bytes_total{",
        "connectord_sink_bytes_total{",
        "connectord_last_success_timestamp_seconds{",
        "connectord_lease_claims_total{",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"));
        assert!(line.contains(&labels), "{line}");
    }
    assert!(metrics.contains("outcome=\"ok\""));
    assert!(metrics.contains("result=\"won\""));
    let rows = metrics
        .lines()
        .find(|l| l.starts_with("connectord_rows_emitted_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap();
    assert!(rows >= 10.0, "{rows}");
    assert!(metrics.contains("# HELP connectord_ticks_total"));
}

/// Two processes on one data folder split the connectors instead of both claiming
/// every bucket; when one stops, the other takes its connector over at its next
/// refresh; every bucket lands once throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_data_folder_commit_every_bucket_once() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "shared",
            table: "shared",
            schedule_ms: 200,
            config: endpoint(&server),
        }],
    );
    let a = Daemon::start(&config, &[]);
    let b = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "shared")
    })
    .await;
    wait_for("20 committed buckets", Duration::from_secs(40), || {
        (ledger(dir.path(), &id).len() >= 20).then_some(())
    })
    .await;
    let claims = |m: &str, result: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("connectord_lease_claims_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (metrics_a, metrics_b) = (a.get("/metrics"), b.get("/metrics"));
    let won = claims(&metrics_a, "won") + claims(&metrics_b, "won");
    let lost = claims(&metrics_a, "lost") + claims(&metrics_b, "lost");
    // Both claim only until each has seen the other (one refresh, a second: five
    // buckets of 200 ms at most).
    assert!(lost <= 6.0, "{lost} claims lost against {won} won");
    // The owner stops; the other one carries on.
    let a_owns = claims(&metrics_a, "won") >= claims(&metrics_b, "won");
    let (stopped, survivor) = if a_owns { (a, b) } else { (b, a) };
    let (status, _) = stopped.stop();
    assert!(status.success());
    let before = ledger(dir.path(), &id).len();
    wait_for(
        "10 more buckets from the other runner",
        Duration::from_secs(20),
        || (ledger(dir.path(), &id).len() >= before + 10).then_some(()),
    )
    .await;
    let (status, _) = survivor.stop();
    assert!(status.success());

    let buckets = assert_exactly_once(dir.path(), &id, "shared", BODY);
    assert!(buckets >= 30);
    // Every bucket one runner committed, the other did not: ok ticks = ledger rows.
    let ok = ticks(dir.path(), &id)
        .iter()
        .filter(|t| t.0 == "ok")
        .count();
    assert_eq!(ok, ledger(dir.path(), &id).len());
    assert!(server.count() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_tick_then_restart_leaves_no_bucket_twice_or_partial() {
    let body = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/exposition/upstream-node_exporter.e2e-output.prom.txt"),
    )
    .unwrap();
    let served = body.clone();
    // A slow source keeps a tick in flight most of the time, so kills land mid-tick.
    let server =
        TestServer::start(move |_| Reply::ok(served.clone()).delay(Duration::from_millis(80)))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "victim",
            table: "victim",
            schedule_ms: 150,
            config: endpoint(&server),
        }],
    );
    for (round, alive_ms) in [430u64, 610, 290, 770, 520, 350].into_iter().enumerate() {
        let daemon = Daemon::start(&config, &[]);
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        // Kill while a fetch is in flight (the source answers 80 ms after a request
        // arrives), so every round cuts a tick short rather than by luck.
        let seen = server.count();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.count() == seen {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no fetch began within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        daemon.kill9();
    }
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = connector(dir.path(), "victim").unwrap();
    let before = ledger(dir.path(), &id).len();
    wait_for(
        "3 more buckets after the restart",
        Duration::from_secs(20),
        || (ledger(dir.path(), &id).len() >= before + 3).then_some(()),
    )
    .await;
    let (status, _) = daemon.stop();
    assert!(status.success());
    let buckets = assert_exactly_once(dir.path(), &id, "victim", &body);
    assert!(buckets >= 3);
    assert!(
        server.count() > buckets,
        "some ticks were cut short by the kills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_tick_span() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "json",
            table: "json",
            schedule_ms: 200,
            config: endpoint(&server),
        }],
    );
    let daemon = Daemon::start_with(&config, &[], &["--log-format", "json"]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "json")
    })
    .await;
    wait_for("a committed bucket", Duration::from_secs(20), || {
        (!ledger(dir.path(), &id).is_empty()).then_some(())
    })
    .await;
    let (status, log) = daemon.stop();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let committed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "tick committed")
        .unwrap_or_else(|| panic!("no tick line in {log}"));
    assert_eq!(committed["span"]["name"], "tick");
    assert_eq!(committed["span"]["connector_id"], id.as_str());
    assert_eq!(committed["span"]["connector"], "json");
    assert!(committed["span"]["scheduled_for"].is_u64(), "{committed}");
    assert_eq!(committed["fields"]["rows"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_in_the_file_are_updated_by_name_at_start() {
    let first = TestServer::start(|_| Reply::ok(BODY)).await;
    let second = TestServer::start(|_| Reply::ok("up 1\n")).await;
    let dir = tempfile::tempdir().unwrap();
    let declare = |server: &TestServer| Declared {
        name: "moving",
        table: "moving",
        schedule_ms: 200,
        config: endpoint(server),
    };
    let config = write_config(dir.path(), &[declare(&first)]);
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "moving")
    })
    .await;
    wait_for("a committed bucket", Duration::from_secs(20), || {
        (!ledger(dir.path(), &id).is_empty()).then_some(())
    })
    .await;
    daemon.stop();

    write_config(dir.path(), &[declare(&second)]);
    let daemon = Daemon::start(&config, &[]);
    wait_for(
        "a scrape of the new endpoint",
        Duration::from_secs(20),
        || (second.count() > 0).then_some(()),
    )
    .await;
    daemon.stop();
    let (same_id, state, ..) = connector(dir.path(), "moving").unwrap();
    assert_eq!((same_id, state.as_str()), (id, "enabled"));
}

#[test]
fn validate_names_the_connector_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        &[Declared {
            name: "node",
            table: "node",
            schedule_ms: 15000,
            config: "endpoint = \"http://127.0.0.1:9100/metrics\"".into(),
        }],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 1 connectors (node)\n"
    );

    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("endpoint =", "endpoit =");
    std::fs::write(&good, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "connectors[0] `node`: config: unknown field `endpoit`, expected one of `endpoint`"
        ),
        "{stderr}"
    );
    // `run` refuses the same file before starting anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["run", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("data").exists());
}
