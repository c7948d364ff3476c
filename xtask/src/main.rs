//! `cargo xtask`: the project's automation entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod chaos;
mod schedule_bench;
mod tidy;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// What CI runs: fmt check, clippy with -D warnings, every test (doc-tests included),
    /// docs with -D warnings, cargo-deny (bans, licenses, sources), promtool on the
    /// alert rules, schemathesis against a live connectord, a chaos run on PostgreSQL
    /// and 60 s of fuzzing.
    Ci,
    /// Runs the criterion benchmarks (`cargo bench -p benches`); extra arguments go to criterion.
    Bench {
        /// Passed to criterion, for example a filter like `node_exporter`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Rewrites the goldens under fixtures/exposition from the current parser.
    Fixtures,
    /// Checks the rules ARCHITECTURE.md states that a machine can check: dependency
    /// direction, connector-core's dependency list, anyhow only in connectord and
    /// xtask, workspace lints everywhere. `cargo test` runs it too.
    Tidy,
    /// Starts (`up`) or stops (`down`) a throwaway PostgreSQL 15 on 127.0.0.1 for the
    /// tests, installing Debian's package when missing. `up` prints
    /// `export DATABASE_URL=...` on stdout: `eval "$(cargo xtask services up)"`.
    Services {
        #[arg(value_enum)]
        action: ServicesAction,
    },
    /// Several connectord processes on one PostgreSQL, SIGKILLed and SIGSTOPped while
    /// they tick; prints buckets expected / landed / duplicated / partial / missing and
    /// fails on any duplicated, partial or unexplained missing bucket.
    Chaos(chaos::ChaosArgs),
    /// Fuzzes the exposition parser (cargo-fuzz, libFuzzer, ASan) seeded from
    /// fixtures/exposition and the OpenMetrics conformance suite, installing
    /// cargo-fuzz when missing. The time is split
    /// between the targets unless one is named.
    Fuzz {
        /// Total seconds of fuzzing.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target: parse_prometheus, parse_openmetrics, or either with
        /// `_strict` (strict mode, checked against lenient mode).
        #[arg(long)]
        target: Option<String>,
    },
    /// Scheduling at scale: many connectors on one process; prints p50/p99 lateness of
    /// tick starts against scheduled_for.
    BenchSchedule(schedule_bench::ScheduleArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ServicesAction {
    Up,
    Down,
}

/// The port of the test cluster: away from a system PostgreSQL on 5432.
const PG_PORT: u16 = 55432;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Ci => ci(),
        Task::Bench { args } => {
            // The whole-process benchmark runs release binaries, built here.
            run(cargo(&["build", "--release", "-p", "connectord"]))?;
            run(cargo(&[
                "build",
                "--release",
                "-p",
                "benches",
                "--example",
                "prometheus_parse_file",
            ]))?;
            let release = root().join("target/release");
            let mut cmd = cargo(&["bench", "-p", "benches", "--"]);
            cmd.args(args)
                .env("CONNECTORD_BIN", release.join("connectord"))
                .env("PEER_BIN", release.join("examples/prometheus_parse_file"));
            run(cmd)
        }
        Task::Fixtures => fixtures(),
        Task::Tidy => tidy::tidy(),
        Task::Services { action } => services(action),
        Task::Fuzz { seconds, target } => fuzz(seconds, target.as_deref()),
        Task::BenchSchedule(args) => {
            run(cargo(&["build", "--release", "-p", "connectord"]))?;
            schedule_bench::run(
                &args,
                &root().join("target/release/connectord"),
                &root().join("target/bench-schedule"),
            )
        }
        Task::Chaos(args) => {
            let url = std::env::var("DATABASE_URL").context(
                "DATABASE_URL is not set: run eval \"$(cargo xtask services up)\" first",
            )?;
            run(cargo(&["build", "-p", "connectord"]))?;
            chaos::run(
                &args,
                &url,
                &root().join("target/debug/connectord"),
                &root().join("target/chaos"),
            )
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(args: &[&str]) -> Command {
    // The rustup proxy, not $CARGO, so rust-toolchain.toml picks the pinned toolchain.
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ci() -> Result<()> {
    run(cargo(&["fmt", "--all", "--", "--check"]))?;
    tidy::tidy()?;
    run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo(&["test", "--workspace", "--all-features"]))?;
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--all-features"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    ensure_cargo_deny()?;
    // The advisories check needs the internet, which CI does not have.
    run(cargo(&[
        "deny",
        "--all-features",
        "check",
        "bans",
        "licenses",
        "sources",
    ]))?;
    check_alert_rules()?;
    api_schemathesis()?;
    chaos_smoke()?;
    // A smoke run; the long runs are `cargo xtask fuzz --seconds N`.
    fuzz(60, None)?;
    eprintln!("xtask: ci passed");
    Ok(())
}

/// A small chaos run (the full one is `cargo xtask chaos`), when PostgreSQL is up.
fn chaos_smoke() -> Result<()> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("DATABASE_URL is missing under CI=true; .ci/run starts PostgreSQL");
        }
        eprintln!(
            "xtask: skipped the chaos run: DATABASE_URL is not set (eval \"$(cargo xtask services up)\")"
        );
        return Ok(());
    };
    run(cargo(&["build", "-p", "connectord"]))?;
    let args = chaos::ChaosArgs::smoke();
    chaos::run(
        &args,
        &url,
        &root().join("target/debug/connectord"),
        &root().join("target/chaos"),
    )
}

/// True when `tool` runs; otherwise says so, and fails under CI=true, where `.ci/run`
/// should have installed it.
fn have(tool: &str, install: &str) -> Result<bool> {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("{tool} is missing under CI=true; .ci/run installs it ({install})");
        }
        eprintln!("xtask: skipped: {tool} is not installed ({install})");
    }
    Ok(found)
}

fn check_alert_rules() -> Result<()> {
    if !have("promtool", "apt-get install prometheus")? {
        return Ok(());
    }
    let rules = root().join("deploy/prometheus");
    let mut check = Command::new("promtool");
    check.args(["check", "rules"]).arg(rules.join("alerts.yml"));
    run(check)?;
    let mut test = Command::new("promtool");
    test.args(["test", "rules"])
        .arg(rules.join("alerts_test.yml"));
    run(test)
}

/// Runs schemathesis against a live connectord: zero 5xx and zero responses that
/// break the OpenAPI document. The runner is off so generated connectors never scrape.
fn api_schemathesis() -> Result<()> {
    use std::io::BufRead as _;
    if !have("schemathesis", "pip install schemathesis")? {
        return Ok(());
    }
    run(cargo(&["build", "-p", "connectord"]))?;
    let dir = std::env::temp_dir().join(format!("connectord-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("connectord.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[runner]\nenabled = false\n",
            dir.join("data").display()
        ),
    )?;
    let mut daemon = Command::new(root().join("target/debug/connectord"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start connectord")?;
    let stderr = daemon
        .stderr
        .take()
        .context("connectord has no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("listening on http://") {
                let addr: String = line[at + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let result = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(addr) => {
            let mut st = Command::new("schemathesis");
            st.args(["run", &format!("http://{addr}/v1/openapi.json")])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_headers_conformance,response_schema_conformance",
                    "--max-examples",
                    "50",
                    "--seed",
                    "20261122",
                ])
                .current_dir(&dir);
            run(st)
        }
        Err(_) => Err(anyhow::anyhow!("connectord did not report its address")),
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn ensure_cargo_deny() -> Result<()> {
    let installed = cargo(&["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("xtask: cargo-deny is missing, installing it (about 2 minutes)");
        run(cargo(&["install", "cargo-deny", "--locked"]))?;
    }
    Ok(())
}

fn fixtures() -> Result<()> {
    use connector_prometheus::fixtures::{golden, golden_path, inputs};
    let dir = root().join("fixtures/exposition");
    let mut changed = 0;
    let inputs = inputs(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for input in &inputs {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes =
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
        let want = golden(&name, &bytes);
        let path = golden_path(input);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            std::fs::write(&path, want)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("xtask: rewrote {}", path.display());
            changed += 1;
        }
    }
    eprintln!(
        "xtask: {} fixtures, {changed} goldens rewritten",
        inputs.len()
    );
    Ok(())
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]);
    cmd
}

fn services(action: ServicesAction) -> Result<()> {
    let dir = root().join("target/services/postgres");
    let data = dir.join("data");
    let ctl = format!("{PG_BIN}/pg_ctl");
    match action {
        ServicesAction::Down => {
            if data.join("postmaster.pid").exists() {
                let mut stop = as_postgres(&ctl);
                stop.args(["-D"])
                    .arg(&data)
                    .args(["-m", "fast", "-w", "stop"]);
                run(stop)?;
            }
            Ok(())
        }
        ServicesAction::Up => {
            if !Path::new(PG_BIN).join("initdb").exists() {
                eprintln!("xtask: installing PostgreSQL 15 from Debian's packages");
                let mut update = Command::new("apt-get");
                update.args(["update", "-qq"]);
                run(update)?;
                let mut install = Command::new("apt-get");
                install
                    .args([
                        "install",
                        "-y",
                        "-qq",
                        "--no-install-recommends",
                        "postgresql",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive");
                run(install)?;
            }
            let socket = dir.join("socket");
            if !data.join("PG_VERSION").exists() {
                std::fs::create_dir_all(&data)?;
                std::fs::create_dir_all(&socket)?;
                let mut chown = Command::new("chown");
                chown.args(["-R", "postgres:postgres"]).arg(&dir);
                run(chown)?;
                let mut initdb = as_postgres(&format!("{PG_BIN}/initdb"));
                // Trust on a loopback-only throwaway cluster: the tests need no password.
                initdb
                    .args(["-D"])
                    .arg(&data)
                    .args(["--auth=trust", "-U", "postgres", "-E", "UTF8"])
                    .stdout(std::process::Stdio::null());
                run(initdb)?;
            }
            let tls = server_tls(&dir)?;
            let running = as_postgres(&ctl)
                .args(["-D"])
                .arg(&data)
                .arg("status")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            // A cluster started before TLS was part of the setup is restarted with it.
            if running && !ssl_is_on()? {
                let mut stop = as_postgres(&ctl);
                stop.args(["-D"])
                    .arg(&data)
                    .args(["-m", "fast", "-w", "stop"]);
                run(stop)?;
            }
            if !running || !ssl_is_on().unwrap_or(false) {
                let mut start = as_postgres(&ctl);
                start
                    .args(["-D"])
                    .arg(&data)
                    .args(["-l"])
                    .arg(dir.join("postgres.log"))
                    .args([
                        "-o",
                        &format!(
                            "-c listen_addresses=127.0.0.1 -p {PG_PORT} -k {} -c max_connections=300 \
                             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                            socket.display(),
                            tls.cert.display(),
                            tls.key.display()
                        ),
                        "-w",
                        "start",
                    ])
                    .stdout(std::process::Stdio::null());
                run(start)?;
            }
            let exists = as_postgres("/usr/bin/psql")
                .args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-tAc"])
                .arg("SELECT 1 FROM pg_database WHERE datname = 'connectord'")
                .output()
                .context("cannot run psql")?;
            if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
                let mut create = as_postgres("/usr/bin/createdb");
                create.args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "connectord"]);
                run(create)?;
            }
            println!("export DATABASE_URL=postgres://postgres@127.0.0.1:{PG_PORT}/connectord");
            println!("export DATABASE_TLS_CA={}", tls.ca.display());
            Ok(())
        }
    }
}

/// The test cluster's TLS files: a throwaway CA and a server certificate for
/// `localhost` only (so tests can show that `verify-full` checks the name and
/// `verify-ca` does not, by connecting to 127.0.0.1).
struct ServerTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn server_tls(dir: &Path) -> Result<ServerTls> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let tls = dir.join("tls");
    let files = ServerTls {
        ca: tls.join("ca.pem"),
        cert: tls.join("server.crt"),
        key: tls.join("server.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&tls)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    std::fs::write(
        &files.ca,
        connector_http::testing::pem("CERTIFICATE", ca.der()),
    )?;
    std::fs::write(
        &files.cert,
        connector_http::testing::pem("CERTIFICATE", cert.der()),
    )?;
    std::fs::write(
        &files.key,
        connector_http::testing::pem("PRIVATE KEY", &key.serialize_der()),
    )?;
    let mut chown = Command::new("chown");
    chown.args(["-R", "postgres:postgres"]).arg(&tls);
    run(chown)?;
    // PostgreSQL refuses a key that others can read.
    let mut chmod = Command::new("chmod");
    chmod.arg("600").arg(&files.key);
    run(chmod)?;
    Ok(files)
}

fn ssl_is_on() -> Result<bool> {
    let out = as_postgres("/usr/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &PG_PORT.to_string(),
            "-tAc",
            "SHOW ssl",
        ])
        .output()
        .context("cannot run psql")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "on")
}

const FUZZ_TARGETS: [&str; 4] = [
    "parse_prometheus",
    "parse_openmetrics",
    "parse_prometheus_strict",
    "parse_openmetrics_strict",
];

fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    let installed = cargo(&["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("xtask: cargo-fuzz is missing, installing it");
        run(cargo(&["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<&str> = match only {
        Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "unknown fuzz target `{t}`; targets: {}",
            FUZZ_TARGETS.join(", ")
        ),
        None => FUZZ_TARGETS.to_vec(),
    };
    let per_target = (seconds / targets.len() as u64).max(1);
    for target in targets {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        // Seed with the fixtures: real exposition text reaches deep paths at once.
        for input in connector_prometheus::fixtures::inputs(&root().join("fixtures/exposition"))? {
            if let Some(name) = input.file_name() {
                std::fs::copy(&input, corpus.join(name))?;
            }
        }
        // The conformance cases cover every family rule, good and bad.
        let conformance = root().join("../shared/conformance/openmetrics");
        if target.contains("openmetrics") && conformance.is_dir() {
            for case in std::fs::read_dir(&conformance)? {
                let case = case?;
                let name = format!("conformance-{}", case.file_name().to_string_lossy());
                std::fs::copy(case.path().join("metrics"), corpus.join(name))?;
            }
        }
        let mut cmd = cargo(&["fuzz", "run", target]);
        cmd.arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={per_target}"),
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ])
            // cargo-fuzz needs nightly flags; the pinned stable toolchain allows them this way.
            .env("RUSTC_BOOTSTRAP", "1");
        run(cmd)?;
    }
    Ok(())
}
