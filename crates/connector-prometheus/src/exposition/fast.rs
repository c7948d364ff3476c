//! The fast path: plain byte loops for the lines nearly every exporter writes.
//!
//! It accepts a strict subset of what the nom grammar in `syntax.rs` accepts — one
//! space between tokens, no blanks inside `{...}`, no exemplar — and returns exactly
//! what the grammar would return for it. Anything else, errors included, returns
//! `None` and goes through the grammar, which stays the single place that defines the
//! language and words the errors. A differential test and the fuzz targets check that
//! both paths agree on every line the fast path takes.
//!
//! Why it exists: nom's per-byte closures and error plumbing cost more than the work
//! itself on short tokens. On the benchmark inputs this path took the parser from
//! about 450 MiB/s to over 1 GiB/s (see `cargo bench -p benches --bench parse`).

use super::{Entry, Labels, MetricType, Sample, syntax};

use syntax::{LABEL, LABEL_START, METRIC, METRIC_START, name_end};

/// A sample line of the common shape, `name{l="v",...} value[ timestamp]`, at the
/// start of `text`; returns it and the length of its line, which ends at the first
/// `\n` or at the end of `text`. With `KEEP`, `labels_out` receives each label's name
/// and raw value as the label is checked (after a `None` it holds a part of them);
/// without, it is not touched, and the parse pays nothing for it: an `Option`
/// checked per label cost the parse alone 7 % of its instructions (cachegrind).
///
/// The sample line finds its own end: the tokens stop at the newline, so the
/// separate newline search every other line needs is skipped. That made the parser
/// 8 % faster on node_exporter's text, 16 % on Prometheus's alltypes and 2 % on the
/// generated input (`cargo bench -p benches --bench parse`).
pub(super) fn sample<'a, const KEEP: bool>(
    text: &'a str,
    om: bool,
    labels_out: &mut Vec<(&'a str, &'a str)>,
) -> Option<(Sample<'a>, usize)> {
    let b = text.as_bytes();
    let mut i = name_end(b, 0, METRIC_START, METRIC)?;
    let name = &text[..i];
    let mut labels = Labels::default();
    if b.get(i) == Some(&b'{') {
        let (end, set) = label_set::<KEEP>(text, i + 1, om, labels_out)?;
        labels = set;
        i = end;
    }
    if b.get(i) != Some(&b' ') {
        return None;
    }
    let value_start = i + 1;
    let value_end = token_end(b, value_start)?;
    let value = syntax::number_str(&text[value_start..value_end])?;
    if b.get(value_end) != Some(&b' ') {
        return Some((
            Sample {
                name,
                labels,
                value,
                timestamp_ms: None,
                exemplar: None,
            },
            value_end,
        ));
    }
    // A timestamp follows (or, in OpenMetrics, an exemplar, which the grammar handles).
    let ts_start = value_end + 1;
    let ts_end = token_end(b, ts_start)?;
    if b.get(ts_end) == Some(&b' ') {
        return None;
    }
    let ts = &b[ts_start..ts_end];
    let timestamp_ms = Some(if om {
        om_timestamp(ts)?
    } else {
        prometheus_timestamp(ts)?
    });
    Some((
        Sample {
            name,
            labels,
            value,
            timestamp_ms,
            exemplar: None,
        },
        ts_end,
    ))
}

/// The end of a non-empty token starting at `start`: a space, a newline or the end
/// of the text. A tab, a carriage return or an empty token is left to the grammar.
fn token_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b' ' | b'\n' => break,
            b'\t' | b'\r' => return None,
            _ => i += 1,
        }
    }
    (i > start).then_some(i)
}

/// Seconds, finite, with at least one digit (the ABNF's `realnumber`); not `#`.
fn om_timestamp(ts: &[u8]) -> Option<f64> {
    if ts.first() == Some(&b'#') || !ts.iter().any(u8::is_ascii_digit) {
        return None;
    }
    let seconds = syntax::number(ts).filter(|s| s.is_finite())?;
    Some(seconds * 1000.0)
}

/// Integer milliseconds, optionally negative; longer or odder forms go to the grammar.
fn prometheus_timestamp(ts: &[u8]) -> Option<f64> {
    let (negative, digits) = match ts.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, ts),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    // Timestamps beyond 2^53 ms lose precision, exactly as the grammar's path does.
    #[allow(clippy::cast_precision_loss)]
    let ms = (if negative { -n } else { n }) as f64;
    Some(ms)
}

/// `l="v",...}` starting after the `{`; returns the index after `}` and the labels,
/// and with `KEEP` pushes each label's name and raw value to `labels_out`.
fn label_set<'a, const KEEP: bool>(
    text: &'a str,
    open: usize,
    om: bool,
    labels_out: &mut Vec<(&'a str, &'a str)>,
) -> Option<(usize, Labels<'a>)> {
    let b = text.as_bytes();
    let mut i = open;
    let mut len = 0u32;
    let mut escaped = false;
    if b.get(i) != Some(&b'}') {
        loop {
            let name = (i, name_end(b, i, LABEL_START, LABEL)?);
            i = name.1;
            if b.get(i..i + 2) != Some(b"=\"") {
                return None;
            }
            i += 2;
            let value_start = i;
            loop {
                // Unclosed, or a backslash at the end of the line: the grammar's error.
                let at = syntax::find_value_stop(b, i)?;
                match b[at] {
                    b'"' => {
                        if KEEP {
                            labels_out.push((&text[name.0..name.1], &text[value_start..at]));
                        }
                        i = at + 1;
                        break;
                    }
                    // The line ends inside the value.
                    b'\n' => return None,
                    _ => {}
                }
                // A backslash cannot escape the line's end either.
                if b.get(at + 1) == Some(&b'\n') {
                    return None;
                }
                escaped = true;
                // Skip the escaped byte too: `\"` does not close the value.
                i = at + 2;
            }
            len += 1;
            match b.get(i) {
                Some(b',') if b.get(i + 1) == Some(&b'}') => {
                    // A trailing comma: Prometheus text allows it, OpenMetrics does not.
                    if om {
                        return None;
                    }
                    i += 1;
                    break;
                }
                Some(b',') => i += 1,
                Some(b'}') => break,
                _ => return None,
            }
        }
    }
    let labels = Labels {
        inner: &text[open..i],
        len,
        escaped,
        compact: true,
    };
    Some((i + 1, labels))
}

/// `# HELP name text` and `# TYPE name type` with single spaces. Without `help_text`
/// the help text is left empty.
pub(super) fn metadata(line: &str, om: bool, help_text: bool) -> Option<Entry<'_>> {
    let b = line.as_bytes();
    let rest = b.strip_prefix(b"# ")?;
    let is_help = match rest.get(..5)? {
        b"HELP " => true,
        b"TYPE " => false,
        _ => return None,
    };
    let name_start = 7;
    let name_end = name_end(b, name_start, METRIC_START, METRIC)?;
    if b.get(name_end) != Some(&b' ') {
        return None;
    }
    let name = &line[name_start..name_end];
    let after = name_end + 1;
    if is_help {
        // Prometheus text drops the blanks before the help text; leave those to the grammar.
        if !om && matches!(b.get(after), None | Some(b' ' | b'\t')) {
            return None;
        }
        let text = if help_text {
            syntax::unescape(&line[after..], om)
        } else {
            std::borrow::Cow::Borrowed("")
        };
        return Some(Entry::Help { name, text });
    }
    let format = if om {
        super::Format::OpenMetrics
    } else {
        super::Format::Prometheus
    };
    let metric_type = MetricType::parse(&b[after..], format)?;
    Some(Entry::Type { name, metric_type })
}
