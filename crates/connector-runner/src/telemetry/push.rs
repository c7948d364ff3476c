//! The series of push connectors: requests by status, items accepted and refused,
//! and bytes staged but not yet committed.

use std::collections::BTreeMap;

use super::{Telemetry, family, line};

/// What a push connector's requests added up to.
#[derive(Debug, Default)]
pub(super) struct PushSeries {
    requests: BTreeMap<u16, u64>,
    accepted: u64,
    refused: u64,
    duplicate: u64,
    staged_bytes: u64,
    /// (series held, items folded into the overflow series), as of the newest commit.
    series: Option<(u64, u64)>,
}

impl Telemetry {
    /// Counts one pushed request by the status it got, with the items it brought.
    pub fn record_ingest(&self, connector_id: &str, status: u16, accepted: u64, refused: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            let push = s.push.get_or_insert_with(PushSeries::default);
            *push.requests.entry(status).or_default() += 1;
            push.accepted += accepted;
            push.refused += refused;
        }
    }

    /// Counts the items of a request sent again with a key staged before, which
    /// were acknowledged without being counted twice.
    pub fn record_duplicate(&self, connector_id: &str, items: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.push.get_or_insert_with(PushSeries::default).duplicate += items;
        }
    }

    /// Adds bytes staged by this process since the committer last looked.
    pub fn add_staged_bytes(&self, connector_id: &str, bytes: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.push.get_or_insert_with(PushSeries::default).staged_bytes += bytes;
        }
    }

    /// Sets the bytes staged and not yet committed, as the store reports them.
    pub fn set_staged_bytes(&self, connector_id: &str, bytes: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.push.get_or_insert_with(PushSeries::default).staged_bytes = bytes;
        }
    }

    /// Sets the series a push connector's state holds and the items it folded into
    /// an overflow series, as its newest commit reported them.
    pub fn set_push_series(&self, connector_id: &str, series: u64, overflowed: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.push.get_or_insert_with(PushSeries::default).series = Some((series, overflowed));
        }
    }

    pub(super) fn render_push(&self, out: &mut String, org: Option<&str>) {
        let series = self.lock();
        let pushed = || {
            series
                .values()
                .filter(move |s| org.is_none_or(|o| s.org_id == o))
                .filter_map(|s| s.push.as_ref().map(|p| (s.labels.as_str(), p)))
        };
        family(
            out,
            "connectord_ingest_requests_total",
            "counter",
            "Requests pushed to a push connector, by the HTTP status they got.",
        );
        for (labels, p) in pushed() {
            for (status, count) in &p.requests {
                line(
                    out,
                    "connectord_ingest_requests_total",
                    labels,
                    Some(("code", &status.to_string())),
                    count,
                );
            }
        }
        family(
            out,
            "connectord_ingest_items_total",
            "counter",
            "Items (spans, points) in acknowledged requests: accepted, refused by the connector, or duplicate (a request sent again, counted once).",
        );
        for (labels, p) in pushed() {
            for (result, count) in [
                ("accepted", p.accepted),
                ("refused", p.refused),
                ("duplicate", p.duplicate),
            ] {
                line(
                    out,
                    "connectord_ingest_items_total",
                    labels,
                    Some(("result", result)),
                    count,
                );
            }
        }
        family(
            out,
            "connectord_ingest_staged_bytes",
            "gauge",
            "Bytes staged durably for buckets not yet committed.",
        );
        for (labels, p) in pushed() {
            line(
                out,
                "connectord_ingest_staged_bytes",
                labels,
                None,
                p.staged_bytes,
            );
        }
        family(
            out,
            "connectord_ingest_series",
            "gauge",
            "Series (label sets) a push connector's state holds, as of its newest commit.",
        );
        for (labels, p) in pushed() {
            if let Some((series, _)) = p.series {
                line(out, "connectord_ingest_series", labels, None, series);
            }
        }
        family(
            out,
            "connectord_ingest_overflow_items_total",
            "counter",
            "Items a push connector could not keep in a series of their own: spanmetrics folds them into an overflow series once its series reach their limit; otlp_metrics refuses them at commit, past max_series or when their family's names clash with a kept family's.",
        );
        for (labels, p) in pushed() {
            if let Some((_, overflowed)) = p.series {
                line(
                    out,
                    "connectord_ingest_overflow_items_total",
                    labels,
                    None,
                    overflowed,
                );
            }
        }
    }
}
