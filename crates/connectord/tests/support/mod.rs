//! Running connectord as an operator would: a real process, a real TOML file, real
//! SQLite files, and exposition servers on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test files; each uses a part

pub mod otel;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connector block for the TOML file.
pub struct Declared<'a> {
    pub name: &'a str,
    pub table: &'a str,
    pub schedule_ms: u64,
    /// The `[connectors.config]` body, as TOML lines.
    pub config: String,
}

pub fn write_config(dir: &Path, connectors: &[Declared<'_>]) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    for c in connectors {
        text.push_str(&format!(
            "\n[[connectors]]\nname = \"{}\"\ntype = \"prometheus\"\ntarget_database = \"metrics\"\n\
             target_table = \"{}\"\nschedule_ms = {}\n\n[connectors.config]\n{}\n",
            c.name, c.table, c.schedule_ms, c.config
        ));
    }
    let path = dir.join("connectord.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a TOML file with extra text after `[server]` (tokens) and `[runner]`.
pub fn write_config_with(dir: &Path, server_extra: &str, connectors: &[Declared<'_>]) -> PathBuf {
    let path = write_config(dir, connectors);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[storage]", &format!("{server_extra}\n[storage]"), 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// A port nothing listens on now, for a program that must be told its port
/// (Prometheus, VictoriaMetrics, a connectord restarted on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `connectord run`.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_with(config, env, &[])
    }

    pub fn start_with(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_connectord"));
        cmd.args(["run", "--config"])
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    // Text logs end the address at a space, JSON logs at a quote.
                    let addr = line[at + "listening on http://".len()..]
                        .split([' ', '"'])
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("connectord did not start:\n{}", log.lock().unwrap());
            }
        };
        Daemon { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET a path on connectord's listen address.
    pub fn get(&self, path: &str) -> String {
        http_get(self.addr, path)
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "connectord did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, header block (lowercased names) and body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts the status and that the body contains `text`.
    pub fn assert_says(&self, status: u16, text: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains(text), "{}", self.body);
    }

    /// The `{"error":{"code","message"}}` body of an error response.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        (
            v["error"]["code"].as_str().unwrap().to_owned(),
            v["error"]["message"].as_str().unwrap().to_owned(),
        )
    }
}

/// One HTTP/1.0 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        // The server may answer (413) before reading it all; a broken pipe then is fine.
        let _ = stream.write_all(body);
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The PostgreSQL of `cargo xtask services up`; `None` (the test skips) outside CI
/// when it is not set, a failure under CI=true.
pub fn database_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL").ok();
    if url.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "DATABASE_URL is not set under CI=true"
        );
        eprintln!("skipped: DATABASE_URL is not set (eval \"$(cargo xtask services up)\")");
    }
    url
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn open(dir: &Path, file: &str) -> Option<rusqlite::Connection> {
    let path = dir.join("data").join(file);
    path.exists().then(|| {
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    })
}

pub fn query_i64(dir: &Path, file: &str, sql: &str) -> i64 {
    let Some(conn) = open(dir, file) else {
        return 0;
    };
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// (name, value, labels JSON text) of the rows of one bucket, in insert order.
pub fn bucket_rows(
    dir: &Path,
    table: &str,
    scheduled_for: i64,
) -> Vec<(String, Option<f64>, String)> {
    let conn = open(dir, "metrics.sqlite").unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT name, value, labels FROM {table} WHERE timestamp = ?1 ORDER BY rowid"
        ))
        .unwrap();
    stmt.query_map([scheduled_for], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The buckets the ledger says were committed, for one connector, oldest first.
pub fn ledger(dir: &Path, connector_id: &str) -> Vec<(i64, i64)> {
    let Some(conn) = open(dir, "metrics.sqlite") else {
        return Vec::new();
    };
    // The file may exist before connectord has created its tables.
    let Ok(mut stmt) = conn
        .prepare("SELECT scheduled_for_ms, rows FROM _connectord_ledger WHERE connector_id = ?1 ORDER BY scheduled_for_ms")
    else {
        return Vec::new();
    };
    stmt.query_map([connector_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

/// (id, state, disabled_reason, last_error) of a connector by name.
pub fn connector(
    dir: &Path,
    name: &str,
) -> Option<(String, String, Option<String>, Option<String>)> {
    let conn = open(dir, "connectord-state.sqlite")?;
    conn.query_row(
        "SELECT id, state, disabled_reason, last_error FROM connectors WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .ok()
}

/// (outcome, scheduled_for, rows, error) of a connector's ticks, oldest first.
pub fn ticks(dir: &Path, connector_id: &str) -> Vec<(String, i64, i64, Option<String>)> {
    let Some(conn) = open(dir, "connectord-state.sqlite") else {
        return Vec::new();
    };
    let mut stmt = conn
        .prepare("SELECT outcome, scheduled_for_ms, rows, error FROM ticks WHERE connector_id = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([connector_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap_or_default()
}

/// What the rows of a bucket must be for `body`: its parse, in order.
pub fn expected_rows(body: &str) -> Vec<(String, Option<f64>, String)> {
    use connector_prometheus::exposition::{Format, parse};
    parse(body, Format::Prometheus)
        .unwrap()
        .iter()
        .map(|s| {
            // Labels keep the order the source wrote them in.
            let labels: Vec<String> = s
                .labels
                .iter_decoded()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(k),
                        serde_json::Value::from(v.into_owned())
                    )
                })
                .collect();
            (
                s.name.to_owned(),
                s.value.is_finite().then_some(s.value),
                format!("{{{}}}", labels.join(",")),
            )
        })
        .collect()
}

/// Every bucket of `table` holds exactly the rows of `body`, and every bucket with
/// rows is in the ledger: nothing partial, nothing twice. Returns the bucket count.
pub fn assert_exactly_once(dir: &Path, connector_id: &str, table: &str, body: &str) -> usize {
    let expected = expected_rows(body);
    let ledger = ledger(dir, connector_id);
    for &(bucket, rows) in &ledger {
        assert_eq!(
            rows as usize,
            expected.len(),
            "ledger rows of bucket {bucket}"
        );
        let got = bucket_rows(dir, table, bucket);
        assert_eq!(
            got.len(),
            expected.len(),
            "bucket {bucket}: partial or duplicated"
        );
        assert_eq!(
            got, expected,
            "bucket {bucket}: rows differ from the body served"
        );
    }
    let conn = open(dir, "metrics.sqlite").unwrap();
    let orphans: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM {table} WHERE timestamp NOT IN \
                 (SELECT scheduled_for_ms FROM _connectord_ledger WHERE connector_id = ?1)"
            ),
            [connector_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "rows without a ledger row");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    ledger.len()
}

/// A JSON request to connectord's API on a fresh connection.
pub fn call(d: &Daemon, method: &str, path: &str, body: Option<serde_json::Value>) -> Response {
    let body = body.map(|b| b.to_string());
    request(
        d.addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_deref().map(str::as_bytes),
    )
}

/// Creates a connector over the API and returns its id.
pub fn create(d: &Daemon, body: serde_json::Value) -> String {
    let r = call(d, "POST", "/v1/connectors", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Debian's Prometheus scrapes `path` on connectord with a bearer token until its own
/// query API answers `query` with `want`; returns what it answered, or `None` when
/// Prometheus is not installed (outside CI). `honor_labels` keeps the page's own
/// `job` and `instance`, as a Collector's page is scraped.
pub async fn prometheus_scrape(
    target: SocketAddr,
    path: &str,
    token: &str,
    dir: &Path,
    honor_labels: bool,
    query: &str,
    want: f64,
) -> Option<f64> {
    let binary = Path::new("/usr/bin/prometheus");
    if !binary.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus"
        );
        eprintln!("skipped the Prometheus scrape: apt-get install prometheus");
        return None;
    }
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: connectord\n    \
             honor_labels: {honor_labels}\n    metrics_path: {path}\n    authorization:\n      \
             type: Bearer\n      credentials: {token}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let answered = wait_for(
        &format!("Prometheus to answer `{query}` with {want}"),
        Duration::from_secs(30),
        || {
            let r = TcpStream::connect(addr).ok().map(|_| {
                request(
                    addr,
                    "GET",
                    &format!("/api/v1/query?query={encoded}"),
                    &[],
                    None,
                )
            })?;
            let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            let value: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (value == want).then_some(value)
        },
    )
    .await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    Some(answered)
}
