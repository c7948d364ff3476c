use connector_prometheus::exposition::{
    Entry, Format, Parser, Sample, fast_path_agrees, write_sample_json,
};

/// Parses `data` in `format` and walks everything the parser hands out: no input may
/// panic, a sample's labels must walk back to the count the parser reported, and on
/// every line the fast path takes it must agree with the nom grammar.
///
/// With `strict`, strict mode is checked against lenient mode too: it adds rules and
/// never changes a sample, so whatever it hands out before its verdict lenient mode
/// hands out as well, and an input it accepts lenient mode accepts.
pub fn check(data: &[u8], format: Format, strict: bool) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
    for start in line_starts {
        let rest = &text[start..];
        if let Err(e) = fast_path_agrees(rest, format) {
            let line = rest.split('\n').next();
            panic!("fast path and grammar disagree on {line:?}: {e}");
        }
    }
    kept_labels_agree(text, format, false);
    let (lenient, lenient_ok) = walk(Parser::new(text, format));
    if !strict {
        return;
    }
    kept_labels_agree(text, format, true);
    let (strict, strict_ok) = walk(Parser::new(text, format).strict(true));
    assert!(strict.len() <= lenient.len());
    assert_eq!(strict[..], lenient[..strict.len()]);
    if strict_ok {
        assert!(lenient_ok, "strict mode accepted what lenient mode rejects");
        assert_eq!(strict.len(), lenient.len());
    }
}

/// `next_with_labels` hands out the samples and errors `next` does, and with each
/// sample the labels its `iter_decoded` walks.
fn kept_labels_agree(text: &str, format: Format, strict: bool) {
    let mut kept = Parser::new(text, format).strict(strict);
    for expected in Parser::new(text, format).strict(strict) {
        let Some(next) = kept.next_with_labels() else {
            panic!("next_with_labels ended before next did");
        };
        match (next, expected) {
            (Ok((sample, labels)), Ok(expected)) => {
                assert_eq!(render(&sample), render(&expected));
                assert!(labels.eq(expected.labels.iter_decoded()));
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("next_with_labels and next disagree on a sample"),
        }
    }
    assert!(kept.next_with_labels().is_none());
}

/// Every sample rendered as JSON, and whether the input parsed to the end.
fn walk(mut parser: Parser<'_>) -> (Vec<Vec<u8>>, bool) {
    let mut rendered = Vec::new();
    while let Some(entry) = parser.next_entry() {
        match entry {
            Ok(Entry::Sample(sample)) => rendered.push(render(&sample)),
            Ok(_) => {}
            Err(_) => return (rendered, false),
        }
    }
    (rendered, true)
}

fn render(sample: &Sample<'_>) -> Vec<u8> {
    assert_eq!(sample.labels.iter_raw().count(), sample.labels.len());
    assert_eq!(sample.labels.iter_decoded().count(), sample.labels.len());
    if let Some(exemplar) = sample.exemplar {
        assert_eq!(exemplar.labels.iter_decoded().count(), exemplar.labels.len());
    }
    let mut out = Vec::new();
    write_sample_json(&mut out, sample);
    out
}
