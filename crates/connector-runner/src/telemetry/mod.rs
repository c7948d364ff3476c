//! The runner's per-connector and per-destination series, rendered in the Prometheus
//! text format.
//!
//! Kept here rather than in a global `metrics` recorder because a connector's series
//! must go when the connector goes: a recorder only ever adds series, so a deleted
//! connector kept `state="enabled"` forever and the series count only grew.

mod bytes;
mod destinations;
mod discoveries;
mod push;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

pub use bytes::BYTE_BUCKETS;
pub use destinations::DeliverySample;
pub use discoveries::DiscoveryRefresh;

use crate::spec::{ConnectorRecord, ConnectorState};
use crate::store::{TickOutcome, TickRecord};

/// Upper bounds of the tick duration histogram, in seconds.
pub const TICK_DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const OUTCOMES: [TickOutcome; 10] = TickOutcome::ALL;

/// What one tick adds to its connector's series.
#[derive(Debug, Clone, Copy)]
pub struct TickSample {
    /// How the tick ended.
    pub outcome: TickOutcome,
    /// Wall time from claim to commit.
    pub duration_seconds: f64,
    /// Bytes read from the source.
    pub source_bytes: u64,
    /// Source requests tried again within the tick.
    pub retries: u64,
    /// Rows committed.
    pub rows: u64,
    /// Payload bytes written to the sink.
    pub sink_bytes: u64,
    /// Unix seconds at the end of the tick.
    pub finished_at_seconds: f64,
}

#[derive(Debug)]
struct Series {
    type_id: String,
    org_id: String,
    /// `connector_id`, `connector_type_id` and `org_id`, rendered once.
    labels: String,
    state: ConnectorState,
    schedule_seconds: f64,
    ticks: [u64; OUTCOMES.len()],
    duration_buckets: [u64; TICK_DURATION_BUCKETS.len()],
    duration_sum: f64,
    source_bytes: u64,
    retries: u64,
    rows: u64,
    sink_bytes: u64,
    pruned_rows: u64,
    last_success: Option<f64>,
    claims_won: u64,
    claims_lost: u64,
    /// Sink bytes of each tick that committed.
    contribution: bytes::ByteHistogram,
    /// The newest tick the state store could not record, shown by the API until the
    /// store records one again.
    unrecorded: Option<TickRecord>,
    /// Set once a request was pushed to the connector.
    push: Option<push::PushSeries>,
}

impl Series {
    fn new(record: &ConnectorRecord) -> Self {
        Series {
            type_id: record.spec.connector_type.clone(),
            org_id: record.spec.org_id.clone(),
            labels: owner_labels(&record.id, &record.spec.connector_type, &record.spec.org_id),
            state: record.state,
            #[allow(clippy::cast_precision_loss)]
            schedule_seconds: record.spec.schedule_ms as f64 / 1000.0,
            ticks: [0; OUTCOMES.len()],
            duration_buckets: [0; TICK_DURATION_BUCKETS.len()],
            duration_sum: 0.0,
            source_bytes: 0,
            retries: 0,
            rows: 0,
            sink_bytes: 0,
            pruned_rows: 0,
            last_success: None,
            claims_won: 0,
            claims_lost: 0,
            contribution: bytes::ByteHistogram::default(),
            unrecorded: None,
            push: None,
        }
    }

    fn tick_count(&self) -> u64 {
        self.ticks.iter().sum()
    }
}

/// Every connector's series, keyed by connector id. Shared by the runner, which
/// records into it, and the API, which renders it and reads store failures from it.
#[derive(Debug, Default)]
pub struct Telemetry {
    series: Mutex<BTreeMap<String, Series>>,
    destinations: Mutex<BTreeMap<String, destinations::DestinationSeries>>,
    discoveries: Mutex<BTreeMap<String, discoveries::DiscoverySeries>>,
}

impl Telemetry {
    /// No connectors yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        // A panic elsewhere while holding the lock leaves counters that are still valid.
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the series match the store's connectors: new ones appear, deleted ones
    /// lose every series, and a changed type or state shows at once.
    pub fn set_connectors(&self, records: &[ConnectorRecord]) {
        let mut series = self.lock();
        let mut kept = BTreeMap::new();
        for record in records {
            let entry = match series.remove(&record.id) {
                Some(mut s) if s.type_id == record.spec.connector_type => {
                    s.state = record.state;
                    if s.org_id != record.spec.org_id {
                        s.org_id.clone_from(&record.spec.org_id);
                        s.labels = owner_labels(&record.id, &s.type_id, &s.org_id);
                    }
                    #[allow(clippy::cast_precision_loss)]
                    {
                        s.schedule_seconds = record.spec.schedule_ms as f64 / 1000.0;
                    }
                    s
                }
                // A new type is a new set of series: counters of the old one would mix.
                _ => Series::new(record),
            };
            kept.insert(record.id.clone(), entry);
        }
        *series = kept;
    }

    /// Counts rows retention removed from a connector's table.
    pub fn record_pruned(&self, connector_id: &str, rows: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.pruned_rows += rows;
        }
    }

    /// Drops a connector's series now, without waiting for the next refresh.
    pub fn forget(&self, connector_id: &str) {
        self.lock().remove(connector_id);
    }

    /// Counts a claim attempt. Ignored for a connector that has no series (deleted).
    pub fn record_claim(&self, connector_id: &str, won: bool) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            if won {
                s.claims_won += 1;
            } else {
                s.claims_lost += 1;
            }
        }
    }

    /// Adds a finished tick. Ignored for a connector deleted while the tick ran.
    pub fn record_tick(&self, connector_id: &str, tick: &TickSample) {
        let mut series = self.lock();
        let Some(s) = series.get_mut(connector_id) else {
            return;
        };
        if let Some(i) = OUTCOMES.iter().position(|o| *o == tick.outcome) {
            s.ticks[i] += 1;
        }
        for (bound, count) in TICK_DURATION_BUCKETS.iter().zip(&mut s.duration_buckets) {
            if tick.duration_seconds <= *bound {
                *count += 1;
            }
        }
        s.duration_sum += tick.duration_seconds;
        s.source_bytes += tick.source_bytes;
        s.retries += tick.retries;
        s.rows += tick.rows;
        s.sink_bytes += tick.sink_bytes;
        if tick.outcome == TickOutcome::Ok {
            s.last_success = Some(tick.finished_at_seconds);
            s.contribution.observe(tick.sink_bytes);
        }
    }

    /// Counts what a push connector's bucket committed: push sources have no tick,
    /// but their contributions count like any source's.
    pub fn record_contribution(&self, connector_id: &str, bytes: u64) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.contribution.observe(bytes);
        }
    }

    /// Remembers a tick the state store failed to record, or forgets it (`None`) once
    /// the store records ticks again.
    pub fn set_unrecorded(&self, connector_id: &str, tick: Option<TickRecord>) {
        if let Some(s) = self.lock().get_mut(connector_id) {
            s.unrecorded = tick;
        }
    }

    /// The newest tick of this connector that the state store could not record.
    pub fn unrecorded(&self, connector_id: &str) -> Option<TickRecord> {
        self.lock()
            .get(connector_id)
            .and_then(|s| s.unrecorded.clone())
    }

    /// Every series in the Prometheus text format (version 0.0.4); with `org`, only
    /// the series of that org's connectors, destinations and discoveries.
    pub fn render(&self, org: Option<&str>) -> String {
        let series = self.lock();
        let mut out = String::with_capacity(256 + series.len() * 1024);
        let all = || {
            series
                .iter()
                .filter(move |(_, s)| org.is_none_or(|o| s.org_id == o))
        };
        family(
            &mut out,
            "connectord_connector_state",
            "gauge",
            "1 for the connector's current state (enabled, paused, disabled), 0 for the others.",
        );
        for (_, s) in all() {
            for state in [
                ConnectorState::Enabled,
                ConnectorState::Paused,
                ConnectorState::Disabled,
            ] {
                let value = if s.state == state { 1 } else { 0 };
                line(
                    &mut out,
                    "connectord_connector_state",
                    &s.labels,
                    Some(("state", state.as_str())),
                    value,
                );
            }
        }
        family(
            &mut out,
            "connectord_connector_schedule_seconds",
            "gauge",
            "The connector's schedule_ms, in seconds.",
        );
        for (_, s) in all() {
            line(
                &mut out,
                "connectord_connector_schedule_seconds",
                &s.labels,
                None,
                s.schedule_seconds,
            );
        }
        let ticked = || all().filter(|(_, s)| s.tick_count() > 0);
        family(
            &mut out,
            "connectord_ticks_total",
            "counter",
            "Ticks run, by outcome (ok, transient, permanent, config, timeout, panic, fenced, sink_error, store_error, cancelled).",
        );
        for (_, s) in ticked() {
            for (outcome, count) in OUTCOMES.iter().zip(s.ticks) {
                if count > 0 {
                    line(
                        &mut out,
                        "connectord_ticks_total",
                        &s.labels,
                        Some(("outcome", outcome.as_str())),
                        count,
                    );
                }
            }
        }
        family(
            &mut out,
            "connectord_tick_duration_seconds",
            "histogram",
            "Wall time of a tick, from claim to commit.",
        );
        for (_, s) in ticked() {
            let mut le = String::new();
            for (bound, count) in TICK_DURATION_BUCKETS.iter().zip(s.duration_buckets) {
                le.clear();
                let _ = write!(le, "{bound}");
                line(
                    &mut out,
                    "connectord_tick_duration_seconds_bucket",
                    &s.labels,
                    Some(("le", &le)),
                    count,
                );
            }
            line(
                &mut out,
                "connectord_tick_duration_seconds_bucket",
                &s.labels,
                Some(("le", "+Inf")),
                s.tick_count(),
            );
            line(
                &mut out,
                "connectord_tick_duration_seconds_sum",
                &s.labels,
                None,
                s.duration_sum,
            );
            line(
                &mut out,
                "connectord_tick_duration_seconds_count",
                &s.labels,
                None,
                s.tick_count(),
            );
        }
        let counters: [CounterFamily; 5] = [
            (
                "connectord_source_bytes_total",
                "Bytes read from the source, as received (before decompression).",
                |s| s.source_bytes,
            ),
            (
                "connectord_source_retries_total",
                "Requests to the source that failed and were tried again within a tick.",
                |s| s.retries,
            ),
            (
                "connectord_rows_emitted_total",
                "Rows committed to the sink.",
                |s| s.rows,
            ),
            (
                "connectord_sink_bytes_total",
                "Payload bytes written to the sink.",
                |s| s.sink_bytes,
            ),
            (
                "connectord_pruned_rows_total",
                "Rows removed by retention (the connector's `retention` or [storage] default_retention).",
                |s| s.pruned_rows,
            ),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, "counter", help);
            for (_, s) in ticked() {
                line(&mut out, name, &s.labels, None, value(s));
            }
        }
        let claims = "connectord_lease_claims_total";
        family(
            &mut out,
            claims,
            "counter",
            "Bucket lease claims, by result (won, lost).",
        );
        for (_, s) in all() {
            if s.claims_won + s.claims_lost > 0 {
                line(
                    &mut out,
                    claims,
                    &s.labels,
                    Some(("result", "won")),
                    s.claims_won,
                );
                line(
                    &mut out,
                    claims,
                    &s.labels,
                    Some(("result", "lost")),
                    s.claims_lost,
                );
            }
        }
        family(
            &mut out,
            "connectord_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last tick that committed.",
        );
        for (_, s) in all() {
            if let Some(at) = s.last_success {
                line(
                    &mut out,
                    "connectord_last_success_timestamp_seconds",
                    &s.labels,
                    None,
                    at,
                );
            }
        }
        let contribution = "total_contribution_bytes";
        family(
            &mut out,
            contribution,
            "histogram",
            "Bytes each source tick committed (the rows' payload as written to the sink).",
        );
        for (_, s) in all().filter(|(_, s)| !s.contribution.is_empty()) {
            s.contribution.render(&mut out, contribution, &s.labels);
        }
        drop(series);
        self.render_push(&mut out, org);
        self.render_destinations(&mut out, org);
        self.render_discoveries(&mut out, org);
        out
    }
}

/// A counter family: name, help text and the field it shows.
type CounterFamily = (&'static str, &'static str, fn(&Series) -> u64);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The labels every series of one connector or destination starts with.
fn owner_labels(id: &str, type_id: &str, org_id: &str) -> String {
    let mut out = String::from("connector_id=\"");
    escape_into(&mut out, id);
    out.push_str("\",connector_type_id=\"");
    escape_into(&mut out, type_id);
    out.push_str("\",org_id=\"");
    escape_into(&mut out, org_id);
    out.push('"');
    out
}

/// One sample: `labels` as [`owner_labels`] renders them, then `extra`.
fn line(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((label, v)) = extra {
        let _ = write!(out, ",{label}=\"");
        escape_into(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// Label values escape `\`, `"` and newlines (text format 0.0.4).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ConnectorSpec, Origin};

    fn record(id: &str, ty: &str, state: ConnectorState) -> ConnectorRecord {
        ConnectorRecord {
            id: id.to_owned(),
            spec: ConnectorSpec {
                name: format!("c-{id}"),
                connector_type: ty.to_owned(),
                target_database: "db".to_owned(),
                target_table: "t".to_owned(),
                schedule_ms: 15_000,
                config: serde_json::json!({}),
                retention: None,
                org_id: crate::DEFAULT_ORG.into(),
            },
            origin: Origin::Api,
            state,
            disabled_reason: None,
            last_error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_tick: None,
        }
    }

    fn tick(outcome: TickOutcome, seconds: f64) -> TickSample {
        TickSample {
            outcome,
            duration_seconds: seconds,
            source_bytes: 100,
            retries: 1,
            rows: 7,
            sink_bytes: 50,
            finished_at_seconds: 1_700_000_000.5,
        }
    }

    #[test]
    fn an_org_sees_only_its_series_and_contributions_are_a_byte_histogram() {
        let telemetry = Telemetry::new();
        let mut theirs = record("b", "prometheus", ConnectorState::Enabled);
        theirs.spec.org_id = "globex".into();
        telemetry.set_connectors(&[record("a", "prometheus", ConnectorState::Enabled), theirs]);
        for id in ["a", "b"] {
            telemetry.record_tick(id, &tick(TickOutcome::Ok, 0.2));
        }
        telemetry.record_tick("a", &tick(TickOutcome::Transient, 0.2));
        let all = telemetry.render(None);
        assert!(all.contains("connector_id=\"a\"") && all.contains("connector_id=\"b\""));
        let default_only = telemetry.render(Some("default"));
        let globex_only = telemetry.render(Some("globex"));
        assert!(!default_only.contains("globex") && default_only.contains("connector_id=\"a\""));
        assert!(!globex_only.contains("connector_id=\"a\""), "{globex_only}");
        assert!(
            globex_only.contains(
                "total_contribution_bytes_bucket{connector_id=\"b\",connector_type_id=\"prometheus\",org_id=\"globex\",le=\"1024\"} 1"
            ),
            "{globex_only}"
        );
        // Only committed ticks contribute: a's transient tick is not observed.
        assert!(
            default_only.contains(
                "total_contribution_bytes_count{connector_id=\"a\",connector_type_id=\"prometheus\",org_id=\"default\"} 1"
            ),
            "{default_only}"
        );
        assert!(
            telemetry
                .render(Some("initech"))
                .lines()
                .all(|l| l.starts_with('#'))
        );
    }

    #[test]
    fn a_deleted_connector_loses_every_series() {
        let telemetry = Telemetry::new();
        telemetry.set_connectors(&[
            record("a", "prometheus", ConnectorState::Enabled),
            record("b", "prometheus", ConnectorState::Paused),
        ]);
        telemetry.record_claim("a", true);
        telemetry.record_tick("a", &tick(TickOutcome::Ok, 0.2));
        assert!(telemetry.render(None).contains("connector_id=\"a\""));
        telemetry.set_connectors(&[record("b", "prometheus", ConnectorState::Paused)]);
        let text = telemetry.render(None);
        assert!(!text.contains("connector_id=\"a\""), "{text}");
        assert!(text.contains(
            "connectord_connector_state{connector_id=\"b\",connector_type_id=\"prometheus\",org_id=\"default\",state=\"paused\"} 1"
        ));
        // A tick that finishes after its connector went adds nothing back.
        telemetry.record_tick("a", &tick(TickOutcome::Ok, 0.2));
        assert!(!telemetry.render(None).contains("connector_id=\"a\""));
    }

    #[test]
    fn a_histogram_is_cumulative_and_counts_every_tick() {
        let telemetry = Telemetry::new();
        telemetry.set_connectors(&[record("a", "x", ConnectorState::Enabled)]);
        telemetry.record_tick("a", &tick(TickOutcome::Ok, 0.2));
        telemetry.record_tick("a", &tick(TickOutcome::Transient, 100.0));
        let text = telemetry.render(None);
        for expected in [
            "connectord_tick_duration_seconds_bucket{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\",le=\"0.1\"} 0",
            "connectord_tick_duration_seconds_bucket{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\",le=\"0.25\"} 1",
            "connectord_tick_duration_seconds_bucket{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\",le=\"60\"} 1",
            "connectord_tick_duration_seconds_bucket{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\",le=\"+Inf\"} 2",
            "connectord_tick_duration_seconds_count{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\"} 2",
            "connectord_ticks_total{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\",outcome=\"transient\"} 1",
            "connectord_rows_emitted_total{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\"} 14",
            "connectord_last_success_timestamp_seconds{connector_id=\"a\",connector_type_id=\"x\",org_id=\"default\"} 1700000000.5",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(!text.contains("outcome=\"panic\""));
    }

    #[test]
    fn a_changed_type_starts_fresh_series_and_label_values_are_escaped() {
        let telemetry = Telemetry::new();
        telemetry.set_connectors(&[record("a", "old", ConnectorState::Enabled)]);
        telemetry.record_tick("a", &tick(TickOutcome::Ok, 0.2));
        telemetry.set_connectors(&[record("a", "ne\"w\\", ConnectorState::Enabled)]);
        let text = telemetry.render(None);
        assert!(!text.contains("\"old\""), "{text}");
        assert!(text.contains("connector_type_id=\"ne\\\"w\\\\\""), "{text}");
        assert!(!text.contains("connectord_ticks_total{"), "{text}");
    }
}
