//! `cargo xtask services up|down`: what the tests need on 127.0.0.1, installed from
//! Debian's packages when missing and started as background processes whose data
//! lives under `target/services/`.

mod postgres;
mod receivers;

use std::process::Command;

use anyhow::Result;

use crate::run;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ServicesAction {
    Up,
    Down,
}

pub fn services(action: ServicesAction) -> Result<()> {
    match action {
        ServicesAction::Up => {
            postgres::postgres(action)?;
            receivers::up()
        }
        ServicesAction::Down => {
            receivers::down()?;
            postgres::postgres(action)
        }
    }
}

/// Installs Debian packages (as CI's root does), quietly.
fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!(
        "xtask: installing {} from Debian's packages",
        packages.join(", ")
    );
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::process::Stdio::null());
    run(install)
}
