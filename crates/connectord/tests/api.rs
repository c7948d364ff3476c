//! The REST API of a running connectord, over real HTTP.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use serde_json::{Value, json};
use support::{
    Daemon, Declared, call, connector, create, ledger, request, wait_for, write_config,
    write_config_with,
};

const JSON: (&str, &str) = ("Content-Type", "application/json");

const BODY: &str = "# TYPE up gauge\nup{job=\"a\"} 1\nup{job=\"b\"} 0\n";

fn spec(name: &str, endpoint: &str) -> Value {
    json!({
        "name": name, "type": "prometheus", "target_database": "metrics", "target_table": name,
        "schedule_ms": 3_600_000,
        "config": {"endpoint": endpoint, "auth": {"type": "none"}, "timeout_ms": 5000}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_update_delete() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);

    let id = create(&d, spec("api_one", &server.url("/metrics")));
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let got = call(&d, "GET", &format!("/v1/connectors/{id}"), None);
    assert_eq!(got.status, 200);
    let c = got.json();
    assert_eq!(c["name"], "api_one");
    assert_eq!(c["origin"], "api");
    assert_eq!(c["state"], "enabled");
    assert_eq!(c["config"]["endpoint"], server.url("/metrics").as_str());
    assert!(
        c["last_tick"].is_null() && c["disabled_reason"].is_null() && c["last_error"].is_null()
    );
    let next = c["next_tick"].as_i64().unwrap();
    assert!(
        next > c["created_at"].as_i64().unwrap()
            && next <= c["created_at"].as_i64().unwrap() + 3_600_000
    );

    let list = call(&d, "GET", "/v1/connectors", None).json();
    assert_eq!(list["connectors"].as_array().unwrap().len(), 1);
    let types = call(&d, "GET", "/v1/connector-types", None).json();
    let built_in: Vec<_> = connectord::Daemon::new()
        .registry()
        .connector_types()
        .map(|t| json!({ "type": t }))
        .collect();
    assert_eq!(types, json!({ "types": built_in }));

    let mut changed = spec("api_one", &server.url("/metrics"));
    changed["schedule_ms"] = json!(7_200_000);
    let put = call(&d, "PUT", &format!("/v1/connectors/{id}"), Some(changed));
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.json()["schedule_ms"], 7_200_000);
    let mut bad = spec("api_one", &server.url("/metrics"));
    bad["config"]["endpoint"] = json!("ftp://x/");
    let put = call(&d, "PUT", &format!("/v1/connectors/{id}"), Some(bad));
    assert_eq!(put.status, 400);
    assert_eq!(
        put.error().1,
        "config: endpoint: scheme `ftp` is not supported, use http:// or https://"
    );

    let del = call(&d, "DELETE", &format!("/v1/connectors/{id}"), None);
    assert_eq!(del.status, 204);
    assert_eq!(
        call(&d, "GET", &format!("/v1/connectors/{id}"), None).status,
        404
    );
    assert_eq!(
        call(&d, "DELETE", &format!("/v1/connectors/{id}"), None).status,
        404
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_creates_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);
    let url = "http://127.0.0.1:9/metrics";
    let known: Vec<_> = connectord::Daemon::new()
        .registry()
        .connector_types()
        .collect();
    let known_types_error = format!(
        "type: unknown connector type `kafka`; known types: {}",
        known.join(", ")
    );
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            {
                let mut s = spec("a", url);
                s["config"]["timeout"] = json!(5);
                s
            },
            400,
            "config: unknown field `timeout`, expected one of `endpoint`, `auth`, `timeout_ms`, `body_size_limit_bytes`, `sample_limit`, `label_limit`, `label_name_length_limit`, `label_value_length_limit`, `tls`, `strict`, `labels`, `honor_labels`",
        ),
        (
            {
                let mut s = spec("a", url);
                s["config"]["endpoint"] = json!("gopher://h/");
                s
            },
            400,
            "config: endpoint: scheme `gopher` is not supported, use http:// or https://",
        ),
        (
            {
                let mut s = spec("a", url);
                s["config"]["timeout_ms"] = json!(60_001);
                s
            },
            400,
            "config: timeout_ms: 60001 is out of range, expected 100 to 60000",
        ),
        (
            {
                let mut s = spec("a", url);
                s["type"] = json!("kafka");
                s
            },
            400,
            &known_types_error,
        ),
        (
            {
                let mut s = spec("a", url);
                s["target_table"] = json!("sqlite_master");
                s
            },
            400,
            "target_table: `sqlite_master` is reserved by SQLite (its own tables start with `sqlite_`); pick another name",
        ),
        (
            {
                let mut s = spec("a", url);
                s["schedule_ms"] = json!(10);
                s
            },
            400,
            "schedule_ms: 10 is out of range, expected 100 to 86400000",
        ),
        (
            {
                let mut s = spec("a", url);
                s["target_table"] = json!("drop table");
                s
            },
            400,
            "target_table: `drop table` is not a valid name: use up to 63 ASCII letters, digits and `_`, starting with a letter",
        ),
    ];
    for (body, status, message) in cases {
        let r = call(&d, "POST", "/v1/connectors", Some(body));
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(
            r.error(),
            ("invalid_request".to_owned(), message.to_owned())
        );
    }
    let r = call(
        &d,
        "POST",
        "/v1/connectors",
        Some(json!({"name": "a", "type": "prometheus"})),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().1.contains("missing field `target_database`"),
        "{}",
        r.body
    );
    let r = call(
        &d,
        "POST",
        "/v1/connectors",
        Some({
            let mut s = spec("a", url);
            s["extra"] = json!(1);
            s
        }),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().1.contains("unknown field `extra`"), "{}", r.body);

    create(&d, spec("dup", url));
    let r = call(&d, "POST", "/v1/connectors", Some(spec("dup", url)));
    assert_eq!(r.status, 409);
    assert_eq!(
        r.error(),
        (
            "conflict".to_owned(),
            "a connector named `dup` already exists".to_owned()
        )
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);
    let big = vec![b' '; 1024 * 1024 + 10];
    let r = request(d.addr, "POST", "/v1/connectors", &[JSON], Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(r.error().0, "payload_too_large");
    let r = request(
        d.addr,
        "POST",
        "/v1/connectors",
        &[JSON],
        Some(b"{\"name\": "),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error().1,
        "malformed JSON: EOF while parsing a value at line 1 column 9"
    );
    let r = request(
        d.addr,
        "POST",
        "/v1/connectors",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(r.error().0, "unsupported_media_type");
    let r = request(d.addr, "POST", "/v1/connectors", &[], Some(b"{}"));
    assert_eq!(r.status, 415);
    for path in [
        "/v1/connectors/not-a-uuid",
        "/v1/connectors/..%2F..%2Fetc",
        "/v1/connectors/00000000-0000-0000-0000-000000000000",
    ] {
        let r = call(&d, "GET", path, None);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.error().0, "not_found");
    }
    let r = call(&d, "POST", "/v1/connectors/not-a-uuid/trigger", None);
    assert_eq!(r.status, 404);
    let r = call(&d, "PATCH", "/v1/connectors", None);
    assert_eq!(
        (r.status, r.error().0.as_str()),
        (405, "method_not_allowed")
    );
    let r = call(&d, "GET", "/v2/nothing", None);
    assert_eq!((r.status, r.error().0.as_str()), (404, "no_route"));
    assert!(r.headers.contains("content-type: application/json"));
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_pause_resume_and_tick_history() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);
    let id = create(&d, spec("manual", &server.url("/metrics")));
    // The hourly schedule will not fire during the test: only triggers tick.
    let started = std::time::Instant::now();
    let r = call(&d, "POST", &format!("/v1/connectors/{id}/trigger"), None);
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), json!({"id": id, "triggered": true}));
    wait_for("the triggered tick", Duration::from_secs(5), || {
        (server.count() == 1).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    wait_for("its rows", Duration::from_secs(5), || {
        (ledger(dir.path(), &id).len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        support::query_i64(dir.path(), "metrics.sqlite", "SELECT count(*) FROM manual"),
        2
    );
    let c = call(&d, "GET", &format!("/v1/connectors/{id}"), None).json();
    assert_eq!(c["last_tick"]["outcome"], "ok");
    assert_eq!(c["last_tick"]["rows"], 2);
    assert_eq!(c["last_tick"]["bytes"], BODY.len());
    assert!(c["last_tick"]["duration_ms"].is_u64() && c["last_tick"]["scheduled_for"].is_i64());

    let paused = call(&d, "POST", &format!("/v1/connectors/{id}/pause"), None);
    assert_eq!(paused.status, 200);
    assert_eq!(
        (
            paused.json()["state"].clone(),
            paused.json()["next_tick"].clone()
        ),
        (json!("paused"), Value::Null)
    );
    let r = call(&d, "POST", &format!("/v1/connectors/{id}/trigger"), None);
    assert_eq!(r.status, 409);
    assert_eq!(r.error().1, "connector `manual` is paused; resume it first");
    let resumed = call(&d, "POST", &format!("/v1/connectors/{id}/resume"), None);
    assert_eq!(resumed.json()["state"], "enabled");
    assert_eq!(
        call(&d, "POST", &format!("/v1/connectors/{id}/trigger"), None).status,
        202
    );
    wait_for("the second tick", Duration::from_secs(5), || {
        (ledger(dir.path(), &id).len() == 2).then_some(())
    })
    .await;

    let ticks = call(
        &d,
        "GET",
        &format!("/v1/connectors/{id}/ticks?limit=1"),
        None,
    )
    .json();
    assert_eq!(ticks["ticks"].as_array().unwrap().len(), 1);
    let all = call(&d, "GET", &format!("/v1/connectors/{id}/ticks"), None).json();
    assert_eq!(all["ticks"].as_array().unwrap().len(), 2);
    for bad in ["0", "1001", "abc", "-1"] {
        let r = call(
            &d,
            "GET",
            &format!("/v1/connectors/{id}/ticks?limit={bad}"),
            None,
        );
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.error()
                .1
                .starts_with(&format!("limit: `{bad}` is not a whole number")),
            "{}",
            r.body
        );
    }
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_connectors_are_marked_and_cannot_be_deleted_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "from_file",
            table: "from_file",
            schedule_ms: 3_600_000,
            config: "endpoint = \"http://127.0.0.1:9/metrics\"".into(),
        }],
    );
    let d = Daemon::start(&config, &[]);
    let (id, ..) = connector(dir.path(), "from_file").unwrap();
    assert_eq!(
        call(&d, "GET", &format!("/v1/connectors/{id}"), None).json()["origin"],
        "file"
    );
    let r = call(&d, "DELETE", &format!("/v1/connectors/{id}"), None);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.error().1,
        "connector `from_file` is declared in connectord's config file; remove it there and restart"
    );
    let r = call(
        &d,
        "PUT",
        &format!("/v1/connectors/{id}"),
        Some(spec("from_file", "http://127.0.0.1:9/m")),
    );
    assert_eq!(r.status, 409);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_connectors_survive_a_restart_and_resume_clears_a_config_disable() {
    let server = TestServer::start(|_| Reply::ok(BODY)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[]);
    let d = Daemon::start(&config, &[]);
    let mut body = spec("late_secret", &server.url("/metrics"));
    body["config"]["auth"] = json!({"type": "bearer", "token_ref": "$env:API_E2E_LATE_TOKEN"});
    let id = create(&d, body);
    assert_eq!(
        call(&d, "POST", &format!("/v1/connectors/{id}/trigger"), None).status,
        202
    );
    wait_for("the Config disable", Duration::from_secs(10), || {
        connector(dir.path(), "late_secret").filter(|c| c.1 == "disabled")
    })
    .await;
    let c = call(&d, "GET", &format!("/v1/connectors/{id}"), None).json();
    assert_eq!(
        c["disabled_reason"],
        "token resolve: environment variable `API_E2E_LATE_TOKEN` is not set"
    );
    d.stop();

    // The operator adds the variable and restarts: the connector is still there, still disabled.
    let d = Daemon::start(&config, &[("API_E2E_LATE_TOKEN", "now-it-exists")]);
    let c = call(&d, "GET", &format!("/v1/connectors/{id}"), None).json();
    assert_eq!(
        (c["state"].clone(), c["origin"].clone()),
        (json!("disabled"), json!("api"))
    );
    let r = call(&d, "POST", &format!("/v1/connectors/{id}/resume"), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json()["state"].clone(),
            r.json()["disabled_reason"].clone()
        ),
        (json!("enabled"), Value::Null)
    );
    assert_eq!(
        call(&d, "POST", &format!("/v1/connectors/{id}/trigger"), None).status,
        202
    );
    wait_for("a committed tick", Duration::from_secs(10), || {
        (ledger(dir.path(), &id).len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        server.requests()[0].headers["authorization"],
        "Bearer now-it-exists"
    );
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = r#"
[[server.tokens]]
name = "reader"
token_ref = "$env:READ_TOKEN"
scopes = ["connectors:read"]

[[server.tokens]]
name = "admin"
token_ref = "$env:ADMIN_TOKEN"
scopes = ["connectors:read", "connectors:write", "metrics:read"]
"#;
    let config = write_config_with(dir.path(), tokens, &[]);
    let (read, admin) = ("read-token-0123456789", "admin-token-0123456789");
    let d = Daemon::start(&config, &[("READ_TOKEN", read), ("ADMIN_TOKEN", admin)]);
    let with = |token: &str| format!("Bearer {token}");

    let r = request(d.addr, "GET", "/v1/connectors", &[], None);
    assert_eq!((r.status, r.error().0.as_str()), (401, "unauthorized"));
    assert!(
        r.headers
            .contains("www-authenticate: bearer realm=\"connectord\""),
        "{}",
        r.headers
    );
    let r = request(
        d.addr,
        "GET",
        "/v1/connectors",
        &[("Authorization", &with("read-token-0123456780"))],
        None,
    );
    assert_eq!(r.status, 401);
    let r = request(
        d.addr,
        "GET",
        "/v1/connectors",
        &[("Authorization", &with(read))],
        None,
    );
    assert_eq!(r.status, 200);
    let body = spec("t", "http://127.0.0.1:9/m").to_string();
    let r = request(
        d.addr,
        "POST",
        "/v1/connectors",
        &[JSON, ("Authorization", &with(read))],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.error(),
        (
            "forbidden".to_owned(),
            "token `reader` lacks the scope `connectors:write`".to_owned()
        )
    );
    let r = request(
        d.addr,
        "POST",
        "/v1/connectors",
        &[JSON, ("Authorization", &with(admin))],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 201);
    // Discoveries take the connectors' scopes.
    let discovery = serde_json::json!({
        "name": "scoped", "type": "http_sd", "url": "http://127.0.0.1:9/sd",
        "template": {"type": "prometheus", "target_database": "m", "target_table": "t", "schedule_ms": 1000}
    })
    .to_string();
    let r = request(
        d.addr,
        "GET",
        "/v1/discoveries",
        &[("Authorization", &with(read))],
        None,
    );
    assert_eq!(r.status, 200);
    let r = request(d.addr, "GET", "/v1/discoveries", &[], None);
    assert_eq!(r.status, 401);
    for (token, status) in [(read, 403), (admin, 201)] {
        let r = request(
            d.addr,
            "POST",
            "/v1/discoveries",
            &[JSON, ("Authorization", &with(token))],
            Some(discovery.as_bytes()),
        );
        assert_eq!(r.status, status, "{}", r.body);
    }
    // Grafana sends the token as the Basic password.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("grafana:{admin}"))
    );
    let r = request(
        d.addr,
        "GET",
        "/metrics",
        &[("Authorization", &basic)],
        None,
    );
    assert_eq!(r.status, 200);
    let r = request(
        d.addr,
        "GET",
        "/metrics",
        &[("Authorization", &with(read))],
        None,
    );
    assert_eq!(r.status, 403);
    let r = request(d.addr, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(request(d.addr, "GET", "/healthz", &[], None).status, 200);
    assert_eq!(
        request(d.addr, "GET", "/v1/openapi.json", &[], None).status,
        200
    );
    let (_, log) = d.stop();
    assert!(!log.contains(admin) && !log.contains(read));
}

#[test]
fn a_missing_token_variable_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = "[[server.tokens]]\nname = \"ops\"\ntoken_ref = \"$env:NO_SUCH_TOKEN_VAR\"\nscopes = [\"metrics:read\"]\n";
    let config = write_config_with(dir.path(), tokens, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tokens[0] `ops`: token resolve: environment variable `NO_SUCH_TOKEN_VAR` is not set"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_covers_every_route_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);
    let id = create(&d, spec("doc", "http://127.0.0.1:9/metrics"));
    let doc = call(&d, "GET", "/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut documented = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", &id);
        for method in methods {
            let r = call(
                &d,
                &method.to_uppercase(),
                &concrete,
                (method == "put" || method == "post").then(|| spec("doc", "http://127.0.0.1:9/m")),
            );
            if item.get(method).is_some() {
                documented += 1;
                let unrouted = r.status == 405 || (r.status == 404 && r.error().0 == "no_route");
                assert!(
                    !unrouted,
                    "{method} {path} is documented but not served: {} {}",
                    r.status, r.body
                );
            } else {
                assert_eq!(
                    r.status, 405,
                    "{method} {path} is served but not documented: {}",
                    r.body
                );
            }
        }
    }
    // Every route of the router (see api::router) is in the document.
    assert_eq!(documented, 30);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_in_id_order_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&write_config(dir.path(), &[]), &[]);
    let mut ids: Vec<String> = (0..5)
        .map(|i| create(&d, spec(&format!("page_{i}"), "http://127.0.0.1:9/metrics")))
        .collect();
    ids.sort();
    let paused = &ids[1];
    assert_eq!(
        call(&d, "POST", &format!("/v1/connectors/{paused}/pause"), None).status,
        200
    );

    let mut walked = Vec::new();
    let mut path = "/v1/connectors?limit=2".to_owned();
    loop {
        let page = call(&d, "GET", &path, None).json();
        let connectors = page["connectors"].as_array().unwrap();
        assert!(connectors.len() <= 2);
        walked.extend(
            connectors
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/connectors?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(walked, ids, "every connector once, in id order");

    let only_paused = call(&d, "GET", "/v1/connectors?state=paused", None).json();
    assert_eq!(only_paused["connectors"].as_array().unwrap().len(), 1);
    assert_eq!(only_paused["connectors"][0]["id"], paused.as_str());
    assert_eq!(only_paused["next"], Value::Null);
    let none = call(&d, "GET", "/v1/connectors?type=kafka", None).json();
    assert_eq!(none, json!({"connectors": [], "next": null}));

    for (query, message) in [
        (
            "limit=0",
            "limit: `0` is not a whole number from 1 to 10000",
        ),
        (
            "limit=10001",
            "limit: `10001` is not a whole number from 1 to 10000",
        ),
        (
            "state=asleep",
            "state: `asleep` is not one of enabled, paused, disabled",
        ),
        (
            "page=2",
            "unknown query parameter `page`; accepted: limit, after, state, type, org_id",
        ),
        (
            "org_id=Acme",
            "org_id: `Acme` is not a valid org id: use 1 to 64 of `a-z`, `0-9`, `_` and `-`",
        ),
    ] {
        let r = call(&d, "GET", &format!("/v1/connectors?{query}"), None);
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(
            r.error(),
            ("invalid_request".to_owned(), message.to_owned()),
            "{query}"
        );
    }
    d.stop();
}
