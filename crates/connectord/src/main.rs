//! `connectord`: runs connectors. Today it offers `parse`, the exposition parser on
//! the command line.

mod parse;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "connectord",
    version,
    about = "Runs connectors and their tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse Prometheus or OpenMetrics exposition text and print one JSON object per sample.
    ///
    /// Output is all or nothing: on a parse error nothing is printed on stdout, one line
    /// `error: line L, column C (byte B): <message>` goes to stderr and the exit code is 1.
    /// Usage errors and unreadable input exit with 2.
    Parse(parse::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Parse(args) => parse::run(&args),
    }
}
