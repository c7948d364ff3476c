//! The scrape page: the running totals of every series in OpenMetrics 1.0 or the
//! Prometheus text format 0.0.4, chosen by `Accept` as Prometheus negotiates it.

use std::fmt::Write as _;

use crate::aggregate::{Aggregate, SeriesTotals};
use crate::config::SpanMetricsConfig;

pub use otlp_common::exposition::negotiate;
use otlp_common::exposition::{OPENMETRICS, number};

fn sample(
    out: &mut String,
    name: &str,
    series: &SeriesTotals,
    le: Option<&str>,
    value: impl FnOnce(&mut String),
) {
    otlp_common::exposition::sample(
        out,
        name,
        series.label_pairs().chain(le.map(|le| ("le", le))),
        value,
    );
}

/// A count as a sample value.
#[allow(clippy::cast_precision_loss)]
fn count(n: u64) -> impl FnOnce(&mut String) {
    move |out: &mut String| number(out, n as f64, false)
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
        sample(
            &mut out,
            &config.calls_name,
            series,
            None,
            count(series.calls),
        );
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
        .map(|b| {
            let mut le = String::new();
            number(&mut le, *b, om);
            le
        })
        .chain(std::iter::once("+Inf".to_owned()))
        .collect();
    for series in &state.series {
        let mut running = 0;
        for (le, in_bucket) in les.iter().zip(&series.buckets) {
            running += in_bucket;
            sample(&mut out, &bucket_name, series, Some(le), count(running));
        }
        sample(&mut out, &format!("{hist}_sum"), series, None, |o| {
            number(o, series.sum, false)
        });
        sample(
            &mut out,
            &format!("{hist}_count"),
            series,
            None,
            count(series.calls),
        );
    }
    if om {
        out.push_str("# EOF\n");
    }
    out
}
