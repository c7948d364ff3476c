//! The parser's error: where (line, column, byte) and what was expected.

use std::fmt;

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
    pub(super) fn at(kind: ParseErrorKind, text: &[u8], offset: usize, message: String) -> Self {
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
