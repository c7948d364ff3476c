//! The scrape page: the latest value of every kept series, with `# HELP`, `# TYPE`
//! and (OpenMetrics) `# UNIT`, in the format the scraper asked for.

use otlp_common::exposition::{OPENMETRICS, escape_help, number, sample};
use otlp_common::naming::{FamilyKind, sample_suffix};

use crate::model::Kept;
use crate::samples::each_sample;
use crate::state::family_kind;

/// Renders the series of `kept` seen at or after `oldest_ms` as `content_type`
/// (OpenMetrics or text 0.0.4) says.
pub fn render(kept: &Kept, content_type: &str, oldest_ms: i64) -> Result<String, String> {
    let om = content_type == OPENMETRICS;
    let mut out = String::new();
    for family in &kept.families {
        let Some(meta) = &family.meta else { continue };
        if !family.series.iter().any(|s| s.seen_ms >= oldest_ms) {
            continue;
        }
        let kind = family_kind(meta).map_err(|e| e.to_string())?;
        let name = meta.name.as_str();
        // Text 0.0.4 names a counter by its samples, as prometheus_client writes it.
        let typed = if om {
            name.to_owned()
        } else {
            format!("{name}{}", sample_suffix(kind))
        };
        out.push_str("# HELP ");
        out.push_str(&typed);
        out.push(' ');
        escape_help(&mut out, &meta.help);
        out.push_str("\n# TYPE ");
        out.push_str(&typed);
        out.push_str(match kind {
            FamilyKind::Counter => " counter\n",
            FamilyKind::Gauge => " gauge\n",
            FamilyKind::Histogram => " histogram\n",
            FamilyKind::Summary => " summary\n",
        });
        if om && !meta.unit.is_empty() && name.ends_with(&format!("_{}", meta.unit)) {
            out.push_str("# UNIT ");
            out.push_str(name);
            out.push(' ');
            out.push_str(&meta.unit);
            out.push('\n');
        }
        for series in &family.series {
            let Some(p) = series
                .point
                .as_ref()
                .filter(|_| series.seen_ms >= oldest_ms)
            else {
                continue;
            };
            each_sample(name, kind, p, om, |sample_name, extra, value| {
                sample(
                    &mut out,
                    sample_name,
                    p.labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                        .chain(extra),
                    |o| number(o, value, false),
                );
                Ok::<(), String>(())
            })?;
        }
    }
    if om {
        out.push_str("# EOF\n");
    }
    Ok(out)
}
