//! connectord against the hostile configs, clients and targets of the hardening issue,
//! each case run against a live daemon over real sockets.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use connector_http::testing::{Reply, TestCert, TestServer};
use serde_json::{Value, json};
use support::{Daemon, Declared, call, create, request, wait_for, write_config_with};

const BODY: &str = "# TYPE up gauge\nup{job=\"a\"} 1\nup{job=\"b\"} 0\n";

fn spec(name: &str, config: Value) -> Value {
    json!({
        "name": name, "type": "prometheus", "target_database": "metrics", "target_table": name,
        "schedule_ms": 3_600_000, "config": config
    })
}

fn get_connector(d: &Daemon, id: &str) -> Value {
    let r = call(d, "GET", &format!("/v1/connectors/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn id_of(d: &Daemon, name: &str) -> String {
    let list = call(d, "GET", "/v1/connectors", None).json();
    list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn trigger(d: &Daemon, id: &str) {
    let r = call(d, "POST", &format!("/v1/connectors/{id}/trigger"), None);
    assert_eq!(r.status, 202, "{}", r.body);
}

/// Waits until the connector's newest tick is newer than `after` ticks in its history.
async fn wait_for_ticks(d: &Daemon, id: &str, count: usize, timeout: Duration) -> Vec<Value> {
    wait_for("ticks", timeout, || {
        let r = call(
            d,
            "GET",
            &format!("/v1/connectors/{id}/ticks?limit=100"),
            None,
        );
        let ticks = r.json()["ticks"].as_array().cloned().unwrap_or_default();
        (ticks.len() >= count).then_some(ticks)
    })
    .await
}

/// Kilobytes of resident memory of a process (`VmRSS`, or `VmHWM` for the peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn healthz_within(d: &Daemon, limit: Duration) {
    let started = Instant::now();
    let r = request(d.addr, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "healthz: {}", r.body);
    assert!(
        started.elapsed() < limit,
        "healthz took {:?}",
        started.elapsed()
    );
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Point 1: a FIFO or `/dev/zero` as a CA file neither freezes nor bloats the daemon,
/// and connectors created over the API may only name files under the allowed roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_keys_cannot_freeze_or_bloat_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let fifo = certs.join("ca.fifo");
    mkfifo(&fifo);
    let zero = Declared {
        name: "zero",
        table: "zero",
        schedule_ms: 3_600_000,
        config: "endpoint = \"https://127.0.0.1:9/metrics\"\n[connectors.config.tls]\nca_file = \"/dev/zero\"".to_owned(),
    };
    let config = write_config_with(
        dir.path(),
        &format!("api_file_roots = [\"{}\"]", certs.display()),
        &[zero],
    );
    let d = Daemon::start(&config, &[]);
    let pid = d.child.id();

    let mut ids = vec![id_of(&d, "zero")];
    for i in 0..4 {
        ids.push(create(
            &d,
            spec(
                &format!("fifo{i}"),
                json!({"endpoint": "https://127.0.0.1:9/metrics", "tls": {"ca_file": fifo}}),
            ),
        ));
    }
    for id in &ids {
        trigger(&d, id);
    }
    for _ in 0..10 {
        healthz_within(&d, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, path) in ids.iter().zip(
        std::iter::once("/dev/zero".to_owned())
            .chain(std::iter::repeat(fifo.display().to_string())),
    ) {
        let c = wait_for("the file to be refused", Duration::from_secs(20), || {
            let c = get_connector(&d, id);
            (c["state"] == "disabled").then_some(c)
        })
        .await;
        assert_eq!(
            c["disabled_reason"],
            format!("tls.ca_file: cannot read `{path}` as a regular file"),
            "{c}"
        );
    }
    let peak_mib = memory_kib(pid, "VmHWM") / 1024;
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");

    for (ca_file, why) in [
        ("/etc/passwd", "under one of the allowed directories"),
        (
            &format!("{}/../../etc/passwd", certs.display())[..],
            "without `..`",
        ),
        ("relative.pem", "must be absolute"),
    ] {
        let r = call(
            &d,
            "POST",
            "/v1/connectors",
            Some(spec(
                "outside",
                json!({"endpoint": "https://127.0.0.1:9/", "tls": {"ca_file": ca_file}}),
            )),
        );
        assert_eq!(r.status, 400, "{}", r.body);
        let (code, message) = r.error();
        assert_eq!(code, "invalid_request");
        assert!(
            message.starts_with("config.tls.ca_file: ") && message.contains(why),
            "{message}"
        );
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");

    // With no roots listed, no file key is accepted over the API.
    let other = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config_with(other.path(), "", &[]), &[]);
    let r = call(
        &d,
        "POST",
        "/v1/connectors",
        Some(spec(
            "certs",
            json!({"endpoint": "https://127.0.0.1:9/", "tls": {"cert_file": "/etc/ssl/a.pem", "key_file": "/etc/ssl/a.key"}}),
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.error().1,
        "config.tls.cert_file: connectors created over the API may not name files on this server; \
         the operator can allow directories with [server] api_file_roots"
    );
}

/// Reads what the server sends until it closes; `None` if it stays open past `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Some(String::from_utf8_lossy(&raw).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&raw).into_owned())
        }
        Err(_) => None,
    }
}

fn assert_json_error(response: &str, status: u16, code: &str) {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {response:.300}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], code, "{body}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
}

/// Point 2: silent and dripping clients are cut off with a JSON 408, idle keep-alive
/// connections close, oversized heads get JSON 414/431, and memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_protects_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(
        dir.path(),
        "header_read_timeout_ms = 1000\nidle_timeout_ms = 2000\nmax_connections = 100",
        &[],
    );
    let d = Daemon::start(&config, &[]);
    let pid = d.child.id();
    healthz_within(&d, Duration::from_secs(1));
    let rss_before = memory_kib(pid, "VmRSS");

    // 300 silent connections: three waves of 100 (max_connections), each cut after 1 s.
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    let drip = std::thread::spawn({
        let addr = d.addr;
        move || {
            // Let the silent wave take the slots first; then drip one header line each 300 ms.
            std::thread::sleep(Duration::from_millis(200));
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n");
            let opened = Instant::now();
            for i in 0..100 {
                std::thread::sleep(Duration::from_millis(300));
                if s.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                    .is_err()
                {
                    break;
                }
                if opened.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            read_until_closed(&mut s, Duration::from_secs(5))
        }
    });
    for stream in &mut silent {
        let response = read_until_closed(stream, Duration::from_secs(20))
            .expect("a silent connection stayed open");
        assert_json_error(&response, 408, "request_timeout");
    }
    let all_closed = started.elapsed();
    assert!(all_closed < Duration::from_secs(15), "took {all_closed:?}");
    let dripped = drip
        .join()
        .unwrap()
        .expect("the dripping connection stayed open");
    assert!(
        dripped.is_empty() || dripped.starts_with("HTTP/1.1 408 "),
        "{dripped:.200}"
    );
    healthz_within(&d, Duration::from_secs(2));

    // An idle keep-alive connection closes after idle_timeout_ms.
    let mut kept = TcpStream::connect(d.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answered = Instant::now();
    let rest =
        read_until_closed(&mut kept, Duration::from_secs(10)).expect("idle connection kept open");
    let idle_for = answered.elapsed();
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(6)).contains(&idle_for),
        "closed after {idle_for:?}"
    );

    // Oversized and malformed heads: the API's JSON errors, never an empty body.
    let raw = |head: String| {
        let mut s = TcpStream::connect(d.addr).unwrap();
        let _ = s.write_all(head.as_bytes());
        read_until_closed(&mut s, Duration::from_secs(5)).unwrap()
    };
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    assert_json_error(&raw(long_uri), 414, "uri_too_long");
    let big_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000));
    assert_json_error(&raw(big_header), 431, "header_too_large");
    let many: String = (0..150).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_json_error(
        &raw(format!("GET / HTTP/1.1\r\n{many}\r\n")),
        431,
        "header_too_large",
    );
    assert_json_error(
        &raw("NOT HTTP AT ALL\r\n\r\n".to_owned()),
        400,
        "invalid_request",
    );

    drop(silent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = memory_kib(pid, "VmRSS");
    assert!(
        rss_after <= rss_before * 2,
        "RSS {rss_before} KiB before, {rss_after} KiB after the connections went"
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

fn metric_lines(d: &Daemon, id: &str) -> usize {
    let r = request(d.addr, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    r.body.lines().filter(|l| l.contains(id)).count()
}

/// Point 3: a deleted connector's series leave `/metrics` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_connector_leaves_metrics() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config_with(dir.path(), "", &[]), &[]);
    let id = create(
        &d,
        spec("gone", json!({"endpoint": server.url("/metrics")})),
    );
    let kept = create(
        &d,
        spec("kept", json!({"endpoint": server.url("/metrics")})),
    );
    trigger(&d, &id);
    wait_for_ticks(&d, &id, 1, Duration::from_secs(20)).await;
    wait_for(
        "series of the ticked connector",
        Duration::from_secs(5),
        || (metric_lines(&d, &id) > 10).then_some(()),
    )
    .await;
    assert!(metric_lines(&d, &kept) > 0);

    let r = call(&d, "DELETE", &format!("/v1/connectors/{id}"), None);
    assert_eq!(r.status, 204);
    assert_eq!(metric_lines(&d, &id), 0, "series left behind");
    // Still gone after the runner's next refresh.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric_lines(&d, &id), 0);
    assert!(metric_lines(&d, &kept) > 0);
}

/// Point 4: a token a target reflects never reaches last_error, the history or the
/// logs; a literal value in a `*_ref` key is refused without being echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_travel_back_out() {
    // No five characters in a row could come from a number or a UUID in the log by chance.
    const TOKEN: &str = "tok-qz9xw8vy7ut6sr5pq4on";
    // The target answers with the bearer token it was sent, in a body that fails to parse.
    let server = TestServer::start(|_| Reply::ok(format!("Bearer {TOKEN} reflected{{\n"))).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &write_config_with(dir.path(), "", &[]),
        &[("HOSTILE_TOKEN", TOKEN)],
    );
    let id = create(
        &d,
        spec(
            "reflect",
            json!({"endpoint": server.url("/metrics"), "auth": {"type": "bearer", "token_ref": "$env:HOSTILE_TOKEN"}}),
        ),
    );
    trigger(&d, &id);
    let ticks = wait_for_ticks(&d, &id, 1, Duration::from_secs(20)).await;
    let c = get_connector(&d, &id);
    let error = c["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("[redacted]"), "{error}");
    let pieces: Vec<&str> = (0..TOKEN.len() - 4).map(|i| &TOKEN[i..i + 5]).collect();
    let tick_text = serde_json::to_string(&ticks).unwrap();
    let metrics = request(d.addr, "GET", "/metrics", &[], None).body;
    let (status, log) = d.stop();
    assert!(status.success());
    for (what, text) in [
        ("last_error", &error),
        ("ticks", &tick_text),
        ("log", &log),
        ("metrics", &metrics),
    ] {
        for piece in &pieces {
            assert!(
                !text.contains(piece),
                "{what} holds `{piece}`: {text:.2000}"
            );
        }
    }

    // A token pasted where a `$env:` reference belongs: refused, named, not echoed.
    let d = Daemon::start(&write_config_with(dir.path(), "", &[]), &[]);
    let r = call(
        &d,
        "POST",
        "/v1/connectors",
        Some(spec(
            "pasted",
            json!({"endpoint": "http://127.0.0.1:9/", "auth": {"type": "bearer", "token_ref": TOKEN}}),
        )),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error().1,
        "config: auth: token_ref: invalid secret reference (24 characters, not shown): expected `$env:NAME`, for example `$env:SCRAPE_TOKEN`"
    );
    assert!(!r.body.contains(&TOKEN[..8]), "{}", r.body);
    drop(d);
    let toml = dir.path().join("pasted.toml");
    std::fs::write(
        &toml,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[server.tokens]]\nname = \"ops\"\ntoken_ref = \"{TOKEN}\"\nscopes = [\"connectors:read\"]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["validate", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("token_ref"), "{stderr}");
    assert!(!stderr.contains(&TOKEN[..8]), "{stderr}");
}

/// Point 5 and 6: label limits, repeated label names, numeric bounds, and a
/// self-signed certificate named as the CA file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_meet_limits() {
    let labels: String = (0..100_000)
        .map(|i| format!("l{i}=\"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let wide = TestServer::start(move |_| Reply::ok(format!("m{{{labels}}} 1\n"))).await;
    let repeated = TestServer::start(|_| Reply::ok("m{a=\"1\",a=\"2\"} 1\n")).await;
    let self_signed = TestServer::start_tls_with(|_| Reply::ok(BODY), TestCert::SelfSigned).await;
    let dir = tempfile::tempdir().unwrap();
    let pinned = Declared {
        name: "pinned",
        table: "pinned",
        schedule_ms: 3_600_000,
        config: format!(
            "endpoint = \"{}\"\n[connectors.config.tls]\nca_file = \"{}\"",
            self_signed.url("/metrics"),
            self_signed.ca_file().unwrap().display()
        ),
    };
    let d = Daemon::start(&write_config_with(dir.path(), "", &[pinned]), &[]);

    let cases = [
        (
            create(&d, spec("wide", json!({"endpoint": wide.url("/metrics")}))),
            "sample `m`: 100000 labels, more than label_limit (256)".to_owned(),
        ),
        (
            create(
                &d,
                spec("rep", json!({"endpoint": repeated.url("/metrics")})),
            ),
            "sample `m`: label name \"a\" is not unique: invalid sample".to_owned(),
        ),
        (
            create(
                &d,
                spec(
                    "rep_strict",
                    json!({"endpoint": repeated.url("/metrics"), "strict": true}),
                ),
            ),
            "label `a` appears twice: label names must be unique".to_owned(),
        ),
    ];
    for (id, _) in &cases {
        trigger(&d, id);
    }
    for (id, expected) in &cases {
        let ticks = wait_for_ticks(&d, id, 1, Duration::from_secs(20)).await;
        assert_eq!(ticks[0]["outcome"], "permanent", "{ticks:?}");
        let error = ticks[0]["error"].as_str().unwrap();
        assert!(error.contains(expected.as_str()), "{error}");
    }
    let pinned = id_of(&d, "pinned");
    trigger(&d, &pinned);
    let ticks = wait_for_ticks(&d, &pinned, 1, Duration::from_secs(20)).await;
    assert_eq!(ticks[0]["outcome"], "ok", "{ticks:?}");
    assert_eq!(ticks[0]["rows"], 2);

    let r = call(
        &d,
        "POST",
        "/v1/connectors",
        Some(spec(
            "huge",
            json!({"endpoint": "http://127.0.0.1:9/", "body_size_limit_bytes": u64::MAX}),
        )),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error().1,
        "config: body_size_limit_bytes: 18446744073709551615 is out of range, expected 1 to 1073741824"
    );
}

/// SIGTERM sent the moment connectord says it is listening stops it cleanly. The
/// handler was once installed by a task that had not run yet, and such a signal
/// killed the process: a kill -9 test's final stop failed with "signal: 15" under the
/// full suite's load. On an idle machine this passed before the fix too; it guards
/// the behaviour, it does not force the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_listening_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), "", &[]);
    for _ in 0..10 {
        let (status, log) = Daemon::start(&config, &[]).stop();
        assert!(status.success(), "{status}\n{log}");
        assert!(log.contains("stop requested"), "{log}");
    }
}

/// Point 7: SIGTERM cancels a tick that outlives the grace, stops retries at once,
/// and a second signal exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt() {
    let slow = TestServer::start(|_| Reply::ok(BODY).delay(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), "\n[runner]\nshutdown_grace_ms = 1000\n", &[]);
    let d = Daemon::start(&config, &[]);
    let id = create(
        &d,
        spec(
            "slow",
            json!({"endpoint": slow.url("/metrics"), "timeout_ms": 60000}),
        ),
    );
    trigger(&d, &id);
    wait_for("the slow request", Duration::from_secs(10), || {
        (slow.count() > 0).then_some(())
    })
    .await;
    let asked = Instant::now();
    let (status, log) = d.stop();
    let took = asked.elapsed();
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let history = support::ticks(dir.path(), &id);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].0, "cancelled");
    assert!(history[0].3.as_deref().unwrap().contains("shutdown grace"));
    assert_eq!(
        support::ledger(dir.path(), &id),
        vec![],
        "nothing committed"
    );

    // A target that asks for a long Retry-After: the retry is dropped at the signal.
    let busy = TestServer::start(|_| Reply::status(503).header("Retry-After", "25")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), "\n[runner]\nshutdown_grace_ms = 20000\n", &[]);
    let d = Daemon::start(&config, &[]);
    let id = create(&d, spec("busy", json!({"endpoint": busy.url("/metrics")})));
    trigger(&d, &id);
    wait_for("the first attempt", Duration::from_secs(10), || {
        (busy.count() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(busy.count(), 1, "retried after the signal");
    let history = support::ticks(dir.path(), &id);
    assert_eq!(history[0].0, "transient");
    assert!(
        history[0]
            .3
            .as_deref()
            .unwrap()
            .contains("not retried: connectord is stopping")
    );

    // A second signal does not wait for the grace.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), "\n[runner]\nshutdown_grace_ms = 600000\n", &[]);
    let mut d = Daemon::start(&config, &[]);
    let id = create(
        &d,
        spec(
            "slow2",
            json!({"endpoint": slow.url("/metrics"), "timeout_ms": 60000}),
        ),
    );
    let seen = slow.count();
    trigger(&d, &id);
    wait_for("the slow request", Duration::from_secs(10), || {
        (slow.count() > seen).then_some(())
    })
    .await;
    let pid = d.child.id().to_string();
    let kill = |signal: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited before the second signal"
    );
    let asked = Instant::now();
    kill("-INT");
    let status = wait_for("the exit", Duration::from_secs(5), || {
        d.child.try_wait().unwrap()
    })
    .await;
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert_eq!(status.code(), Some(1));
}

/// Point 7: a PUT while a tick runs. The documented rule: the running tick finishes
/// under the config it started with; the next tick uses the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_during_a_tick_applies_to_the_next_tick() {
    let old = TestServer::start(|_| Reply::ok(BODY).delay(Duration::from_secs(2))).await;
    let new = TestServer::start(|_| Reply::ok("# TYPE up gauge\nup 1\n")).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config_with(dir.path(), "", &[]), &[]);
    let id = create(&d, spec("moving", json!({"endpoint": old.url("/metrics")})));
    trigger(&d, &id);
    wait_for("the first request", Duration::from_secs(10), || {
        (old.count() > 0).then_some(())
    })
    .await;
    let put = call(
        &d,
        "PUT",
        &format!("/v1/connectors/{id}"),
        Some(spec("moving", json!({"endpoint": new.url("/metrics")}))),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let ticks = wait_for_ticks(&d, &id, 1, Duration::from_secs(20)).await;
    assert_eq!(
        (ticks[0]["outcome"].as_str(), ticks[0]["rows"].as_u64()),
        (Some("ok"), Some(2))
    );
    assert_eq!(new.count(), 0);
    trigger(&d, &id);
    let ticks = wait_for_ticks(&d, &id, 2, Duration::from_secs(20)).await;
    assert_eq!(
        (ticks[0]["outcome"].as_str(), ticks[0]["rows"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!((old.count(), new.count()), (1, 1));
}

/// Point 9: when the state store cannot take a claim (its write lock held elsewhere,
/// as on a full disk), the API says so in `last_tick` and `last_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_show_in_the_api() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config_with(dir.path(), "", &[]), &[]);
    let id = create(
        &d,
        spec("locked", json!({"endpoint": server.url("/metrics")})),
    );
    let state = dir.path().join("data").join("connectord-state.sqlite");
    let lock = rusqlite::Connection::open(&state).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    trigger(&d, &id);
    let c = wait_for(
        "the failed claim in the API",
        Duration::from_secs(30),
        || {
            let c = get_connector(&d, &id);
            (c["last_tick"]["outcome"] == "store_error").then_some(c)
        },
    )
    .await;
    let error = c["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("the state store failed to claim the bucket: ")
            && error.contains("locked"),
        "{error}"
    );
    assert_eq!(server.count(), 0, "the tick ran without a claim");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    trigger(&d, &id);
    let c = wait_for(
        "a good tick after the lock",
        Duration::from_secs(40),
        || {
            let c = get_connector(&d, &id);
            (c["last_tick"]["outcome"] == "ok").then_some(c)
        },
    )
    .await;
    assert!(c["last_error"].is_null(), "{c}");

    // The target database locked instead: the commit fails, nothing lands, and the
    // API says why.
    let target = dir.path().join("data").join("metrics.sqlite");
    let lock = rusqlite::Connection::open(&target).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    trigger(&d, &id);
    let c = wait_for(
        "the failed commit in the API",
        Duration::from_secs(40),
        || {
            let c = get_connector(&d, &id);
            (c["last_tick"]["outcome"] == "sink_error").then_some(c)
        },
    )
    .await;
    let error = c["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("commit failed: ") && error.contains("locked"),
        "{error}"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        support::ledger(dir.path(), &id).len(),
        1,
        "only the first good tick landed"
    );
}
