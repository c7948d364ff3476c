//! Orgs over the real API: an org token sees and manages only its org's
//! connectors (and the destinations and discoveries built on them), another org's
//! ids answer exactly as ids that do not exist, and operator tokens see every org.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Response, request, wait_for, write_config_with};

const TOKENS: &str = r#"
[[server.tokens]]
name = "acme-admin"
token_ref = "$env:ACME_TOKEN"
scopes = ["connectors:read", "connectors:write", "metrics:read", "ingest:write"]
org_id = "acme"

[[server.tokens]]
name = "globex-admin"
token_ref = "$env:GLOBEX_TOKEN"
scopes = ["connectors:read", "connectors:write", "metrics:read", "ingest:write"]
org_id = "globex"

[[server.tokens]]
name = "operator"
token_ref = "$env:OPERATOR_TOKEN"
scopes = ["connectors:read", "connectors:write", "metrics:read", "ingest:write"]

[[connectors]]
name = "acme-file"
org_id = "acme"
type = "prometheus"
target_database = "metrics"
target_table = "acme_file"
schedule_ms = 3600000
config = { endpoint = "http://127.0.0.1:9/metrics" }
"#;

const ACME: &str = "acme-token-0123456789";
const GLOBEX: &str = "globex-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

fn start(dir: &std::path::Path) -> Daemon {
    let config = write_config_with(dir, TOKENS, &[]);
    Daemon::start(
        &config,
        &[
            ("ACME_TOKEN", ACME),
            ("GLOBEX_TOKEN", GLOBEX),
            ("OPERATOR_TOKEN", OPERATOR),
        ],
    )
}

fn as_token(d: &Daemon, token: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
    request(
        d.addr,
        method,
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.as_deref().map(str::as_bytes),
    )
}

fn spec(name: &str) -> Value {
    json!({
        "name": name, "type": "prometheus", "target_database": "metrics", "target_table": "t",
        "schedule_ms": 3_600_000, "config": {"endpoint": "http://127.0.0.1:9/metrics"}
    })
}

fn with_org(mut spec: Value, org: &str) -> Value {
    spec["org_id"] = org.into();
    spec
}

fn created(r: &Response) -> String {
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut names: Vec<String> = list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_tokens_see_and_manage_only_their_org() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());

    // Create: an org token's connector lands in its org, given or not.
    let a = created(&as_token(
        &d,
        ACME,
        "POST",
        "/v1/connectors",
        Some(spec("a1")),
    ));
    let a2 = created(&as_token(
        &d,
        ACME,
        "POST",
        "/v1/connectors",
        Some(with_org(spec("a2"), "acme")),
    ));
    let r = as_token(
        &d,
        ACME,
        "POST",
        "/v1/connectors",
        Some(with_org(spec("a3"), "globex")),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.error().1,
        "token `acme-admin` belongs to org `acme` and writes only there; leave org_id out or set it to `acme`"
    );
    let b = created(&as_token(
        &d,
        GLOBEX,
        "POST",
        "/v1/connectors",
        Some(spec("b1")),
    ));
    // Operators choose any org; left out, it is `default`.
    let c = created(&as_token(
        &d,
        OPERATOR,
        "POST",
        "/v1/connectors",
        Some(with_org(spec("c1"), "initech")),
    ));
    let plain = created(&as_token(
        &d,
        OPERATOR,
        "POST",
        "/v1/connectors",
        Some(spec("d1")),
    ));
    let r = as_token(
        &d,
        OPERATOR,
        "POST",
        "/v1/connectors",
        Some(with_org(spec("bad"), "Not An Org")),
    );
    assert_eq!(
        (r.status, r.error().1),
        (
            400,
            "org_id: `Not An Org` is not a valid org id: use 1 to 64 of `a-z`, `0-9`, `_` and `-`"
                .to_owned()
        )
    );
    for (id, org) in [
        (&a, "acme"),
        (&a2, "acme"),
        (&b, "globex"),
        (&c, "initech"),
        (&plain, "default"),
    ] {
        let got = as_token(&d, OPERATOR, "GET", &format!("/v1/connectors/{id}"), None);
        assert_eq!(got.json()["org_id"], org, "{}", got.body);
    }

    // List: each org its own (the file connector declared with org_id included).
    let list = |token: &str, query: &str| {
        let r = as_token(&d, token, "GET", &format!("/v1/connectors{query}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        names(&r.json(), "connectors")
    };
    assert_eq!(list(ACME, ""), ["a1", "a2", "acme-file"]);
    assert_eq!(list(GLOBEX, ""), ["b1"]);
    assert_eq!(list(ACME, "?org_id=globex"), Vec::<String>::new());
    assert_eq!(
        list(OPERATOR, ""),
        ["a1", "a2", "acme-file", "b1", "c1", "d1"]
    );
    assert_eq!(list(OPERATOR, "?org_id=globex"), ["b1"]);

    // Another org's id answers exactly as an id that does not exist.
    let nobody = uuid::Uuid::new_v4().to_string();
    for (method, suffix, body) in [
        ("GET", "", None),
        ("PUT", "", Some(spec("b1"))),
        ("DELETE", "", None),
        ("POST", "/trigger", None),
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("GET", "/ticks", None),
        ("GET", "/metrics", None),
    ] {
        let theirs = as_token(
            &d,
            ACME,
            method,
            &format!("/v1/connectors/{b}{suffix}"),
            body.clone(),
        );
        let missing = as_token(
            &d,
            ACME,
            method,
            &format!("/v1/connectors/{nobody}{suffix}"),
            body,
        );
        assert_eq!(theirs.status, 404, "{method} {suffix}: {}", theirs.body);
        assert_eq!(
            theirs.body.replace(&b, "ID"),
            missing.body.replace(&nobody, "ID"),
            "{method} {suffix}"
        );
    }
    let still = as_token(&d, GLOBEX, "GET", &format!("/v1/connectors/{b}"), None);
    assert_eq!(
        (still.status, still.json()["state"].clone()),
        (200, json!("enabled"))
    );

    // Update: an org token cannot move a connector out; an update that leaves
    // org_id out keeps the org, also for operators.
    let r = as_token(
        &d,
        ACME,
        "PUT",
        &format!("/v1/connectors/{a}"),
        Some(with_org(spec("a1"), "globex")),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = as_token(
        &d,
        OPERATOR,
        "PUT",
        &format!("/v1/connectors/{a}"),
        Some(spec("a1")),
    );
    assert_eq!((r.status, r.json()["org_id"].clone()), (200, json!("acme")));
    let r = as_token(
        &d,
        OPERATOR,
        "PUT",
        &format!("/v1/connectors/{a2}"),
        Some(with_org(spec("a2"), "globex")),
    );
    assert_eq!(
        (r.status, r.json()["org_id"].clone()),
        (200, json!("globex"))
    );
    assert_eq!(list(GLOBEX, ""), ["a2", "b1"]);
    let r = as_token(&d, ACME, "GET", &format!("/v1/connectors/{a2}"), None);
    assert_eq!(r.status, 404);

    // Destinations belong to their source's org.
    let destination = |source: &str| {
        json!({"name": format!("to-{source}"), "type": "influx", "source": source,
               "config": {"endpoint": "http://127.0.0.1:9/write"}})
    };
    let da = created(&as_token(
        &d,
        ACME,
        "POST",
        "/v1/destinations",
        Some(destination("a1")),
    ));
    let r = as_token(
        &d,
        ACME,
        "POST",
        "/v1/destinations",
        Some(destination("b1")),
    );
    assert_eq!(
        (r.status, r.error().1),
        (
            400,
            "source: no connector named `b1`; create the source connector first".to_owned()
        )
    );
    let r = as_token(&d, GLOBEX, "GET", "/v1/destinations", None);
    assert_eq!(names(&r.json(), "destinations"), Vec::<String>::new());
    assert_eq!(
        names(
            &as_token(&d, ACME, "GET", "/v1/destinations", None).json(),
            "destinations"
        ),
        ["to-a1"]
    );
    for (method, suffix) in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/pause"),
        ("GET", "/deliveries"),
        ("GET", "/dead-letters"),
    ] {
        let r = as_token(
            &d,
            GLOBEX,
            method,
            &format!("/v1/destinations/{da}{suffix}"),
            None,
        );
        assert_eq!(r.status, 404, "{method} {suffix}: {}", r.body);
    }
    let path = format!("/v1/destinations/{da}");
    let r = as_token(&d, GLOBEX, "PUT", &path, Some(destination("a1")));
    assert_eq!(r.status, 404, "{}", r.body);
    let r = as_token(&d, ACME, "PUT", &path, Some(destination("a1")));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = as_token(&d, ACME, "GET", &path, None);
    assert_eq!(
        (r.status, &r.json()["name"]),
        (200, &json!("to-a1")),
        "{}",
        r.body
    );

    // Discoveries: the template's org, settled by the token like a connector's.
    let discovery = json!({
        "name": "acme-sd", "type": "http_sd", "url": "http://127.0.0.1:9/sd",
        "template": {"type": "prometheus", "target_database": "m", "target_table": "t", "schedule_ms": 1000}
    });
    let sd = created(&as_token(
        &d,
        ACME,
        "POST",
        "/v1/discoveries",
        Some(discovery),
    ));
    let r = as_token(&d, OPERATOR, "GET", &format!("/v1/discoveries/{sd}"), None);
    assert_eq!(r.json()["template"]["org_id"], "acme", "{}", r.body);
    let r = as_token(&d, GLOBEX, "GET", &format!("/v1/discoveries/{sd}"), None);
    assert_eq!(r.status, 404);
    let r = as_token(&d, GLOBEX, "GET", "/v1/discoveries", None);
    assert_eq!(names(&r.json(), "discoveries"), Vec::<String>::new());

    // /metrics: an org token gets its org's series only; operators get all.
    let metrics = |token: &str| as_token(&d, token, "GET", "/metrics", None).body;
    let everything = wait_for("the runner's refresh", Duration::from_secs(10), || {
        let text = metrics(OPERATOR);
        (text.contains(&format!("connector_id=\"{b}\""))
            && text.contains(&format!("connector_id=\"{a}\"")))
        .then_some(text)
    })
    .await;
    assert!(everything.contains("org_id=\"globex\"") && everything.contains("org_id=\"acme\""));
    let acme_only = metrics(ACME);
    assert!(acme_only.contains(&format!(
        "connector_id=\"{a}\",connector_type_id=\"prometheus\",org_id=\"acme\""
    )));
    let samples: Vec<&str> = acme_only.lines().filter(|l| l.contains('{')).collect();
    assert!(!samples.is_empty());
    for sample in samples {
        assert!(sample.contains("org_id=\"acme\""), "{sample}");
    }

    // Delete: only within the org; then it is gone for everyone.
    let r = as_token(&d, ACME, "DELETE", &format!("/v1/connectors/{a}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = as_token(&d, OPERATOR, "GET", &format!("/v1/connectors/{a}"), None);
    assert_eq!(r.status, 404);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_only_the_token_orgs_connectors() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let push = json!({
        "name": "checkout", "type": "spanmetrics", "target_database": "spans",
        "target_table": "span_metrics", "schedule_ms": 1000, "config": {}
    });
    created(&as_token(&d, GLOBEX, "POST", "/v1/connectors", Some(push)));
    let post = |token: &str, name: &str| {
        let auth = format!("Bearer {token}");
        request(
            d.addr,
            "POST",
            &format!("/v1/ingest/{name}/v1/traces"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            Some(br#"{"resourceSpans":[]}"#),
        )
    };
    // The runner picks the new connector up at its next refresh: until the owner's
    // push is taken, a 404 would prove nothing.
    wait_for(
        "the connector to take pushes",
        Duration::from_secs(10),
        || (post(GLOBEX, "checkout").status == 200).then_some(()),
    )
    .await;
    let theirs = post(ACME, "checkout");
    let missing = post(ACME, "nobody");
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    assert_eq!(
        theirs.body.replace("checkout", "NAME"),
        missing.body.replace("nobody", "NAME")
    );
    let operator = post(OPERATOR, "checkout");
    assert_eq!(operator.status, 200, "{}", operator.body);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_without_a_backend_says_what_to_configure() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let r = as_token(&d, ACME, "GET", "/metrics/api/v1/query?query=up", None);
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (body["status"].clone(), body["errorType"].clone()),
        (json!("error"), json!("unavailable"))
    );
    assert!(
        body["error"].as_str().unwrap().contains("[query] url = "),
        "{body}"
    );
    // The query API takes metrics:read like /metrics, and a token at all.
    let r = request(d.addr, "GET", "/metrics/api/v1/query?query=up", &[], None);
    assert_eq!(r.status, 401);
    d.stop();
}

#[test]
fn the_query_example_validates_and_a_bad_query_url_stops_the_start() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let validate = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
            .args(["validate", "--config"])
            .arg(config)
            .current_dir(&root)
            .output()
            .unwrap()
    };
    let out = validate(std::path::Path::new("examples/connectord-query.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[query]\nurl = \"127.0.0.1:8428\"\n").unwrap();
    let out = validate(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("query.url: `127.0.0.1:8428` is not an http(s) URL"),
        "{err}"
    );
}
