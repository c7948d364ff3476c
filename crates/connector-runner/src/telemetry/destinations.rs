//! Per-destination series: egress bytes, rows delivered and skipped, deliveries by
//! outcome, retries, lag and state. Like connectors' series, they go with their
//! destination.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::{Telemetry, bytes::ByteHistogram, family, line, owner_labels};
use crate::destination::{DeliveryOutcome, DestinationRecord};
use crate::spec::ConnectorState;

const OUTCOMES: [DeliveryOutcome; 8] = DeliveryOutcome::ALL;

/// What one delivery attempt adds to its destination's series.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySample {
    /// How the attempt ended.
    pub outcome: DeliveryOutcome,
    /// Rows the receiver accepted.
    pub rows: u64,
    /// Rows left out.
    pub skipped: u64,
    /// Request bytes on the wire, retries included.
    pub bytes: u64,
    /// Requests the receiver accepted.
    pub requests: u64,
    /// Requests retried within the attempt.
    pub retries: u64,
    /// Wall time of the attempt.
    pub duration_seconds: f64,
}

#[derive(Debug)]
pub(super) struct DestinationSeries {
    type_id: String,
    /// The org of the destination's source connector.
    org_id: String,
    /// `connector_id` (the destination's id), `connector_type_id`, `org_id`.
    labels: String,
    /// Request bytes of each delivery attempt that sent any.
    egress: ByteHistogram,
    state: ConnectorState,
    deliveries: [u64; OUTCOMES.len()],
    rows: u64,
    skipped: u64,
    bytes: u64,
    requests: u64,
    retries: u64,
    /// The start of the oldest committed bucket not yet delivered, Unix ms; the lag
    /// is measured from it when rendered, so it keeps rising while deliveries back off.
    oldest_undelivered_ms: Option<i64>,
}

impl DestinationSeries {
    fn new(record: &DestinationRecord, org_id: String) -> Self {
        DestinationSeries {
            type_id: record.spec.destination_type.clone(),
            labels: owner_labels(&record.id, &record.spec.destination_type, &org_id),
            org_id,
            egress: ByteHistogram::default(),
            state: record.state,
            deliveries: [0; OUTCOMES.len()],
            rows: 0,
            skipped: 0,
            bytes: 0,
            requests: 0,
            retries: 0,
            oldest_undelivered_ms: None,
        }
    }
}

/// A counter family of destinations: name, help text and the field it shows.
type CounterFamily = (&'static str, &'static str, fn(&DestinationSeries) -> u64);

impl Telemetry {
    fn lock_destinations(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DestinationSeries>> {
        self.destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the destination series match the store's destinations; `org_of` tells
    /// each one's org (its source connector's), or `None` while the source is not
    /// known (before the first connector listing, or a source deleted meanwhile).
    /// Then a series keeps the org it had, and a new one has none (`org_id=""`),
    /// which only operators see: no org is shown a destination it may not own.
    pub fn set_destinations(
        &self,
        records: &[DestinationRecord],
        org_of: impl Fn(&DestinationRecord) -> Option<String>,
    ) {
        let mut series = self.lock_destinations();
        let mut kept = BTreeMap::new();
        for record in records {
            let org_id = org_of(record);
            let entry = match series.remove(&record.id) {
                Some(mut s) if s.type_id == record.spec.destination_type => {
                    s.state = record.state;
                    if let Some(org_id) = org_id
                        && s.org_id != org_id
                    {
                        s.labels = owner_labels(&record.id, &s.type_id, &org_id);
                        s.org_id = org_id;
                    }
                    s
                }
                _ => DestinationSeries::new(record, org_id.unwrap_or_default()),
            };
            kept.insert(record.id.clone(), entry);
        }
        *series = kept;
    }

    /// Drops a destination's series now.
    pub fn forget_destination(&self, destination_id: &str) {
        self.lock_destinations().remove(destination_id);
    }

    /// Shows a state change at once (a halt), before the next refresh.
    pub fn set_destination_state(&self, destination_id: &str, state: ConnectorState) {
        if let Some(s) = self.lock_destinations().get_mut(destination_id) {
            s.state = state;
        }
    }

    /// Sets the oldest committed bucket the destination has not delivered (Unix ms),
    /// or `None` when it is caught up.
    pub fn set_destination_oldest_undelivered(&self, destination_id: &str, bucket_ms: Option<i64>) {
        if let Some(s) = self.lock_destinations().get_mut(destination_id) {
            s.oldest_undelivered_ms = bucket_ms;
        }
    }

    /// Adds a delivery attempt. Ignored for a destination deleted meanwhile.
    pub fn record_delivery(&self, destination_id: &str, sample: &DeliverySample) {
        let mut series = self.lock_destinations();
        let Some(s) = series.get_mut(destination_id) else {
            return;
        };
        if let Some(i) = OUTCOMES.iter().position(|o| *o == sample.outcome) {
            s.deliveries[i] += 1;
        }
        s.rows += sample.rows;
        s.skipped += sample.skipped;
        s.bytes += sample.bytes;
        s.requests += sample.requests;
        s.retries += sample.retries;
        if sample.bytes > 0 {
            s.egress.observe(sample.bytes);
        }
    }

    pub(super) fn render_destinations(&self, out: &mut String, org: Option<&str>) {
        let series = self.lock_destinations();
        let all = || {
            series
                .values()
                .filter(move |s| org.is_none_or(|o| s.org_id == o))
        };
        let state = "connectord_destination_state";
        family(
            out,
            state,
            "gauge",
            "1 for the destination's current state (enabled, paused, disabled: halted or misconfigured), 0 for the others.",
        );
        for s in all() {
            for each in [
                ConnectorState::Enabled,
                ConnectorState::Paused,
                ConnectorState::Disabled,
            ] {
                let value = u8::from(s.state == each);
                line(out, state, &s.labels, Some(("state", each.as_str())), value);
            }
        }
        let lag = "connectord_destination_lag_seconds";
        family(
            out,
            lag,
            "gauge",
            "Age of the oldest committed bucket of the source not yet delivered, in seconds (0 when caught up).",
        );
        let now_ms = crate::runner::wall_ms();
        for s in all() {
            #[allow(clippy::cast_precision_loss)]
            let seconds = s
                .oldest_undelivered_ms
                .map_or(0.0, |bucket| (now_ms - bucket).max(0) as f64 / 1000.0);
            line(out, lag, &s.labels, None, seconds);
        }
        let deliveries = "connectord_destination_deliveries_total";
        family(
            out,
            deliveries,
            "counter",
            "Delivery attempts of a bucket, by outcome (delivered, dead_letter, transient, halted, config, fenced, store_error, cancelled).",
        );
        for s in all() {
            for (outcome, count) in OUTCOMES.iter().zip(s.deliveries) {
                if count > 0 {
                    line(
                        out,
                        deliveries,
                        &s.labels,
                        Some(("outcome", outcome.as_str())),
                        count,
                    );
                }
            }
        }
        let counters: [CounterFamily; 5] = [
            (
                "connectord_destination_egress_bytes_total",
                "Request bytes sent to the receiver, as on the wire (compressed), retries included.",
                |s| s.bytes,
            ),
            (
                "connectord_destination_rows_delivered_total",
                "Rows the receiver accepted.",
                |s| s.rows,
            ),
            (
                "connectord_destination_rows_skipped_total",
                "Rows left out because the protocol cannot carry them (a null value).",
                |s| s.skipped,
            ),
            (
                "connectord_destination_requests_total",
                "Requests the receiver accepted.",
                |s| s.requests,
            ),
            (
                "connectord_destination_retries_total",
                "Requests to the receiver that failed and were tried again within a delivery.",
                |s| s.retries,
            ),
        ];
        for (name, help, value) in counters {
            family(out, name, "counter", help);
            for s in all() {
                line(out, name, &s.labels, None, value(s));
            }
        }
        let egress = "destination_connector_egress_bytes";
        family(
            out,
            egress,
            "histogram",
            "Request bytes each delivery attempt sent to the receiver, as on the wire, retries included.",
        );
        for s in all().filter(|s| !s.egress.is_empty()) {
            s.egress.render(out, egress, &s.labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{DestinationSpec, OnPermanent, Start};
    use crate::spec::Origin;

    fn destination(id: &str) -> DestinationRecord {
        DestinationRecord {
            id: id.into(),
            spec: DestinationSpec {
                name: id.into(),
                destination_type: "remote_write".into(),
                source: "source".into(),
                start: Start::Earliest,
                on_permanent: OnPermanent::Halt,
                config: serde_json::Value::Null,
            },
            origin: Origin::Api,
            state: ConnectorState::Enabled,
            disabled_reason: None,
            last_error: None,
            start_ms: 0,
            delivered_through_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_delivery: None,
        }
    }

    fn visible(telemetry: &Telemetry, org: Option<&str>, id: &str) -> bool {
        telemetry
            .render(org)
            .contains(&format!("connector_id=\"{id}\""))
    }

    #[test]
    fn a_destination_whose_source_is_unknown_is_shown_to_no_org() {
        let telemetry = Telemetry::new();
        let records = [destination("d")];
        telemetry.set_destinations(&records, |_| None);
        assert!(visible(&telemetry, None, "d"), "operators see it");
        assert!(!visible(&telemetry, Some(crate::DEFAULT_ORG), "d"));
        telemetry.set_destinations(&records, |_| Some("acme".into()));
        assert!(visible(&telemetry, Some("acme"), "d"));
        // A source gone from the listing does not move the series out of its org.
        telemetry.set_destinations(&records, |_| None);
        assert!(visible(&telemetry, Some("acme"), "d"));
        assert!(!visible(&telemetry, Some(crate::DEFAULT_ORG), "d"));
    }
}
