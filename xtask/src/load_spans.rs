//! `cargo xtask load-spans`: OTLP/HTTP trace bodies replayed against a release
//! connectord (SQLite, durable staging) for a bounded time by concurrent clients on
//! keep-alive connections; reports spans/s acknowledged, request latency percentiles,
//! and checks that the committed rows add up to exactly the spans acknowledged.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// How long the clients send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Spans per generated request body.
    #[arg(long, default_value_t = 512)]
    spans_per_request: usize,
    /// Replay the protobuf bodies in this folder (one request per file, for example
    /// recorded from an SDK) instead of generating them.
    #[arg(long)]
    bodies: Option<PathBuf>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// The request bodies with their span counts: read from `--bodies`, or generated
/// (and written to `work/bodies`, so a run can be replayed).
fn bodies(args: &LoadArgs, work: &Path) -> Result<Vec<(Vec<u8>, u64)>> {
    use prost::Message as _;
    let dir = match &args.bodies {
        Some(dir) => dir.clone(),
        None => {
            let dir = work.join("bodies");
            std::fs::create_dir_all(&dir)?;
            for seed in 0..64u64 {
                std::fs::write(
                    dir.join(format!("{seed:02}.pb")),
                    benches::otlp_traces(args.spans_per_request, seed),
                )?;
            }
            dir
        }
    };
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let body = std::fs::read(entry?.path())?;
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .with_context(|| {
                format!("a body in {} is not an OTLP traces request", dir.display())
            })?;
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        out.push((body, spans as u64));
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
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[ingest]\nmax_body_bytes = 67108864\n\n\
             [[connectors]]\nname = \"load\"\ntype = \"spanmetrics\"\ntarget_database = \"traces\"\n\
             target_table = \"load\"\nschedule_ms = 5000\n[connectors.config]\n\
             dimensions = [{{ name = \"http.status_code\" }}]\n",
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
async fn post(stream: &mut tokio::net::TcpStream, addr: &str, body: &[u8]) -> Result<u16> {
    let head = format!(
        "POST /v1/ingest/load/v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
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
    spans: u64,
    bytes: u64,
    refused: u64,
}

async fn drive(
    args: &LoadArgs,
    addr: String,
    bodies: Vec<(Vec<u8>, u64)>,
    work: &Path,
    pid: u32,
) -> Result<()> {
    let bodies = Arc::new(bodies);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut clients = tokio::task::JoinSet::new();
    let args_clients = args.clients;
    for client in 0..args.clients {
        let (bodies, addr) = (Arc::clone(&bodies), addr.clone());
        clients.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let mut report = ClientReport {
                latencies: Vec::new(),
                spans: 0,
                bytes: 0,
                refused: 0,
            };
            let mut i = client;
            let mut unique = Vec::new();
            while Instant::now() < deadline {
                let (body, spans) = &bodies[i % bodies.len()];
                // A replayed body is the same spans: connectord would acknowledge it
                // as a retry without counting it. A trailing unknown field (number
                // 15, skipped by every protobuf reader) makes each request new.
                unique.clear();
                unique.extend_from_slice(body);
                unique.push(15 << 3);
                prost::encoding::encode_varint((i * args_clients + client) as u64, &mut unique);
                i += 1;
                let sent = Instant::now();
                let status = post(&mut stream, &addr, &unique).await?;
                report.latencies.push(sent.elapsed());
                if status == 200 {
                    report.spans += spans;
                    report.bytes += body.len() as u64;
                } else {
                    report.refused += 1;
                }
            }
            anyhow::Ok(report)
        });
    }
    let mut latencies = Vec::new();
    let (mut spans, mut bytes, mut refused) = (0u64, 0u64, 0u64);
    while let Some(done) = clients.join_next().await {
        let report = done??;
        latencies.extend(report.latencies);
        spans += report.spans;
        bytes += report.bytes;
        refused += report.refused;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    #[allow(clippy::cast_precision_loss)]
    {
        println!(
            "load-spans: {} clients, {:.1} s: {} requests acknowledged ({} refused), {spans} spans, {:.0} spans/s, {:.1} MB/s of protobuf",
            args.clients,
            elapsed,
            latencies.len() as u64 - refused,
            refused,
            spans as f64 / elapsed,
            bytes as f64 / elapsed / 1e6
        );
    }
    println!(
        "load-spans: request latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
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
    println!("load-spans: connectord peak RSS {rss}");
    // Every acknowledged span in the committed rows, once: the newest running total
    // of each calls series, added up, once the last bucket has committed.
    let db = work.join("data/traces.sqlite");
    let committed_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = committed_calls(&db).unwrap_or(0);
        if committed == spans {
            println!(
                "load-spans: committed rows add up to {committed} spans: every acknowledged span, once"
            );
            return Ok(());
        }
        if Instant::now() > committed_deadline {
            bail!("committed rows add up to {committed} spans, {spans} were acknowledged");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn committed_calls(db: &Path) -> Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let total: f64 = conn.query_row(
        "SELECT coalesce(sum(value), 0) FROM (SELECT value, max(timestamp) FROM load \
         WHERE name = 'traces_span_metrics_calls_total' GROUP BY labels)",
        [],
        |r| r.get(0),
    )?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(total as u64)
}
