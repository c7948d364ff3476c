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
    staged_bytes: u64,
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

    pub(super) fn render_push(&self, out: &mut String) {
        let series = self.lock();
        let pushed = || {
            series
                .iter()
                .filter_map(|(id, s)| s.push.as_ref().map(|p| (id, s.type_id.as_str(), p)))
        };
        family(
            out,
            "connectord_ingest_requests_total",
            "counter",
            "Requests pushed to a push connector, by the HTTP status they got.",
        );
        for (id, type_id, p) in pushed() {
            for (status, count) in &p.requests {
                line(
                    out,
                    "connectord_ingest_requests_total",
                    id,
                    type_id,
                    Some(("code", &status.to_string())),
                    count,
                );
            }
        }
        family(
            out,
            "connectord_ingest_items_total",
            "counter",
            "Items (spans, points) in acknowledged requests, accepted or refused by the connector.",
        );
        for (id, type_id, p) in pushed() {
            for (result, count) in [("accepted", p.accepted), ("refused", p.refused)] {
                line(
                    out,
                    "connectord_ingest_items_total",
                    id,
                    type_id,
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
        for (id, type_id, p) in pushed() {
            line(
                out,
                "connectord_ingest_staged_bytes",
                id,
                type_id,
                None,
                p.staged_bytes,
            );
        }
    }
}
