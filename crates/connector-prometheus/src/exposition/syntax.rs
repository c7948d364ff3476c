//! Token-level grammar, written with nom over bytes. Everything nom-specific stays in
//! this module: callers get offsets and a static description of what was expected.

use std::borrow::Cow;

use memchr::memchr2;
use nom::bytes::complete::{take_till1, take_while, take_while1};
use nom::{IResult, Parser};

/// Where a token failed and what the grammar wanted there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub(crate) at: &'a [u8],
    pub(crate) what: &'static str,
}

impl<'a> nom::error::ParseError<&'a [u8]> for Expected<'a> {
    fn from_error_kind(at: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        Expected {
            at,
            what: "valid syntax",
        }
    }

    fn append(_: &'a [u8], _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type Res<'a, O> = IResult<&'a [u8], O, Expected<'a>>;

/// Unwraps nom's `Err` wrapper: all our parsers are complete, so there is no `Incomplete`.
pub(crate) fn failure(err: nom::Err<Expected<'_>>) -> Expected<'_> {
    match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => e,
        nom::Err::Incomplete(_) => Expected {
            at: &[],
            what: "more input",
        },
    }
}

/// Runs `parser`; on failure reports `what` at the position where it started.
pub(crate) fn expect<'a, O>(
    what: &'static str,
    mut parser: impl Parser<&'a [u8], Output = O, Error = Expected<'a>>,
) -> impl FnMut(&'a [u8]) -> Res<'a, O> {
    move |input| {
        parser
            .parse(input)
            .map_err(|e| e.map(|_| Expected { at: input, what }))
    }
}

pub(crate) fn fail<'a, O>(at: &'a [u8], what: &'static str) -> Res<'a, O> {
    Err(nom::Err::Error(Expected { at, what }))
}

pub(crate) const METRIC_START: u8 = 1;
pub(crate) const METRIC: u8 = 2;
pub(crate) const LABEL_START: u8 = 4;
pub(crate) const LABEL: u8 = 8;

/// Character classes of the name grammars, one lookup per byte.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let mut class = 0;
        if alpha || c == b':' {
            class |= METRIC_START | METRIC;
        }
        if c.is_ascii_digit() {
            class |= METRIC | LABEL;
        }
        if alpha {
            class |= LABEL_START | LABEL;
        }
        table[b] = class;
        b += 1;
    }
    table
};

fn is(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` (7-bit values) that lies in `lo..=hi`. With
/// the high bits cleared, no addition carries into the next byte.
fn in_range(word: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = word + ONES * u64::from(0x80 - lo);
    let above_hi = word + ONES * u64::from(0x7f - hi);
    at_least_lo & !above_hi & HIGHS
}

/// The high bit of every byte of `word` that is a name character (`class` is
/// [`METRIC`] or [`LABEL`]).
fn name_bytes(word: u64, class: u8) -> u64 {
    let ascii = !word & HIGHS;
    let low = word & !HIGHS;
    let digits = if class == METRIC {
        in_range(low, b'0', b':')
    } else {
        in_range(low, b'0', b'9')
    };
    let letters = in_range(low, b'A', b'Z') | in_range(low, b'a', b'z') | in_range(low, b'_', b'_');
    (digits | letters) & ascii
}

/// The end of the name that starts at `start`, if a name of `start_class` starts there.
///
/// Eight bytes are classified at once (SWAR): names are 10 to 50 bytes, and a branch
/// per byte was a quarter of the fast path's time; this made node_exporter's text
/// about 10 % faster to parse than eight table lookups per branch.
#[inline]
pub(crate) fn name_end(b: &[u8], start: usize, start_class: u8, class: u8) -> Option<usize> {
    if !is(*b.get(start)?, start_class) {
        return None;
    }
    let mut i = start + 1;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        if class == LABEL {
            // Label names are short: table lookups end sooner.
            if chunk.iter().fold(class, |all, &c| all & CLASS[c as usize]) == 0 {
                break;
            }
        } else {
            let valid = name_bytes(u64::from_le_bytes(*chunk), class);
            if valid != HIGHS {
                return Some(i + ((!valid & HIGHS).trailing_zeros() / 8) as usize);
            }
        }
        i += 8;
    }
    while i < b.len() && is(b[i], class) {
        i += 1;
    }
    Some(i)
}

fn is_metric_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub(crate) fn metric_name(input: &[u8]) -> Res<'_, &[u8]> {
    let (rest, name) = expect("a metric name", take_while1(is_metric_name_char)).parse(input)?;
    if name[0].is_ascii_digit() {
        return fail(input, "a metric name (names cannot start with a digit)");
    }
    Ok((rest, name))
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub(crate) fn label_name(input: &[u8]) -> Res<'_, &[u8]> {
    let (rest, name) = expect("a label name", take_while1(is_label_name_char)).parse(input)?;
    if name[0].is_ascii_digit() {
        return fail(input, "a label name (names cannot start with a digit)");
    }
    Ok((rest, name))
}

/// Zero or more blanks (Prometheus text separates tokens with spaces or tabs).
pub(crate) fn blanks(input: &[u8]) -> Res<'_, &[u8]> {
    take_while(is_blank).parse(input)
}

/// One or more blanks.
pub(crate) fn blanks1(input: &[u8]) -> Res<'_, &[u8]> {
    take_while1(is_blank).parse(input)
}

/// Exactly one space (OpenMetrics separates tokens with one SP).
pub(crate) fn space(input: &[u8]) -> Res<'_, &[u8]> {
    nom::bytes::complete::tag(&b" "[..]).parse(input)
}

/// A run of bytes up to the next blank or the end of the line.
pub(crate) fn token(input: &[u8]) -> Res<'_, &[u8]> {
    take_till1(is_blank).parse(input)
}

/// A quoted label value: returns the bytes between the quotes and whether any
/// backslash escape occurs in them, so callers copy only when they must.
pub(crate) fn quoted(input: &[u8]) -> Res<'_, (&[u8], bool)> {
    let Some(body) = input.strip_prefix(b"\"") else {
        return fail(input, "`\"` to open the label value");
    };
    let mut escaped = false;
    let mut at = 0;
    loop {
        match memchr2(b'"', b'\\', &body[at..]) {
            Some(i) if body[at + i] == b'"' => {
                let end = at + i;
                return Ok((&body[end + 1..], (&body[..end], escaped)));
            }
            Some(i) => {
                escaped = true;
                // Skip the escaped byte too: `\"` does not close the value.
                at += i + 2;
                if at > body.len() {
                    return fail(input, "a closing `\"` for this label value");
                }
            }
            None => return fail(input, "a closing `\"` for this label value"),
        }
    }
}

/// Decodes `\\`, `\"` (when `quote_escape`) and `\n`; any other backslash is kept
/// as written, as Prometheus and the OpenMetrics reference parser do.
pub(crate) fn unescape(raw: &str, quote_escape: bool) -> Cow<'_, str> {
    if memchr::memchr(b'\\', raw.as_bytes()).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote_escape => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Parses a sample value or OpenMetrics timestamp: decimal and exponent forms,
/// `NaN`, `Inf`/`Infinity` with an optional sign, case-insensitive.
pub(crate) fn number(token: &[u8]) -> Option<f64> {
    number_str(std::str::from_utf8(token).ok()?)
}

/// [`number`] for a token already known to be UTF-8.
pub(crate) fn number_str(text: &str) -> Option<f64> {
    if let Some(value) = exact_decimal(text.as_bytes()) {
        return Some(value);
    }
    // Rust also accepts `nan` with a sign and bare `infinity`; Go's ParseFloat, which
    // Prometheus uses, accepts the same set. Hex floats are not accepted by either grammar.
    text.parse::<f64>().ok()
}

/// Powers of ten that an f64 holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value of a plain decimal (`-12`, `0.25`, `1.5e+09`) when one multiplication or
/// division of exact operands gives it: at most 2^53 in the digits and a power of ten
/// up to 10^22 (Clinger's fast path, which `str::parse` also takes, without its
/// general-purpose setup). `None` means "ask `str::parse`", never "invalid".
///
/// Why: exporters write most values this way, and skipping `str::parse` for them made
/// whole-body parsing 4.5 % faster on node_exporter's text and 1.5 % on the generated
/// input (`cargo bench -p benches --bench parse`). Two property tests hold it to
/// `str::parse` bit for bit.
fn exact_decimal(token: &[u8]) -> Option<f64> {
    let (negative, body) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let mut digits = 0u64;
    let mut count = 0usize;
    let mut i = 0;
    while let Some(&d) = body.get(i).filter(|d| d.is_ascii_digit()) {
        digits = digits.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        i += 1;
    }
    count += i;
    let mut scale = 0i64;
    if body.get(i) == Some(&b'.') {
        i += 1;
        let fraction_start = i;
        while let Some(&d) = body.get(i).filter(|d| d.is_ascii_digit()) {
            digits = digits.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        count += i - fraction_start;
        scale -= i64::try_from(i - fraction_start).ok()?;
    }
    // More than 19 digits may have wrapped; no digits at all is not a number here.
    if count == 0 || count > 19 {
        return None;
    }
    if let Some(b'e' | b'E') = body.get(i) {
        i += 1;
        let exponent_negative = match body.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exponent_start = i;
        let mut exponent = 0i64;
        while let Some(&d) = body.get(i).filter(|d| d.is_ascii_digit()) {
            exponent = (exponent * 10 + i64::from(d - b'0')).min(1 << 20);
            i += 1;
        }
        if i == exponent_start {
            return None;
        }
        scale += if exponent_negative {
            -exponent
        } else {
            exponent
        };
    }
    if i != body.len() || digits > 1 << 53 {
        return None;
    }
    // Exact: `digits` is at most 2^53.
    #[allow(clippy::cast_precision_loss)]
    let mantissa = digits as f64;
    let power = *EXACT_POWERS_OF_TEN.get(usize::try_from(scale.unsigned_abs()).ok()?)?;
    let value = if scale < 0 {
        mantissa / power
    } else {
        mantissa * power
    };
    Some(if negative { -value } else { value })
}

/// Parses a Prometheus text timestamp: a signed integer of milliseconds.
pub(crate) fn integer(token: &[u8]) -> Option<i64> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// The first `"` or `\\` at or after `from`, eight bytes at a time (SWAR).
///
/// Label values are mostly 5 to 40 bytes: too short for `memchr2`'s vector setup to
/// pay off and long enough that a byte loop is the bottleneck. On the benchmark
/// inputs this search made the parser about 15 % faster than either.
#[inline]
pub(crate) fn find_quote_or_backslash(b: &[u8], from: usize) -> Option<usize> {
    find_any(b, from, [b'"', b'\\'])
}

/// The first `"`, `\\` or newline at or after `from`: where a label value ends, has an
/// escape, or runs off its line. Eight bytes at a time, as [`find_quote_or_backslash`].
#[inline]
pub(crate) fn find_value_stop(b: &[u8], from: usize) -> Option<usize> {
    find_any(b, from, [b'"', b'\\', b'\n'])
}

/// The first of `needles` at or after `from`, eight bytes at a time.
#[inline]
fn find_any<const N: usize>(b: &[u8], from: usize, needles: [u8; N]) -> Option<usize> {
    // A high bit in every byte of `v` that is zero. Borrows can mark bytes above the
    // first zero byte too, so only the lowest mark is trusted.
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    let mut i = from;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let hits = needles.iter().fold(0, |hits, &n| {
            hits | zero_bytes(word ^ (ONES * u64::from(n)))
        });
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.iter()
        .skip(i)
        .position(|c| needles.contains(c))
        .map(|k| i + k)
}

/// Walks a label set already checked by the parser. Never fails: the set's syntax was
/// validated when the sample was parsed.
#[derive(Debug, Clone)]
pub(crate) struct TrustedLabels<'a> {
    pub(crate) rest: &'a str,
    /// No blanks between the tokens: each label is exactly `name="value"` plus a comma.
    pub(crate) compact: bool,
}

impl<'a> TrustedLabels<'a> {
    /// The walk over a compact set: two searches per label and no byte loops, which
    /// made decoding labels about a third faster on the benchmark inputs.
    #[inline]
    fn next_compact(&mut self) -> Option<(&'a str, &'a str)> {
        let bytes = self.rest.as_bytes();
        let equals = find_any(bytes, 0, [b'='])?;
        let value_start = equals + 2;
        let mut at = value_start;
        let quote = loop {
            let k = find_quote_or_backslash(bytes, at)?;
            if bytes[k] == b'"' {
                break k;
            }
            at = k + 2;
        };
        let name = &self.rest[..equals];
        let value = &self.rest[value_start..quote];
        // Past the closing quote and the comma after it, if any.
        self.rest = self.rest.get(quote + 2..).unwrap_or_default();
        Some((name, value))
    }
}

impl<'a> Iterator for TrustedLabels<'a> {
    type Item = (&'a str, &'a str);

    // Callers in other crates loop over labels per sample: inlining the walk (and the
    // searches it calls) into their loop saved a call per label and made whole-body
    // parsing with labels decoded 4-5 % faster in `cargo bench -p benches --bench parse`.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.compact {
            return self.next_compact();
        }
        let bytes = self.rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() && matches!(bytes[i], b',' | b' ' | b'\t') {
            i += 1;
        }
        if i >= bytes.len() {
            self.rest = "";
            return None;
        }
        let name_start = i;
        // A checked name ends at `=`, or at a blank before it in Prometheus text.
        let equals = find_any(bytes, i, [b'=']).unwrap_or(bytes.len());
        let name = self.rest[name_start..equals].trim_end_matches([' ', '\t']);
        i = equals + 1;
        if bytes.get(i) != Some(&b'"') {
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
        }
        i += 1;
        let value_start = i;
        let mut j = value_start;
        while let Some(k) = find_quote_or_backslash(bytes, j) {
            if bytes[k] == b'"' {
                j = k;
                break;
            }
            j = k + 2;
        }
        let j = j.min(bytes.len());
        let value = &self.rest[value_start.min(j)..j];
        self.rest = self.rest.get(j + 1..).unwrap_or_default();
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (text, want) in [
            ("0", 0.0),
            ("-12", -12.0),
            ("1.5", 1.5),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            (".5", 0.5),
            ("0000000000000000000000000000000000000000001.2e-1", 0.12),
            ("9223372036854775808", 9_223_372_036_854_775_808.0),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("Infinity", f64::INFINITY),
        ] {
            assert_eq!(number(text.as_bytes()), Some(want), "{text}");
        }
        assert!(number(b"NaN").is_some_and(f64::is_nan));
        for bad in ["", "-", "1.2.3", "abc", "0x10", "1_000", "--1"] {
            assert_eq!(number(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn exporter_values_take_the_exact_shortcut() {
        for (text, want) in [
            ("1.6741124e+09", 1_674_112_400.0),
            ("2.1889e-05", 2.1889e-05),
            ("123.456789", 123.456_789),
            ("-42", -42.0),
            ("1.", 1.0),
            (".5", 0.5),
        ] {
            assert_eq!(exact_decimal(text.as_bytes()), Some(want), "{text}");
        }
        assert!(exact_decimal(b"-0").is_some_and(|z| z == 0.0 && z.is_sign_negative()));
        // Beyond exact operands, or not plain decimals: left to `str::parse`.
        for text in [
            "9007199254740993",
            "1e23",
            "1e-23",
            "+1",
            "NaN",
            "+Inf",
            "1e",
            ".",
            "",
        ] {
            assert_eq!(exact_decimal(text.as_bytes()), None, "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The shortcut for plain decimals gives exactly what `str::parse` gives.
        #[test]
        fn plain_decimals_parse_exactly_as_std_does(
            text in "-?[0-9]{0,21}(\\.[0-9]{0,21})?([eE][+-]?[0-9]{0,3})?",
        ) {
            let std = text.parse::<f64>().ok();
            let ours = number_str(&text);
            proptest::prop_assert_eq!(ours.map(f64::to_bits), std.map(f64::to_bits));
        }

        /// The same for any bits an f64 can hold, written the ways exporters write them.
        #[test]
        fn written_floats_parse_exactly_as_std_does(bits: u64, precision in 0usize..18) {
            let value = f64::from_bits(bits);
            for text in [
                format!("{value}"),
                format!("{value:.precision$}"),
                format!("{value:e}"),
                format!("{value:.precision$e}"),
            ] {
                let std = text.parse::<f64>().ok();
                proptest::prop_assert_eq!(number_str(&text).map(f64::to_bits), std.map(f64::to_bits), "{}", text);
            }
        }
    }

    #[test]
    fn quoted_values() {
        let (rest, (v, esc)) = quoted(br#""a\"b\\" x"#).unwrap();
        assert_eq!((v, esc, rest), (&br#"a\"b\\"#[..], true, &b" x"[..]));
        let (_, (v, esc)) = quoted(br#""plain""#).unwrap();
        assert_eq!((v, esc), (&b"plain"[..], false));
        assert!(quoted(br#""open"#).is_err());
        assert!(quoted(br#""ends with \"#).is_err());
    }

    #[test]
    fn unescape_keeps_unknown_escapes() {
        assert_eq!(unescape(r#"b\"a\nr"#, true), "b\"a\nr");
        assert_eq!(unescape(r"b\\a\z", true), "b\\a\\z");
        assert_eq!(unescape(r#"x\""#, false), "x\\\"");
        assert!(matches!(unescape("plain", true), Cow::Borrowed("plain")));
    }

    #[test]
    fn trusted_labels_walk() {
        let labels: Vec<_> = TrustedLabels {
            rest: r#" a="1" , b="x\"y",c="",  "#,
            compact: false,
        }
        .collect();
        assert_eq!(labels, [("a", "1"), ("b", r#"x\"y"#), ("c", "")]);
    }
}
