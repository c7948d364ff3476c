//! The scrape page: the running totals of every series in OpenMetrics 1.0 or the
//! Prometheus text format 0.0.4, chosen by `Accept` as Prometheus negotiates it.

use std::fmt::Write as _;

use crate::aggregate::{Aggregate, SeriesTotals};
use crate::config::SpanMetricsConfig;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type to answer an `Accept` header with.
pub fn negotiate(accept: Option<&str>) -> &'static str {
    match accept {
        Some(a) if a.contains("application/openmetrics-text") => OPENMETRICS,
        _ => TEXT,
    }
}

fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn sample(
    out: &mut String,
    name: &str,
    series: &SeriesTotals,
    le: Option<&str>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push('{');
    let mut first = true;
    for (label, v) in series.label_pairs().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// A float as both formats write it: integers without a fraction only in 0.0.4.
fn number(v: f64, openmetrics: bool) -> String {
    if openmetrics && v.fract() == 0.0 && v.is_finite() {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

/// Renders the totals in `state` in the format of `content_type`.
pub fn render(config: &SpanMetricsConfig, state: &Aggregate, content_type: &str) -> String {
    let om = content_type == OPENMETRICS;
    let mut out = String::with_capacity(256 + state.series.len() * 1200);
    let calls_family = config.calls_name.trim_end_matches("_total");
    let (family, kind) = if om {
        (calls_family, "counter")
    } else {
        (config.calls_name.as_str(), "counter")
    };
    let _ = writeln!(
        out,
        "# HELP {family} Spans counted, by service, span name, kind and status."
    );
    let _ = writeln!(out, "# TYPE {family} {kind}");
    for series in &state.series {
        sample(&mut out, &config.calls_name, series, None, series.calls);
    }
    let hist = &config.duration_name;
    let _ = writeln!(
        out,
        "# HELP {hist} Span durations, by service, span name, kind and status."
    );
    let _ = writeln!(out, "# TYPE {hist} histogram");
    if om {
        let _ = writeln!(out, "# UNIT {hist} {}", config.unit.word());
    }
    let bucket_name = format!("{hist}_bucket");
    let les: Vec<String> = config
        .bounds
        .iter()
        .map(|b| number(*b, om))
        .chain(std::iter::once("+Inf".to_owned()))
        .collect();
    for series in &state.series {
        let mut running = 0;
        for (le, count) in les.iter().zip(&series.buckets) {
            running += count;
            sample(&mut out, &bucket_name, series, Some(le), running);
        }
        sample(
            &mut out,
            &format!("{hist}_sum"),
            series,
            None,
            number(series.sum, om),
        );
        sample(
            &mut out,
            &format!("{hist}_count"),
            series,
            None,
            series.calls,
        );
    }
    if om {
        out.push_str("# EOF\n");
    }
    out
}
