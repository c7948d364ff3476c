//! `cargo xtask tidy`: the rules ARCHITECTURE.md states that a machine can check,
//! read from `cargo metadata`. Also run as a test, so `cargo test` enforces them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// What each workspace crate may depend on among the workspace's crates (normal and
/// build dependencies). Connectors and destinations know only connector-core (and the
/// HTTP toolkit, metric rows, and Prometheus's relabel rules);
/// the runner knows no store; stores know the runner and not each other; only
/// connectord wires things together. Crates not listed (benches, xtask) may use any.
const ALLOWED: &[(&str, &[&str])] = &[
    ("connector-core", &[]),
    ("connector-http", &["connector-core"]),
    (
        "connector-prometheus",
        &["connector-core", "connector-http", "metric-rows", "relabel"],
    ),
    ("connector-runner", &["connector-core"]),
    ("relabel", &[]),
    (
        "discovery",
        &[
            "connector-core",
            "connector-http",
            "connector-runner",
            "relabel",
        ],
    ),
    ("otlp-common", &["connector-core"]),
    (
        "connector-spanmetrics",
        &["connector-core", "metric-rows", "otlp-common"],
    ),
    (
        "connector-otlp-metrics",
        &["connector-core", "metric-rows", "otlp-common"],
    ),
    (
        "store-sqlite",
        &["connector-core", "connector-runner", "metric-rows"],
    ),
    (
        "store-postgres",
        &["connector-core", "connector-runner", "metric-rows"],
    ),
    (
        "connectord",
        &[
            "connector-core",
            "connector-http",
            "connector-prometheus",
            "connector-runner",
            "connector-spanmetrics",
            "connector-otlp-metrics",
            "destination-influx",
            "discovery",
            "destination-remote-write",
            "mapped-file",
            "promql-org",
            "relabel",
            "store-postgres",
            "store-sqlite",
        ],
    ),
    ("promql-org", &[]),
    ("mapped-file", &[]),
    ("metric-rows", &["connector-core"]),
    (
        "destination-influx",
        &["connector-core", "connector-http", "metric-rows"],
    ),
    (
        "destination-remote-write",
        &["connector-core", "connector-http", "metric-rows", "relabel"],
    ),
    ("airq-connector", &["connector-core", "connector-http"]),
    ("custom-connectord", &["airq-connector", "connectord"]),
];

/// connector-core's whole dependency list: it stays small and author-facing.
const CORE_DEPENDENCIES: &[&str] = &[
    "async-trait",
    "serde",
    "serde_json",
    "serde_path_to_error",
    "thiserror",
];

/// The one crate allowed `unsafe` (a memory map for `connectord parse`, measured in
/// ARCHITECTURE.md): it denies `unsafe_code` instead of forbidding it, allows it on
/// one call, and keeps every other workspace lint.
const UNSAFE_EXCEPTION: &str = "mapped-file";

/// The only crates that may depend on `anyhow`: connectord (the daemon; its library
/// part returns no anyhow type) and xtask. Every library crate has a typed error.
const ANYHOW_ALLOWED: &[&str] = &["connectord", "xtask"];

/// Crates whose tests and docs stand in for the author-facing rule set.
fn metadata() -> Result<serde_json::Value> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(crate::root())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")
}

/// Every broken rule, one line each; empty when the workspace is tidy.
pub fn violations() -> Result<Vec<String>> {
    let meta = metadata()?;
    let packages = meta["packages"].as_array().context("no packages")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let deps: Vec<(&str, bool)> = package["dependencies"]
            .as_array()
            .map(|deps| {
                deps.iter()
                    .map(|d| {
                        let dev = d["kind"].as_str() == Some("dev");
                        (d["name"].as_str().unwrap_or_default(), dev)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shipped: BTreeSet<&str> = deps
            .iter()
            .filter(|(_, dev)| !dev)
            .map(|(n, _)| *n)
            .collect();
        if let Some(allow) = allowed.get(name) {
            for dep in shipped.iter().filter(|d| members.contains(*d)) {
                if !allow.contains(dep) {
                    problems.push(format!(
                        "{name} depends on {dep}, against the documented direction (allowed: {})",
                        if allow.is_empty() {
                            "none".to_owned()
                        } else {
                            allow.join(", ")
                        }
                    ));
                }
            }
        } else if !["benches", "xtask"].contains(&name) {
            problems.push(format!(
                "{name} is not in xtask/src/tidy.rs ALLOWED: say which workspace crates it may use"
            ));
        }
        if name == "connector-core" {
            for dep in &shipped {
                if !CORE_DEPENDENCIES.contains(dep) {
                    problems.push(format!(
                        "connector-core depends on {dep}; it may only use {}",
                        CORE_DEPENDENCIES.join(", ")
                    ));
                }
            }
        }
        if shipped.contains("anyhow") && !ANYHOW_ALLOWED.contains(&name) {
            problems.push(format!(
                "{name} depends on anyhow; only {} may (libraries return typed errors)",
                ANYHOW_ALLOWED.join(" and ")
            ));
        }
        let manifest =
            std::fs::read_to_string(package["manifest_path"].as_str().unwrap_or_default())
                .with_context(|| format!("cannot read {name}'s Cargo.toml"))?;
        if name == UNSAFE_EXCEPTION {
            let lib =
                std::fs::read_to_string(crate::root().join("crates").join(name).join("src/lib.rs"))
                    .with_context(|| format!("cannot read {name}'s lib.rs"))?;
            let unsafe_blocks = lib.matches("unsafe {").count();
            if !manifest.contains("unsafe_code = \"deny\"")
                || !manifest.contains("unwrap_used = \"deny\"")
                || unsafe_blocks != 1
            {
                problems.push(format!(
                    "{name} must deny unsafe_code and unwrap_used and hold exactly one unsafe block (it has {unsafe_blocks})"
                ));
            }
        } else if !manifest.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "{name} does not inherit the workspace lints (unsafe_code = \"forbid\", unwrap_used denied)"
            ));
        }
    }
    Ok(problems)
}

pub fn tidy() -> Result<()> {
    let problems = violations()?;
    if problems.is_empty() {
        eprintln!("xtask: tidy: the workspace follows ARCHITECTURE.md's rules");
        return Ok(());
    }
    bail!(
        "the workspace breaks ARCHITECTURE.md's rules:\n  {}",
        problems.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workspace_follows_the_architecture_rules() {
        let problems = super::violations().expect("cargo metadata runs");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_workspace_lints_forbid_unsafe_code() {
        let root =
            std::fs::read_to_string(crate::root().join("Cargo.toml")).expect("the root manifest");
        assert!(root.contains("unsafe_code = \"forbid\""));
        assert!(root.contains("unwrap_used = \"deny\""));
    }
}
