//! `cargo xtask bench-schedule`: many connectors on one connectord process; reports how
//! late ticks start against their firing time: the bucket (`scheduled_for`, on the
//! clock grid) plus the connector's phase. With `--postgres` it also counts the
//! statements connectord sent per tick after one schedule of warm-up
//! (`pg_stat_statements`, which `cargo xtask services up` loads): each is a round trip
//! unless pipelined.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::percentile;

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// How many connectors.
    #[arg(long, default_value_t = 10_000)]
    connectors: usize,
    /// Their schedule.
    #[arg(long, default_value_t = 15_000)]
    schedule_ms: u64,
    /// How long to run after start-up.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Keep state and rows in PostgreSQL (DATABASE_URL) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// connectord processes sharing the connectors (and the database): with more
    /// than one, each bucket is claimed by one of them.
    #[arg(long, default_value_t = 1)]
    processes: usize,
}

pub fn run(args: &ScheduleArgs, binary: &Path, work: &Path) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args, binary, work))
}

async fn bench(args: &ScheduleArgs, binary: &Path, work: &Path) -> Result<()> {
    let server = connector_http::testing::TestServer::start(|_| {
        connector_http::testing::Reply::ok("up 1\n")
    })
    .await;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let run = format!("sched_{}", std::process::id());
    // A database of its own: nothing else's connectors, destinations or statements
    // in the figures, and nothing left behind.
    let url = if args.postgres {
        let Ok(admin) = std::env::var("DATABASE_URL") else {
            bail!("--postgres needs DATABASE_URL: eval \"$(cargo xtask services up)\"");
        };
        Some(RunDatabase::create(&admin, &run).await?)
    } else {
        None
    };
    let storage = if args.postgres {
        "kind = \"postgres\"\nurl_ref = \"$env:DATABASE_URL\"\n".to_owned()
    } else {
        format!("data_dir = \"{}\"\n", work.join("data").display())
    };
    let mut toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\n{storage}");
    for i in 0..args.connectors {
        toml.push_str(&format!(
            "\n[[connectors]]\nname = \"{run}_{i}\"\ntype = \"prometheus\"\ntarget_database = \"{run}\"\n\
             target_table = \"samples\"\nschedule_ms = {}\n[connectors.config]\nendpoint = \"{}\"\n",
            args.schedule_ms,
            server.url("/metrics")
        ));
    }
    let config = work.join("schedule.toml");
    std::fs::write(&config, toml)?;
    let mut children = Vec::with_capacity(args.processes);
    for process in 0..args.processes.max(1) {
        let log = std::fs::File::create(work.join(format!("connectord-{process}.log")))?;
        let mut cmd = Command::new(binary);
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(db) = &url {
            cmd.env("DATABASE_URL", &db.url);
        }
        children.push(cmd.spawn().context("cannot start connectord")?);
    }
    let statements = if let Some(db) = &url {
        let url = db.url.as_str();
        Some(
            StatementCount::after_warm_up(url, &run, args.schedule_ms, args.processes.max(1))
                .await?,
        )
    } else {
        tokio::time::sleep(Duration::from_millis(args.schedule_ms.max(5_000))).await;
        None
    };
    // Only ticks that started from here on count: start-up (declaring the connectors,
    // processes joining) is not the steady state the lateness describes.
    let measured_from_ms = connector_runner::protocol::wall_clock_ms();
    eprintln!(
        "bench-schedule: {} connectors every {} ms for {} s, {} process(es) ({})",
        args.connectors,
        args.schedule_ms,
        args.seconds,
        args.processes.max(1),
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    for child in &mut children {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("cannot stop connectord");
        }
    }
    for child in &mut children {
        child.wait()?;
    }

    if let Some(statements) = statements {
        statements.report(&run).await?;
    }
    let rows: Vec<(i64, i64, String, String)> = if let Some(run_db) = &url {
        let (db, connection) = tokio_postgres::connect(&run_db.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let rows = db
            .query(
                "SELECT t.started_at_ms, t.scheduled_for_ms, t.outcome, t.connector_id FROM connectord.ticks t \
                 JOIN connectord.connectors c ON c.id = t.connector_id WHERE c.name LIKE $1",
                &[&format!("{run}\\_%")],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        drop(db);
        run_db.drop().await?;
        rows
    } else {
        let conn = rusqlite::Connection::open(work.join("data/connectord-state.sqlite"))?;
        let mut stmt = conn
            .prepare("SELECT started_at_ms, scheduled_for_ms, outcome, connector_id FROM ticks")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<Vec<_>, _>>()?
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(started, ..)| *started >= measured_from_ms)
        .collect();
    let mut lateness: Vec<i64> = rows
        .iter()
        .map(|(started, scheduled, _, id)| {
            started - scheduled - connector_runner::schedule::phase_ms(id, args.schedule_ms)
        })
        .collect();
    lateness.sort_unstable();
    let ok = rows.iter().filter(|r| r.2 == "ok").count();
    println!(
        "ticks={} ok={ok} lateness_ms p50={} p99={} max={} (ticks started after the warm-up; tick start against bucket + phase)",
        rows.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// Statements connectord sends per tick, from `pg_stat_statements`.
struct StatementCount {
    db: tokio_postgres::Client,
    ticks_before: i64,
}

async fn ticks_of(db: &tokio_postgres::Client, run: &str) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM connectord.ticks t JOIN connectord.connectors c ON c.id = t.connector_id \
             WHERE c.name LIKE $1",
            &[&format!("{run}\\_%")],
        )
        .await?
        .get(0))
}

impl StatementCount {
    /// Waits out start-up (every process declared its connectors and runs, then a
    /// first schedule of ticks), then starts counting.
    async fn after_warm_up(
        url: &str,
        run: &str,
        schedule_ms: u64,
        processes: usize,
    ) -> Result<Self> {
        let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .context("pg_stat_statements is not loaded: restart PostgreSQL with `cargo xtask services up`")?;
        let started = std::time::Instant::now();
        loop {
            let live: i64 = db
                .query_one(
                    "SELECT count(*) FROM connectord.runners WHERE seen_at > now() - interval '5 seconds'",
                    &[],
                )
                .await
                .map_or(0, |row| row.get(0));
            if usize::try_from(live).unwrap_or(0) >= processes {
                eprintln!(
                    "bench-schedule: {processes} process(es) running after {:.1} s of start-up",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("only {live} of {processes} connectord processes started within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(schedule_ms.max(5_000))).await;
        db.batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        let ticks_before = ticks_of(&db, run).await?;
        Ok(StatementCount { db, ticks_before })
    }

    async fn report(&self, run: &str) -> Result<()> {
        let ticks = ticks_of(&self.db, run).await? - self.ticks_before;
        let per_statement = self
            .db
            .query(
                "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'SELECT count(*) FROM connectord.ticks t%' \
                 ORDER BY calls DESC",
                &[],
            )
            .await?;
        let calls: i64 = per_statement.iter().map(|r| r.get::<_, i64>(0)).sum();
        #[allow(clippy::cast_precision_loss)]
        let per_tick = |n: i64| n as f64 / ticks.max(1) as f64;
        println!(
            "statements per tick: {:.1} ({calls} statements over {ticks} ticks after warm-up); the most frequent:",
            per_tick(calls)
        );
        for row in per_statement.iter().take(12) {
            let (n, query): (i64, String) = (row.get(0), row.get(1));
            println!("  {:>6.2}  {query}", per_tick(n));
        }
        Ok(())
    }
}

/// The run's own database, beside the one `DATABASE_URL` names.
struct RunDatabase {
    admin: String,
    name: String,
    url: String,
}

impl RunDatabase {
    async fn create(admin: &str, name: &str) -> Result<Self> {
        let (db, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        db.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("cannot create the run's database")?;
        let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
        let Some((server, _)) = base.rsplit_once('/') else {
            bail!("DATABASE_URL names no database: {admin}");
        };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        Ok(RunDatabase {
            admin: admin.to_owned(),
            name: name.to_owned(),
            url: format!("{server}/{name}{query}"),
        })
    }

    async fn drop(&self) -> Result<()> {
        let (db, connection) = tokio_postgres::connect(&self.admin, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        db.batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .context("cannot drop the run's database")?;
        Ok(())
    }
}
