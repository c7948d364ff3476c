//! The Prometheus query API at `/metrics/api/v1/` against real backends: a
//! Prometheus 2.42 and a VictoriaMetrics 1.79 (Debian's `prometheus` and
//! `victoria-metrics`) each scrape connectord every second, with connectors in two
//! orgs. Org `a`'s token, through plain HTTP (GET and POST) and through `promtool`
//! (a real Prometheus API client), never gets a series of org `b` for hostile
//! queries; operator tokens see both orgs; Grafana's "Save & test" sequence gets
//! Prometheus's own answers. One connectord runs the connectors and sends queries to
//! Prometheus; a second one on the same data folder, without a runner, sends them to
//! VictoriaMetrics. Outside CI a missing binary skips the test; under CI=true it
//! fails it.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use serde_json::{Value, json};
use support::{Daemon, Response, free_port, request, wait_for};

const OPERATOR: &str = "operator-token-0123456789";
const ORG_A: &str = "org-a-token-0123456789";
const ORG_B: &str = "org-b-token-0123456789";

const TOKENS: &str = r#"
[[server.tokens]]
name = "operator"
token_ref = "$env:OPERATOR_TOKEN"
scopes = ["connectors:read", "connectors:write", "metrics:read"]

[[server.tokens]]
name = "grafana-a"
token_ref = "$env:ORG_A_TOKEN"
scopes = ["connectors:read", "metrics:read"]
org_id = "a"

[[server.tokens]]
name = "grafana-b"
token_ref = "$env:ORG_B_TOKEN"
scopes = ["connectors:read", "metrics:read"]
org_id = "b"
"#;

const ENV: [(&str, &str); 3] = [
    ("OPERATOR_TOKEN", OPERATOR),
    ("ORG_A_TOKEN", ORG_A),
    ("ORG_B_TOKEN", ORG_B),
];

/// Kills the backend when the test ends, however it ends.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(binary: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "{binary} is not installed; .ci/run installs it"
    );
    found
}

fn connectord_config(dir: &Path, data: &Path, query: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("connectord.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{TOKENS}\n[storage]\ndata_dir = \"{}\"\n\n{extra}\n[query]\n{query}\n",
            data.display()
        ),
    )
    .unwrap();
    path
}

fn connector(name: &str, org: &str, endpoint: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\norg_id = \"{org}\"\ntype = \"prometheus\"\n\
         target_database = \"metrics\"\ntarget_table = \"{}\"\nschedule_ms = 500\n\
         config = {{ endpoint = \"{endpoint}\" }}\n\n",
        name.replace('-', "_")
    )
}

/// A scrape config both backends read (JSON is YAML).
fn scrape_config(target: SocketAddr, vm: bool) -> String {
    let mut job = json!({
        "job_name": "connectord",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [target.to_string()]}],
    });
    if vm {
        job["bearer_token"] = OPERATOR.into();
    } else {
        job["authorization"] = json!({"type": "Bearer", "credentials": OPERATOR});
    }
    json!({"scrape_configs": [job]}).to_string()
}

fn start_prometheus(dir: &Path, port: u16, target: SocketAddr) -> Backend {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, scrape_config(target, false)).unwrap();
    Backend(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn start_victoria_metrics(dir: &Path, port: u16, target: SocketAddr) -> Backend {
    let config = dir.join("scrape.yml");
    std::fs::write(&config, scrape_config(target, true)).unwrap();
    Backend(
        Command::new("victoria-metrics")
            .arg(format!("-promscrape.config={}", config.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            // Without these, fresh samples stay invisible for 30 s and answers are cached.
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("victoria-metrics.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn get(d: &Daemon, token: &str, path: &str, pairs: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let path = format!("/metrics/api/v1/{path}?{}", encode(pairs));
    request(d.addr, "GET", &path, &[("Authorization", &auth)], None)
}

fn post(d: &Daemon, token: &str, path: &str, pairs: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let body = encode(pairs);
    request(
        d.addr,
        "POST",
        &format!("/metrics/api/v1/{path}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(body.as_bytes()),
    )
}

/// The `org_id` values of an instant query's result.
fn orgs_of(r: &Response) -> Vec<String> {
    let mut orgs: Vec<String> = r.json()["data"]["result"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| s["metric"]["org_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    orgs.sort();
    orgs.dedup();
    orgs
}

/// Asserts that nothing of org `b` is in an answer: each of its connectors' ids is
/// on every one of its series, and no series of `a` carries `org_id="b"` unless a
/// query relabeled it.
fn assert_no_b(what: &str, body: &str, b_ids: &[String]) {
    for id in b_ids {
        assert!(
            !body.contains(id.as_str()),
            "{what}: org b's connector {id} leaked:\n{body}"
        );
    }
}

struct Orgs {
    a_ids: Vec<String>,
    b_ids: Vec<String>,
}

fn connector_ids(d: &Daemon, token: &str) -> Vec<String> {
    let auth = format!("Bearer {token}");
    let r = request(
        d.addr,
        "GET",
        "/v1/connectors",
        &[("Authorization", &auth)],
        None,
    );
    r.json()["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The queries a hostile org-a user might send, and whether org a's own data must
/// come back (so that an empty answer cannot pass for a safe one).
const HOSTILE: [(&str, bool); 22] = [
    ("{__name__=~\".+\"}", true),
    ("{__name__=~\"connectord_.*\",org_id=\"b\"}", true),
    ("connectord_connector_state{org_id=~\"a|b\"}", true),
    ("connectord_connector_state{org_id!=\"a\"}", true),
    ("{__name__=~\".+\",org_id=~\"b|\"}", true),
    (
        "label_replace(connectord_connector_state, \"org_id\", \"b\", \"\", \"\")",
        false,
    ),
    (
        "label_join(connectord_connector_state, \"org_id\", \"\", \"connector_id\")",
        false,
    ),
    (
        "connectord_connector_state or connectord_connector_state{org_id=\"b\"}",
        true,
    ),
    (
        "connectord_connector_state unless connectord_connector_state{org_id=\"b\"}",
        false,
    ),
    (
        "connectord_connector_schedule_seconds * on() group_left() count(connectord_connector_state{org_id=\"b\"})",
        false,
    ),
    (
        "connectord_connector_schedule_seconds{org_id=\"b\"} + on(connector_id) group_right() connectord_connector_schedule_seconds",
        true,
    ),
    (
        "max_over_time(connectord_connector_state{org_id=\"b\"}[1m:1s])",
        true,
    ),
    ("absent(connectord_connector_state{org_id=\"b\"})", false),
    (
        "count_values(\"org_id\", connectord_connector_schedule_seconds)",
        false,
    ),
    ("connectord_connector_state @ end()", true),
    ("connectord_connector_state offset 1s", false),
    (
        "sum by (org_id, connector_id) (rate(total_contribution_bytes_sum[1m]))",
        false,
    ),
    ("topk(1000, {__name__=~\".+\"})", true),
    ("sum by (org_id) ({org_id=~\".+\"})", true),
    (
        "last_over_time({org_id=~\".*\",__name__=~\"connectord_connector_state\"}[5m])",
        true,
    ),
    (
        "label_replace(vector(1), \"org_id\", \"b\", \"\", \"\")",
        false,
    ),
    ("{org_id=\"b\"} or {org_id=\"a\"}", true),
];

/// Every hostile query over GET and POST, the series, labels and label values
/// endpoints, and a query in the URL and the body together.
fn hostile_round(d: &Daemon, orgs: &Orgs, backend: &str) {
    let a_id = &orgs.a_ids[0];
    for (query, a_data) in HOSTILE {
        for (how, r) in [
            ("GET", get(d, ORG_A, "query", &[("query", query)])),
            ("POST", post(d, ORG_A, "query", &[("query", query)])),
        ] {
            let what = format!("{backend} {how} {query}");
            assert_no_b(&what, &r.body, &orgs.b_ids);
            if a_data {
                assert_eq!(r.status, 200, "{what}: {}", r.body);
                assert_eq!(
                    orgs_of(&r),
                    ["a"],
                    "{what}: org a's data, and only its:\n{}",
                    r.body
                );
            }
        }
    }
    let now = unix_now();
    let range = post(
        d,
        ORG_A,
        "query_range",
        &[
            ("query", "{__name__=~\"connectord_.+\",org_id=\"b\"}"),
            ("start", &(now - 30).to_string()),
            ("end", &now.to_string()),
            ("step", "1"),
        ],
    );
    assert_eq!(range.status, 200, "{backend}: {}", range.body);
    assert_no_b(&format!("{backend} query_range"), &range.body, &orgs.b_ids);
    assert!(
        range.body.contains(a_id.as_str()),
        "{backend} query_range: {}",
        range.body
    );
    for selector in ["{org_id=\"b\"}", "{__name__=~\".+\"}", "{org_id=~\".+\"}"] {
        let r = get(d, ORG_A, "series", &[("match[]", selector)]);
        assert_eq!(r.status, 200, "{backend} series {selector}: {}", r.body);
        assert_no_b(
            &format!("{backend} series {selector}"),
            &r.body,
            &orgs.b_ids,
        );
        assert!(
            r.body.contains(a_id.as_str()),
            "{backend} series {selector}"
        );
    }
    for (path, pairs) in [
        ("label/org_id/values", vec![]),
        ("label/org_id/values", vec![("match[]", "{org_id=\"b\"}")]),
        ("label/connector_id/values", vec![]),
        ("labels", vec![("match[]", "{__name__=~\".+\"}")]),
    ] {
        let r = get(d, ORG_A, path, &pairs);
        assert_eq!(r.status, 200, "{backend} {path}: {}", r.body);
        assert_no_b(&format!("{backend} {path}"), &r.body, &orgs.b_ids);
        if path == "label/org_id/values" {
            assert_eq!(r.json()["data"], json!(["a"]), "{backend} {path} {pairs:?}");
        }
    }
    // The query in the URL and in the body: which one a backend would read is
    // beside the point, as neither is sent.
    let auth = format!("Bearer {ORG_A}");
    let both = request(
        d.addr,
        "POST",
        &format!(
            "/metrics/api/v1/query?{}",
            encode(&[("query", "{org_id=\"b\"}")])
        ),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(encode(&[("query", "up")]).as_bytes()),
    );
    assert_eq!(both.status, 400, "{backend}: {}", both.body);
    assert_eq!(both.json()["errorType"], "bad_data");
    // Operators see both orgs.
    let all = get(
        d,
        OPERATOR,
        "query",
        &[("query", "count by (org_id) (connectord_connector_state)")],
    );
    assert_eq!(orgs_of(&all), ["a", "b"], "{backend}: {}", all.body);
    let b_sees = get(
        d,
        ORG_B,
        "query",
        &[("query", "connectord_connector_state")],
    );
    assert_eq!(orgs_of(&b_sees), ["b"], "{backend}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// `promtool query ...` against connectord, the token as the Basic password.
fn promtool(args: &[&str], d: &Daemon) -> String {
    let server = format!("http://grafana:{ORG_A}@{}/metrics", d.addr);
    let mut full: Vec<String> = vec!["query".into()];
    full.extend(args.iter().take(1).map(|s| (*s).to_owned()));
    full.extend(["-o".into(), "json".into()]);
    full.extend(
        args.iter()
            .skip(1)
            .filter(|a| a.starts_with("--"))
            .map(|s| (*s).to_owned()),
    );
    full.push(server);
    full.extend(
        args.iter()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .map(|s| (*s).to_owned()),
    );
    let out = Command::new("promtool").args(&full).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {full:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Wait until both orgs' connectors have ticked and the backend has their series.
async fn wait_for_both_orgs(d: &Daemon, backend: &str) {
    wait_for(
        &format!("{backend} to hold both orgs' contributions"),
        Duration::from_secs(60),
        || {
            let r = get(
                d,
                OPERATOR,
                "query",
                // Three seconds old: range queries and subqueries, whose steps fall
                // on whole seconds, then find samples too.
                &[(
                    "query",
                    "count by (org_id) (total_contribution_bytes_count offset 3s)",
                )],
            );
            (r.status == 200 && orgs_of(&r) == ["a", "b"]).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_tokens_query_only_their_org_through_prometheus_and_victoria_metrics() {
    if !installed("prometheus") || !installed("victoria-metrics") || !installed("promtool") {
        return;
    }
    let server = TestServer::start(|_| Reply::ok("# TYPE jobs gauge\njobs 3\n")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (prometheus_port, vm_port) = (free_port(), free_port());
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let connectors: String = [
        ("a-node", "a"),
        ("a-app", "a"),
        ("b-node", "b"),
        ("b-app", "b"),
    ]
    .iter()
    .map(|(name, org)| connector(name, org, &server.url("/metrics")))
    .collect();
    let config = connectord_config(
        &runs,
        &data,
        &format!("url = \"http://127.0.0.1:{prometheus_port}\"\nkind = \"prometheus\""),
        &connectors,
    );
    let d = Daemon::start(&config, &ENV);
    let backends = dir.path().join("backends");
    std::fs::create_dir_all(&backends).unwrap();
    let _prometheus = start_prometheus(&backends, prometheus_port, d.addr);
    let _vm = start_victoria_metrics(&backends, vm_port, d.addr);
    let fronts = dir.path().join("vm-front");
    std::fs::create_dir_all(&fronts).unwrap();
    let vm_config = connectord_config(
        &fronts,
        &data,
        &format!("url = \"http://127.0.0.1:{vm_port}\"\nkind = \"victoriametrics\""),
        "[runner]\nenabled = false\n",
    );
    let vm_front = Daemon::start(&vm_config, &ENV);
    let orgs = Orgs {
        a_ids: connector_ids(&d, ORG_A),
        b_ids: connector_ids(&d, ORG_B),
    };
    assert_eq!((orgs.a_ids.len(), orgs.b_ids.len()), (2, 2));

    wait_for_both_orgs(&d, "prometheus").await;
    wait_for_both_orgs(&vm_front, "victoria-metrics").await;
    hostile_round(&d, &orgs, "prometheus");
    hostile_round(&vm_front, &orgs, "victoria-metrics");

    // promtool, a real Prometheus API client, with the token as the Basic password.
    for args in [
        vec!["instant", "{__name__=~\".+\",org_id=\"b\"}"],
        vec![
            "instant",
            "label_replace(connectord_connector_state, \"org_id\", \"b\", \"\", \"\")",
        ],
        vec!["range", "--step=1s", "{org_id=~\"a|b\"}"],
        vec![
            "series",
            "--match={org_id=\"b\"}",
            "--match={__name__=~\".+\"}",
        ],
        vec!["labels", "connector_id"],
    ] {
        let out = promtool(&args, &d);
        assert_no_b(&format!("promtool {args:?}"), &out, &orgs.b_ids);
        assert!(
            out.contains(orgs.a_ids[0].as_str()) || out.contains(orgs.a_ids[1].as_str()),
            "promtool {args:?}: {out}"
        );
    }
    assert_eq!(promtool(&["labels", "org_id"], &d).trim(), "[\"a\"]");

    grafana_sequence(&d, prometheus_port).await;

    // The query API counts what it answered, per org, endpoint and status.
    let metrics = |token: &str| {
        let auth = format!("Bearer {token}");
        request(d.addr, "GET", "/metrics", &[("Authorization", &auth)], None).body
    };
    let counted = |text: &str, labels: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("connectord_query_requests_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let all = metrics(OPERATOR);
    assert!(
        counted(&all, "org_id=\"a\",endpoint=\"query\",code=\"200\"") >= 44,
        "{all}"
    );
    assert!(counted(&all, "org_id=\"a\",endpoint=\"query\",code=\"400\"") >= 1);
    assert!(counted(&all, "org_id=\"a\",endpoint=\"label_values\",code=\"200\"") >= 3);
    assert!(
        counted(&all, "endpoint=\"query\",code=\"200\"") >= 1,
        "operators' own"
    );
    let theirs = metrics(ORG_B);
    assert!(
        !theirs.contains("connectord_query_requests_total{org_id=\"a\""),
        "{theirs}"
    );
    vm_front.stop();
    d.stop();
}

/// What Grafana's Prometheus data source sends on "Save & test" and in Explore,
/// with the token as the Basic password: the answers have Prometheus's shape (the
/// same JSON as Prometheus's own answer where the org does not change it).
async fn grafana_sequence(d: &Daemon, prometheus_port: u16) {
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("grafana:{ORG_A}"))
    );
    let direct = |path: &str| {
        let addr: SocketAddr = format!("127.0.0.1:{prometheus_port}").parse().unwrap();
        request(addr, "GET", &format!("/api/v1/{path}"), &[], None).json()
    };
    let call = |method: &str, path: &str, body: Option<&str>| {
        let mut headers = vec![("Authorization", basic.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        request(
            d.addr,
            method,
            &format!("/metrics/api/v1/{path}"),
            &headers,
            body.map(str::as_bytes),
        )
    };
    let buildinfo = call("GET", "status/buildinfo", None);
    assert_eq!(buildinfo.status, 200, "{}", buildinfo.body);
    assert_eq!(buildinfo.json(), direct("status/buildinfo"));
    assert!(
        buildinfo.headers.contains("content-type: application/json"),
        "{}",
        buildinfo.headers
    );
    let now = unix_now();
    let one_plus_one = call("POST", "query", Some(&format!("query=1%2B1&time={now}")));
    assert_eq!(one_plus_one.status, 200, "{}", one_plus_one.body);
    assert_eq!(
        one_plus_one.json(),
        direct(&format!("query?query=1%2B1&time={now}"))
    );
    assert_eq!(one_plus_one.json()["data"]["result"][1], "2");
    let labels = call("GET", "labels", None).json();
    assert_eq!(labels["status"], "success");
    let every: Vec<Value> = direct("labels")["data"].as_array().unwrap().clone();
    for label in labels["data"].as_array().unwrap() {
        assert!(
            every.contains(label),
            "{label} is not a label Prometheus knows"
        );
    }
    assert!(
        labels["data"]
            .as_array()
            .unwrap()
            .contains(&json!("org_id"))
    );
    let names = call("GET", "label/__name__/values", None).json();
    assert_eq!(names["status"], "success");
    let names = names["data"].as_array().unwrap();
    assert!(
        names.contains(&json!("connectord_connector_state")),
        "{names:?}"
    );
    let range = call(
        "POST",
        "query_range",
        Some(&format!(
            "query=sum(connectord_connector_state)&start={}&end={now}&step=2",
            now - 20
        )),
    );
    assert_eq!(range.status, 200, "{}", range.body);
    let range = range.json();
    assert_eq!(
        (range["status"].clone(), range["data"]["resultType"].clone()),
        (json!("success"), json!("matrix"))
    );
    // A query that does not parse: Prometheus's error shape.
    let bad = call("POST", "query", Some("query=sum("));
    assert_eq!(bad.status, 400);
    let bad = bad.json();
    assert_eq!(
        (bad["status"].clone(), bad["errorType"].clone()),
        (json!("error"), json!("bad_data"))
    );
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid parameter \"query\": "),
        "{bad}"
    );
}
