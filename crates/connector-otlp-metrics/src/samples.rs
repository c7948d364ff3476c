//! The samples a series' point is written as, the same for metric rows and for the
//! scrape page: `name{labels}` or `name_total`, a histogram's cumulative `_bucket`
//! with `le`, `_sum` and `_count` (both left out when a bound is negative), a summary's
//! quantiles, `_sum` and `_count`; and which families' names would clash on a page.

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

/// What a family's name takes on a page: itself (OpenMetrics' `# TYPE` line) and
/// its samples' names. Kept beside [`each_sample`], whose names it must cover.
fn suffixes_taken(kind: FamilyKind) -> &'static [&'static str] {
    match kind {
        FamilyKind::Gauge => &[""],
        FamilyKind::Counter => &["", "_total"],
        FamilyKind::Histogram => &["", "_bucket", "_sum", "_count"],
        FamilyKind::Summary => &["", "_sum", "_count"],
    }
}

/// Every suffix some kind takes.
const ANY_SUFFIX: [&str; 5] = ["", "_total", "_bucket", "_sum", "_count"];

/// Another family, found through `kind_of` (family name to kind), whose names on a
/// page overlap those of `family` of `kind`: a counter `x` and a gauge `x_total`,
/// a histogram `h` and a gauge `h_count`. Both on one page make it invalid
/// (OpenMetrics forbids the overlap; in text 0.0.4 the second `# TYPE x_total` line
/// fails the whole scrape), so the family that comes second is refused. A family of
/// the same name is no clash: a metric that changed kind replaces its series.
///
/// It runs for every metric of every request, so it builds one string, not one per
/// name it tries.
pub fn clashing_family(
    family: &str,
    kind: FamilyKind,
    kind_of: impl Fn(&str) -> Option<FamilyKind>,
) -> Option<String> {
    let mut name = String::with_capacity(family.len() + "_bucket".len());
    for suffix in suffixes_taken(kind) {
        name.clear();
        name.push_str(family);
        name.push_str(suffix);
        // Only a family named `name` less a suffix can take `name`.
        for owner_suffix in ANY_SUFFIX {
            let Some(owner) = name.strip_suffix(owner_suffix) else {
                continue;
            };
            if owner != family
                && let Some(owner_kind) = kind_of(owner)
                && suffixes_taken(owner_kind).contains(&owner_suffix)
            {
                return Some(owner.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `family` of `kind` takes, the slow way.
    fn names_taken(family: &str, kind: FamilyKind) -> impl Iterator<Item = String> + '_ {
        suffixes_taken(kind)
            .iter()
            .map(move |suffix| format!("{family}{suffix}"))
    }

    const KINDS: [FamilyKind; 4] = [
        FamilyKind::Gauge,
        FamilyKind::Counter,
        FamilyKind::Histogram,
        FamilyKind::Summary,
    ];

    #[test]
    fn every_sample_name_is_a_name_the_family_takes() {
        let point = Point {
            bounds: vec![1.0],
            counts: vec![1, 2],
            quantiles: vec![crate::model::Quantile {
                quantile: 0.5,
                value: 1.0,
            }],
            ..Point::default()
        };
        for kind in KINDS {
            let taken: Vec<String> = names_taken("m", kind).collect();
            each_sample("m", kind, &point, true, |name, _, _| {
                assert!(taken.iter().any(|t| t == name), "{kind:?}: {name}");
                Ok::<(), ()>(())
            })
            .unwrap();
        }
    }

    #[test]
    fn families_clash_exactly_when_their_page_names_overlap() {
        // Every pair of kinds over names that differ by a suffix, compared with the
        // overlap of the names taken, computed the slow way.
        let names = [
            "x",
            "x_total",
            "x_sum",
            "x_count",
            "x_bucket",
            "x_total_total",
            "x_sum_count",
            "y",
        ];
        for a in names {
            for b in names.iter().filter(|b| **b != a) {
                for ka in KINDS {
                    for kb in KINDS {
                        let overlap =
                            names_taken(a, ka).any(|n| names_taken(b, kb).any(|m| m == n));
                        let found = clashing_family(a, ka, |n| (n == *b).then_some(kb));
                        assert_eq!(found.is_some(), overlap, "{a} {ka:?} against {b} {kb:?}");
                    }
                }
            }
        }
        let kinds = |n: &str| (n == "x").then_some(FamilyKind::Counter);
        assert_eq!(
            clashing_family("x_total", FamilyKind::Gauge, kinds).as_deref(),
            Some("x")
        );
        assert_eq!(
            clashing_family("x", FamilyKind::Gauge, kinds),
            None,
            "a kind change"
        );
    }
}
