//! `cargo xtask`: the project's automation entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod chaos;
mod load_push;
mod schedule_bench;
mod services;
mod tidy;

use services::ServicesAction;

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
    /// Starts (`up`) or stops (`down`) what the tests need on 127.0.0.1, installing
    /// Debian's packages when missing: a throwaway PostgreSQL 15 and the receivers
    /// destinations deliver to (VictoriaMetrics, InfluxDB 1.x, Prometheus with its
    /// remote-write receiver). `up` prints `export DATABASE_URL=...` and the
    /// receivers' URLs on stdout: `eval "$(cargo xtask services up)"`.
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
    /// Push load: OTLP/HTTP bodies (traces into spanmetrics, or `--signal metrics`
    /// into otlp_metrics) replayed by concurrent clients against a release connectord
    /// on SQLite for a bounded time; prints items/s, request latency p50/p99 and peak
    /// RSS, and fails unless the committed rows add up to exactly what was acknowledged.
    #[command(alias = "load-spans")]
    LoadPush(load_push::LoadArgs),
}

/// The `p` quantile (0 to 1) of an ascending list by nearest rank; the default for
/// an empty one. The load benches' latency and lateness figures.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

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
        Task::Services { action } => services::services(action),
        Task::Fuzz { seconds, target } => fuzz(seconds, target.as_deref()),
        Task::LoadPush(args) => {
            run(cargo(&["build", "--release", "-p", "connectord"]))?;
            load_push::run(
                &args,
                &root().join("target/release/connectord"),
                &root().join("target/load-push"),
            )
        }
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
    let began = std::time::Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // CI has 30 minutes; each step's time shows where a slower run spent it.
    eprintln!(
        "xtask: {:?} {:?} took {} s",
        cmd.get_program(),
        cmd.get_args().next().unwrap_or_default(),
        began.elapsed().as_secs()
    );
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
    if std::env::var("CI").as_deref() == Ok("true") {
        drop_test_executables()?;
    }
    // A smoke run; the long runs are `cargo xtask fuzz --seconds N`.
    fuzz(60, None)?;
    eprintln!("xtask: ci passed");
    Ok(())
}

/// Removes the test and example executables under `target/debug` once nothing in the
/// run needs them. The fuzz targets build apart, with sanitizer flags, and CI once ran
/// out of disk building them beside the test binaries (about 2.7 GB of `target/debug`
/// beside 1.5 GB of `fuzz/target`). xtask itself, the libraries and the build scripts
/// stay, so `cargo xtask services down` afterwards does not rebuild anything.
fn drop_test_executables() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let debug = root().join("target/debug");
    eprintln!(
        "xtask: disk before removing the test executables: {}",
        free_disk()
    );
    let mut removed = 0u64;
    // Top-level binaries are hard links to those in `deps`: both go, or no space returns.
    for dir in [debug.clone(), debug.join("deps"), debug.join("examples")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let meta = entry.metadata()?;
            let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0;
            if executable && !name.starts_with("xtask") && !name.ends_with(".so") {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                removed += meta.len();
            }
        }
    }
    eprintln!(
        "xtask: removed {} MB of test executables; disk now {}",
        removed / 1_000_000,
        free_disk()
    );
    Ok(())
}

/// The free space where the project lives, as `df` puts it, for CI logs.
fn free_disk() -> String {
    Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(root())
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().nth(1).map(|l| format!("{} free", l.trim())))
        .unwrap_or_else(|| "unknown (df failed)".to_owned())
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
            // A source connector for the destinations' example body to follow; the
            // runner is off, so nothing scrapes or delivers.
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[runner]\nenabled = false\n\
             [[connectors]]\nname = \"self\"\ntype = \"prometheus\"\ntarget_database = \"metrics\"\n\
             target_table = \"self\"\nschedule_ms = 1000\n[connectors.config]\nendpoint = \"http://127.0.0.1:9/metrics\"\n",
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

const FUZZ_TARGETS: [&str; 7] = [
    "parse_prometheus",
    "parse_openmetrics",
    "parse_prometheus_strict",
    "parse_openmetrics_strict",
    "otlp_traces",
    "otlp_metrics",
    "promql_confine",
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
        if target == "otlp_traces" {
            // Generated requests: protobuf structure reaches the span fields at once.
            for (seed, spans) in [(1, 1), (2, 3), (3, 12), (4, 40)] {
                std::fs::write(
                    corpus.join(format!("generated-{seed}")),
                    benches::otlp_traces(spans, seed),
                )?;
            }
        } else if target == "otlp_metrics" {
            // Generated requests of every kind of point the bench pushes.
            for (seed, points) in [(1, 3), (2, 10), (3, 30)] {
                std::fs::write(
                    corpus.join(format!("generated-{seed}")),
                    benches::otlp_metrics(points, seed).0,
                )?;
            }
            std::fs::write(
                corpus.join("many-instruments"),
                benches::otlp_metrics_instruments(9, 1),
            )?;
            std::fs::write(corpus.join("clashing-names"), clashing_metrics())?;
        } else if target == "promql_confine" {
            // The hostile queries of the live test and the dashboard's queries.
            for (i, query) in promql_seeds()?.iter().enumerate() {
                std::fs::write(corpus.join(format!("seed-{i}")), query)?;
            }
        } else {
            seed_exposition(target, &corpus)?;
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

/// An OTLP metrics request whose families clash on the page (a counter `x` and a
/// gauge `x_total`, a histogram `h` and a gauge `h_count`), for the fuzzer to start
/// from the names the connector must refuse.
fn clashing_metrics() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    };
    use prost::Message as _;
    let point = || NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(1.0)),
        ..NumberDataPoint::default()
    };
    let gauge = |name: &str| Metric {
        name: name.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point()],
        })),
        ..Metric::default()
    };
    let metrics = vec![
        Metric {
            name: "x".to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![point()],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Metric::default()
        },
        gauge("x_total"),
        Metric {
            name: "h".to_owned(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 1,
                    sum: Some(1.0),
                    bucket_counts: vec![1, 0],
                    explicit_bounds: vec![5.0],
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Metric::default()
        },
        gauge("h_count"),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec()
}

/// PromQL to seed the rewrite's fuzzing with: every `expr` of the Grafana dashboard
/// and the alert rules, and a few hostile shapes.
fn promql_seeds() -> Result<Vec<String>> {
    let mut seeds: Vec<String> = [
        "{__name__=~\".+\",org_id=\"b\"}",
        "label_replace(up, \"org_id\", \"b\", \"\", \"\")",
        "a * on() group_left(org_id) b or c unless d",
        "max_over_time(x{org_id=~\"a|b\"}[1m:1s] offset 1m) @ end()",
        "x{a=\"1\" or b=\"2\"}",
        "count_values(\"org_id\", x) > bool 1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root().join("deploy/grafana/connectord.json"),
    )?)?;
    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str()) {
                        ("expr", Some(expr)) => out.push(expr.to_owned()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    exprs(&dashboard, &mut seeds);
    Ok(seeds)
}

/// Seeds an exposition target's corpus with the fixtures and, for OpenMetrics
/// targets, the conformance cases.
fn seed_exposition(target: &str, corpus: &std::path::Path) -> Result<()> {
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
    Ok(())
}
