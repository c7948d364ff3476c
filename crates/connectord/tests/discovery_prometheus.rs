//! The differential test of relabeling: the same file_sd file and the same
//! relabel_configs, one job per case, given to a real Prometheus 2.42 (Debian's
//! `prometheus`) and to connectord. For every case, Prometheus's `/api/v1/targets`
//! and connectord's `/v1/discoveries/:id` must agree on the active targets (their
//! labels and scrape URLs), on how many were dropped, and on the labels every
//! target was discovered with.
//!
//! Prometheus 2.42 shows wrong discovered labels for targets whose labels a rule
//! changed: its relabeling writes its result into the storage of the label set it
//! keeps as the discovered one (prometheus/prometheus#11960; this test found it).
//! So the discovered labels are compared with those Prometheus shows for a job
//! with the same file and no rules (which it leaves intact), the job name aside.
//! connectord does not set `__scrape_interval__` and `__scrape_timeout__` (a
//! target's schedule is the template's `schedule_ms`): they are left out of
//! Prometheus's side. Outside CI a missing `prometheus` binary skips the test;
//! under CI=true it fails it.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, call, free_port, wait_for, write_config_with};

/// Target groups on loopback addresses only: Prometheus may scrape them.
fn targets() -> Value {
    json!([
        {"targets": ["127.0.0.1:9100", "127.0.0.2:9100", "localhost:9200"],
         "labels": {"env": "prod", "team": "Web", "__meta_x_zone": "eu-1", "__meta_x_role": "db"}},
        {"targets": ["127.0.0.3"], "labels": {"env": "dev", "__meta_x_zone": "us-22"}},
        {"targets": ["127.0.0.4:9300"],
         "labels": {"__scheme__": "https", "__metrics_path__": "/probe", "__param_module": "http_2xx", "env": "staging", "team": "OPS"}},
        {"targets": ["[::1]:9400", "127.0.0.5:9500"], "labels": {"team": "db", "__meta_x_role": "cache"}}
    ])
}

/// One job: its relabel rules and, optionally, the job's scheme, metrics path and params.
struct Case {
    rules: Value,
    job: Value,
}

fn case(rules: Value) -> Case {
    Case {
        rules,
        job: json!({}),
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Defaults: job, instance from the address, ports added, meta labels gone.
        case(json!([])),
        // replace with groups; `\d` is ASCII as in Go.
        case(
            json!([{"source_labels": ["__address__"], "regex": "(.*):(\\d+)", "target_label": "host", "replacement": "$1"}]),
        ),
        case(
            json!([{"source_labels": ["__address__"], "regex": "(?P<h>[^:]+):(?P<p>\\d+)", "target_label": "hp", "replacement": "${p}-${h}"}]),
        ),
        // A templated target label, and one that expands to an invalid name.
        case(
            json!([{"source_labels": ["__meta_x_zone"], "regex": "(\\w+)-\\d+", "target_label": "zone_$1", "replacement": "yes"}]),
        ),
        case(json!([{"source_labels": ["__address__"], "target_label": "x_$1"}])),
        // keep / drop, anchored.
        case(json!([{"source_labels": ["env"], "regex": "prod|staging", "action": "keep"}])),
        case(json!([{"source_labels": ["env"], "regex": "pro", "action": "keep"}])),
        case(
            json!([{"source_labels": ["__address__"], "regex": "127\\.0\\.0\\.2.*", "action": "drop"}]),
        ),
        case(json!([{"source_labels": ["team"], "regex": "(?i)web|ops", "action": "keep"}])),
        // keepequal / dropequal, with missing labels on both sides.
        case(json!([{"source_labels": ["env"], "target_label": "team", "action": "keepequal"}])),
        case(
            json!([{"source_labels": ["nothing"], "target_label": "nada", "action": "dropequal"}]),
        ),
        case(json!([
            {"source_labels": ["__meta_x_role"], "target_label": "role"},
            {"source_labels": ["team"], "target_label": "role", "action": "dropequal"}
        ])),
        // hashmod, sharding on a temporary label.
        case(json!([
            {"source_labels": ["__address__"], "modulus": 4, "target_label": "__tmp_hash", "action": "hashmod"},
            {"source_labels": ["__tmp_hash"], "regex": "1|3", "action": "keep"}
        ])),
        case(
            json!([{"source_labels": ["__address__", "env"], "modulus": 1000, "target_label": "shard", "action": "hashmod"}]),
        ),
        // labelmap, labeldrop, labelkeep (the last removes __address__: no target left).
        case(json!([{"regex": "__meta_x_(.+)", "action": "labelmap"}])),
        case(json!([{"regex": "__meta_x_(.+)", "replacement": "meta_${1}", "action": "labelmap"}])),
        case(json!([{"regex": "team|env", "action": "labeldrop"}])),
        case(json!([{"regex": "__.*|job|env", "action": "labelkeep"}])),
        case(json!([{"regex": "env", "action": "labelkeep"}])),
        // lowercase / uppercase, separators.
        case(
            json!([{"source_labels": ["team"], "target_label": "team_lc", "action": "lowercase"}]),
        ),
        case(
            json!([{"source_labels": ["env", "team"], "separator": "-", "target_label": "tag", "action": "uppercase"}]),
        ),
        case(
            json!([{"source_labels": ["env", "__meta_x_zone"], "separator": "/", "regex": "prod/(.*)", "target_label": "region"}]),
        ),
        // Missing and empty source values; an empty replacement removes the label.
        case(
            json!([{"source_labels": ["nonexistent"], "regex": "", "target_label": "empty_match", "replacement": "matched"}]),
        ),
        case(
            json!([{"source_labels": ["env"], "regex": "dev", "target_label": "env", "replacement": ""}]),
        ),
        // __param_, __scheme__, __metrics_path__, instance, job, __address__ rewrites.
        case(json!([{"source_labels": ["__meta_x_role"], "target_label": "__param_role"}])),
        Case {
            rules: json!([{"source_labels": ["env"], "regex": "prod", "target_label": "__param_module", "replacement": "tcp"}]),
            job: json!({"params": {"module": "http_2xx", "debug": "true"}}),
        },
        case(
            json!([{"source_labels": ["env"], "regex": "prod", "target_label": "__scheme__", "replacement": "https"}]),
        ),
        case(
            json!([{"source_labels": ["__meta_x_role"], "regex": "(.+)", "target_label": "__metrics_path__", "replacement": "/metrics/$1"}]),
        ),
        Case {
            rules: json!([]),
            job: json!({"scheme": "https", "metrics_path": "/custom path"}),
        },
        case(
            json!([{"source_labels": ["__address__"], "regex": "([^:]+):.*", "target_label": "instance"}]),
        ),
        case(json!([{"target_label": "job", "replacement": "renamed"}])),
        // An address rewritten without a port gets the scheme's. (A rewrite to `[` makes
        // a target Prometheus keeps but can never scrape; connectord lists it as
        // invalid instead, since no connector can have that URL.)
        case(
            json!([{"source_labels": ["__address__"], "regex": "(127\\.[^:]+|localhost):.*", "target_label": "__address__"}]),
        ),
    ]
}

/// The Prometheus job of a case: `params` as lists, as Prometheus writes them.
fn prometheus_job(name: &str, case: &Case, file: &str) -> Value {
    let mut job = json!({
        "job_name": name,
        "scrape_interval": "1h",
        "scrape_timeout": "10s",
        "file_sd_configs": [{"files": [file]}],
        "relabel_configs": case.rules,
    });
    for key in ["scheme", "metrics_path"] {
        if let Some(v) = case.job.get(key) {
            job[key] = v.clone();
        }
    }
    if let Some(params) = case.job["params"].as_object() {
        job["params"] = params
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    job
}

fn connectord_discovery(name: &str, case: &Case, file: &str) -> Value {
    let mut template = json!({"type": "prometheus", "target_database": "metrics", "target_table": "diff", "schedule_ms": 86_400_000});
    for key in ["scheme", "metrics_path", "params"] {
        if let Some(v) = case.job.get(key) {
            template[key] = v.clone();
        }
    }
    json!({"name": name, "type": "file_sd", "files": [file], "refresh_ms": 60_000, "relabel_configs": case.rules, "template": template})
}

/// Active targets as (labels, discovered labels, URL) and dropped ones as discovered
/// labels, each sorted, per job.
type Seen = BTreeMap<String, (Vec<(Value, Value, String)>, Vec<Value>)>;

fn without_interval(mut labels: Value) -> Value {
    let object = labels.as_object_mut().unwrap();
    object.remove("__scrape_interval__");
    object.remove("__scrape_timeout__");
    labels
}

fn prometheus_seen(targets: &Value) -> Seen {
    let mut seen = Seen::new();
    for t in targets["activeTargets"].as_array().unwrap() {
        let job = t["scrapePool"].as_str().unwrap().to_owned();
        let url = t["scrapeUrl"].as_str().unwrap().to_owned();
        seen.entry(job).or_default().0.push((
            t["labels"].clone(),
            without_interval(t["discoveredLabels"].clone()),
            url,
        ));
    }
    for t in targets["droppedTargets"].as_array().unwrap() {
        let job = t["discoveredLabels"]["job"].as_str().unwrap().to_owned();
        seen.entry(job)
            .or_default()
            .1
            .push(without_interval(t["discoveredLabels"].clone()));
    }
    for (active, dropped) in seen.values_mut() {
        active.sort_by_key(|a| a.1.to_string());
        dropped.sort_by_key(Value::to_string);
    }
    seen
}

fn connectord_seen(view: &Value) -> (Vec<(Value, Value, String)>, Vec<Value>) {
    let mut active: Vec<(Value, Value, String)> = view["active_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["labels"].clone(),
                t["discovered_labels"].clone(),
                t["endpoint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut dropped: Vec<Value> = view["dropped_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["discovered_labels"].clone())
        .collect();
    active.sort_by_key(|a| a.1.to_string());
    dropped.sort_by_key(Value::to_string);
    (active, dropped)
}

fn prometheus_targets(port: u16) -> Option<Value> {
    let text = support::http_get(([127, 0, 0, 1], port).into(), "/api/v1/targets");
    let body = text.split_once("\r\n\r\n")?.1;
    let value: Value = serde_json::from_str(body).ok()?;
    (value["status"] == "success").then(|| value["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabeling_agrees_with_prometheus_on_every_case() {
    if Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true but `prometheus` is not installed"
        );
        eprintln!("skipped: `prometheus` is not installed (apt install prometheus)");
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 25);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.json");
    std::fs::write(&file, targets().to_string()).unwrap();
    let file = file.display().to_string();
    let names: Vec<String> = (1..=cases.len()).map(|i| format!("case_{i:02}")).collect();

    let mut jobs: Vec<Value> = names
        .iter()
        .zip(&cases)
        .map(|(n, c)| prometheus_job(n, c, &file))
        .collect();
    // One job without rules per job-level setting (scheme, path, params): the
    // discovered labels as Prometheus shows them intact.
    let mut baselines: Vec<Value> = Vec::new();
    for case in &cases {
        if !baselines.contains(&case.job) {
            baselines.push(case.job.clone());
        }
    }
    let baseline_name =
        |job: &Value| format!("base_{}", baselines.iter().position(|b| b == job).unwrap());
    for job in &baselines {
        jobs.push(prometheus_job(
            &baseline_name(job),
            &Case {
                rules: json!([]),
                job: job.clone(),
            },
            &file,
        ));
    }
    let prometheus_config = dir.path().join("prometheus.yml");
    // JSON is YAML: Prometheus reads it as written.
    std::fs::write(
        &prometheus_config,
        json!({"scrape_configs": jobs}).to_string(),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prometheus_config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();

    let config = write_config_with(
        dir.path(),
        &format!("api_file_roots = [\"{}\"]", dir.path().display()),
        &[],
    );
    let daemon = Daemon::start(&config, &[]);
    let mut ids = Vec::new();
    for (name, case) in names.iter().zip(&cases) {
        let r = call(
            &daemon,
            "POST",
            "/v1/discoveries",
            Some(connectord_discovery(name, case, &file)),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }

    // connectord's view of every case first: it tells how many targets Prometheus
    // must show per job (targets with no usable address are in neither list).
    let expected_per_job = 7;
    let mut ours = BTreeMap::new();
    for (name, id) in names.iter().zip(&ids) {
        let view = wait_for("connectord's refresh", Duration::from_secs(30), || {
            let v = call(&daemon, "GET", &format!("/v1/discoveries/{id}"), None).json();
            v["status"]["refreshed_at"].is_i64().then_some(v)
        })
        .await;
        assert_eq!(view["status"]["error"], Value::Null, "{name}: {view}");
        ours.insert(name.clone(), view);
    }
    let count = |v: &Value| {
        v["active_targets"].as_array().unwrap().len()
            + v["dropped_targets"].as_array().unwrap().len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let theirs = loop {
        let seen = prometheus_targets(port)
            .map(|t| prometheus_seen(&t))
            .unwrap_or_default();
        let loaded = ours
            .iter()
            .all(|(n, v)| seen.get(n).map_or(0, |(a, d)| a.len() + d.len()) == count(v))
            && baselines.iter().all(|b| {
                seen.get(&baseline_name(b))
                    .is_some_and(|(a, _)| a.len() == expected_per_job)
            });
        if loaded
            || std::time::Instant::now() > deadline
            || prometheus.try_wait().unwrap().is_some()
        {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();

    let (mut compared, mut shown_intact) = (0, 0);
    for ((name, view), case) in ours.iter().zip(&cases) {
        let theirs_case = theirs.get(name).cloned().unwrap_or_default();
        let active = |list: &[(Value, Value, String)]| {
            let mut v: Vec<(String, String)> = list
                .iter()
                .map(|(l, _, u)| (l.to_string(), u.clone()))
                .collect();
            v.sort();
            v
        };
        let (mine_active, mine_dropped) = connectord_seen(view);
        assert_eq!(
            active(&mine_active),
            active(&theirs_case.0),
            "{name}: active targets' labels and URLs differ (connectord left, Prometheus right)"
        );
        assert_eq!(
            mine_dropped.len(),
            theirs_case.1.len(),
            "{name}: dropped targets differ: {mine_dropped:?} vs {:?}",
            theirs_case.1
        );
        // Every target's discovered labels, as Prometheus shows them for the rule-less job.
        let mut expected: Vec<String> = theirs[&baseline_name(&case.job)]
            .0
            .iter()
            .map(|(_, discovered, _)| {
                let mut d = discovered.clone();
                d["job"] = json!(name);
                d.to_string()
            })
            .collect();
        expected.sort();
        let mut discovered: Vec<String> = mine_active
            .iter()
            .map(|a| a.1.to_string())
            .chain(mine_dropped.iter().map(Value::to_string))
            .chain(
                view["invalid_targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["discovered_labels"].to_string()),
            )
            .collect();
        discovered.sort();
        assert_eq!(
            discovered, expected,
            "{name}: discovered labels differ (connectord left, Prometheus right)"
        );
        // The same targets were dropped, wherever Prometheus shows them intact.
        for dropped in &theirs_case.1 {
            if expected.contains(&dropped.to_string()) {
                assert!(
                    mine_dropped.contains(dropped),
                    "{name}: Prometheus dropped {dropped}, connectord did not"
                );
            }
        }
        shown_intact += mine_active
            .iter()
            .map(|a| &a.1)
            .chain(&mine_dropped)
            .filter(|d| {
                theirs_case
                    .0
                    .iter()
                    .map(|t| &t.1)
                    .chain(&theirs_case.1)
                    .any(|t| t == *d)
            })
            .count();
        compared += count(view);
    }
    eprintln!(
        "{} cases, {compared} targets: labels, URLs and drops agree with Prometheus 2.42; \
         {shown_intact} of them Prometheus also showed with intact discovered labels",
        cases.len()
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
