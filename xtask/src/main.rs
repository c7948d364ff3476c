//! `cargo xtask`: the project's automation entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// What CI runs: fmt check, clippy with -D warnings, every test (doc-tests included),
    /// docs with -D warnings, and cargo-deny (bans, licenses, sources).
    Ci,
    /// Runs the criterion benchmarks (`cargo bench -p benches`); extra arguments go to criterion.
    Bench {
        /// Passed to criterion, for example a filter like `node_exporter`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Rewrites the goldens under fixtures/exposition from the current parser.
    Fixtures,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Ci => ci(),
        Task::Bench { args } => {
            let mut cmd = cargo(&["bench", "-p", "benches", "--"]);
            cmd.args(args);
            run(cmd)
        }
        Task::Fixtures => fixtures(),
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
    ]))
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
