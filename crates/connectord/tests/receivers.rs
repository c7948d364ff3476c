//! Destinations against real receivers on 127.0.0.1, started by `cargo xtask
//! services up`: VictoriaMetrics (Influx line protocol and remote write), InfluxDB
//! 1.x and Prometheus's remote-write receiver. What each receiver holds afterwards is
//! read back through its own query API and compared with the committed rows.
//! Outside CI a missing receiver skips these tests; under CI=true it fails them.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod read_back;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use read_back::{
    Reader, Sample, assert_holds, create_influx_database, influxdb_samples, prometheus_samples,
    receivers, victoria_samples,
};
use support::{Daemon, Declared, call, connector, expected_rows, ledger, wait_for};

/// An exporter body whose every sample carries `run`, so tests sharing a receiver
/// read back only their own series. Label values with spaces, commas, `=`, quotes,
/// a lone backslash and unicode; a NaN (no sample to send) and a value ending in a
/// backslash (which line protocol cannot carry unambiguously: skipped by `influx`).
fn body(run: &str) -> String {
    format!(
        "# TYPE demo_total counter\n\
         demo_total{{run=\"{run}\",path=\"/a b\",q=\"x,y=z\",quote=\"say \\\"hi\\\"\",city=\"Zürich ✓\"}} 3\n\
         demo_total{{run=\"{run}\",path=\"/c\",dir=\"C:\\\\Temp\",empty=\"\"}} 4\n\
         demo_gauge{{run=\"{run}\"}} 2.5\n\
         demo_nan{{run=\"{run}\"}} NaN\n\
         demo_tricky{{run=\"{run}\",end=\"x\\\\\"}} 1\n"
    )
}

/// What a receiver must hold for `buckets` of `body`: each finite sample at each
/// bucket's time; `influx` also leaves out what line protocol cannot carry.
fn expected(body: &str, buckets: &[i64], influx: bool) -> BTreeSet<Sample> {
    let mut out = BTreeSet::new();
    for (name, value, labels) in expected_rows(body) {
        let Some(value) = value else { continue };
        if influx && name == "demo_tricky" {
            continue;
        }
        let labels: BTreeMap<String, String> =
            serde_json::from_str::<BTreeMap<String, String>>(&labels)
                .unwrap()
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
        for bucket in buckets {
            out.insert((name.clone(), labels.clone(), *bucket, value.to_bits()));
        }
    }
    out
}

fn write_config(dir: &Path, sources: &[(Declared<'_>, &str)]) -> std::path::PathBuf {
    let declared: Vec<Declared<'_>> = sources
        .iter()
        .map(|(d, _)| Declared {
            name: d.name,
            table: d.table,
            schedule_ms: d.schedule_ms,
            config: d.config.clone(),
        })
        .collect();
    let path = support::write_config(dir, &declared);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (_, destinations) in sources {
        text.push_str(destinations);
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn destination(name: &str, kind: &str, source: &str, config: &str) -> String {
    destination_with(name, kind, source, "", config)
}

/// A `[[destinations]]` block with `extra` lines (`on_permanent = ...`).
fn destination_with(name: &str, kind: &str, source: &str, extra: &str, config: &str) -> String {
    format!(
        "\n[[destinations]]\nname = \"{name}\"\ntype = \"{kind}\"\nsource = \"{source}\"\n{extra}\n\
         [destinations.config]\n{config}\n"
    )
}

/// `delivered_through` of a destination, from the state database.
fn delivered_through(dir: &Path, name: &str) -> Option<i64> {
    let conn = support::open(dir, "connectord-state.sqlite")?;
    conn.query_row(
        "SELECT delivered_through_ms FROM destinations WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .ok()
    .flatten()
}

fn committed_through(dir: &Path, source_id: &str, through: i64) -> Vec<i64> {
    ledger(dir, source_id)
        .into_iter()
        .map(|(b, _)| b)
        .filter(|b| *b <= through)
        .collect()
}

fn run_id() -> String {
    format!("r{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receiver_holds_exactly_the_committed_samples_with_their_labels() {
    let Some(rx) = receivers() else { return };
    let runs: Vec<String> = (0..4).map(|_| run_id()).collect();
    let exporters: Vec<TestServer> = exporters_for(&runs).await;
    let db = run_id();
    create_influx_database(rx.influxdb, &db);
    let dir = tempfile::tempdir().unwrap();
    let source = |name: &'static str, i: usize| Declared {
        name,
        table: name,
        schedule_ms: 300,
        config: format!("endpoint = \"{}\"", exporters[i].url("/metrics")),
    };
    let secret = "s3cr3t-bearer-token-value";
    let config = write_config(
        dir.path(),
        &[
            (
                source("a", 0),
                &destination(
                    "vm_influx",
                    "influx",
                    "a",
                    &format!(
                        "endpoint = \"http://{}/influx/write\"\nauth = {{ type = \"bearer\", token_ref = \"$env:RECEIVER_TOKEN\" }}",
                        rx.victoria
                    ),
                ),
            ),
            (
                source("b", 1),
                &destination(
                    "vm_remote_write",
                    "prometheus_remote_write",
                    "b",
                    &format!(
                        "endpoint = \"http://{}/api/v1/write\"\nauth = {{ type = \"bearer\", token_ref = \"$env:RECEIVER_TOKEN\" }}",
                        rx.victoria
                    ),
                ),
            ),
            (
                source("c", 2),
                &destination(
                    "influxdb",
                    "influx",
                    "c",
                    &format!("endpoint = \"http://{}/write?db={db}\"", rx.influxdb),
                ),
            ),
            (
                source("d", 3),
                &destination(
                    "prometheus",
                    "prometheus_remote_write",
                    "d",
                    &format!("endpoint = \"http://{}/api/v1/write\"", rx.prometheus),
                ),
            ),
        ],
    );
    let daemon = Daemon::start(&config, &[("RECEIVER_TOKEN", secret)]);
    for name in ["vm_influx", "vm_remote_write", "influxdb", "prometheus"] {
        wait_for(
            &format!("4 buckets delivered by {name}"),
            Duration::from_secs(60),
            || {
                let history = call(&daemon, "GET", "/v1/destinations", None).json();
                let d = history["destinations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["name"] == name)
                    .cloned()?;
                assert_eq!(d["state"], "enabled", "{d}");
                let delivered = call(
                    &daemon,
                    "GET",
                    &format!(
                        "/v1/destinations/{}/deliveries?limit=10",
                        d["id"].as_str().unwrap()
                    ),
                    None,
                )
                .json();
                let ok = delivered["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| x["outcome"] == "delivered")
                    .count();
                (ok >= 4).then_some(())
            },
        )
        .await;
    }
    let api = call(&daemon, "GET", "/v1/destinations", None).body;
    let metrics = daemon.get("/metrics");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    for (what, text) in [("the log", &log), ("the API", &api), ("/metrics", &metrics)] {
        assert!(!text.contains(secret), "the secret is in {what}");
    }
    assert!(api.contains("$env:RECEIVER_TOKEN"));

    let checks: [(&str, &str, usize, bool, Reader<'_>); 4] = [
        (
            "a",
            "vm_influx",
            0,
            true,
            Box::new(|run| victoria_samples(rx.victoria, run)),
        ),
        (
            "b",
            "vm_remote_write",
            1,
            false,
            Box::new(|run| victoria_samples(rx.victoria, run)),
        ),
        (
            "c",
            "influxdb",
            2,
            true,
            Box::new(|run| influxdb_samples(rx.influxdb, &db, run)),
        ),
        (
            "d",
            "prometheus",
            3,
            false,
            Box::new(|run| prometheus_samples(rx.prometheus, run)),
        ),
    ];
    for (source, destination, i, influx, read) in checks {
        let (id, ..) = connector(dir.path(), source).unwrap();
        let through = delivered_through(dir.path(), destination).unwrap();
        let buckets = committed_through(dir.path(), &id, through);
        assert!(buckets.len() >= 4, "{destination}: {buckets:?}");
        let want = expected(&body(&runs[i]), &buckets, influx);
        assert_holds(destination, || read(&runs[i]), &want).await;
    }
}

/// Starts one exporter per run id.
async fn exporters_for(runs: &[String]) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for run in runs {
        let text = body(run);
        servers.push(TestServer::start(move |_| Reply::ok(text.clone())).await);
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_delivering_then_restart_leaves_each_sample_once() {
    let Some(rx) = receivers() else { return };
    let run = run_id();
    // Many series per bucket and small requests, so a kill lands mid-bucket.
    let mut text = String::from("# TYPE wide gauge\n");
    for i in 0..3000 {
        text.push_str(&format!("wide{{run=\"{run}\",i=\"{i}\"}} {i}\n"));
    }
    let served = text.clone();
    let exporter = TestServer::start(move |_| Reply::ok(served.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[(
            Declared {
                name: "wide",
                table: "wide",
                schedule_ms: 250,
                config: format!("endpoint = \"{}\"", exporter.url("/metrics")),
            },
            &format!(
                "{}{}",
                destination(
                    "vm",
                    "influx",
                    "wide",
                    &format!(
                        "endpoint = \"http://{}/influx/write\"\nmax_request_bytes = 4096",
                        rx.victoria
                    ),
                ),
                destination(
                    "prom",
                    "prometheus_remote_write",
                    "wide",
                    &format!(
                        "endpoint = \"http://{}/api/v1/write\"\nmax_samples_per_send = 100",
                        rx.prometheus
                    ),
                ),
            ),
        )],
    );
    for delay in [900, 1300, 700] {
        let daemon = Daemon::start(&config, &[]);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.kill9();
    }
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the source", Duration::from_secs(10), || {
        connector(dir.path(), "wide")
    })
    .await;
    let target = ledger(dir.path(), &id).last().map_or(0, |(b, _)| *b);
    for name in ["vm", "prom"] {
        wait_for(
            &format!("{name} past the buckets of the killed runs"),
            Duration::from_secs(60),
            || (delivered_through(dir.path(), name)? >= target).then_some(()),
        )
        .await;
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    let rows = expected_rows(&text).len();
    let readers: [(&str, Reader<'_>); 2] = [
        ("vm", Box::new(|run| victoria_samples(rx.victoria, run))),
        (
            "prom",
            Box::new(|run| prometheus_samples(rx.prometheus, run)),
        ),
    ];
    for (name, read) in readers {
        let through = delivered_through(dir.path(), name).unwrap();
        let buckets = committed_through(dir.path(), &id, through);
        assert!(buckets.len() >= 3, "{name}: {buckets:?}");
        let want = expected(&text, &buckets, true);
        assert_eq!(want.len(), buckets.len() * rows);
        assert_holds(name, || read(&run), &want).await;
    }
}

/// A TCP proxy on 127.0.0.1 that can refuse service (closing every connection at
/// once) and resume, to take a real receiver away and give it back.
struct Proxy {
    addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = std::sync::Arc::clone(&up);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let flag = std::sync::Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let down = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = down => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lag(metrics: &str, id: &str) -> f64 {
    let prefix = format!("connectord_destination_lag_seconds{{connector_id=\"{id}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gone_for_30_s_makes_buckets_wait_then_drain_in_order() {
    let Some(rx) = receivers() else { return };
    let run = run_id();
    let text = body(&run);
    let served = text.clone();
    let exporter = TestServer::start(move |_| Reply::ok(served.clone())).await;
    let proxy = Proxy::start(rx.victoria).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[(
            Declared {
                name: "app",
                table: "app",
                schedule_ms: 500,
                config: format!("endpoint = \"{}\"", exporter.url("/metrics")),
            },
            &destination(
                "vm",
                "influx",
                "app",
                &format!("endpoint = \"http://{}/influx/write\"", proxy.addr),
            ),
        )],
    );
    let daemon = Daemon::start(&config, &[]);
    let id = wait_for("the destination", Duration::from_secs(10), || {
        let list = call(&daemon, "GET", "/v1/destinations", None).json();
        list["destinations"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    wait_for("a first delivery", Duration::from_secs(20), || {
        delivered_through(dir.path(), "vm")
    })
    .await;
    proxy.set_up(false);
    let down_at = std::time::Instant::now();
    let mut peak = 0.0_f64;
    while down_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(lag(&daemon.get("/metrics"), &id));
    }
    assert!(
        peak >= 20.0,
        "the lag rose while the receiver was gone: {peak}"
    );
    let waiting = call(&daemon, "GET", &format!("/v1/destinations/{id}"), None).json();
    assert_eq!(
        waiting["state"], "enabled",
        "a transient outage halts nothing"
    );
    assert!(waiting["last_error"].as_str().is_some(), "{waiting}");
    let stuck_at = delivered_through(dir.path(), "vm").unwrap();
    proxy.set_up(true);
    wait_for("the backlog drained", Duration::from_secs(60), || {
        (lag(&daemon.get("/metrics"), &id) < 2.0).then_some(())
    })
    .await;
    let history = call(
        &daemon,
        "GET",
        &format!("/v1/destinations/{id}/deliveries?limit=1000"),
        None,
    )
    .json();
    let delivered: Vec<i64> = history["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|d| d["outcome"] == "delivered")
        .map(|d| d["bucket"].as_i64().unwrap())
        .collect();
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "drained oldest first: {delivered:?}"
    );
    assert!(
        delivered.iter().filter(|b| **b > stuck_at).count() >= 50,
        "the buckets of the outage were delivered: {delivered:?}"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    let (source_id, ..) = connector(dir.path(), "app").unwrap();
    let through = delivered_through(dir.path(), "vm").unwrap();
    let buckets = committed_through(dir.path(), &source_id, through);
    let want = expected(&text, &buckets, true);
    assert_holds(
        "victoria-metrics",
        || victoria_samples(rx.victoria, &run),
        &want,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_4xx_halts_or_dead_letters() {
    let Some(rx) = receivers() else { return };
    let exporter = TestServer::start(|_| Reply::ok(body("refused"))).await;
    let dir = tempfile::tempdir().unwrap();
    let missing_db = run_id();
    let endpoint = format!(
        "endpoint = \"http://{}/write?db={missing_db}\"",
        rx.influxdb
    );
    let config = write_config(
        dir.path(),
        &[(
            Declared {
                name: "app",
                table: "app",
                schedule_ms: 300,
                config: format!("endpoint = \"{}\"", exporter.url("/metrics")),
            },
            &format!(
                "{}{}",
                destination("halting", "influx", "app", &endpoint),
                destination_with(
                    "lettering",
                    "influx",
                    "app",
                    "on_permanent = \"dead_letter\"\n",
                    &endpoint
                ),
            ),
        )],
    );
    let daemon = Daemon::start(&config, &[]);
    let find = |name: &str| {
        let list = call(&daemon, "GET", "/v1/destinations", None).json();
        list["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap()
    };
    let halted = wait_for("the halt", Duration::from_secs(30), || {
        let d = find("halting");
        (d["state"] == "disabled").then_some(d)
    })
    .await;
    let reason = halted["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 404 Not Found")
            && reason.contains(&format!("database not found: \\\"{missing_db}\\\"")),
        "{reason}"
    );
    let lettering = find("lettering");
    let id = lettering["id"].as_str().unwrap();
    let letters = wait_for("two dead letters", Duration::from_secs(30), || {
        let r = call(
            &daemon,
            "GET",
            &format!("/v1/destinations/{id}/dead-letters"),
            None,
        )
        .json();
        let letters = r["dead_letters"].as_array().unwrap().clone();
        (letters.len() >= 2).then_some(letters)
    })
    .await;
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 404 Not Found")
    );
    assert_eq!(find("lettering")["state"], "enabled");
    daemon.stop();
}
