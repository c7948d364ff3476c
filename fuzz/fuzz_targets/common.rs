use connector_prometheus::exposition::{Entry, Format, Parser, write_sample_json};

/// Parses `data` in `format` and walks everything the parser hands out: no input may
/// panic, and a sample's labels must walk back to the count the parser reported.
pub fn check(data: &[u8], format: Format) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parser = Parser::new(text, format);
    let mut out = Vec::new();
    while let Some(entry) = parser.next_entry() {
        let Ok(Entry::Sample(sample)) = entry else {
            continue;
        };
        assert_eq!(sample.labels.iter_raw().count(), sample.labels.len());
        assert_eq!(sample.labels.iter_decoded().count(), sample.labels.len());
        if let Some(exemplar) = sample.exemplar {
            assert_eq!(exemplar.labels.iter_decoded().count(), exemplar.labels.len());
        }
        write_sample_json(&mut out, &sample);
        out.clear();
    }
}
