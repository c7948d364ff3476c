//! Writing a Prometheus scrape page: the format a scraper asks for, and values and
//! label values as both text formats want them. Shared by every receiver that serves
//! what it took in.

use std::fmt::Write as _;

/// OpenMetrics 1.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format 0.0.4.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type to answer an `Accept` header with, as Prometheus negotiates it.
pub fn negotiate(accept: Option<&str>) -> &'static str {
    match accept {
        Some(a) if a.contains("application/openmetrics-text") => OPENMETRICS,
        _ => TEXT,
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `# HELP` text with `\` and newlines escaped (quotes stay as they are).
pub fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as both formats read it: `NaN`, `+Inf`, `-Inf`, else the shortest text
/// that reads back the same; with `float_form`, integers get a `.0` (OpenMetrics
/// requires it of `le` and `quantile` values).
pub fn number(out: &mut String, v: f64, float_form: bool) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if float_form && v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{v:.1}");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends one sample line: `name{labels} value`.
pub fn sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: impl FnOnce(&mut String),
) {
    out.push_str(name);
    let mut first = true;
    for (label, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value(out);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_labels_read_back() {
        let mut out = String::new();
        sample(&mut out, "x", [("a", "q\"\\\n")], |o| {
            number(o, f64::NEG_INFINITY, false)
        });
        sample(&mut out, "y", [], |o| number(o, 2.0, true));
        sample(&mut out, "z", [], |o| number(o, 0.25, false));
        assert_eq!(out, "x{a=\"q\\\"\\\\\\n\"} -Inf\ny 2.0\nz 0.25\n");
    }
}
