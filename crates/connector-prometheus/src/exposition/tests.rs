use std::borrow::Cow;

use super::*;

fn prom(text: &str) -> Vec<Sample<'_>> {
    parse(text, Format::Prometheus).unwrap()
}

fn om(text: &str) -> Vec<Sample<'_>> {
    parse(text, Format::OpenMetrics).unwrap()
}

fn labels(s: &Sample<'_>) -> Vec<(String, String)> {
    s.labels
        .iter_decoded()
        .map(|(k, v)| (k.to_owned(), v.into_owned()))
        .collect()
}

fn err(text: &str, format: Format) -> ParseError {
    parse(text, format).unwrap_err()
}

#[test]
fn prometheus_basics() {
    let text = "# HELP x_total Total.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"two\"} 3 1700000000000\nup 1\n";
    let s = prom(text);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "x_total");
    assert_eq!(
        labels(&s[0]),
        [("a".into(), "1".into()), ("b".into(), "two".into())]
    );
    assert_eq!(s[0].value, 3.0);
    assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_000.0));
    assert_eq!(s[1].name, "up");
    assert!(s[1].labels.is_empty());
    assert_eq!(s[1].timestamp_ms, None);
}

#[test]
fn names_and_values_borrow_from_the_input() {
    let text = String::from("m{k=\"plain\",e=\"a\\\\b\"} 1\n");
    let s = prom(&text);
    let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
    assert!(range.contains(&(s[0].name.as_ptr() as usize)));
    let decoded: Vec<_> = s[0].labels.iter_decoded().collect();
    assert!(matches!(decoded[0].1, Cow::Borrowed("plain")));
    assert!(matches!(&decoded[1].1, Cow::Owned(v) if v == "a\\b"));
}

#[test]
fn prometheus_leniencies() {
    // Trailing comma, blanks around tokens, blank lines, CRLF, comments, `{}`, no final newline.
    let text = "\r\n  # a comment\nm{a=\"1\",} 1\n\nm { a = \"2\" , b=\"3\" }\t2 \r\nm{} 3\n# EOF\nlast -4";
    let s = prom(text);
    let values: Vec<f64> = s.iter().map(|s| s.value).collect();
    assert_eq!(values, [1.0, 2.0, 3.0, -4.0]);
    assert_eq!(
        labels(&s[1]),
        [("a".into(), "2".into()), ("b".into(), "3".into())]
    );
    assert!(s[2].labels.is_empty());
    assert_eq!(s[3].name, "last");
}

#[test]
fn crlf_lines_parse_like_lf_lines() {
    let lf = "# TYPE a counter\na_total{x=\"1\",y=\"z\"} 3 1700000000000\nb 2.5\nc{d=\"e\"} 1e3";
    let crlf = lf.replace('\n', "\r\n");
    let (lf, crlf) = (prom(lf), prom(&crlf));
    assert_eq!(lf.len(), 3);
    assert_eq!(lf, crlf);
}

#[test]
fn a_label_value_cannot_run_into_the_next_line() {
    // The second case, a backslash just before the newline, was found by fuzzing.
    for text in [
        "ok 1\na{b=\"x\ny\"} 1\n# EOF\n",
        "ok 1\na{b=\"x\\\ny\"} 1\n# EOF\n",
    ] {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let e = err(text, format);
            assert_eq!((e.kind(), e.line()), (ParseErrorKind::Syntax, 2), "{e}");
            assert!(e.message().contains("closing `\"`"), "{e}");
        }
    }
}

#[test]
fn repeated_families_are_accepted() {
    let text = "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n# TYPE a gauge\na{x=\"y\"} 3\n";
    assert_eq!(prom(text).len(), 3);
}

#[test]
fn special_values() {
    let s = prom("a NaN\nb +Inf\nc -Inf\nd 1e-3\ne -0\n");
    assert!(s[0].value.is_nan());
    assert_eq!(s[1].value, f64::INFINITY);
    assert_eq!(s[2].value, f64::NEG_INFINITY);
    assert_eq!(s[3].value, 0.001);
    assert!(s[4].value == 0.0 && s[4].value.is_sign_negative());
}

#[test]
fn escapes_in_label_values_and_help() {
    let text = "# HELP m a \\\\ b \\n c \\\" d\nm{v=\"q\\\"x\\ny\\\\z\\t\"} 1\n";
    let mut parser = Parser::new(text, Format::Prometheus);
    let Some(Ok(Entry::Help { name, text: help })) = parser.next_entry() else {
        panic!("expected help")
    };
    assert_eq!((name, help.as_ref()), ("m", "a \\ b \n c \\\" d"));
    let Some(Ok(Entry::Sample(s))) = parser.next_entry() else {
        panic!("expected sample")
    };
    assert_eq!(s.labels.get("v").as_deref(), Some("q\"x\ny\\z\\t"));
    assert!(s.labels.has_escapes());
    assert_eq!(
        s.labels.iter_raw().next(),
        Some(("v", "q\\\"x\\ny\\\\z\\t"))
    );
}

#[test]
fn metadata_entries() {
    let text = "# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n# HELP a_seconds Help \\\"me\\\".\na_seconds_count 1\n# EOF\n";
    let entries: Vec<_> = {
        let mut p = Parser::new(text, Format::OpenMetrics);
        std::iter::from_fn(|| p.next_entry())
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        entries[..3],
        [
            Entry::Type {
                name: "a_seconds",
                metric_type: MetricType::Histogram
            },
            Entry::Unit {
                name: "a_seconds",
                unit: "seconds"
            },
            Entry::Help {
                name: "a_seconds",
                text: Cow::Owned("Help \"me\".".into())
            },
        ]
    );
    assert_eq!(entries.len(), 4);
}

#[test]
fn openmetrics_timestamps_and_exemplars() {
    let text = "a_bucket{le=\"1\"} 2 1.5 # {trace_id=\"abc\"} 0.5 1700000000.25\nb 1 # {} 3\nc 2 123\n# EOF";
    let s = om(text);
    assert_eq!(s[0].timestamp_ms, Some(1500.0));
    let ex = s[0].exemplar.unwrap();
    assert_eq!(ex.labels.get("trace_id").as_deref(), Some("abc"));
    assert_eq!(ex.value, 0.5);
    assert_eq!(ex.timestamp_ms, Some(1_700_000_000_250.0));
    let ex = s[1].exemplar.unwrap();
    assert!(ex.labels.is_empty());
    assert_eq!(ex.timestamp_ms, None);
    assert_eq!(s[2].timestamp_ms, Some(123_000.0));
}

#[test]
fn openmetrics_framing() {
    let e = err("a 1\n", Format::OpenMetrics);
    assert_eq!(e.kind(), ParseErrorKind::Framing);
    assert_eq!(
        e.to_string(),
        "line 2, column 1 (byte 4): missing `# EOF`: OpenMetrics text must end with it (was the body cut short?)"
    );
    let e = err("a 1\n# EOF\nb 2\n", Format::OpenMetrics);
    assert_eq!(
        e.to_string(),
        "line 3, column 1 (byte 10): text after `# EOF`"
    );
    let e = err("a 1\n\n# EOF\n", Format::OpenMetrics);
    assert_eq!((e.line(), e.offset()), (2, 4));
    let e = err("a 1\r\n# EOF\n", Format::OpenMetrics);
    assert_eq!((e.line(), e.column(), e.offset()), (1, 4, 3));
    // A Prometheus body ending in `# EOF` is fine: it is a comment there.
    assert_eq!(prom("a 1\n# EOF\n").len(), 1);
}

#[test]
fn openmetrics_syntax_is_exact() {
    for bad in [
        "a  1\n# EOF\n",
        "a{b=\"c\",} 1\n# EOF\n",
        "a 1 \n# EOF\n",
        "# a comment\n# EOF\n",
        "#  TYPE a gauge\n# EOF\n",
        "# TYPE a untyped\n# EOF\n",
        "a 1 # {} 1 NaN\n# EOF\n",
        "# HELP a\n# EOF\n",
        "# UNIT a\n# EOF\n",
    ] {
        assert!(
            parse(bad, Format::OpenMetrics).is_err(),
            "{bad:?} should fail"
        );
    }
}

#[test]
fn errors_say_where_and_what() {
    let e = err("ok 1\nbad{a=\"1\" b=\"2\"} 1\n", Format::Prometheus);
    assert_eq!(e.kind(), ParseErrorKind::Syntax);
    assert_eq!(
        e.to_string(),
        "line 2, column 11 (byte 15): expected `,` or `}` after the label value, found `b=\"2\"} 1`"
    );
    let e = err("x 1\n<html><body>oops</body></html>\n", Format::Prometheus);
    assert_eq!(
        e.to_string(),
        "line 2, column 1 (byte 4): expected a metric name, found `<html><body>oops</body><`"
    );
    let e = err("x abc\n", Format::Prometheus);
    assert_eq!(e.kind(), ParseErrorKind::Number);
    assert_eq!((e.line(), e.column(), e.offset()), (1, 3, 2));
    let e = err("x 1 1.5\n", Format::Prometheus);
    assert_eq!(e.kind(), ParseErrorKind::Number);
    assert!(e.message().contains("integer timestamp"), "{e}");
    let e = err("x{a=\"unterminated} 1\n", Format::Prometheus);
    assert_eq!(
        e.message(),
        "expected a closing `\"` for this label value, found `\"unterminated} 1`"
    );
    let e = err("x\n", Format::Prometheus);
    assert_eq!(
        e.message(),
        "expected a blank before the value, found the end of the line"
    );
    let e = err("# TYPE x countr\n", Format::Prometheus);
    assert_eq!(
        e.message(),
        "expected a metric type: counter, gauge, histogram, summary or untyped, found `countr`"
    );
    let e = err("1x 2\n", Format::Prometheus);
    assert_eq!(
        e.message(),
        "expected a metric name (names cannot start with a digit), found `1x 2`"
    );
    // Columns count characters, not bytes.
    let e = err("x{a=\"☃\"} y\n", Format::Prometheus);
    assert_eq!((e.column(), e.offset()), (10, 11));
}

#[test]
fn parsing_stops_at_the_first_error() {
    let mut p = Parser::new("a 1\nb x\nc 3\n", Format::Prometheus);
    assert!(p.next().unwrap().is_ok());
    assert!(p.next().unwrap().is_err());
    assert!(p.next().is_none());
}

#[test]
fn utf8_errors_have_positions() {
    let bytes = b"a 1\nb{x=\"\xff\"} 2\n".to_vec();
    let bytes = bytes.as_slice();
    let e = std::str::from_utf8(bytes).unwrap_err();
    let e = ParseError::from_utf8_error(bytes, &e);
    assert_eq!(e.kind(), ParseErrorKind::Utf8);
    assert_eq!((e.line(), e.column(), e.offset()), (2, 6, 9));
}

#[test]
fn detect_format() {
    assert_eq!(Format::detect("a 1\n"), Format::Prometheus);
    assert_eq!(Format::detect("a 1\n# EOF\n"), Format::OpenMetrics);
    assert_eq!(
        Format::detect("# TYPE a untyped\na 1\n# EOF\n"),
        Format::Prometheus
    );
    assert_eq!(
        Format::detect("# TYPE a info\na_info 1\n"),
        Format::OpenMetrics
    );
    assert_eq!(Format::detect("# UNIT a seconds\n"), Format::OpenMetrics);
    assert_eq!(Format::detect("a 1 # {t=\"1\"} 2\n"), Format::OpenMetrics);
}

#[test]
fn json_rendering() {
    let text = "m{a=\"q\\\"\"} NaN\nn 1.5 -2\no 7\n";
    let mut out = Vec::new();
    for s in prom(text) {
        write_sample_json(&mut out, &s);
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"name\":\"m\",\"labels\":{\"a\":\"q\\\"\"},\"value\":null,\"timestamp_ms\":null}\n\
         {\"name\":\"n\",\"labels\":{},\"value\":1.5,\"timestamp_ms\":-2}\n\
         {\"name\":\"o\",\"labels\":{},\"value\":7.0,\"timestamp_ms\":null}\n"
    );
}

/// Every file under `dir`, recursively, as text (files that are not UTF-8 left out).
fn texts_of(dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            texts_of(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push(text);
        }
    }
}

/// `next_with_labels` hands out what `iter_decoded` walks, for every sample of every
/// fixture and conformance text, both formats, lenient and strict (where samples
/// come through the fast path, the grammar, or both on one text), and ends where
/// `next` ends, with the same error.
#[test]
fn kept_labels_are_the_walked_labels_on_every_known_text() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    texts_of(&root.join("../../fixtures/exposition"), &mut texts);
    texts_of(
        &root.join("../../../shared/conformance/openmetrics"),
        &mut texts,
    );
    texts.push(
        "a{x=\"1\"} 1\nb{ y = \"2\" , z=\"q\\\"\" } 2\nc 3\n# HELP d h\nd{w=\"\\\\\"} 4\n"
            .to_owned(),
    );
    let mut with_labels = 0;
    for text in &texts {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            for strict in [false, true] {
                let mut kept = Parser::new(text, format).strict(strict);
                let mut walked = Parser::new(text, format).strict(strict);
                loop {
                    let (k, w) = (kept.next_with_labels(), walked.next());
                    match (k, w) {
                        (None, None) => break,
                        (Some(Ok((sample, labels))), Some(Ok(expected))) => {
                            // Debug text, so that NaN values compare equal.
                            assert_eq!(format!("{sample:?}"), format!("{expected:?}"));
                            let labels: Vec<_> = labels.collect();
                            let walk: Vec<_> = expected.labels.iter_decoded().collect();
                            assert_eq!(
                                labels, walk,
                                "{format:?} strict {strict}: {}",
                                expected.name
                            );
                            with_labels += usize::from(!labels.is_empty());
                        }
                        (Some(Err(k)), Some(Err(w))) => assert_eq!(k.to_string(), w.to_string()),
                        (k, w) => panic!(
                            "{format:?} strict {strict}: kept {:?}, walked {:?}",
                            k.map(|r| r.map(|(s, _)| s)),
                            w
                        ),
                    }
                }
            }
        }
    }
    assert!(
        with_labels > 10_000,
        "only {with_labels} samples with labels"
    );
}

mod fast_path {
    use std::path::Path;

    use proptest::prelude::*;

    use super::super::{Format, fast_path_agrees};
    use super::texts_of;

    /// Every line of `text` with the rest of the text after it, as the parser sees it.
    fn line_starts(text: &str) -> impl Iterator<Item = &str> {
        std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .map(|start| &text[start..])
    }

    /// Every line of the fixtures and of the conformance suite (good and bad cases),
    /// in both formats.
    #[test]
    fn agrees_with_the_grammar_on_every_known_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        texts_of(&root.join("../../fixtures/exposition"), &mut texts);
        texts_of(
            &root.join("../../../shared/conformance/openmetrics"),
            &mut texts,
        );
        let lines: Vec<&str> = texts.iter().flat_map(|t| line_starts(t)).collect();
        assert!(lines.len() > 10_000, "found only {} lines", lines.len());
        let mut taken = 0;
        for line in &lines {
            for format in [Format::Prometheus, Format::OpenMetrics] {
                match fast_path_agrees(line, format) {
                    Ok(took) => taken += usize::from(took),
                    Err(e) => panic!("{format:?}: {:?}: {e}", line.lines().next()),
                }
            }
        }
        // Most real lines take the fast path, so the comparison is not vacuous.
        assert!(
            taken > lines.len(),
            "the fast path took {taken} of {} lines",
            2 * lines.len()
        );
    }

    fn line() -> impl Strategy<Value = String> {
        let name = "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}|[0-9][a-z]?|";
        let label =
            "[a-zA-Z_][a-zA-Z0-9_]{0,6}=\"([^\"\\\\]|\\\\[\\\\n\"x]){0,8}\"|[a-z]+ = \"x\"|,|";
        let labels = prop::collection::vec(label, 0..4).prop_map(|l| l.join(","));
        let token = "-?[0-9]{1,20}(\\.[0-9]*)?(e[+-]?[0-9]+)?|[+-]?Inf|NaN|nan|0x1|1_0|#|";
        let sep = " |  |\t|";
        (
            name,
            prop::option::of(labels),
            sep,
            token,
            prop::option::of((sep, token)),
            "( # \\{a=\"b\"\\} 1)?[ \r]?",
        )
            .prop_map(|(name, labels, sep1, value, ts, tail)| {
                let mut line = name;
                if let Some(labels) = labels {
                    line.push('{');
                    line.push_str(&labels);
                    line.push('}');
                }
                line.push_str(&sep1);
                line.push_str(&value);
                if let Some((sep2, ts)) = ts {
                    line.push_str(&sep2);
                    line.push_str(&ts);
                }
                line.push_str(&tail);
                line
            })
    }

    fn metadata() -> impl Strategy<Value = String> {
        "# (HELP|TYPE|UNIT|EOF|help)( |  |\t)?[a-zA-Z_:0-9]{0,8}( |\t)?(counter|gauge|untyped|unknown|info|histogram|[ a-z\\\\\"]{0,10})[ \t]?"
    }

    /// A label value cut by a newline, with or without a backslash before it.
    fn split_value() -> impl Strategy<Value = String> {
        "[a-z]{1,3}\\{[a-z]=\"[a-z]{0,3}\\\\?\n[a-z]{0,3}\"\\} [0-9]"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn agrees_with_the_grammar_on_generated_lines(
            lines in prop::collection::vec(prop_oneof![line(), metadata(), split_value()], 1..3),
        ) {
            let text = lines.join("\n");
            for format in [Format::Prometheus, Format::OpenMetrics] {
                for line in line_starts(&text) {
                    let verdict = fast_path_agrees(line, format);
                    prop_assert!(verdict.is_ok(), "{:?}: {:?}: {:?}", format, line, verdict);
                }
            }
        }
    }
}

mod detection {
    use std::path::Path;

    use proptest::prelude::*;

    use super::super::Format;
    use super::texts_of;

    /// The line-by-line detection `Format::detect` replaced: the reference it must
    /// agree with.
    fn reference(text: &str) -> Format {
        if text.contains(" # {") {
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

    #[test]
    fn agrees_with_the_reference_on_every_fixture_and_conformance_case() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        texts_of(&root.join("../../fixtures/exposition"), &mut texts);
        texts_of(
            &root.join("../../../shared/conformance/openmetrics"),
            &mut texts,
        );
        assert!(texts.len() > 100, "found only {} texts", texts.len());
        let mut openmetrics = 0;
        for text in &texts {
            let detected = Format::detect(text);
            assert_eq!(detected, reference(text), "{text:.300}");
            openmetrics += usize::from(detected == Format::OpenMetrics);
        }
        assert!(openmetrics > 0 && openmetrics < texts.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn agrees_with_the_reference_on_generated_texts(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("# EOF".to_owned()),
                    Just("# TYPE a untyped".to_owned()),
                    Just("# TYPE a info".to_owned()),
                    Just("# TYPE a counter ".to_owned()),
                    Just("# UNIT a s".to_owned()),
                    Just("#  TYPE a info".to_owned()),
                    Just("a 1 # {b=\"c\"} 1".to_owned()),
                    Just("".to_owned()),
                    Just("  ".to_owned()),
                    "[a-z #{}\"\\r]{0,12}",
                ],
                0..8,
            ),
            ending in prop_oneof![Just(""), Just("\n"), Just("\r\n"), Just(" \n\n")],
        ) {
            let text = lines.join("\n") + ending;
            prop_assert_eq!(Format::detect(&text), reference(&text));
        }
    }
}
