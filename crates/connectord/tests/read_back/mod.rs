//! Reading what a receiver holds back through its own query API: VictoriaMetrics'
//! export, InfluxDB's `/query`, Prometheus's `/api/v1/query`, each as a list of
//! samples, and the wait for a receiver to make what it accepted searchable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Response, request};

/// Where `cargo xtask services up` runs each receiver.
pub struct Receivers {
    pub victoria: SocketAddr,
    pub influxdb: SocketAddr,
    pub prometheus: SocketAddr,
}

/// The receivers' addresses; `None` (a skip) outside CI when they are not running.
pub fn receivers() -> Option<Receivers> {
    let addr = |var: &str| {
        let url = std::env::var(var).ok()?;
        url.strip_prefix("http://")?.parse::<SocketAddr>().ok()
    };
    let found = (|| {
        Some(Receivers {
            victoria: addr("VICTORIA_METRICS_URL")?,
            influxdb: addr("INFLUXDB_URL")?,
            prometheus: addr("PROMETHEUS_URL")?,
        })
    })();
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "VICTORIA_METRICS_URL, INFLUXDB_URL and PROMETHEUS_URL must be set under CI=true"
        );
        eprintln!("skipped: the receivers are not running (eval \"$(cargo xtask services up)\")");
    }
    found
}

/// (name, labels without empty values, timestamp ms, value).
pub type Sample = (String, BTreeMap<String, String>, i64, u64);

/// Reads the samples of one run id back from a receiver.
pub type Reader<'a> = Box<dyn Fn(&str) -> Vec<Sample> + 'a>;

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let encode = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", encode(k), encode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn post_form(addr: SocketAddr, path: &str, pairs: &[(&str, &str)]) -> Response {
    let body = form(pairs);
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body.as_bytes()),
    )
}

/// Every raw sample of `run` in VictoriaMetrics, duplicates kept as a list.
pub fn victoria_samples(addr: SocketAddr, run: &str) -> Vec<Sample> {
    request(addr, "GET", "/internal/force_flush", &[], None);
    let r = post_form(
        addr,
        "/api/v1/export",
        &[("match[]", &format!("{{run=\"{run}\"}}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = Vec::new();
    for line in r.body.lines().filter(|l| !l.is_empty()) {
        let series: Value = serde_json::from_str(line).unwrap();
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(series["metric"].clone()).unwrap();
        let name = labels.remove("__name__").unwrap();
        let values = series["values"].as_array().unwrap();
        let stamps = series["timestamps"].as_array().unwrap();
        for (v, t) in values.iter().zip(stamps) {
            out.push((
                name.clone(),
                labels.clone(),
                t.as_i64().unwrap(),
                v.as_f64().unwrap().to_bits(),
            ));
        }
    }
    out
}

/// Every point of `run` in InfluxDB database `db`.
pub fn influxdb_samples(addr: SocketAddr, db: &str, run: &str) -> Vec<Sample> {
    let r = post_form(
        addr,
        "/query",
        &[
            ("db", db),
            ("epoch", "ms"),
            (
                "q",
                &format!("SELECT * FROM /demo_.*/ WHERE \"run\" = '{run}'"),
            ),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let mut out = Vec::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = series["name"].as_str().unwrap().to_owned();
        let columns: Vec<String> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        for row in series["values"].as_array().unwrap() {
            let mut labels = BTreeMap::new();
            let (mut time, mut value) = (0, 0.0);
            for (column, cell) in columns.iter().zip(row.as_array().unwrap()) {
                match column.as_str() {
                    "time" => time = cell.as_i64().unwrap(),
                    "value" => value = cell.as_f64().unwrap(),
                    tag => {
                        if let Some(text) = cell.as_str() {
                            labels.insert(tag.to_owned(), text.to_owned());
                        }
                    }
                }
            }
            out.push((name.clone(), labels, time, value.to_bits()));
        }
    }
    out
}

/// Every raw sample of `run` in Prometheus's TSDB from the last two hours.
pub fn prometheus_samples(addr: SocketAddr, run: &str) -> Vec<Sample> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let r = post_form(
        addr,
        "/api/v1/query",
        &[
            ("query", &format!("{{run=\"{run}\"}}[2h]")),
            ("time", &now.to_string()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let mut out = Vec::new();
    for series in v["data"]["result"].as_array().unwrap() {
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(series["metric"].clone()).unwrap();
        let name = labels.remove("__name__").unwrap();
        for point in series["values"].as_array().unwrap() {
            #[allow(clippy::cast_possible_truncation)]
            let ms = (point[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = point[1].as_str().unwrap().parse().unwrap();
            out.push((name.clone(), labels.clone(), ms, value.to_bits()));
        }
    }
    out
}

/// Samples as a set, failing on any sample held twice.
pub fn once(samples: Vec<Sample>, receiver: &str) -> BTreeSet<Sample> {
    let count = samples.len();
    let set: BTreeSet<Sample> = samples.into_iter().collect();
    assert_eq!(set.len(), count, "{receiver} holds a sample twice");
    set
}

/// Reads a receiver until it holds `want` (a receiver makes accepted samples
/// searchable after a moment), then checks it holds exactly that, each once.
pub async fn assert_holds(receiver: &str, read: impl Fn() -> Vec<Sample>, want: &BTreeSet<Sample>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let held = read();
        let settled = held.len() >= want.len() || std::time::Instant::now() > deadline;
        if settled {
            let held = once(held, receiver);
            let missing: Vec<_> = want.difference(&held).collect();
            let extra: Vec<_> = held.difference(want).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{receiver} holds other samples than committed: missing {missing:?}, extra {extra:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn create_influx_database(addr: SocketAddr, db: &str) {
    let r = post_form(
        addr,
        "/query",
        &[("q", &format!("CREATE DATABASE \"{db}\""))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
}
