//! `cargo xtask chaos`: several connectord processes on one PostgreSQL, killed with
//! SIGKILL and stalled with SIGSTOP while they tick, then an audit of every bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// Samples per scrape: every committed bucket must hold exactly this many rows.
const BODY: &str = "# TYPE chaos_up gauge\nchaos_up{a=\"1\"} 1\nchaos_up{a=\"2\"} 2\nchaos_total 3\nchaos_nan NaN\n";
const SAMPLES: i64 = 4;
const SCHEDULE_MS: i64 = 1000;
const TICK_TIMEOUT_MS: u64 = 2000;
/// A short lease, so a SIGSTOP past it fits in a short run.
const LEASE_MS: u64 = 5000;
const LEASE: Duration = Duration::from_millis(LEASE_MS);

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// How long the connectors run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// How many connectors, each on a 1 s schedule.
    #[arg(long, default_value_t = 50)]
    connectors: usize,
    /// How many connectord processes share the database.
    #[arg(long, default_value_t = 3)]
    processes: usize,
    /// Seconds between SIGKILLs (each victim restarts at once).
    #[arg(long, default_value_t = 10)]
    kill_every: u64,
}

impl ChaosArgs {
    /// The size CI runs: 25 s, 10 connectors, 3 processes, a kill every 6 s and a stall.
    pub fn smoke() -> Self {
        ChaosArgs {
            seconds: 25,
            connectors: 10,
            processes: 3,
            kill_every: 6,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Process {
    child: Child,
    log: PathBuf,
}

fn start(binary: &Path, config: &Path, log: PathBuf, url: &str) -> Result<Process> {
    let file = std::fs::File::create(&log)?;
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .context("cannot start connectord")?;
    Ok(Process { child, log })
}

/// The runner id a process logged at start.
fn runner_id(p: &Process) -> Option<String> {
    let text = std::fs::read_to_string(&p.log).ok()?;
    let at = text.find("runner_id=")? + "runner_id=".len();
    Some(
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect(),
    )
}

fn signal(p: &Process, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill {sig} {} failed", p.child.id());
    }
    Ok(())
}

async fn wait_runner_id(p: &Process) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(id) = runner_id(p).filter(|id| id.len() == 36) {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("connectord did not start; see {}", p.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Buckets whose lease `runner` holds unfinished now: if it is dead or stalled, these
/// may go missing (bounded by the lease time), and nothing else may.
async fn held_by(db: &tokio_postgres::Client, runner: &str) -> Result<BTreeSet<(String, i64)>> {
    Ok(db
        .query(
            "SELECT connector_id, scheduled_for_ms FROM connectord.leases \
             WHERE runner_id = $1 AND NOT done AND expires_at > now()",
            &[&runner],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// How long after a process dies or stalls the others still count it live (the
/// runner's `membership_ttl`), plus a refresh of theirs and a bucket in flight.
fn takeover_ms() -> i64 {
    membership_ttl_ms() + 2 * SCHEDULE_MS
}

/// The runners' `membership_ttl`, as connectord runs them.
fn membership_ttl_ms() -> i64 {
    i64::try_from(
        connector_runner::RunnerConfig::default()
            .membership_ttl
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// The connectors `runner` ticks now: those it owns among the live runners, as every
/// runner computes it. If it dies or stalls, their buckets may go missing until the
/// others stop counting it live ([`takeover_ms`]).
async fn owned_by(
    db: &tokio_postgres::Client,
    runner: &str,
    connector_ids: &[String],
) -> Result<Vec<String>> {
    let live: Vec<String> = db
        .query(
            "SELECT runner_id FROM connectord.runners \
             WHERE seen_at > now() - $1 * interval '1 millisecond' ORDER BY runner_id",
            &[&(membership_ttl_ms() as f64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(connector_ids
        .iter()
        .filter(|id| connector_runner::schedule::owner(id, &live) == Some(runner))
        .cloned()
        .collect())
}

/// Buckets that may go missing because their owner died or stalled at `at_ms`: those
/// firing until the others took its connectors over.
#[derive(Default)]
struct Orphaned(Vec<(String, i64, i64)>);

impl Orphaned {
    fn add(&mut self, connectors: Vec<String>, at_ms: i64) {
        self.0.extend(
            connectors
                .into_iter()
                .map(|id| (id, at_ms - SCHEDULE_MS, at_ms + takeover_ms())),
        );
    }

    fn covers(&self, id: &str, firing_ms: i64) -> bool {
        self.0
            .iter()
            .any(|(c, from, to)| c == id && (*from..=*to).contains(&firing_ms))
    }
}

pub fn run(args: &ChaosArgs, url: &str, binary: &Path, work: &Path) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(chaos(args, url, binary, work))
}

async fn chaos(args: &ChaosArgs, url: &str, binary: &Path, work: &Path) -> Result<()> {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let server =
        connector_http::testing::TestServer::start(|_| connector_http::testing::Reply::ok(BODY))
            .await;
    let run = format!("chaos_{}", std::process::id());
    std::fs::create_dir_all(work)?;
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nkind = \"postgres\"\nurl_ref = \"$env:DATABASE_URL\"\n\
         [runner]\ntick_timeout_ms = {TICK_TIMEOUT_MS}\nlease_ms = {LEASE_MS}\n"
    );
    for i in 0..args.connectors {
        toml.push_str(&format!(
            "\n[[connectors]]\nname = \"{run}_{i}\"\ntype = \"prometheus\"\ntarget_database = \"{run}\"\n\
             target_table = \"c{i}\"\nschedule_ms = {SCHEDULE_MS}\n[connectors.config]\nendpoint = \"{}?c={i}\"\n\
             timeout_ms = 1000\n",
            server.url("/metrics")
        ));
    }
    let config = work.join("chaos.toml");
    std::fs::write(&config, toml)?;

    let mut processes = Vec::new();
    for n in 0..args.processes {
        processes.push(start(
            binary,
            &config,
            work.join(format!("p{n}-0.log")),
            url,
        )?);
    }
    let mut runners = Vec::new();
    for p in &processes {
        runners.push(wait_runner_id(p).await?);
    }
    let started_ms = now_ms();
    eprintln!(
        "chaos: {} processes, {} connectors, {} s",
        args.processes, args.connectors, args.seconds
    );

    let mut allowed_missing: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut orphaned = Orphaned::default();
    let connector_ids: Vec<String> = db
        .query(
            "SELECT id FROM connectord.connectors WHERE name LIKE $1",
            &[&format!("{run}\\_%")],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (mut kills, mut restarts) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut next_kill = Instant::now() + Duration::from_secs(args.kill_every);
    let stall_at = Instant::now() + Duration::from_secs(args.seconds / 4);
    let mut stalled = false;
    let mut victim = 0;
    while Instant::now() < deadline {
        if !stalled && Instant::now() >= stall_at && args.processes > 1 {
            // Stall the last process past its lease, then let it go on.
            let p = processes.len() - 1;
            let owned = owned_by(&db, &runners[p], &connector_ids).await?;
            signal(&processes[p], "-STOP")?;
            orphaned.add(owned, now_ms());
            allowed_missing.extend(held_by(&db, &runners[p]).await?);
            eprintln!(
                "chaos: SIGSTOP process {p} for {} s",
                (LEASE + Duration::from_secs(2)).as_secs()
            );
            tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
            signal(&processes[p], "-CONT")?;
            stalled = true;
        }
        if Instant::now() >= next_kill {
            let p = victim % args.processes.max(1);
            victim += 1;
            let owned = owned_by(&db, &runners[p], &connector_ids).await?;
            processes[p].child.kill()?;
            processes[p].child.wait()?;
            orphaned.add(owned, now_ms());
            kills += 1;
            // Dead now: whatever it held cannot be committed by anyone until expiry.
            allowed_missing.extend(held_by(&db, &runners[p]).await?);
            processes[p] = start(binary, &config, work.join(format!("p{p}-{kills}.log")), url)?;
            runners[p] = wait_runner_id(&processes[p]).await?;
            restarts += 1;
            eprintln!("chaos: SIGKILL process {p} and restart ({kills} so far)");
            next_kill += Duration::from_secs(args.kill_every);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended_ms = now_ms();
    for p in &processes {
        signal(p, "-TERM")?;
    }
    for p in &mut processes {
        p.child.wait()?;
    }

    // The audit: buckets fully inside the run, after a start-up allowance.
    let from = started_ms + 3 * SCHEDULE_MS;
    let to = ended_ms - 2 * SCHEDULE_MS;
    let (mut expected, mut landed, mut duplicated, mut partial, mut missing, mut unexplained) =
        (0, 0, 0, 0, 0, 0);
    let ids: BTreeMap<String, String> = db
        .query(
            "SELECT name, id FROM connectord.connectors WHERE name LIKE $1",
            &[&format!("{run}\\_%")],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for i in 0..args.connectors {
        let name = format!("{run}_{i}");
        let id = ids
            .get(&name)
            .with_context(|| format!("connector {name} missing"))?;
        let phase = connector_runner::schedule::phase_ms(id, SCHEDULE_MS as u64);
        let counts: BTreeMap<i64, i64> = db
            .query(
                &format!(
                    "SELECT (extract(epoch FROM timestamp) * 1000)::bigint AS b, count(*) FROM \"{run}\".\"c{i}\" GROUP BY b"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ledger: BTreeMap<i64, i64> = db
            .query(
                "SELECT scheduled_for_ms, rows FROM connectord.ledger WHERE connector_id = $1",
                &[id],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (bucket, rows) in &counts {
            if *rows > SAMPLES {
                duplicated += 1;
            } else if *rows < SAMPLES || ledger.get(bucket) != Some(rows) {
                partial += 1;
            }
        }
        // Buckets sit on the clock grid; a bucket is expected when it fired within the run.
        let mut bucket = connector_runner::schedule::due_bucket(from, SCHEDULE_MS as u64, phase);
        if bucket + phase < from {
            bucket += SCHEDULE_MS;
        }
        while bucket + phase <= to {
            expected += 1;
            if counts.contains_key(&bucket) {
                landed += 1;
            } else {
                missing += 1;
                if !allowed_missing.contains(&(id.clone(), bucket))
                    && !orphaned.covers(id, bucket + phase)
                {
                    unexplained += 1;
                }
            }
            bucket += SCHEDULE_MS;
        }
    }
    println!(
        "buckets expected={expected} landed={landed} duplicated={duplicated} partial={partial} missing={missing} \
         (held or owned by a killed or stalled process: {}, unexplained: {unexplained}); kills={kills} restarts={restarts} stalls={}",
        missing - unexplained,
        u8::from(stalled)
    );
    db.batch_execute(&format!("DROP SCHEMA \"{run}\" CASCADE"))
        .await?;
    if duplicated > 0 || partial > 0 || unexplained > 0 {
        bail!(
            "chaos found duplicated, partial or unexplained missing buckets; logs in {}",
            work.display()
        );
    }
    Ok(())
}
