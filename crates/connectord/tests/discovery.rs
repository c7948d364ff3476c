//! Service discovery end to end: a live connectord finds its targets through HTTP SD
//! and file SD served on 127.0.0.1, keeps one labeled connector per target, and shows
//! what it found over the API.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use serde_json::{Value, json};
use support::{Daemon, call, open, wait_for, write_config};

const BODY: &str = "up 1\nm{job=\"app\",zone=\"a\"} 2\n";

/// An HTTP SD endpoint serving whatever `list` holds (or `status` when not 200).
async fn sd_server(list: Arc<Mutex<(u16, Value)>>) -> TestServer {
    TestServer::start(move |_| {
        let (status, value) = list.lock().unwrap().clone();
        if status == 200 {
            Reply::json(&value)
        } else {
            Reply::status(status)
        }
    })
    .await
}

fn discovery_toml(kind_lines: &str, table: &str) -> String {
    format!(
        "\n[[discovery]]\nname = \"nodes\"\n{kind_lines}\nrefresh_ms = 300\n\n\
         [[discovery.relabel_configs]]\nsource_labels = [\"drop\"]\nregex = \"yes\"\naction = \"drop\"\n\n\
         [[discovery.relabel_configs]]\nsource_labels = [\"__metrics_path__\"]\nregex = \"/(.*)\"\ntarget_label = \"path\"\n\n\
         [discovery.template]\ntype = \"prometheus\"\ntarget_database = \"metrics\"\ntarget_table = \"{table}\"\nschedule_ms = 200\n\
         config = {{ timeout_ms = 2000 }}\n"
    )
}

fn start(dir: &std::path::Path, discovery: &str) -> Daemon {
    let config = write_config(dir, &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(discovery);
    std::fs::write(&config, text).unwrap();
    Daemon::start(&config, &[])
}

fn discovery_view(daemon: &Daemon) -> Value {
    let list = call(daemon, "GET", "/v1/discoveries", None);
    assert_eq!(list.status, 200, "{}", list.body);
    let id = list.json()["discoveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = call(daemon, "GET", &format!("/v1/discoveries/{id}"), None);
    assert_eq!(one.status, 200, "{}", one.body);
    one.json()
}

/// (connector name, id) of every connector a discovery manages, by name.
fn managed(daemon: &Daemon) -> Vec<(String, String)> {
    let r = call(daemon, "GET", "/v1/connectors", None);
    let mut out: Vec<(String, String)> = r.json()["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["origin"] == "discovery")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Distinct label sets of the rows of `table` named `name`.
fn label_sets(dir: &std::path::Path, table: &str, name: &str) -> Vec<Value> {
    let Some(conn) = open(dir, "metrics.sqlite") else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(&format!(
        "SELECT DISTINCT labels FROM {table} WHERE name = ?1 ORDER BY labels"
    )) else {
        return Vec::new();
    };
    stmt.query_map([name], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sd_targets_become_labeled_connectors_that_follow_the_list() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let address = exporter.addr().to_string();
    let group_a =
        json!({"targets": [address], "labels": {"__metrics_path__": "/a", "env": "prod"}});
    let group_b = json!({"targets": [address], "labels": {"__metrics_path__": "/b", "team": "db"}});
    let dropped = json!({"targets": ["127.0.0.1:9"], "labels": {"drop": "yes"}});
    let list = Arc::new(Mutex::new((200, json!([group_a, group_b, dropped]))));
    let sd = sd_server(Arc::clone(&list)).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        dir.path(),
        &discovery_toml(
            &format!("type = \"http_sd\"\nurl = \"{}\"", sd.url("/sd")),
            "nodes",
        ),
    );

    let view = wait_for("two active targets", Duration::from_secs(15), || {
        let v = discovery_view(&daemon);
        (v["active_targets"].as_array().map_or(0, Vec::len) == 2).then_some(v)
    })
    .await;
    assert_eq!(view["origin"], "file");
    assert_eq!(view["status"]["error"], Value::Null);
    let mut active = view["active_targets"].as_array().unwrap().clone();
    active.sort_by_key(|t| t["endpoint"].as_str().unwrap().to_owned());
    assert_eq!(active[0]["endpoint"], format!("http://{address}/a"));
    assert_eq!(
        active[0]["labels"],
        json!({"env": "prod", "instance": address, "job": "nodes", "path": "a"})
    );
    assert_eq!(active[0]["discovered_labels"]["__meta_url"], sd.url("/sd"));
    assert_eq!(active[0]["discovered_labels"]["__scheme__"], "http");
    let dropped_view = view["dropped_targets"].as_array().unwrap();
    assert_eq!(dropped_view.len(), 1);
    assert_eq!(
        dropped_view[0]["discovered_labels"]["__address__"],
        "127.0.0.1:9"
    );
    assert_eq!(dropped_view[0]["discovered_labels"]["job"], "nodes");

    // Rows carry the target's labels; the exposition's own `job` is kept as `exported_job`.
    let sets = wait_for("rows of both targets", Duration::from_secs(15), || {
        let sets = label_sets(dir.path(), "nodes", "m");
        (sets.len() == 2).then_some(sets)
    })
    .await;
    assert!(
        sets.contains(&json!({"zone": "a", "exported_job": "app", "env": "prod", "instance": address, "job": "nodes", "path": "a"})),
        "{sets:?}"
    );
    // Rows of different targets land on the same grid timestamps.
    let conn = open(dir.path(), "metrics.sqlite").unwrap();
    wait_for("a bucket with both targets' rows", Duration::from_secs(10), || {
        let shared: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT timestamp FROM nodes WHERE name = 'up' GROUP BY timestamp HAVING count(*) = 2)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (shared >= 1).then_some(())
    })
    .await;
    let off_grid: i64 = conn
        .query_row(
            "SELECT count(*) FROM nodes WHERE timestamp % 200 != 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(off_grid, 0);

    // Managed connectors cannot be changed or removed by hand.
    let before = managed(&daemon);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before
            .iter()
            .all(|(name, _)| name.starts_with(&format!("nodes/{address}/")))
    );
    let put = call(
        &daemon,
        "DELETE",
        &format!("/v1/connectors/{}", before[0].1),
        None,
    );
    assert_eq!(put.status, 409, "{}", put.body);
    assert!(
        put.error().1.contains("is managed by discovery `nodes`"),
        "{}",
        put.body
    );

    // Group b goes: its connector goes, its rows stay; it comes back with its old id.
    let b_id = before
        .iter()
        .find(|(_, id)| {
            active
                .iter()
                .any(|t| t["connector_id"] == *id && t["labels"]["path"] == "b")
        })
        .unwrap()
        .1
        .clone();
    list.lock().unwrap().1 = json!([group_a, dropped]);
    wait_for("b's connector removed", Duration::from_secs(10), || {
        (managed(&daemon).len() == 1).then_some(())
    })
    .await;
    let rows_of_b: i64 = conn
        .query_row(
            "SELECT count(*) FROM nodes WHERE json_extract(labels, '$.team') = 'db'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rows_of_b > 0);
    list.lock().unwrap().1 = json!([group_a, group_b, dropped]);
    let back = wait_for("b back", Duration::from_secs(10), || {
        let m = managed(&daemon);
        (m.len() == 2).then_some(m)
    })
    .await;
    assert!(
        back.iter().any(|(_, id)| *id == b_id),
        "{back:?} lacks {b_id}"
    );

    // /metrics counts targets and refreshes per discovery.
    let metrics = daemon.get("/metrics");
    let discovery_id = view["id"].as_str().unwrap().to_owned();
    let labels = format!("discovery_id=\"{discovery_id}\",discovery=\"nodes\",org_id=\"default\"");
    for line in [
        format!("connectord_discovery_targets{{{labels},state=\"active\"}} 2"),
        format!("connectord_discovery_targets{{{labels},state=\"dropped\"}} 1"),
        format!("connectord_discovery_refreshes_total{{{labels},outcome=\"error\"}} 0"),
        format!("connectord_discovery_connector_changes_total{{{labels},change=\"removed\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }

    // An SD error keeps the targets and shows the error.
    list.lock().unwrap().0 = 500;
    let view = wait_for("the error in the status", Duration::from_secs(10), || {
        let v = discovery_view(&daemon);
        v["status"]["error"].as_str().is_some().then_some(v)
    })
    .await;
    assert!(
        view["status"]["error"].as_str().unwrap().contains("500"),
        "{view}"
    );
    let failed = format!("connectord_discovery_refreshes_total{{{labels},outcome=\"error\"}} 0");
    wait_for("a failed refresh counted", Duration::from_secs(10), || {
        (!daemon.get("/metrics").contains(&failed)).then_some(())
    })
    .await;
    assert_eq!(view["active_targets"].as_array().unwrap().len(), 2);
    assert_eq!(managed(&daemon), back);

    // After a restart the same targets have the same connectors.
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    list.lock().unwrap().0 = 200;
    let config = dir.path().join("connectord.toml");
    let daemon = Daemon::start(&config, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(managed(&daemon), back);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_follows_file_changes_and_keeps_a_broken_files_last_targets() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let address = exporter.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir).unwrap();
    let json_file = sd_dir.join("a.json");
    let yaml_file = sd_dir.join("b.yml");
    std::fs::write(
        &json_file,
        json!([{"targets": [address], "labels": {"__metrics_path__": "/a"}}]).to_string(),
    )
    .unwrap();
    // refresh_ms is long: only the watch can make the later changes show in time.
    let kind = format!(
        "type = \"file_sd\"\nfiles = [\"{}/*.json\", \"{}/*.yml\"]",
        sd_dir.display(),
        sd_dir.display()
    );
    let daemon = start(
        dir.path(),
        &discovery_toml(&kind, "files").replace("refresh_ms = 300", "refresh_ms = 600000"),
    );
    // A refresh records its status after it syncs the connectors: wait for both.
    let view = wait_for("one target", Duration::from_secs(10), || {
        let view = discovery_view(&daemon);
        (managed(&daemon).len() == 1 && view["status"]["active_targets"] == 1).then_some(view)
    })
    .await;
    assert_eq!(
        view["active_targets"][0]["discovered_labels"]["__meta_filepath"],
        json_file.display().to_string()
    );

    std::fs::write(
        &yaml_file,
        format!("- targets: ['{address}']\n  labels:\n    __metrics_path__: /b\n    team: db\n"),
    )
    .unwrap();
    wait_for("the YAML file's target", Duration::from_secs(10), || {
        (managed(&daemon).len() == 2).then_some(())
    })
    .await;
    let two = managed(&daemon);

    // A broken file keeps its last good targets and says where it broke.
    std::fs::write(
        &yaml_file,
        format!("- targets: ['{address}']\n  labels: {{team: db\n"),
    )
    .unwrap();
    let view = wait_for("the parse error", Duration::from_secs(10), || {
        let v = discovery_view(&daemon);
        v["status"]["error"].as_str().is_some().then_some(v)
    })
    .await;
    let error = view["status"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}: line 3, column 1: ", yaml_file.display())),
        "{error}"
    );
    let files = view["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{view}");
    assert_eq!(files[1]["targets"], 1);
    assert_eq!(managed(&daemon), two);

    // A file removed takes its targets with it.
    std::fs::remove_file(&yaml_file).unwrap();
    let view = wait_for("the YAML target gone", Duration::from_secs(10), || {
        let view = discovery_view(&daemon);
        (managed(&daemon).len() == 1 && view["status"]["active_targets"] == 1).then_some(view)
    })
    .await;
    assert_eq!(view["status"]["error"], Value::Null, "{view}");
    assert_eq!(view["files"].as_array().map(Vec::len), Some(1), "{view}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discoveries_over_the_api_are_checked_and_take_their_connectors_when_deleted() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let address = exporter.addr().to_string();
    let list = Arc::new(Mutex::new((200, json!([{"targets": [address]}]))));
    let sd = sd_server(Arc::clone(&list)).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "");
    let good = json!({
        "name": "api-nodes",
        "type": "http_sd",
        "url": sd.url("/sd"),
        "refresh_ms": 300,
        "relabel_configs": [{"source_labels": ["__address__"], "regex": "(.*):.*", "target_label": "host"}],
        "template": {"type": "prometheus", "target_database": "metrics", "target_table": "api_nodes", "schedule_ms": 500}
    });
    let refused = |body: Value, want: &str| {
        let r = call(&daemon, "POST", "/v1/discoveries", Some(body));
        assert_eq!(r.status, 400, "{}", r.body);
        let message = r.error().1;
        assert!(message.starts_with(want), "{message}");
    };
    let mut bad = good.clone();
    bad["relabel_configs"][0]["regex"] = json!("(");
    refused(bad, "relabel_configs[0].regex: invalid regex `(`");
    let mut bad = good.clone();
    bad["relabel_configs"][0]["action"] = json!("hashmod");
    refused(
        bad,
        "relabel_configs[0].modulus: relabel configuration for hashmod requires non-zero modulus",
    );
    let mut bad = good.clone();
    bad["template"]["config"] = json!({"endpoint": "http://x/metrics"});
    refused(
        bad,
        "template.config.endpoint: comes from each discovered target",
    );
    let mut bad = good.clone();
    bad["template"]["type"] = json!("nope");
    refused(bad, "template.type: unknown connector type `nope`");
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("template");
    refused(bad, "discovery: missing field `template`");
    let mut bad = good.clone();
    bad["type"] = json!("file_sd");
    bad.as_object_mut().unwrap().remove("url");
    bad["files"] = json!(["/etc/targets/*.json"]);
    refused(
        bad,
        "files[0]: connectors created over the API may not name files on this server",
    );
    let mut bad = good.clone();
    bad["name"] = json!("a/b");
    refused(bad, "name: `a/b`: use 1 to 64 ASCII letters");

    let created = call(&daemon, "POST", "/v1/discoveries", Some(good.clone()));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&daemon, "POST", "/v1/discoveries", Some(good.clone())).status,
        409
    );
    let connectors = wait_for("the target's connector", Duration::from_secs(10), || {
        let m = managed(&daemon);
        (m.len() == 1).then_some(m)
    })
    .await;
    let one = call(&daemon, "GET", &format!("/v1/discoveries/{id}"), None).json();
    assert_eq!(one["origin"], "api");
    assert_eq!(one["active_targets"][0]["labels"]["host"], "127.0.0.1");
    let mut renamed = good.clone();
    renamed["name"] = json!("other");
    let r = call(
        &daemon,
        "PUT",
        &format!("/v1/discoveries/{id}"),
        Some(renamed),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.error()
            .1
            .starts_with("name: a discovery cannot be renamed"),
        "{}",
        r.body
    );
    let mut changed = good.clone();
    changed["template"]["schedule_ms"] = json!(1000);
    let r = call(
        &daemon,
        "PUT",
        &format!("/v1/discoveries/{id}"),
        Some(changed),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(
        "the new schedule on the connector",
        Duration::from_secs(10),
        || {
            let c = call(
                &daemon,
                "GET",
                &format!("/v1/connectors/{}", connectors[0].1),
                None,
            )
            .json();
            (c["schedule_ms"] == 1000).then_some(())
        },
    )
    .await;
    let r = call(&daemon, "DELETE", &format!("/v1/discoveries/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(managed(&daemon).is_empty());
    assert_eq!(
        call(&daemon, "GET", &format!("/v1/discoveries/{id}"), None).status,
        404
    );

    // More kept targets than target_limit: the refresh fails and makes no connector.
    let mut bad = good.clone();
    bad["target_limit"] = json!(0);
    refused(
        bad,
        "target_limit: 0 is out of range, expected 1 to 1000000",
    );
    list.lock().unwrap().1 = json!([{"targets": [address, "127.0.0.1:9"]}]);
    let mut limited = good.clone();
    limited["target_limit"] = json!(1);
    let created = call(&daemon, "POST", "/v1/discoveries", Some(limited));
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let view = wait_for("the limit's error", Duration::from_secs(10), || {
        let v = call(&daemon, "GET", &format!("/v1/discoveries/{id}"), None).json();
        v["status"]["error"].as_str().is_some().then_some(v)
    })
    .await;
    assert_eq!(
        view["status"]["error"],
        "2 targets kept after relabeling, more than target_limit (1)"
    );
    assert!(managed(&daemon).is_empty());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sd_over_tls_with_a_bearer_token_from_the_environment() {
    let exporter = TestServer::start(|_| Reply::ok(BODY)).await;
    let address = exporter.addr().to_string();
    let target = json!([{"targets": [address]}]);
    let sd = TestServer::start_tls(move |_| Reply::json(&target)).await;
    let dir = tempfile::tempdir().unwrap();
    let kind = format!(
        "type = \"http_sd\"\nurl = \"{}\"\nauth = {{ type = \"bearer\", token_ref = \"$env:SD_TOKEN\" }}\ntls = {{ ca_file = \"{}\" }}",
        sd.url("/sd"),
        sd.ca_file().unwrap().display()
    );
    let config = write_config(dir.path(), &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&discovery_toml(&kind, "tls_nodes"));
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, &[("SD_TOKEN", "sd-s3cr3t-t0ken-value")]);
    wait_for("the target over TLS", Duration::from_secs(10), || {
        (managed(&daemon).len() == 1).then_some(())
    })
    .await;
    let seen = sd.requests();
    assert_eq!(
        seen[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        "Bearer sd-s3cr3t-t0ken-value"
    );
    assert_eq!(
        seen[0].headers.get("accept").unwrap().to_str().unwrap(),
        "application/json"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("sd-s3cr3t"), "the token leaked into the log");
}

#[test]
fn the_example_config_declares_a_discovery_that_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["validate", "--config", "examples/connectord.toml"])
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 1 discoveries (discovered)"),
        "{stdout}"
    );
}
