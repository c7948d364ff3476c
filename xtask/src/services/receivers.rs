//! The receivers destinations deliver to in the tests: VictoriaMetrics (Influx line
//! protocol and remote write), InfluxDB 1.x and Prometheus with its remote-write
//! receiver. Each runs in its own process group with its data, log and pid file
//! under `target/services/<name>`; `up` prints their URLs as `export` lines.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::apt_install;
use crate::root;

/// One receiver: how to start it and how to know it is ready.
struct Receiver {
    name: &'static str,
    /// The variable the tests read its URL from.
    env: &'static str,
    port: u16,
    binary: &'static str,
    package: &'static str,
    /// A path answering 2xx once it accepts writes.
    ready: &'static str,
}

/// Fixed ports, away from each program's default so a system instance does not clash.
const RECEIVERS: [Receiver; 3] = [
    Receiver {
        name: "victoria-metrics",
        env: "VICTORIA_METRICS_URL",
        port: 58428,
        binary: "/usr/bin/victoria-metrics",
        package: "victoria-metrics",
        ready: "/health",
    },
    Receiver {
        name: "influxdb",
        env: "INFLUXDB_URL",
        port: 58086,
        binary: "/usr/bin/influxd",
        package: "influxdb",
        ready: "/ping",
    },
    Receiver {
        name: "prometheus",
        env: "PROMETHEUS_URL",
        port: 59090,
        binary: "/usr/bin/prometheus",
        package: "prometheus",
        ready: "/-/ready",
    },
];

fn dir_of(receiver: &Receiver) -> PathBuf {
    root().join("target/services").join(receiver.name)
}

fn args(receiver: &Receiver, dir: &Path) -> Result<Vec<String>> {
    let listen = format!("127.0.0.1:{}", receiver.port);
    let data = dir.join("data");
    Ok(match receiver.name {
        // -influxSkipSingleField makes a line whose one field is `value` the series
        // `name`, as Grafana Cloud does; deduplication at 1 ms keeps one sample per
        // series and timestamp, so a bucket delivered twice is stored once.
        "victoria-metrics" => {
            // It also scrapes the local connectord (examples/connectord-query.toml
            // listens there and sends its query API here), so Grafana pointed at
            // http://127.0.0.1:8080/metrics has data; while nothing listens, the
            // scrape only records `up 0`.
            let scrape = dir.join("scrape.yml");
            std::fs::write(
                &scrape,
                "scrape_configs:\n  - job_name: connectord\n    scrape_interval: 15s\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:8080\"]\n",
            )?;
            vec![
                format!("-promscrape.config={}", scrape.display()),
                format!("-storageDataPath={}", data.display()),
                format!("-httpListenAddr={listen}"),
                "-influxSkipSingleField".to_owned(),
                "-dedup.minScrapeInterval=1ms".to_owned(),
                "-search.latencyOffset=0s".to_owned(),
                "-search.disableCache".to_owned(),
                "-loggerLevel=WARN".to_owned(),
            ]
        }
        "influxdb" => {
            let config = dir.join("influxdb.conf");
            std::fs::write(
                &config,
                format!(
                    "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
                     [meta]\n  dir = \"{data}/meta\"\n\
                     [data]\n  dir = \"{data}/data\"\n  wal-dir = \"{data}/wal\"\n  query-log-enabled = false\n\
                     [http]\n  bind-address = \"{listen}\"\n  log-enabled = false\n",
                    rpc = receiver.port + 2,
                    data = data.display(),
                ),
            )?;
            vec!["-config".to_owned(), config.display().to_string()]
        }
        "prometheus" => {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address={listen}"),
                "--web.enable-remote-write-receiver".to_owned(),
                "--log.level=warn".to_owned(),
            ]
        }
        other => bail!("no arguments for {other}"),
    })
}

fn pid_file(receiver: &Receiver) -> PathBuf {
    dir_of(receiver).join("pid")
}

fn is_ready(receiver: &Receiver) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", receiver.port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", receiver.ready);
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head[9] == b'2'
}

pub(super) fn up() -> Result<()> {
    let missing: Vec<&str> = RECEIVERS
        .iter()
        .filter(|r| !Path::new(r.binary).exists())
        .map(|r| r.package)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    for receiver in &RECEIVERS {
        if !is_ready(receiver) {
            start(receiver)?;
        }
        println!("export {}=http://127.0.0.1:{}", receiver.env, receiver.port);
    }
    Ok(())
}

fn start(receiver: &Receiver) -> Result<()> {
    let dir = dir_of(receiver);
    std::fs::create_dir_all(dir.join("data"))?;
    let log = std::fs::File::create(dir.join("log"))?;
    let child = Command::new(receiver.binary)
        .args(args(receiver, &dir)?)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: it outlives this command and ignores the
        // terminal's Ctrl-C; `down` stops it by its pid file.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", receiver.binary))?;
    std::fs::write(pid_file(receiver), child.id().to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_ready(receiver) {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            bail!(
                "{} did not become ready on 127.0.0.1:{} within 60 s; its log:\n{log}",
                receiver.name,
                receiver.port
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "xtask: {} ready on 127.0.0.1:{}",
        receiver.name, receiver.port
    );
    Ok(())
}

pub(super) fn down() -> Result<()> {
    for receiver in &RECEIVERS {
        let path = pid_file(receiver);
        let Ok(pid) = std::fs::read_to_string(&path) else {
            continue;
        };
        let pid = pid.trim();
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
