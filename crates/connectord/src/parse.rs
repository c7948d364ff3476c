use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
    let input = match Input::open(&args.input) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", args.input.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes = input.bytes();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return report(&ParseError::from_utf8_error(bytes, &e)),
    };
    let format = match args.format {
        FormatArg::Auto => Format::detect(text),
        FormatArg::Prometheus => Format::Prometheus,
        FormatArg::Openmetrics => Format::OpenMetrics,
    };
    // Render everything before writing anything, so a parse error prints no samples.
    let rendered = if args.count {
        in_parts(text, format, args.strict, |mut parser| {
            parser.try_fold(0usize, |n, sample| sample.map(|_| n + 1))
        })
        .map(|counts| {
            let samples: usize = counts.iter().sum();
            format!("samples={samples} bytes={}\n", bytes.len()).into_bytes()
        })
    } else {
        in_parts(text, format, args.strict, render_jsonl).map(|parts| parts.concat())
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

/// Below this, one thread parses the whole text: starting threads costs more.
const MIN_PART_BYTES: usize = 1 << 20;

/// Runs `parse` over `text`, split into one part per core when that gives the same
/// answer: lenient Prometheus text has no state across lines, so parts cut at line
/// ends parse to the same samples in the same order. OpenMetrics (`# EOF` must end
/// the whole text) and strict mode (rules across families) parse in one piece.
/// When a part fails, the whole text is parsed again in one piece, so the error
/// names its line and byte in the file, not in the part.
fn in_parts<T: Send>(
    text: &str,
    format: Format,
    strict: bool,
    parse: impl Fn(Parser<'_>) -> Result<T, ParseError> + Sync,
) -> Result<Vec<T>, ParseError> {
    let whole = |text| parse(Parser::new(text, format).strict(strict)).map(|t| vec![t]);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if format != Format::Prometheus || strict || threads < 2 || text.len() < 2 * MIN_PART_BYTES {
        return whole(text);
    }
    let parts = split_at_lines(text, threads.min(text.len() / MIN_PART_BYTES));
    let results: Vec<Result<T, ParseError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(|| parse(Parser::new(part, format))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .or_else(|_| whole(text))
}

/// `n` consecutive parts of `text` of about equal size, each ending at a newline
/// (the last at the end of the text).
fn split_at_lines(text: &str, n: usize) -> Vec<&str> {
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let target = (text.len() * i / n).max(start);
        let Some(newline) = memchr::memchr(b'\n', &text.as_bytes()[target..]) else {
            break;
        };
        let end = target + newline + 1;
        parts.push(&text[start..end]);
        start = end;
    }
    parts.push(&text[start..]);
    parts
}

/// The bytes to parse: a regular file mapped, anything else (standard input, a pipe
/// such as `<(zcat x.gz)`) read.
enum Input {
    Mapped(mapped_file::MappedFile),
    Read(Vec<u8>),
}

impl Input {
    fn open(path: &Path) -> std::io::Result<Self> {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin().lock().read_to_end(&mut bytes)?;
            return Ok(Input::Read(bytes));
        }
        use std::os::unix::fs::FileTypeExt as _;
        // Opened once: a FIFO's writer may be gone after the first open.
        let mut file = std::fs::File::open(path)?;
        let kind = file.metadata()?.file_type();
        if kind.is_file() {
            return mapped_file::MappedFile::new(&file).map(Input::Mapped);
        }
        // A pipe ends; a device such as /dev/zero never does.
        if !kind.is_fifo() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file or a pipe",
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Input::Read(bytes))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Input::Mapped(map) => map.bytes(),
            Input::Read(bytes) => bytes,
        }
    }
}

fn report(err: &ParseError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_PARSE_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_end_at_newlines_and_cover_the_text() {
        let text = "a 1\nbb 2\nccc 3\ndddd 4\n";
        for n in 1..6 {
            let parts = split_at_lines(text, n);
            assert_eq!(parts.concat(), text);
            assert!(
                parts
                    .iter()
                    .take(parts.len() - 1)
                    .all(|p| p.ends_with('\n'))
            );
        }
        assert_eq!(split_at_lines("no newline", 3), vec!["no newline"]);
    }

    #[test]
    fn parts_give_the_same_samples_and_errors_name_the_whole_file() {
        let line = "m{a=\"x\",b=\"y\"} 1.5\n";
        let text = line.repeat(3 * MIN_PART_BYTES / line.len());
        let count = |mut p: Parser<'_>| p.try_fold(0usize, |n, s| s.map(|_| n + 1));
        let parts = in_parts(&text, Format::Prometheus, false, count).unwrap();
        assert_eq!(parts.iter().sum::<usize>(), text.len() / line.len());
        let jsonl = in_parts(&text, Format::Prometheus, false, render_jsonl).unwrap();
        assert_eq!(
            jsonl.concat(),
            render_jsonl(Parser::new(&text, Format::Prometheus)).unwrap()
        );
        let broken = format!("{text}m{{ 1\n");
        let err = in_parts(&broken, Format::Prometheus, false, count).unwrap_err();
        assert_eq!(err.line(), text.len() / line.len() + 1, "{err}");
    }
}
