//! `cargo xtask load-push`: OTLP/HTTP bodies replayed against a release connectord
//! (SQLite, durable staging) for a bounded time by concurrent clients on keep-alive
//! connections, into `spanmetrics` (`--signal traces`, the default) or `otlp_metrics`
//! (`--signal metrics`); reports items (spans or data points) per second
//! acknowledged, request latency percentiles, and checks that the committed rows add
//! up to exactly what was acknowledged: the calls counters to the spans, the request
//! counters (delta increments of 1) to their points.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::percentile;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the clients push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    /// OTLP traces into `spanmetrics`.
    Traces,
    /// OTLP metrics into `otlp_metrics`.
    Metrics,
}

impl Signal {
    fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "points",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Traces into spanmetrics, or metrics into otlp_metrics.
    #[arg(long, value_enum, default_value_t = Signal::Traces)]
    signal: Signal,
    /// How long the clients send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Spans or data points per generated request body.
    #[arg(long, default_value_t = 512)]
    items_per_request: usize,
    /// Replay the protobuf bodies in this folder (one request per file, for example
    /// recorded from an SDK) instead of generating them.
    #[arg(long)]
    bodies: Option<PathBuf>,
}

/// A request body with what it carries: items (spans or points) and the items the
/// committed rows are checked against (spans; counter points).
struct Body {
    bytes: Vec<u8>,
    items: u64,
    checked: u64,
}

/// The items of a body: all of them, and the ones the rows are checked against.
fn count(signal: Signal, body: &[u8]) -> Result<(u64, u64)> {
    use prost::Message as _;
    match signal {
        Signal::Traces => {
            let request =
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)?;
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            Ok((spans, spans))
        }
        Signal::Metrics => {
            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
            let request =
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(body)?;
            let (mut points, mut counters) = (0, 0);
            for metric in request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
            {
                let n = match &metric.data {
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    None => 0,
                } as u64;
                points += n;
                if metric.name == benches::OTLP_COUNTER_NAME {
                    counters += n;
                }
            }
            Ok((points, counters))
        }
    }
}

/// The request bodies: read from `--bodies`, or generated (and written to
/// `work/bodies`, so a run can be replayed).
fn bodies(args: &LoadArgs, work: &Path) -> Result<Vec<Body>> {
    let dir = match &args.bodies {
        Some(dir) => dir.clone(),
        None => {
            let dir = work.join("bodies");
            std::fs::create_dir_all(&dir)?;
            for seed in 0..64u64 {
                let body = match args.signal {
                    Signal::Traces => benches::otlp_traces(args.items_per_request, seed),
                    Signal::Metrics => benches::otlp_metrics(args.items_per_request, seed).0,
                };
                std::fs::write(dir.join(format!("{seed:02}.pb")), body)?;
            }
            dir
        }
    };
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let bytes = std::fs::read(entry?.path())?;
        let (items, checked) = count(args.signal, &bytes).with_context(|| {
            format!(
                "a body in {} is not an OTLP {:?} request",
                dir.display(),
                args.signal
            )
        })?;
        out.push(Body {
            bytes,
            items,
            checked,
        });
    }
    if out.is_empty() {
        bail!("no bodies in {}", dir.display());
    }
    Ok(out)
}

pub fn run(args: &LoadArgs, binary: &Path, work: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let bodies = bodies(args, work)?;
    let config = work.join("connectord.toml");
    let connector = match args.signal {
        Signal::Traces => {
            "type = \"spanmetrics\"\n[connectors.config]\ndimensions = [{ name = \"http.status_code\" }]\n"
        }
        Signal::Metrics => "type = \"otlp_metrics\"\n",
    };
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[ingest]\nmax_body_bytes = 67108864\n\n\
             [[connectors]]\nname = \"load\"\ntarget_database = \"load\"\n\
             target_table = \"load\"\nschedule_ms = 5000\n{connector}",
            work.join("data").display()
        ),
    )?;
    let log = std::fs::File::create(work.join("connectord.log"))?;
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,connectord=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start connectord")?;
    let result = (|| {
        let addr = wait_for_address(&work.join("connectord.log"))?;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(drive(args, addr, bodies, work, child.id()))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn wait_for_address(log: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find("listening on http://") {
            return Ok(text[at + "listening on http://".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "connectord did not report its address; see {}",
        log.display()
    )
}

/// One POST on a keep-alive connection; the status.
async fn post(
    stream: &mut tokio::net::TcpStream,
    addr: &str,
    signal: Signal,
    body: &[u8],
) -> Result<u16> {
    let path = match signal {
        Signal::Traces => "v1/traces",
        Signal::Metrics => "v1/metrics",
    };
    let head = format!(
        "POST /v1/ingest/load/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let (status, body_start, length) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connectord closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("no status in the response")?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (status, end + 4, length);
        }
    };
    while buf.len() < body_start + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connectord closed the connection mid-response");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

struct ClientReport {
    latencies: Vec<Duration>,
    items: u64,
    checked: u64,
    bytes: u64,
    refused: u64,
}

async fn drive(
    args: &LoadArgs,
    addr: String,
    bodies: Vec<Body>,
    work: &Path,
    pid: u32,
) -> Result<()> {
    let bodies = Arc::new(bodies);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut clients = tokio::task::JoinSet::new();
    let (args_clients, signal) = (args.clients, args.signal);
    for client in 0..args.clients {
        let (bodies, addr) = (Arc::clone(&bodies), addr.clone());
        clients.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let mut report = ClientReport {
                latencies: Vec::new(),
                items: 0,
                checked: 0,
                bytes: 0,
                refused: 0,
            };
            let mut i = client;
            let mut unique = Vec::new();
            while Instant::now() < deadline {
                let body = &bodies[i % bodies.len()];
                // A replayed traces body is the same spans: connectord would
                // acknowledge it as a retry without counting it. A trailing unknown
                // field (number 15, skipped by every protobuf reader) makes each
                // request new.
                unique.clear();
                unique.extend_from_slice(&body.bytes);
                unique.push(15 << 3);
                prost::encoding::encode_varint((i * args_clients + client) as u64, &mut unique);
                i += 1;
                let sent = Instant::now();
                let status = post(&mut stream, &addr, signal, &unique).await?;
                report.latencies.push(sent.elapsed());
                if status == 200 {
                    report.items += body.items;
                    report.checked += body.checked;
                    report.bytes += body.bytes.len() as u64;
                } else {
                    report.refused += 1;
                }
            }
            anyhow::Ok(report)
        });
    }
    let mut latencies = Vec::new();
    let (mut items, mut checked, mut bytes, mut refused) = (0u64, 0u64, 0u64, 0u64);
    while let Some(done) = clients.join_next().await {
        let report = done??;
        latencies.extend(report.latencies);
        items += report.items;
        checked += report.checked;
        bytes += report.bytes;
        refused += report.refused;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let what = signal.items();
    #[allow(clippy::cast_precision_loss)]
    {
        println!(
            "load-push: {} clients, {:.1} s: {} requests acknowledged ({} refused), {items} {what}, {:.0} {what}/s, {:.1} MB/s of protobuf",
            args.clients,
            elapsed,
            latencies.len() as u64 - refused,
            refused,
            items as f64 / elapsed,
            bytes as f64 / elapsed / 1e6
        );
    }
    println!(
        "load-push: request latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        .unwrap_or_default();
    println!("load-push: connectord peak RSS {rss}");
    // Every acknowledged item in the committed rows, once: the newest running total
    // of each counted series (spanmetrics' calls, the metrics' request counter, whose
    // points are increments of 1), added up, once the last bucket has committed.
    let counter = match signal {
        Signal::Traces => "traces_span_metrics_calls_total",
        Signal::Metrics => "http_server_requests_total",
    };
    let db = work.join("data/load.sqlite");
    let committed_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = committed_total(&db, counter).unwrap_or(0);
        if committed == checked {
            println!(
                "load-push: committed `{counter}` rows add up to {committed}: every acknowledged one, once"
            );
            return Ok(());
        }
        if Instant::now() > committed_deadline {
            bail!("committed `{counter}` rows add up to {committed}, {checked} were acknowledged");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn committed_total(db: &Path, counter: &str) -> Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let total: f64 = conn.query_row(
        "SELECT coalesce(sum(value), 0) FROM (SELECT value, max(timestamp) FROM load \
         WHERE name = ?1 GROUP BY labels)",
        [counter],
        |r| r.get(0),
    )?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(total as u64)
}
