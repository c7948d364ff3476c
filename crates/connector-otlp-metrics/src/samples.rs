//! The samples a series' point is written as, the same for metric rows and for the
//! scrape page: `name{labels}` or `name_total`, a histogram's cumulative `_bucket`
//! with `le`, `_sum` and `_count` (both left out when a bound is negative), a summary's
//! quantiles, `_sum` and `_count`.

use otlp_common::exposition::number;
use otlp_common::naming::{FamilyKind, sample_suffix};

use crate::model::Point;

/// Calls `each` with (sample name, the label the sample adds, value) for every sample
/// of `point`. `float_form` writes whole `le` and `quantile` values with `.0`, as
/// OpenMetrics wants them.
pub fn each_sample<E>(
    family: &str,
    kind: FamilyKind,
    point: &Point,
    float_form: bool,
    mut each: impl FnMut(&str, Option<(&str, &str)>, f64) -> Result<(), E>,
) -> Result<(), E> {
    let label_text = |v: f64| {
        let mut text = String::new();
        number(&mut text, v, float_form);
        text
    };
    #[allow(clippy::cast_precision_loss)]
    match kind {
        FamilyKind::Gauge | FamilyKind::Counter => {
            each(
                &format!("{family}{}", sample_suffix(kind)),
                None,
                point.value,
            )?;
        }
        FamilyKind::Histogram => {
            let bucket = format!("{family}_bucket");
            let mut running = 0u64;
            for (i, count) in point.counts.iter().enumerate() {
                running = running.saturating_add(*count);
                let le = point
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| label_text(*b));
                each(&bucket, Some(("le", &le)), running as f64)?;
            }
            // With a negative bound the sum can fall, so it is no counter: OpenMetrics
            // leaves it out, and `_count` with it (a point has both or neither; the
            // count is the `+Inf` bucket's).
            if point.bounds.iter().all(|b| *b >= 0.0) {
                each(&format!("{family}_sum"), None, point.sum)?;
                each(&format!("{family}_count"), None, point.count as f64)?;
            }
        }
        FamilyKind::Summary => {
            for q in &point.quantiles {
                each(family, Some(("quantile", &label_text(q.quantile))), q.value)?;
            }
            each(&format!("{family}_sum"), None, point.sum)?;
            each(&format!("{family}_count"), None, point.count as f64)?;
        }
    }
    Ok(())
}
