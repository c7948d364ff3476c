//! `connectord`: runs connectors from a TOML file, and the tools around them.

mod api;
mod config;
mod parse;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the connectors of a TOML file into SQLite, serving /metrics and /healthz.
    ///
    /// Connectors in the file are created or updated by name at start. SIGTERM or Ctrl-C
    /// stops scheduling, lets ticks in flight finish, and exits.
    Run {
        /// The TOML file.
        #[arg(long)]
        config: PathBuf,
        /// Log as human text (default) or one JSON object per line. RUST_LOG filters.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a TOML file, every connector's config included, without running anything.
    Validate {
        /// The TOML file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the newest rows a connector landed, one JSON object per line.
    Rows {
        /// The TOML file the connector runs from.
        #[arg(long)]
        config: PathBuf,
        /// The connector's name.
        #[arg(long)]
        connector: String,
        /// How many rows.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Parse Prometheus or OpenMetrics exposition text and print one JSON object per sample.
    ///
    /// Output is all or nothing: on a parse error nothing is printed on stdout, one line
    /// `error: line L, column C (byte B): <message>` goes to stderr and the exit code is 1.
    /// Usage errors and unreadable input exit with 2.
    Parse(parse::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => return parse::run(&args),
        Command::Run { config, log_format } => run::run(&config, log_format),
        Command::Validate { config } => run::validate(&config),
        Command::Rows {
            config,
            connector,
            limit,
        } => run::rows(&config, &connector, limit),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
