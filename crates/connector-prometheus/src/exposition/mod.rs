//! A zero-copy parser for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.
//!
//! Names, label names and label values are `&str` slices of the input; a label value
//! is copied only when it contains an escape (`\\`, `\"`, `\n`), and only when the
//! caller asks for it. Labels are checked while parsing and decoded lazily, so a
//! sample costs no allocation.
//!
//! ```
//! use connector_prometheus::exposition::{Format, Parser};
//!
//! let text = "# TYPE http_requests_total counter\n\
//!             http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n";
//! let samples: Vec<_> = Parser::new(text, Format::Prometheus).collect::<Result<_, _>>()?;
//! let s = &samples[0];
//! assert_eq!(s.name, "http_requests_total");
//! assert_eq!(s.labels.get("code").as_deref(), Some("200"));
//! assert_eq!(s.value, 1027.0);
//! assert_eq!(s.timestamp_ms, Some(1395066363000.0));
//! # Ok::<(), connector_prometheus::exposition::ParseError>(())
//! ```

mod error;
mod fast;
mod grammar;
mod json;
mod parser;
mod strict;
mod syntax;
mod types;

pub use error::{ParseError, ParseErrorKind};
use grammar::*;
pub use json::{render_jsonl, write_sample_json};
pub use parser::Parser;
use syntax::{Expected, Res, TrustedLabels, expect};
pub use types::{Entry, Exemplar, Format, Labels, MetricType, Sample};

/// Parses a whole exposition into samples, or reports the first error.
pub fn parse(text: &str, format: Format) -> Result<Vec<Sample<'_>>, ParseError> {
    Parser::new(text, format).collect()
}

/// Checks the fast path against the nom grammar on the first line of `text` (which
/// runs from the start of a line to the end of the input): whatever the fast path
/// returns, the grammar must return the same for the line, and the sample path must
/// find the same line end as the newline search. `Ok(true)` when the fast path took
/// the line and agreed, `Ok(false)` when it left the line to the grammar. For the
/// differential tests and the fuzz targets; not part of the API.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub fn fast_path_agrees(text: &str, format: Format) -> Result<bool, String> {
    fn same_sample(a: &Sample<'_>, b: &Sample<'_>) -> bool {
        a.name == b.name
            && a.labels == b.labels
            && a.value.to_bits() == b.value.to_bits()
            && a.timestamp_ms.map(f64::to_bits) == b.timestamp_ms.map(f64::to_bits)
            && a.exemplar.is_none()
            && b.exemplar.is_none()
    }
    let om = format == Format::OpenMetrics;
    let mut line = &text[..memchr::memchr(b'\n', text.as_bytes()).unwrap_or(text.len())];
    if let Some(stripped) = line.strip_suffix('\r') {
        // The parser hands Prometheus text's line without the `\r` to the fast path
        // alone; OpenMetrics rejects the `\r` before any path sees the line.
        if fast::sample::<false>(text, om, &mut Vec::new()).is_some() {
            return Err("the fast path took a line ending in `\\r`".to_owned());
        }
        if om {
            return Ok(false);
        }
        line = stripped;
    }
    let crlf = line.len() < text.len() && text.as_bytes()[line.len()] == b'\r';
    let fast = match line.as_bytes().first() {
        Some(b'#') => fast::metadata(line, om, true),
        Some(_) => {
            let in_text = if crlf {
                None
            } else {
                fast::sample::<false>(text, om, &mut Vec::new())
            };
            let mut kept = Vec::new();
            let alone = fast::sample::<true>(line, om, &mut kept);
            if let Some((sample, _)) = &alone {
                let walked: Vec<_> = sample.labels.iter_raw().collect();
                if kept != walked {
                    return Err(format!(
                        "the fast path kept the labels {kept:?}, the label text holds {walked:?}"
                    ));
                }
            }
            let same = match (&in_text, &alone) {
                (Some((a, a_len)), Some((b, b_len))) => {
                    same_sample(a, b) && *a_len == line.len() && *b_len == line.len()
                }
                (None, None) => true,
                (None, Some(_)) => crlf,
                (Some(_), None) => false,
            };
            if !same {
                return Err(format!(
                    "fast path on the line in its text: {in_text:?}, on the line alone: {alone:?}, line length {}",
                    line.len()
                ));
            }
            alone.map(|(sample, _)| Entry::Sample(sample))
        }
        None => None,
    };
    let Some(fast) = fast else {
        return Ok(false);
    };
    let grammar = Parser::new(line, format).grammar_line(0, line);
    let agree = match (&fast, &grammar) {
        (Entry::Sample(a), Ok(Some(Entry::Sample(b)))) => same_sample(a, b),
        (a, Ok(Some(b))) => a == b,
        _ => false,
    };
    if agree {
        Ok(true)
    } else {
        Err(format!("fast path: {fast:?}, grammar: {grammar:?}"))
    }
}

#[cfg(test)]
mod tests;
