//! The parser loop: finds lines, tries the fast path, falls back to the grammar,
//! feeds strict mode, and stops at the first error.

use std::borrow::Cow;

use memchr::memchr;

use super::types::decode_value;

use super::*;

/// Streams [`Entry`]s (with [`Parser::next_entry`]) or, as an [`Iterator`], samples
/// only. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    pub(super) text: &'a str,
    pos: usize,
    /// Where the line of the entry [`Parser::advance`] last returned begins.
    line_start: usize,
    format: Format,
    seen_eof: bool,
    finished: bool,
    strict: Option<Box<strict::Checker<'a>>>,
    /// Once [`Parser::next_with_labels`] is called: the last sample's labels as they
    /// were checked.
    kept: Option<KeptLabels<'a>>,
}

/// The names and raw values of one sample's labels, and the label text they were
/// read from (`None` while no sample's labels are kept whole).
#[derive(Debug, Clone, Default)]
struct KeptLabels<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    of: Option<&'a str>,
}

impl<'a> KeptLabels<'a> {
    /// Whether these are the labels of `labels`: read from the same place in the
    /// text, not merely equal to them.
    fn belong_to(&self, labels: &Labels<'a>) -> bool {
        self.of.is_some_and(|of| {
            let written = labels.as_written();
            std::ptr::eq(of.as_ptr(), written.as_ptr()) && of.len() == written.len()
        })
    }
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
            kept: None,
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

    /// The next sample with its decoded labels, in written order: what
    /// `sample.labels.iter_decoded()` gives, without parsing the label text again.
    /// From the first call on, the parser keeps each sample's labels as it checks
    /// them. The second walk over the labels was a sixth of parsing and batching a
    /// label-heavy body (cachegrind); keeping them costs a parse that does not read
    /// the labels about as much, so only this method turns it on.
    ///
    /// ```
    /// use connector_prometheus::exposition::{Format, Parser};
    ///
    /// let mut parser = Parser::new("a{x=\"1\",y=\"q\\\"\"} 2\n", Format::Prometheus);
    /// let (sample, labels) = parser.next_with_labels().unwrap().unwrap();
    /// let labels: Vec<_> = labels.collect();
    /// assert_eq!(labels, sample.labels.iter_decoded().collect::<Vec<_>>());
    /// assert_eq!(labels[1].1, "q\"");
    /// ```
    // The labels' iterator borrows the parser and has no name to alias.
    #[allow(clippy::type_complexity)]
    pub fn next_with_labels(
        &mut self,
    ) -> Option<
        Result<
            (
                Sample<'a>,
                impl Iterator<Item = (&'a str, Cow<'a, str>)> + '_,
            ),
            ParseError,
        >,
    > {
        self.kept.get_or_insert_with(KeptLabels::default);
        let sample = match self.next()? {
            Ok(sample) => sample,
            Err(e) => return Some(Err(e)),
        };
        let kept = self.kept.get_or_insert_with(KeptLabels::default);
        // The fast path kept the labels it checked; a sample the grammar parsed (a
        // line of another shape, rare) gets its labels walked here.
        if !kept.belong_to(&sample.labels) {
            kept.pairs.clear();
            kept.pairs.extend(sample.labels.iter_raw());
            kept.of = Some(sample.labels.as_written());
        }
        let escaped = sample.labels.has_escapes();
        let labels = kept
            .pairs
            .iter()
            .map(move |&(name, value)| (name, decode_value(value, escaped)));
        Some(Ok((sample, labels)))
    }

    /// Runs the fast path on the sample line at the start of `text`, keeping its
    /// labels' places.
    fn fast_sample_at(&mut self, text: &'a str, om: bool) -> Option<(Sample<'a>, usize)> {
        let Some(kept) = self.kept.as_mut() else {
            return fast::sample::<false>(text, om, &mut Vec::new());
        };
        kept.pairs.clear();
        kept.of = None;
        let taken = fast::sample::<true>(text, om, &mut kept.pairs)?;
        kept.of = Some(taken.0.labels.as_written());
        Some(taken)
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
                Some(_) => self
                    .fast_sample_at(line, om)
                    .map(|(sample, _)| Entry::Sample(sample)),
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
        let (sample, len) = self.fast_sample_at(rest, om)?;
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
    pub(super) fn grammar_line(
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
                    if let Some((sample, _)) = self.fast_sample_at(line, om) {
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
