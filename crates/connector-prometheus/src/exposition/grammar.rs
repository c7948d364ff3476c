//! The grammar of a line: nom combinators over its bytes (with `syntax.rs`), which
//! define the language and word every error.

use nom::Parser as _;

use super::*;

/// The `&str` of `line` that `part` (a sub-slice of its bytes) covers. Every token
/// boundary is an ASCII byte, so the slice always falls on character boundaries.
pub(super) fn sub<'a>(line: &'a str, part: &[u8]) -> &'a str {
    let start = part.as_ptr() as usize - line.as_ptr() as usize;
    &line[start..start + part.len()]
}

pub(super) fn describe(e: Expected<'_>, line: &str) -> String {
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
pub(super) fn metadata_name(input: &[u8], om: bool) -> Result<(&[u8], &[u8]), Expected<'_>> {
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
pub(super) fn type_word(
    input: &[u8],
    om: bool,
    format: Format,
) -> Result<(&[u8], MetricType), Expected<'_>> {
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

pub(super) fn prometheus_line(line: &str) -> Result<Option<Entry<'_>>, Expected<'_>> {
    let b = line.as_bytes();
    let (b, _) = syntax::blanks(b).map_err(syntax::failure)?;
    match b.first() {
        None => Ok(None),
        Some(b'#') => prometheus_comment(line, &b[1..]),
        Some(_) => prometheus_sample(line, b).map(|s| Some(Entry::Sample(s))),
    }
}

pub(super) fn prometheus_comment<'a>(
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
pub(super) fn skip_blanks<'a>(
    input: &'a [u8],
    compact: &mut bool,
) -> Result<&'a [u8], nom::Err<Expected<'a>>> {
    let (rest, blanks) = syntax::blanks(input)?;
    *compact &= blanks.is_empty();
    Ok(rest)
}

/// `{name="value",...}` with the given separator rules; returns the inner text.
pub(super) fn label_set<'a>(input: &'a [u8], line: &'a str, om: bool) -> Res<'a, Labels<'a>> {
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

pub(super) const EXPECTED_SAMPLE_VALUE: &str =
    "a number for the sample value (like `1`, `2.5e3`, `NaN`, `+Inf`)";

pub(super) fn value_token<'a>(input: &'a [u8], what: &'static str) -> Res<'a, f64> {
    let (rest, tok) = expect(what, syntax::token).parse(input)?;
    match syntax::number(tok) {
        Some(v) => Ok((rest, v)),
        None => syntax::fail(input, what),
    }
}

pub(super) fn prometheus_sample<'a>(
    line: &'a str,
    b: &'a [u8],
) -> Result<Sample<'a>, Expected<'a>> {
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

pub(super) fn openmetrics_sample(line: &str) -> Result<Sample<'_>, Expected<'_>> {
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
pub(super) fn om_timestamp(input: &[u8]) -> Res<'_, Option<f64>> {
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
