//! The command line: `run`, `validate`, `rows` and `parse`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use connector_core::Registry;

use crate::{parse, rows, run};

#[derive(Debug, Parser)]
#[command(version, about = "Runs connectors and their tools")]
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
    /// Print the newest rows of a connector's table, one JSON object per line.
    ///
    /// Reads either store (SQLite files or PostgreSQL), whatever the table's columns.
    Rows(rows::RowsArgs),
    /// Parse Prometheus or OpenMetrics exposition text and print one JSON object per sample.
    ///
    /// Output is all or nothing: on a parse error nothing is printed on stdout, one line
    /// `error: line L, column C (byte B): <message>` goes to stderr and the exit code is 1.
    /// Usage errors and unreadable input exit with 2.
    Parse(parse::ParseArgs),
}

/// Parses `args` (the program name first) and runs the command with `registry`.
pub fn main(registry: Registry, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let registry = Arc::new(registry);
    let result = match cli.command {
        Command::Parse(args) => return parse::run(&args),
        Command::Run { config, log_format } => run::run(&config, log_format, registry),
        Command::Validate { config } => run::validate(&config, &registry),
        Command::Rows(args) => rows::run(&args, &registry),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
