use std::io::Write as _;

use super::Sample;

/// Largest magnitude at which every integer is exact in an f64 (2^53).
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Appends `sample` as one JSON line:
/// `{"name":"...","labels":{...},"value":1.0,"timestamp_ms":null}` followed by `\n`.
///
/// `value` is null for NaN and ±Inf (JSON has no such numbers, and sinks store them
/// as null); `timestamp_ms` is null when the sample has none and an integer when it is
/// a whole number of milliseconds. This is the output of `connectord parse` and of the
/// fixture goldens.
pub fn write_sample_json(out: &mut Vec<u8>, sample: &Sample<'_>) {
    out.extend_from_slice(b"{\"name\":");
    write_json_str(out, sample.name);
    out.extend_from_slice(b",\"labels\":{");
    for (i, (name, value)) in sample.labels.iter_decoded().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        write_json_str(out, &value);
    }
    out.extend_from_slice(b"},\"value\":");
    write_json_f64(out, sample.value);
    out.extend_from_slice(b",\"timestamp_ms\":");
    match sample.timestamp_ms {
        None => out.extend_from_slice(b"null"),
        Some(ms) if ms.fract() == 0.0 && ms.abs() < EXACT_INTEGER_LIMIT => {
            #[allow(clippy::cast_possible_truncation)]
            let whole = ms as i64;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{whole}");
        }
        Some(ms) => write_json_f64(out, ms),
    }
    out.extend_from_slice(b"}\n");
}

fn write_json_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        // serde_json prints the shortest text that reads back to the same f64.
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Runs `parser` to the end and renders every sample with [`write_sample_json`];
/// nothing is rendered when the text has an error.
pub fn render_jsonl(parser: super::Parser<'_>) -> Result<Vec<u8>, super::ParseError> {
    let mut out = Vec::with_capacity(parser.text.len() * 2);
    for sample in parser {
        write_sample_json(&mut out, &sample?);
    }
    Ok(out)
}
