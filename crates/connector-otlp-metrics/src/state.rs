//! The running series: staged points folded in bucket by bucket (delta points added
//! up, cumulative ones taken as they are), expired after `metric_expiration`, and
//! written as metric rows.

use std::collections::HashMap;

use connector_core::{Batch, ConnectorError};
use otlp_common::naming::FamilyKind;

use crate::config::{Known, OtlpMetricsConfig};
use crate::model::{
    Family, Kept, KeptFamily, KeptSeries, Label, Point, Staged, kind_of, overlay, series_hash,
};
use crate::samples::{clashing_family, each_sample};

struct LiveFamily {
    meta: Family,
    kind: FamilyKind,
    /// Series by labels, with whether this bucket changed them.
    series: HashMap<Vec<Label>, (KeptSeries, bool)>,
}

/// The state of a commit in progress. Hash maps, not the sorted state: folding a
/// bucket of 51,000 points looked each series up by labels, and comparing label
/// vectors in a `BTreeMap` cost more than hashing them once.
pub struct Live {
    families: HashMap<String, LiveFamily>,
    series: usize,
    refused: u64,
}

/// The kind of a stored family, or an error naming it.
pub fn family_kind(meta: &Family) -> Result<FamilyKind, ConnectorError> {
    kind_of(meta.kind).ok_or_else(|| {
        ConnectorError::permanent(format!(
            "family `{}` in the connector's state has kind {}, which this version does not know",
            meta.name, meta.kind
        ))
    })
}

impl Live {
    /// The state a previous commit left.
    pub fn from_kept(kept: Kept) -> Result<Self, ConnectorError> {
        let mut families = HashMap::with_capacity(kept.families.len());
        let mut series = 0;
        for family in kept.families {
            let meta = family.meta.ok_or_else(|| {
                ConnectorError::permanent("a family in the connector's state has no name or kind")
            })?;
            let kind = family_kind(&meta)?;
            let mut by_labels = HashMap::with_capacity(family.series.len());
            for kept_series in family.series {
                let labels = kept_series
                    .point
                    .as_ref()
                    .map(|p| p.labels.clone())
                    .ok_or_else(|| {
                        ConnectorError::permanent(format!(
                            "a series of family `{}` in the connector's state has no point",
                            meta.name
                        ))
                    })?;
                by_labels.insert(labels, (kept_series, false));
                series += 1;
            }
            families.insert(
                meta.name.clone(),
                LiveFamily {
                    meta,
                    kind,
                    series: by_labels,
                },
            );
        }
        Ok(Live {
            families,
            series,
            refused: kept.refused,
        })
    }

    /// Drops series whose last point came before `oldest_ms`.
    pub fn expire(&mut self, oldest_ms: i64) {
        for family in self.families.values_mut() {
            let before = family.series.len();
            family.series.retain(|_, (s, _)| s.seen_ms >= oldest_ms);
            self.series -= before - family.series.len();
        }
        self.families.retain(|_, f| !f.series.is_empty());
    }

    /// Folds one request's points into the series, at `bucket_ms`.
    pub fn apply(
        &mut self,
        config: &OtlpMetricsConfig,
        staged: Staged,
        bucket_ms: i64,
    ) -> Result<(), ConnectorError> {
        for mut family in staged.families {
            let kind = family_kind(&family)?;
            let points = std::mem::take(&mut family.points);
            let common = std::mem::take(&mut family.common);
            let arrives = self
                .families
                .get(&family.name)
                .is_none_or(|live| live.kind != kind);
            // `accept` refuses clashes it can see; these came in the same bucket, or
            // before this process's first commit.
            if arrives
                && clashing_family(&family.name, kind, |name| {
                    self.families
                        .get(name)
                        .filter(|f| !f.series.is_empty())
                        .map(|f| f.kind)
                })
                .is_some()
            {
                self.refused += points.len() as u64;
                continue;
            }
            let live = match self.families.get_mut(&family.name) {
                Some(live) => live,
                None => self
                    .families
                    .entry(family.name.clone())
                    .or_insert(LiveFamily {
                        meta: family.clone(),
                        kind,
                        series: HashMap::new(),
                    }),
            };
            // A metric that changed kind starts over: its old series cannot be read
            // as the new kind.
            if live.kind != kind {
                self.series -= live.series.len();
                live.series.clear();
                live.kind = kind;
            }
            live.meta = family;
            for mut point in points {
                let labels = overlay(std::mem::take(&mut point.labels), &common);
                let (series, touched) = match live.series.get_mut(&labels) {
                    Some(series) => series,
                    None if self.series >= config.max_series => {
                        self.refused += 1;
                        continue;
                    }
                    None => {
                        self.series += 1;
                        live.series.entry(labels.clone()).or_insert((
                            KeptSeries {
                                point: None,
                                seen_ms: bucket_ms,
                            },
                            false,
                        ))
                    }
                };
                point.labels = labels;
                series.point = Some(fold(series.point.take(), point));
                series.seen_ms = bucket_ms;
                *touched = true;
            }
        }
        Ok(())
    }

    /// Every kept series by [`series_hash`] and every family, with the bucket of
    /// their newest point, for `accept` to check new ones against.
    pub fn known(&self) -> Known {
        let series = self
            .families
            .values()
            .flat_map(|f| {
                f.series
                    .iter()
                    .map(|(labels, (s, _))| (series_hash(&f.meta.name, labels), s.seen_ms))
            })
            .collect();
        let families = self
            .families
            .iter()
            .filter_map(|(name, f)| {
                let newest = f.series.values().map(|(s, _)| s.seen_ms).max()?;
                Some((name.clone(), (f.kind, newest)))
            })
            .collect();
        Known { series, families }
    }

    /// Series kept.
    pub fn series(&self) -> usize {
        self.series
    }

    /// Points refused at commit since the connector was created ([`Kept::refused`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The rows of every series this bucket changed, with their running values.
    pub fn rows(&self, batch: &mut Batch, bucket_ms: i64) -> Result<(), ConnectorError> {
        for family in self.families.values() {
            for (series, touched) in family.series.values() {
                if let Some(point) = series.point.as_ref().filter(|_| *touched) {
                    write_rows(batch, bucket_ms, &family.meta.name, family.kind, point)?;
                }
            }
        }
        Ok(())
    }

    /// The state to keep: families by name, series by labels, so the scrape page is
    /// in a stable order.
    pub fn into_kept(self) -> Kept {
        let mut families: Vec<KeptFamily> = self
            .families
            .into_values()
            .map(|f| {
                let mut series: Vec<(Vec<Label>, KeptSeries)> = f
                    .series
                    .into_iter()
                    .map(|(labels, (s, _))| (labels, s))
                    .collect();
                series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                KeptFamily {
                    meta: Some(f.meta),
                    series: series.into_iter().map(|(_, s)| s).collect(),
                }
            })
            .collect();
        families.sort_unstable_by(|a, b| {
            let (a, b) = (a.meta.as_ref(), b.meta.as_ref());
            a.map(|m| &m.name).cmp(&b.map(|m| &m.name))
        });
        Kept {
            families,
            refused: self.refused,
        }
    }
}

/// A series' running point after `point`: delta points add to what was there (a
/// histogram whose bounds changed starts over), anything else replaces it.
fn fold(prior: Option<Point>, point: Point) -> Point {
    let Some(mut prior) = prior.filter(|_| point.delta) else {
        return Point {
            delta: false,
            ..point
        };
    };
    if point.counts.is_empty() {
        prior.value += point.value;
        return prior;
    }
    if prior.bounds != point.bounds || prior.counts.len() != point.counts.len() {
        return Point {
            delta: false,
            ..point
        };
    }
    for (a, b) in prior.counts.iter_mut().zip(&point.counts) {
        *a = a.saturating_add(*b);
    }
    prior.sum += point.sum;
    prior.count = prior.count.saturating_add(point.count);
    prior
}

/// The metric rows of one series' point, named as its samples are on the scrape page.
fn write_rows(
    batch: &mut Batch,
    bucket_ms: i64,
    family: &str,
    kind: FamilyKind,
    point: &Point,
) -> Result<(), ConnectorError> {
    each_sample(family, kind, point, false, |name, extra, value| {
        batch
            .row()
            .timestamp(bucket_ms)
            .string(name)
            .real(value)
            .map(
                point
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .chain(extra),
            )
            .finish()
    })
    .map_err(|e| {
        ConnectorError::permanent(format!(
            "a row of family `{family}` does not fit the schema: {e}"
        ))
    })
}
