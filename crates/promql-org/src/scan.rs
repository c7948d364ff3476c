//! The rewrite without a parse tree: one pass over the tokens of the caller's text,
//! copying it and rewriting each selector in place. `promql-parser` needs about
//! 1 ms to parse and print a 20-selector dashboard query (most of it compiling the
//! regexes of `=~` matchers, which the rewrite never needs), and the org rewrite is
//! on the path of every first-seen query.
//!
//! The scan knows where selectors are, not what the query means: an identifier is
//! a selector unless it is a keyword, a function name (followed by `(`) or a label
//! of a grouping list (`by`, `without`, `on`, `ignoring`, `group_left`,
//! `group_right`), and `{` starts a selector unless an identifier just named one.
//! Whatever it does not recognise for certain (a comment, an escape other than the
//! plain ones, a keyword in an odd place or spelled in capitals, a selector without
//! a name whose matchers may all match the empty string, unbalanced brackets)
//! returns `None`, and the caller takes the parse-tree path, which decides and
//! words the error. The fuzz target `promql_confine` and the tests hold the two
//! paths to the same answer: where the scan answers, `promql-parser` reads its
//! output as the tree path's output.

use crate::ORG_LABEL;

/// What the text must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Any PromQL expression (`query`).
    Query,
    /// A single selector without modifiers (`match[]`).
    Selector,
}

/// `text` with every selector held to `org`, or `None` where the scan is not sure.
pub(crate) fn confine(text: &str, org: &str, shape: Shape) -> Option<String> {
    let mut scan = Scan {
        text,
        lexer: Lexer { text, pos: 0 },
        out: String::with_capacity(text.len() + 32 * (ORG_LABEL.len() + org.len())),
        copied: 0,
        org,
    };
    match shape {
        Shape::Query => scan.query()?,
        Shape::Selector => scan.selector_only()?,
    }
    scan.out.push_str(&text[scan.copied..]);
    Some(scan.out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Duration,
    Str,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    /// An operator; its text says which.
    Op,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<Token> {
        let mut probe = Lexer {
            text: self.text,
            pos: self.pos,
        };
        probe.next()
    }

    /// The next token; `None` for anything the scan does not take on trust.
    fn next(&mut self) -> Option<Token> {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&first) = bytes.get(start) else {
            return Some(Token {
                kind: Kind::Eof,
                start,
                end: start,
            });
        };
        let at = |i: usize| bytes.get(i).copied();
        let (kind, len) = match first {
            b'(' => (Kind::LParen, 1),
            b')' => (Kind::RParen, 1),
            b'{' => (Kind::LBrace, 1),
            b'}' => (Kind::RBrace, 1),
            b'[' => (Kind::LBracket, 1),
            b']' => (Kind::RBracket, 1),
            b',' => (Kind::Comma, 1),
            // `[10m:1m]`: a colon before a digit, `]` or a space separates; one
            // before a letter starts a metric name such as `:job:rate5m`.
            b':' if !at(start + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':') =>
            {
                (Kind::Colon, 1)
            }
            b'@' => (Kind::At, 1),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => (Kind::Op, 1),
            b'=' | b'!' | b'<' | b'>' => match at(start + 1) {
                Some(b'=' | b'~') => (Kind::Op, 2),
                _ => (Kind::Op, 1),
            },
            b'"' | b'\'' => (Kind::Str, quoted_len(&bytes[start..], first)?),
            // Prometheus reads no escapes in a raw string, `promql-parser` reads
            // `\` as one: a backslash goes to the tree path.
            b'`' => {
                let len = bytes[start + 1..].iter().position(|&b| b == b'`')? + 2;
                if bytes[start..start + len].contains(&b'\\') {
                    return None;
                }
                (Kind::Str, len)
            }
            b'0'..=b'9' => number_or_duration(&bytes[start..])?,
            b'.' if at(start + 1).is_some_and(|b| b.is_ascii_digit()) => {
                number_or_duration(&bytes[start..])?
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b == b':' => (
                Kind::Ident,
                bytes[start..]
                    .iter()
                    .position(|&b| !is_ident_byte(b))
                    .unwrap_or(bytes.len() - start),
            ),
            _ => return None,
        };
        self.pos = start + len;
        Some(Token {
            kind,
            start,
            end: start + len,
        })
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The length of a `"` or `'` string with its quotes. Only the escapes every
/// PromQL lexer reads alike are taken; octal, `\x` and `\u` go to the tree path.
fn quoted_len(bytes: &[u8], quote: u8) -> Option<usize> {
    let mut i = 1;
    loop {
        match *bytes.get(i)? {
            b if b == quote => return Some(i + 1),
            b'\\' => match *bytes.get(i + 1)? {
                b'\\' | b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' => i += 2,
                b if b == quote => i += 2,
                _ => return None,
            },
            b'\n' => return None,
            _ => i += 1,
        }
    }
}

/// A number (`1`, `0.5`, `1e-3`, `.5`, `0x1f`) or a duration (`5m`, `1h30m`,
/// `100ms`); anything else that starts with a digit is not taken.
fn number_or_duration(bytes: &[u8]) -> Option<(Kind, usize)> {
    let mut len = 0;
    while let Some(&b) = bytes.get(len) {
        let sign_of_exponent = (b == b'+' || b == b'-')
            && matches!(bytes.get(len.wrapping_sub(1)), Some(b'e' | b'E'))
            && !bytes.starts_with(b"0x")
            && !bytes.starts_with(b"0X");
        if b.is_ascii_alphanumeric() || b == b'.' || sign_of_exponent {
            len += 1;
        } else {
            break;
        }
    }
    let word = &bytes[..len];
    if is_duration(word) {
        Some((Kind::Duration, len))
    } else if is_number(word) {
        Some((Kind::Number, len))
    } else {
        None
    }
}

fn is_duration(word: &[u8]) -> bool {
    let mut rest = word;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = if rest.starts_with(b"ms") {
            2
        } else if matches!(rest.first(), Some(b's' | b'm' | b'h' | b'd' | b'w' | b'y')) {
            1
        } else {
            return false;
        };
        rest = &rest[unit..];
    }
    true
}

fn is_number(word: &[u8]) -> bool {
    if let Some(hex) = word
        .strip_prefix(b"0x")
        .or_else(|| word.strip_prefix(b"0X"))
    {
        return !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit);
    }
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let whole = digits(word);
    let mut rest = &word[whole..];
    let mut fraction = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        fraction = digits(after_dot);
        rest = &after_dot[fraction..];
    }
    if whole + fraction == 0 {
        return false;
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        let n = digits(exponent);
        return n > 0 && n == exponent.len();
    }
    rest.is_empty()
}

/// What a word is to the scan.
#[derive(Debug, Clone, Copy)]
enum Word {
    Plain,
    Aggregator,
    /// `and`, `or`, `unless`, `atan2`: a binary operator where an operator goes,
    /// but a metric name where an operand goes (as `promql-parser` reads it).
    SetOrAtan2,
    Bool,
    /// `by`, `without`: a label list follows.
    AggregationGrouping,
    /// `on`, `ignoring`: a label list follows.
    Matching,
    /// `group_left`, `group_right`: a label list may follow.
    Joining,
    Offset,
    /// `inf`, `nan`.
    Number,
    /// A keyword the scan leaves to the tree path: `start` and `end` outside
    /// `@`, newer PromQL, capitals.
    Unsure,
}

/// Every keyword of PromQL, as `promql-parser` knows them, and what the scan makes
/// of it.
const KEYWORDS: [(&str, Word); 35] = [
    ("sum", Word::Aggregator),
    ("avg", Word::Aggregator),
    ("count", Word::Aggregator),
    ("min", Word::Aggregator),
    ("max", Word::Aggregator),
    ("group", Word::Aggregator),
    ("stddev", Word::Aggregator),
    ("stdvar", Word::Aggregator),
    ("topk", Word::Aggregator),
    ("bottomk", Word::Aggregator),
    ("count_values", Word::Aggregator),
    ("quantile", Word::Aggregator),
    ("and", Word::SetOrAtan2),
    ("or", Word::SetOrAtan2),
    ("unless", Word::SetOrAtan2),
    ("atan2", Word::SetOrAtan2),
    ("bool", Word::Bool),
    ("by", Word::AggregationGrouping),
    ("without", Word::AggregationGrouping),
    ("on", Word::Matching),
    ("ignoring", Word::Matching),
    ("group_left", Word::Joining),
    ("group_right", Word::Joining),
    ("offset", Word::Offset),
    ("inf", Word::Number),
    ("nan", Word::Number),
    ("start", Word::Unsure),
    ("end", Word::Unsure),
    ("limitk", Word::Unsure),
    ("limit_ratio", Word::Unsure),
    ("smoothed", Word::Unsure),
    ("anchored", Word::Unsure),
    ("fill", Word::Unsure),
    ("fill_left", Word::Unsure),
    ("fill_right", Word::Unsure),
];

fn word(text: &str) -> Word {
    let Some((_, keyword)) = KEYWORDS
        .iter()
        .find(|(keyword, _)| keyword.eq_ignore_ascii_case(text))
    else {
        return Word::Plain;
    };
    let lower_only = !text.bytes().any(|b| b.is_ascii_uppercase());
    match keyword {
        // Numbers in any case, as Go's `ParseFloat` reads them: `NaN`, `Inf`.
        Word::Number => Word::Number,
        keyword if lower_only => *keyword,
        _ => Word::Unsure,
    }
}

struct Scan<'a> {
    text: &'a str,
    lexer: Lexer<'a>,
    out: String,
    /// The text up to here is in `out` already.
    copied: usize,
    org: &'a str,
}

/// One `name op "value"` of a selector.
struct Matcher {
    start: usize,
    end: usize,
    org: bool,
    /// It cannot match the empty string (`="x"` or `!=""`), so a selector
    /// without a name may stand on it.
    non_empty: bool,
}

impl<'a> Scan<'a> {
    fn slice(&self, token: Token) -> &'a str {
        &self.text[token.start..token.end]
    }

    fn expect(&mut self, kind: Kind) -> Option<Token> {
        self.lexer.next().filter(|t| t.kind == kind)
    }

    /// Walks the query knowing whether an operand or an operator comes next, the
    /// one thing that tells a keyword from a metric name of the same spelling.
    fn query(&mut self) -> Option<()> {
        let mut depth = 0usize;
        let mut operand = true;
        let mut just_opened = false;
        // Right after a binary operator, where `bool`, `on`, `ignoring` and
        // `group_left` may stand; `Some(true)` after a comparison.
        let mut after_binary: Option<bool> = None;
        loop {
            let token = self.lexer.next()?;
            let text = self.slice(token);
            let word = match token.kind {
                Kind::Ident => word(text),
                _ => Word::Plain,
            };
            let mut modifier = false;
            if operand {
                match (token.kind, word) {
                    (Kind::Ident, Word::Plain) => {
                        if self.lexer.peek()?.kind != Kind::LParen {
                            self.named_selector(token)?;
                            operand = false;
                        }
                    }
                    (Kind::Ident, Word::Aggregator) => self.aggregation_opening()?,
                    (Kind::Ident, Word::Number) | (Kind::Number | Kind::Str, _) => {
                        operand = false;
                    }
                    (Kind::Ident, Word::Bool) if after_binary == Some(true) => modifier = true,
                    (Kind::Ident, Word::Matching) if after_binary.is_some() => {
                        self.label_list()?;
                        modifier = true;
                    }
                    (Kind::Ident, Word::Joining) if after_binary.is_some() => {
                        if self.lexer.peek()?.kind == Kind::LParen {
                            self.label_list()?;
                        }
                        modifier = true;
                    }
                    (Kind::LBrace, _) => {
                        self.selector(None, token)?;
                        operand = false;
                    }
                    (Kind::LParen, _) => depth += 1,
                    (Kind::RParen, _) if just_opened => {
                        depth -= 1;
                        operand = false;
                    }
                    (Kind::Op, _) if matches!(text, "-" | "+") => {}
                    _ => return None,
                }
            } else {
                match (token.kind, word) {
                    (Kind::Eof, _) => return (depth == 0).then_some(()),
                    (Kind::Op, _) if is_binary_op(text) => {
                        operand = true;
                        after_binary = Some(matches!(text, "==" | "!=" | "<=" | ">=" | "<" | ">"));
                        modifier = true;
                    }
                    (Kind::Ident, Word::SetOrAtan2) => {
                        operand = true;
                        after_binary = Some(false);
                        modifier = true;
                    }
                    (Kind::Ident, Word::AggregationGrouping) => self.label_list()?,
                    (Kind::Ident, Word::Offset) => self.offset()?,
                    (Kind::LBracket, _) => self.range()?,
                    (Kind::At, _) => self.at()?,
                    (Kind::RParen, _) => depth = depth.checked_sub(1)?,
                    (Kind::Comma, _) if depth > 0 => operand = true,
                    _ => return None,
                }
            }
            if !modifier {
                after_binary = None;
            }
            just_opened = token.kind == Kind::LParen;
        }
    }

    fn selector_only(&mut self) -> Option<()> {
        let token = self.lexer.next()?;
        match token.kind {
            Kind::Ident if matches!(word(self.slice(token)), Word::Plain) => {
                self.named_selector(token)?;
            }
            Kind::LBrace => self.selector(None, token)?,
            _ => return None,
        }
        self.expect(Kind::Eof).map(|_| ())
    }

    /// A metric name, with its braces if it has them.
    fn named_selector(&mut self, name: Token) -> Option<()> {
        if self.lexer.peek()?.kind == Kind::LBrace {
            let brace = self.lexer.next()?;
            self.selector(Some(name), brace)
        } else {
            self.bare_selector(name);
            Some(())
        }
    }

    /// After `sum` and the like: `by (...)` or `without (...)` may come before
    /// the opening parenthesis, which must follow.
    fn aggregation_opening(&mut self) -> Option<()> {
        let next = self.lexer.peek()?;
        if next.kind == Kind::Ident && matches!(word(self.slice(next)), Word::AggregationGrouping) {
            self.lexer.next()?;
            self.label_list()?;
        }
        (self.lexer.peek()?.kind == Kind::LParen).then_some(())
    }

    /// `offset 5m` or `offset -5m`, after the word.
    fn offset(&mut self) -> Option<()> {
        let mut duration = self.lexer.next()?;
        if duration.kind == Kind::Op && self.slice(duration) == "-" {
            duration = self.lexer.next()?;
        }
        (duration.kind == Kind::Duration).then_some(())
    }

    /// `( label, ... )` after a grouping keyword: plain label names only.
    fn label_list(&mut self) -> Option<()> {
        self.expect(Kind::LParen)?;
        loop {
            let token = self.lexer.next()?;
            match token.kind {
                Kind::RParen => return Some(()),
                Kind::Ident
                    if is_label_name(self.slice(token))
                        && matches!(word(self.slice(token)), Word::Plain) =>
                {
                    let after = self.lexer.next()?;
                    match after.kind {
                        Kind::RParen => return Some(()),
                        Kind::Comma => {}
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// `[5m]`, `[10m:1m]` or `[10m:]`.
    fn range(&mut self) -> Option<()> {
        self.expect(Kind::Duration)?;
        let token = self.lexer.next()?;
        match token.kind {
            Kind::RBracket => Some(()),
            Kind::Colon => {
                let token = self.lexer.next()?;
                match token.kind {
                    Kind::RBracket => Some(()),
                    Kind::Duration => self.expect(Kind::RBracket).map(|_| ()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// `@ 1700000000`, `@ -1.5`, `@ start()`, `@ end()`.
    fn at(&mut self) -> Option<()> {
        let mut token = self.lexer.next()?;
        if token.kind == Kind::Op && matches!(self.slice(token), "-" | "+") {
            token = self.lexer.next()?;
        }
        match token.kind {
            Kind::Number => Some(()),
            Kind::Ident if matches!(self.slice(token), "start" | "end") => {
                self.expect(Kind::LParen)?;
                self.expect(Kind::RParen).map(|_| ())
            }
            _ => None,
        }
    }

    fn bare_selector(&mut self, name: Token) {
        self.out.push_str(&self.text[self.copied..name.end]);
        self.out.push('{');
        self.push_org_matcher("");
        self.out.push('}');
        self.copied = name.end;
    }

    /// `name{...}` or `{...}`, from the opening brace on: the caller's matchers
    /// less any on `org_id`, then the org's.
    fn selector(&mut self, name: Option<Token>, brace: Token) -> Option<()> {
        let matchers = self.matchers()?;
        let close = self.lexer.pos;
        let stands = name.is_some() || matchers.iter().any(|m| m.non_empty);
        if !stands {
            return None;
        }
        let start = name.map_or(brace.start, |n| n.start);
        self.out.push_str(&self.text[self.copied..start]);
        if let Some(name) = name {
            self.out.push_str(self.slice(name));
        }
        self.out.push('{');
        let mut separator = "";
        for m in matchers.iter().filter(|m| !m.org) {
            self.out.push_str(separator);
            self.out.push_str(&self.text[m.start..m.end]);
            separator = ",";
        }
        self.push_org_matcher(separator);
        self.out.push('}');
        self.copied = close;
        Some(())
    }

    fn push_org_matcher(&mut self, separator: &str) {
        self.out.push_str(separator);
        self.out.push_str(ORG_LABEL);
        self.out.push_str("=\"");
        self.out.push_str(self.org);
        self.out.push('"');
    }

    /// The matchers up to and with the closing brace.
    fn matchers(&mut self) -> Option<Vec<Matcher>> {
        let mut matchers = Vec::new();
        loop {
            let label = self.lexer.next()?;
            match label.kind {
                Kind::RBrace => return Some(matchers),
                Kind::Ident if is_label_name(self.slice(label)) => {}
                _ => return None,
            }
            let op = self.expect(Kind::Op)?;
            let op = self.slice(op);
            if !matches!(op, "=" | "!=" | "=~" | "!~") {
                return None;
            }
            let value = self.expect(Kind::Str)?;
            let empty = value.end - value.start == 2;
            let org = self.slice(label) == ORG_LABEL;
            if org && op.ends_with('~') && !is_plain_alternation(self.slice(value)) {
                return None;
            }
            matchers.push(Matcher {
                start: label.start,
                end: value.end,
                org,
                non_empty: (op == "=" && !empty)
                    || (op == "!=" && empty)
                    || (op == "=~" && &self.text[value.start + 1..value.end - 1] == ".+"),
            });
            let after = self.lexer.next()?;
            match after.kind {
                Kind::RBrace => return Some(matchers),
                Kind::Comma => {}
                _ => return None,
            }
        }
    }
}

/// A regex the tree path would surely compile: `.*`, `.+`, or words joined by `|`
/// (what Grafana sends for a multi-value variable), maybe in one group. The
/// caller's `org_id` matcher is dropped, but one that does not compile makes
/// Prometheus refuse the query, so the scan must not answer for it.
fn is_plain_alternation(quoted: &str) -> bool {
    let regex = &quoted[1..quoted.len() - 1];
    if matches!(regex, ".*" | ".+") {
        return true;
    }
    let regex = regex
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(regex);
    regex
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|'))
}

/// An identifier token (which never starts with a digit) is a label name unless
/// it holds a colon, which only metric names may.
fn is_label_name(name: &str) -> bool {
    !name.contains(':')
}

fn is_binary_op(op: &str) -> bool {
    matches!(
        op,
        "+" | "-" | "*" | "/" | "%" | "^" | "==" | "!=" | "<=" | ">=" | "<" | ">"
    )
}
