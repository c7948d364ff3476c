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

mod fast;
mod json;
mod strict;
mod syntax;

use std::borrow::Cow;
use std::fmt;

use memchr::memchr;
use nom::Parser as _;

pub use json::{render_jsonl, write_sample_json};
use syntax::{Expected, Res, TrustedLabels, expect};

/// Which text format to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header names, or `None` when it names neither.
    ///
    /// ```
    /// use connector_prometheus::exposition::Format;
    /// assert_eq!(
    ///     Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ///     Some(Format::OpenMetrics)
    /// );
    /// assert_eq!(Format::from_content_type("text/plain; version=0.0.4"), Some(Format::Prometheus));
    /// assert_eq!(Format::from_content_type("text/html"), None);
    /// ```
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Some(Format::OpenMetrics)
        } else if media_type.eq_ignore_ascii_case("text/plain") {
            Some(Format::Prometheus)
        } else {
            None
        }
    }

    /// Guesses the format of a body whose content type is unknown.
    ///
    /// OpenMetrics when the text uses syntax only OpenMetrics has (a `# UNIT` line, a
    /// type only OpenMetrics defines, an exemplar) or when its last line is `# EOF`
    /// and no `untyped` type appears; Prometheus text otherwise. A Prometheus body
    /// that merely ends with a stray `# EOF` comment parses the same either way.
    pub fn detect(text: &str) -> Format {
        let bytes = text.as_bytes();
        if memchr::memmem::find(bytes, b" # {").is_some() {
            return Format::OpenMetrics;
        }
        let mut untyped = false;
        let mut last_line = "";
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            last_line = line;
            if let Some(meta) = line.strip_prefix("# ") {
                if meta.starts_with("UNIT ") {
                    return Format::OpenMetrics;
                }
                if let Some(rest) = meta.strip_prefix("TYPE ") {
                    match rest.split_ascii_whitespace().nth(1) {
                        Some("gaugehistogram" | "stateset" | "info" | "unknown") => {
                            return Format::OpenMetrics;
                        }
                        Some("untyped") => untyped = true,
                        _ => {}
                    }
                }
            }
        }
        if last_line == "# EOF" && !untyped {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Prometheus => "prometheus",
            Format::OpenMetrics => "openmetrics",
        }
    }
}

/// A metric family type from a `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `gaugehistogram` (OpenMetrics)
    GaugeHistogram,
    /// `stateset` (OpenMetrics)
    StateSet,
    /// `info` (OpenMetrics)
    Info,
    /// `summary`
    Summary,
    /// `unknown` (OpenMetrics)
    Unknown,
    /// `untyped` (Prometheus text)
    Untyped,
}

impl MetricType {
    fn parse(word: &[u8], format: Format) -> Option<MetricType> {
        let t = match word {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" if format == Format::Prometheus => MetricType::Untyped,
            b"gaugehistogram" if format == Format::OpenMetrics => MetricType::GaugeHistogram,
            b"stateset" if format == Format::OpenMetrics => MetricType::StateSet,
            b"info" if format == Format::OpenMetrics => MetricType::Info,
            b"unknown" if format == Format::OpenMetrics => MetricType::Unknown,
            _ => return None,
        };
        Some(t)
    }
}

/// The labels of a sample or exemplar, checked but not yet decoded.
///
/// Iterating borrows names and values from the input; [`Labels::iter_decoded`]
/// copies only the values that contain escapes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Labels<'a> {
    /// The text between `{` and `}`.
    inner: &'a str,
    len: u32,
    escaped: bool,
    /// No blanks anywhere between the braces (outside values): `a="1",b="2"`.
    compact: bool,
}

impl<'a> Labels<'a> {
    /// The number of labels.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when there are no labels (`{}` or none written).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when some value contains a backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// `(name, value)` pairs in written order, values still escaped as written.
    pub fn iter_raw(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        TrustedLabels {
            rest: self.inner,
            compact: self.compact,
        }
    }

    /// `(name, value)` pairs in written order with values decoded.
    pub fn iter_decoded(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        let escaped = self.escaped;
        self.iter_raw().map(move |(name, value)| {
            let value = if escaped {
                syntax::unescape(value, true)
            } else {
                Cow::Borrowed(value)
            };
            (name, value)
        })
    }

    /// The decoded value of the first label called `name`.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter_decoded()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The label text as written between the braces.
    pub fn as_written(&self) -> &'a str {
        self.inner
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter_decoded()).finish()
    }
}

/// An OpenMetrics exemplar attached to a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar<'a> {
    /// The exemplar's labels (`trace_id` and the like).
    pub labels: Labels<'a>,
    /// The exemplar's value.
    pub value: f64,
    /// Its timestamp in Unix milliseconds, if written.
    pub timestamp_ms: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name as written (`http_requests_total`, `x_bucket`).
    pub name: &'a str,
    /// The labels.
    pub labels: Labels<'a>,
    /// The value; NaN and ±Inf are kept as such.
    pub value: f64,
    /// The sample's timestamp in Unix milliseconds, if written. Prometheus text writes
    /// integer milliseconds; OpenMetrics writes seconds, scaled here by 1000.
    pub timestamp_ms: Option<f64>,
    /// The exemplar, if written (OpenMetrics only).
    pub exemplar: Option<Exemplar<'a>>,
}

/// One meaningful line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// A sample.
    Sample(Sample<'a>),
    /// `# HELP name text`, the text unescaped.
    Help {
        /// The family name.
        name: &'a str,
        /// The help text.
        text: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        /// The family name.
        name: &'a str,
        /// The family type.
        metric_type: MetricType,
    },
    /// `# UNIT name unit` (OpenMetrics).
    Unit {
        /// The family name.
        name: &'a str,
        /// The unit, possibly empty.
        unit: &'a str,
    },
}

/// What kind of problem a [`ParseError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The text does not follow the grammar.
    Syntax,
    /// A value or timestamp is not a number.
    Number,
    /// The input is not UTF-8.
    Utf8,
    /// OpenMetrics framing: `# EOF` missing, or text after it.
    Framing,
    /// Strict mode only: each line is well formed, but together they break a rule
    /// of the format (bucket order, counter values, metadata placement, …).
    Semantic,
}

/// Why the input is not valid exposition text, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: ParseErrorKind,
    line: usize,
    column: usize,
    offset: usize,
    message: String,
}

impl ParseError {
    fn at(kind: ParseErrorKind, text: &[u8], offset: usize, message: String) -> Self {
        let offset = offset.min(text.len());
        let line_start = memchr::memrchr(b'\n', &text[..offset]).map_or(0, |i| i + 1);
        let line = 1 + memchr::memchr_iter(b'\n', &text[..line_start]).count();
        // Columns count characters, as an editor shows them.
        let column = 1 + String::from_utf8_lossy(&text[line_start..offset])
            .chars()
            .count();
        ParseError {
            kind,
            line,
            column,
            offset,
            message,
        }
    }

    /// Reports invalid UTF-8 in raw bytes, before any parsing.
    pub fn from_utf8_error(bytes: &[u8], err: &std::str::Utf8Error) -> Self {
        ParseError::at(
            ParseErrorKind::Utf8,
            bytes,
            err.valid_up_to(),
            "invalid UTF-8: exposition text must be UTF-8".to_owned(),
        )
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// The 1-based line number.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The 1-based column, in characters.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The 0-based byte offset from the start of the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What was wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {}): {}",
            self.line, self.column, self.offset, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition into samples, or reports the first error.
pub fn parse(text: &str, format: Format) -> Result<Vec<Sample<'_>>, ParseError> {
    Parser::new(text, format).collect()
}

/// Streams [`Entry`]s (with [`Parser::next_entry`]) or, as an [`Iterator`], samples
/// only. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Where the line of the entry [`Parser::advance`] last returned begins.
    line_start: usize,
    format: Format,
    seen_eof: bool,
    finished: bool,
    strict: Option<Box<strict::Checker<'a>>>,
}

impl<'a> Parser<'a> {
    /// A lenient parser over `text` in `format`: every line is checked against the
    /// grammar, but rules that span lines are not (see [`Parser::strict`]).
    pub fn new(text: &'a str, format: Format) -> Self {
        Parser {
            text,
            pos: 0,
            line_start: 0,
            format,
            seen_eof: false,
            finished: false,
            strict: None,
        }
    }

    /// Turns strict mode on or off (it is off by default).
    ///
    /// Strict mode also checks the rules that span lines: metadata placement and
    /// repetition, clashing family names, interleaved metrics, timestamps going
    /// backwards, the values counters, histograms, summaries, statesets and infos
    /// may take, bucket order, `+Inf` and `_count` agreement, exemplar placement and
    /// length, and unique label names. Those errors have kind
    /// [`ParseErrorKind::Semantic`]; a rule about a whole metric point or family is
    /// reported at the line where it began, once the point or family has ended.
    ///
    /// ```
    /// use connector_prometheus::exposition::{Format, ParseErrorKind, Parser};
    ///
    /// let text = "# TYPE a counter\na_total -1\n# EOF\n";
    /// assert!(Parser::new(text, Format::OpenMetrics).all(|s| s.is_ok()));
    /// let err = Parser::new(text, Format::OpenMetrics)
    ///     .strict(true)
    ///     .find_map(Result::err)
    ///     .unwrap();
    /// assert_eq!(err.kind(), ParseErrorKind::Semantic);
    /// assert_eq!(err.line(), 2);
    /// ```
    #[must_use]
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on.then(|| Box::new(strict::Checker::new(self.format)));
        self
    }

    /// The format being parsed.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next sample or metadata line, `None` at the end of a valid input.
    pub fn next_entry(&mut self) -> Option<Result<Entry<'a>, ParseError>> {
        self.entry(true)
    }

    /// The next entry; `help_text: false` leaves the text of a well-formed `# HELP`
    /// empty, for callers that drop metadata (decoding it is most of a HELP line's cost).
    fn entry(&mut self, help_text: bool) -> Option<Result<Entry<'a>, ParseError>> {
        if self.finished {
            return None;
        }
        let checked = self.advance(help_text).and_then(|entry| {
            let Some(checker) = self.strict.as_mut() else {
                return Ok(entry);
            };
            let verdict = match &entry {
                Some(entry) => checker.entry(entry, self.line_start),
                None => checker.finish(),
            };
            verdict.map(|()| entry).map_err(|v| {
                ParseError::at(
                    ParseErrorKind::Semantic,
                    self.text.as_bytes(),
                    v.offset,
                    v.message,
                )
            })
        });
        match checked {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(err) => {
                self.finished = true;
                Some(Err(err))
            }
        }
    }

    fn advance(&mut self, help_text: bool) -> Result<Option<Entry<'a>>, ParseError> {
        let om = self.format == Format::OpenMetrics;
        loop {
            if let Some((start, sample)) = self.fast_sample(om) {
                self.line_start = start;
                return Ok(Some(Entry::Sample(sample)));
            }
            let Some((start, line)) = self.next_line()? else {
                return Ok(None);
            };
            let fast = match line.as_bytes().first() {
                Some(b'#') => fast::metadata(line, om, help_text),
                // A line `fast_sample` left, such as one ending in `\r\n`.
                Some(_) => fast::sample(line, om).map(|(sample, _)| Entry::Sample(sample)),
                None => None,
            };
            if let Some(entry) =
                fast.map_or_else(|| self.grammar_line(start, line), |e| Ok(Some(e)))?
            {
                self.line_start = start;
                return Ok(Some(entry));
            }
        }
    }

    /// The sample line at the current position if the fast path takes it, with where
    /// it starts; the parser then moves past it. The fast path finds the line's end
    /// itself, so this skips [`Parser::next_line`]'s newline search.
    fn fast_sample(&mut self, om: bool) -> Option<(usize, Sample<'a>)> {
        // Text after `# EOF` is an error that `next_line` reports.
        if om && self.seen_eof {
            return None;
        }
        let start = self.pos;
        let rest = self.text.get(start..)?;
        if matches!(rest.as_bytes().first(), None | Some(b'#')) {
            return None;
        }
        let (sample, len) = fast::sample(rest, om)?;
        self.pos = (start + len + 1).min(self.text.len());
        Some((start, sample))
    }

    /// The next line without its line ending, and where it starts; `None` at the end
    /// of the text. Checks OpenMetrics framing: no `\r`, nothing after `# EOF`, and
    /// `# EOF` present.
    fn next_line(&mut self) -> Result<Option<(usize, &'a str)>, ParseError> {
        let text = self.text;
        let bytes = text.as_bytes();
        let om = self.format == Format::OpenMetrics;
        if self.pos >= bytes.len() {
            if om && !self.seen_eof {
                return Err(self.error(
                    ParseErrorKind::Framing,
                    bytes.len(),
                    "missing `# EOF`: OpenMetrics text must end with it (was the body cut short?)"
                        .to_owned(),
                ));
            }
            return Ok(None);
        }
        let start = self.pos;
        let (end, next) = match memchr(b'\n', &bytes[start..]) {
            Some(i) => (start + i, start + i + 1),
            None => (bytes.len(), bytes.len()),
        };
        self.pos = next;
        if om && self.seen_eof {
            return Err(self.error(
                ParseErrorKind::Framing,
                start,
                "text after `# EOF`".to_owned(),
            ));
        }
        let mut line = &text[start..end];
        if let Some(stripped) = line.strip_suffix('\r') {
            if om {
                return Err(self.error(
                    ParseErrorKind::Syntax,
                    end - 1,
                    "carriage return: OpenMetrics lines end with `\\n` alone".to_owned(),
                ));
            }
            line = stripped;
        }
        Ok(Some((start, line)))
    }

    /// Parses `line` (starting at byte `start`) with the nom grammar, which accepts
    /// every valid line and words the errors.
    fn grammar_line(
        &mut self,
        start: usize,
        line: &'a str,
    ) -> Result<Option<Entry<'a>>, ParseError> {
        let result = if self.format == Format::OpenMetrics {
            self.openmetrics_line(line)
        } else {
            prometheus_line(line)
        };
        result.map_err(|e| {
            let offset = start + (line.len() - e.at.len());
            let kind = if e.what.starts_with("a number") || e.what.starts_with("an integer") {
                ParseErrorKind::Number
            } else {
                ParseErrorKind::Syntax
            };
            self.error(kind, offset, describe(e, line))
        })
    }

    /// Samples only, without strict mode: the fast path returns samples straight from
    /// the line, skipping the `Entry` and `Result` wrapping that cost about a fifth
    /// of a sample's time when they were moved through `next_entry`.
    fn next_sample_lenient(&mut self) -> Option<Result<Sample<'a>, ParseError>> {
        let om = self.format == Format::OpenMetrics;
        while !self.finished {
            if let Some((_, sample)) = self.fast_sample(om) {
                return Some(Ok(sample));
            }
            let (start, line) = match self.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            };
            match line.as_bytes().first() {
                Some(b'#') if fast::metadata(line, om, false).is_some() => continue,
                Some(b'#') | None => {}
                Some(_) => {
                    if let Some((sample, _)) = fast::sample(line, om) {
                        return Some(Ok(sample));
                    }
                }
            }
            match self.grammar_line(start, line) {
                Ok(Some(Entry::Sample(sample))) => return Some(Ok(sample)),
                Ok(_) => {}
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    fn error(&self, kind: ParseErrorKind, offset: usize, message: String) -> ParseError {
        ParseError::at(kind, self.text.as_bytes(), offset, message)
    }

    fn openmetrics_line(&mut self, line: &'a str) -> Result<Option<Entry<'a>>, Expected<'a>> {
        let b = line.as_bytes();
        if b.is_empty() {
            return Err(Expected {
                at: b,
                what: "a sample or `#` line (OpenMetrics has no blank lines)",
            });
        }
        if b[0] != b'#' {
            return openmetrics_sample(line).map(|s| Some(Entry::Sample(s)));
        }
        if b == b"# EOF" {
            self.seen_eof = true;
            return Ok(None);
        }
        let rest = b.strip_prefix(b"# ").ok_or(Expected {
            at: &b[1..],
            what: "a space after `#`",
        })?;
        let (keyword, after) = match rest.iter().position(|&c| c == b' ') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, &rest[rest.len()..]),
        };
        let entry = match keyword {
            b"HELP" => {
                let (rest, name) = metadata_name(after, true)?;
                // The ABNF wants the space even before an empty text: `# HELP name `.
                let Some(help) = rest.strip_prefix(b" ") else {
                    return Err(Expected {
                        at: rest,
                        what: "a space and the help text (empty help is written `# HELP name `)",
                    });
                };
                let text = syntax::unescape(sub(line, help), true);
                Entry::Help {
                    name: sub(line, name),
                    text,
                }
            }
            b"TYPE" => {
                let (rest, name) = metadata_name(after, true)?;
                let (rest, metric_type) = type_word(rest, true, Format::OpenMetrics)?;
                if !rest.is_empty() {
                    return Err(Expected {
                        at: rest,
                        what: "the end of the line after the type",
                    });
                }
                Entry::Type {
                    name: sub(line, name),
                    metric_type,
                }
            }
            b"UNIT" => {
                let (rest, name) = metadata_name(after, true)?;
                let Some(unit) = rest.strip_prefix(b" ") else {
                    return Err(Expected {
                        at: rest,
                        what: "a space and the unit (an empty unit is written `# UNIT name `)",
                    });
                };
                if let Some(i) = unit
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b':'))
                {
                    return Err(Expected {
                        at: &unit[i..],
                        what: "a unit made of metric name characters",
                    });
                }
                Entry::Unit {
                    name: sub(line, name),
                    unit: sub(line, unit),
                }
            }
            _ => {
                return Err(Expected {
                    at: rest,
                    what: "`HELP`, `TYPE`, `UNIT` or `EOF` after `# ` (OpenMetrics has no free comments)",
                });
            }
        };
        Ok(Some(entry))
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Sample<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.strict.is_none() {
            return self.next_sample_lenient();
        }
        loop {
            match self.entry(false)? {
                Ok(Entry::Sample(sample)) => return Some(Ok(sample)),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl std::iter::FusedIterator for Parser<'_> {}

/// The `&str` of `line` that `part` (a sub-slice of its bytes) covers. Every token
/// boundary is an ASCII byte, so the slice always falls on character boundaries.
fn sub<'a>(line: &'a str, part: &[u8]) -> &'a str {
    let start = part.as_ptr() as usize - line.as_ptr() as usize;
    &line[start..start + part.len()]
}

fn describe(e: Expected<'_>, line: &str) -> String {
    let found = match sub(line, e.at).chars().next() {
        None => "the end of the line".to_owned(),
        Some(' ') => "a space".to_owned(),
        Some('\t') => "a tab".to_owned(),
        Some(c) if c.is_control() => format!("control character U+{:04X}", u32::from(c)),
        Some(_) => {
            let token: String = sub(line, e.at).chars().take(24).collect();
            format!("`{token}`")
        }
    };
    format!("expected {}, found {found}", e.what)
}

/// `SP name` of a metadata line (after the keyword).
fn metadata_name(input: &[u8], om: bool) -> Result<(&[u8], &[u8]), Expected<'_>> {
    let rest = if om {
        expect("a space after the keyword", syntax::space)
            .parse(input)
            .map_err(syntax::failure)?
            .0
    } else {
        expect("a blank after the keyword", syntax::blanks1)
            .parse(input)
            .map_err(syntax::failure)?
            .0
    };
    syntax::metric_name(rest).map_err(syntax::failure)
}

/// `SP type`; returns what follows the type word.
fn type_word(input: &[u8], om: bool, format: Format) -> Result<(&[u8], MetricType), Expected<'_>> {
    let rest = if om {
        expect("a space before the type", syntax::space).parse(input)
    } else {
        expect("a blank before the type", syntax::blanks1).parse(input)
    }
    .map_err(syntax::failure)?
    .0;
    let (after, word) = expect("a metric type", syntax::token)
        .parse(rest)
        .map_err(syntax::failure)?;
    let expected = match format {
        Format::Prometheus => "a metric type: counter, gauge, histogram, summary or untyped",
        Format::OpenMetrics => {
            "a metric type: counter, gauge, histogram, gaugehistogram, stateset, info, summary or unknown"
        }
    };
    MetricType::parse(word, format)
        .map(|t| (after, t))
        .ok_or(Expected {
            at: rest,
            what: expected,
        })
}

fn prometheus_line(line: &str) -> Result<Option<Entry<'_>>, Expected<'_>> {
    let b = line.as_bytes();
    let (b, _) = syntax::blanks(b).map_err(syntax::failure)?;
    match b.first() {
        None => Ok(None),
        Some(b'#') => prometheus_comment(line, &b[1..]),
        Some(_) => prometheus_sample(line, b).map(|s| Some(Entry::Sample(s))),
    }
}

fn prometheus_comment<'a>(
    line: &'a str,
    after_hash: &'a [u8],
) -> Result<Option<Entry<'a>>, Expected<'a>> {
    let (rest, _) = syntax::blanks(after_hash).map_err(syntax::failure)?;
    let keyword_len = rest
        .iter()
        .position(|&c| c == b' ' || c == b'\t')
        .unwrap_or(rest.len());
    let (keyword, after) = rest.split_at(keyword_len);
    match keyword {
        b"HELP" => {
            let (rest, name) = metadata_name(after, false)?;
            let (help, _) = syntax::blanks(rest).map_err(syntax::failure)?;
            if !rest.is_empty() && help.len() == rest.len() {
                return Err(Expected {
                    at: rest,
                    what: "a blank after the metric name",
                });
            }
            Ok(Some(Entry::Help {
                name: sub(line, name),
                text: syntax::unescape(sub(line, help), false),
            }))
        }
        b"TYPE" => {
            let (rest, name) = metadata_name(after, false)?;
            let (rest, metric_type) = type_word(rest, false, Format::Prometheus)?;
            let (trailing, _) = syntax::blanks(rest).map_err(syntax::failure)?;
            if !trailing.is_empty() {
                return Err(Expected {
                    at: trailing,
                    what: "the end of the line after the type",
                });
            }
            Ok(Some(Entry::Type {
                name: sub(line, name),
                metric_type,
            }))
        }
        // Any other comment, `# EOF` included, carries nothing.
        _ => Ok(None),
    }
}

/// Blanks inside a Prometheus label set; notes when there were any.
fn skip_blanks<'a>(
    input: &'a [u8],
    compact: &mut bool,
) -> Result<&'a [u8], nom::Err<Expected<'a>>> {
    let (rest, blanks) = syntax::blanks(input)?;
    *compact &= blanks.is_empty();
    Ok(rest)
}

/// `{name="value",...}` with the given separator rules; returns the inner text.
fn label_set<'a>(input: &'a [u8], line: &'a str, om: bool) -> Res<'a, Labels<'a>> {
    let (mut i, _) = expect("`{`", nom::bytes::complete::tag(&b"{"[..])).parse(input)?;
    let inner_start = i;
    let mut len = 0u32;
    let mut escaped = false;
    let mut compact = true;
    loop {
        if !om {
            i = skip_blanks(i, &mut compact)?;
        }
        if let Some(rest) = i.strip_prefix(b"}") {
            let inner = &inner_start[..inner_start.len() - i.len()];
            if om && len > 0 && inner.last() == Some(&b',') {
                return syntax::fail(
                    &i[..0],
                    "a label name after `,` (OpenMetrics allows no trailing comma)",
                );
            }
            let labels = Labels {
                inner: sub(line, inner),
                len,
                escaped,
                compact,
            };
            return Ok((rest, labels));
        }
        let (rest, _) = syntax::label_name(i)?;
        i = rest;
        if !om {
            i = skip_blanks(i, &mut compact)?;
        }
        i = expect(
            "`=` after the label name",
            nom::bytes::complete::tag(&b"="[..]),
        )
        .parse(i)?
        .0;
        if !om {
            i = skip_blanks(i, &mut compact)?;
        }
        let (rest, (_, value_escaped)) = syntax::quoted(i)?;
        escaped |= value_escaped;
        len += 1;
        i = rest;
        if !om {
            i = skip_blanks(i, &mut compact)?;
        }
        match i.first() {
            Some(b',') => i = &i[1..],
            Some(b'}') => {}
            _ => return syntax::fail(i, "`,` or `}` after the label value"),
        }
    }
}

const EXPECTED_SAMPLE_VALUE: &str =
    "a number for the sample value (like `1`, `2.5e3`, `NaN`, `+Inf`)";

fn value_token<'a>(input: &'a [u8], what: &'static str) -> Res<'a, f64> {
    let (rest, tok) = expect(what, syntax::token).parse(input)?;
    match syntax::number(tok) {
        Some(v) => Ok((rest, v)),
        None => syntax::fail(input, what),
    }
}

fn prometheus_sample<'a>(line: &'a str, b: &'a [u8]) -> Result<Sample<'a>, Expected<'a>> {
    let run = || -> Res<'a, Sample<'a>> {
        let (i, name) = syntax::metric_name(b)?;
        let (after_blanks, _) = syntax::blanks(i)?;
        let (i, labels) = if after_blanks.first() == Some(&b'{') {
            label_set(after_blanks, line, false)?
        } else {
            (i, Labels::default())
        };
        let (i, _) = expect("a blank before the value", syntax::blanks1).parse(i)?;
        let (i, value) = value_token(i, EXPECTED_SAMPLE_VALUE)?;
        let (i, _) = syntax::blanks(i)?;
        let (i, timestamp_ms) = if i.is_empty() {
            (i, None)
        } else if i[0] == b'#' {
            return syntax::fail(i, "the end of the line (exemplars need OpenMetrics)");
        } else {
            let (rest, tok) = syntax::token(i)?;
            let Some(ts) = syntax::integer(tok) else {
                return syntax::fail(
                    i,
                    "an integer timestamp in milliseconds or the end of the line",
                );
            };
            #[allow(clippy::cast_precision_loss)]
            (rest, Some(ts as f64))
        };
        let (i, _) = syntax::blanks(i)?;
        if !i.is_empty() {
            return syntax::fail(i, "the end of the line after the timestamp");
        }
        Ok((
            i,
            Sample {
                name: sub(line, name),
                labels,
                value,
                timestamp_ms,
                exemplar: None,
            },
        ))
    };
    run().map(|(_, s)| s).map_err(syntax::failure)
}

fn openmetrics_sample(line: &str) -> Result<Sample<'_>, Expected<'_>> {
    let b = line.as_bytes();
    let run = || -> Res<'_, Sample<'_>> {
        let (i, name) = syntax::metric_name(b)?;
        let (i, labels) = if i.first() == Some(&b'{') {
            label_set(i, line, true)?
        } else {
            (i, Labels::default())
        };
        let (i, _) = expect("a space before the value", syntax::space).parse(i)?;
        let (i, value) = value_token(i, EXPECTED_SAMPLE_VALUE)?;
        let (i, timestamp_ms) = om_timestamp(i)?;
        let (i, exemplar) = if i.is_empty() {
            (i, None)
        } else {
            let (i, _) = expect(
                "` # ` before an exemplar",
                nom::bytes::complete::tag(&b" # "[..]),
            )
            .parse(i)?;
            let (i, labels) = label_set(i, line, true)?;
            let (i, _) = expect("a space before the exemplar value", syntax::space).parse(i)?;
            let (i, value) = value_token(i, "a number for the exemplar value")?;
            let (i, timestamp_ms) = om_timestamp(i)?;
            (
                i,
                Some(Exemplar {
                    labels,
                    value,
                    timestamp_ms,
                }),
            )
        };
        if !i.is_empty() {
            return syntax::fail(i, "the end of the line");
        }
        Ok((
            i,
            Sample {
                name: sub(line, name),
                labels,
                value,
                timestamp_ms,
                exemplar,
            },
        ))
    };
    run().map(|(_, s)| s).map_err(syntax::failure)
}

/// `[SP timestamp]` where the timestamp is seconds; `SP #` starts an exemplar instead.
fn om_timestamp(input: &[u8]) -> Res<'_, Option<f64>> {
    match input {
        [b' ', b'#', ..] | [] => Ok((input, None)),
        [b' ', rest @ ..] => {
            let (after, tok) = expect("a timestamp", syntax::token).parse(rest)?;
            // The ABNF's `realnumber`: no NaN or Inf for a time.
            let seconds = match syntax::number(tok) {
                Some(s) if s.is_finite() && tok.iter().any(u8::is_ascii_digit) => s,
                _ => return syntax::fail(rest, "a number for the timestamp in seconds"),
            };
            Ok((after, Some(seconds * 1000.0)))
        }
        _ => syntax::fail(input, "a space or the end of the line after the value"),
    }
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
    let mut line = &text[..memchr(b'\n', text.as_bytes()).unwrap_or(text.len())];
    if let Some(stripped) = line.strip_suffix('\r') {
        // The parser hands Prometheus text's line without the `\r` to the fast path
        // alone; OpenMetrics rejects the `\r` before any path sees the line.
        if fast::sample(text, om).is_some() {
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
            let in_text = if crlf { None } else { fast::sample(text, om) };
            let alone = fast::sample(line, om);
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
