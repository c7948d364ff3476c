use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use connector_prometheus::exposition::{Format, ParseError, Parser, render_jsonl};

/// Exit code for input that is not valid exposition text.
const EXIT_PARSE_ERROR: u8 = 1;
/// Exit code for usage errors, unreadable input included (clap uses 2 as well).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Input format; `auto` detects OpenMetrics by `# EOF` and OpenMetrics-only syntax.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Print only `samples=N bytes=B`, for timing the parser without JSON output.
    #[arg(long)]
    count: bool,
    /// Also check the rules that span lines (metadata placement, histogram buckets,
    /// counter values, interleaving, …), as OpenMetrics 1.0 requires.
    #[arg(long)]
    strict: bool,
    /// The file to parse, or `-` for standard input.
    input: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Auto,
    Prometheus,
    Openmetrics,
}

pub fn run(args: &ParseArgs) -> ExitCode {
    let bytes = match read_input(&args.input) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", args.input.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => return report(&ParseError::from_utf8_error(&bytes, &e)),
    };
    let format = match args.format {
        FormatArg::Auto => Format::detect(text),
        FormatArg::Prometheus => Format::Prometheus,
        FormatArg::Openmetrics => Format::OpenMetrics,
    };
    // Render everything before writing anything, so a parse error prints no samples.
    let mut parser = Parser::new(text, format).strict(args.strict);
    let rendered = if args.count {
        parser
            .try_fold(0usize, |n, sample| sample.map(|_| n + 1))
            .map(|samples| format!("samples={samples} bytes={}\n", bytes.len()).into_bytes())
    } else {
        render_jsonl(parser)
    };
    let out = match rendered {
        Ok(out) => out,
        Err(e) => return report(&e),
    };
    match std::io::stdout().lock().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(EXIT_PARSE_ERROR)
        }
    }
}

fn read_input(input: &PathBuf) -> std::io::Result<Vec<u8>> {
    if input.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(input)
    }
}

fn report(err: &ParseError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_PARSE_ERROR)
}
