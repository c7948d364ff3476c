//! Per-discovery series: targets by state, refreshes by outcome, the last refresh's
//! duration and time, and the connectors syncs created, changed and removed. Labels
//! `discovery_id`, `discovery` (its name, which never changes) and `org_id` (its
//! template's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::PoisonError;

use super::{Telemetry, escape_into, family};

/// What one refresh of a discovery found and did.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscoveryRefresh {
    /// Whether it read its targets (and synced them).
    pub ok: bool,
    /// Targets kept, dropped by relabeling, and kept but unusable (as of the last
    /// good refresh when this one failed).
    pub active: u64,
    /// See `active`.
    pub dropped: u64,
    /// See `active`.
    pub invalid: u64,
    /// Connectors the sync created, changed and removed.
    pub created: u64,
    /// See `created`.
    pub updated: u64,
    /// See `created`.
    pub removed: u64,
    /// Wall time of the refresh.
    pub duration_seconds: f64,
    /// When it ran, Unix seconds.
    pub at_seconds: f64,
}

#[derive(Debug, Default, Clone)]
pub(super) struct DiscoverySeries {
    name: String,
    org_id: String,
    last: DiscoveryRefresh,
    refreshes_ok: u64,
    refreshes_failed: u64,
    created: u64,
    updated: u64,
    removed: u64,
}

fn write_line(
    out: &mut String,
    name: &str,
    id: &str,
    s: &DiscoverySeries,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str("{discovery_id=\"");
    escape_into(out, id);
    out.push_str("\",discovery=\"");
    escape_into(out, &s.name);
    out.push_str("\",org_id=\"");
    escape_into(out, &s.org_id);
    out.push('"');
    if let Some((label, v)) = extra {
        let _ = write!(out, ",{label}=\"{v}\"");
    }
    let _ = writeln!(out, "}} {value}");
}

impl Telemetry {
    fn discoveries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DiscoverySeries>> {
        self.discoveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a refresh of the discovery `id` called `name`, of the org `org_id`.
    pub fn record_discovery(&self, id: &str, name: &str, org_id: &str, refresh: &DiscoveryRefresh) {
        let mut all = self.discoveries();
        let s = all.entry(id.to_owned()).or_default();
        s.name = name.to_owned();
        org_id.clone_into(&mut s.org_id);
        if refresh.ok {
            s.refreshes_ok += 1;
        } else {
            s.refreshes_failed += 1;
        }
        s.created += refresh.created;
        s.updated += refresh.updated;
        s.removed += refresh.removed;
        s.last = *refresh;
    }

    /// Drops the series of discoveries no longer in `ids`.
    pub fn retain_discoveries(&self, ids: &std::collections::HashSet<String>) {
        self.discoveries().retain(|id, _| ids.contains(id));
    }

    pub(super) fn render_discoveries(&self, out: &mut String, org: Option<&str>) {
        let mut all = self.discoveries().clone();
        all.retain(|_, s| org.is_none_or(|o| s.org_id == o));
        if all.is_empty() {
            return;
        }
        family(
            out,
            "connectord_discovery_targets",
            "gauge",
            "Targets of the last good refresh: active (a connector each), dropped by relabeling, invalid (no usable address or URL).",
        );
        for (id, s) in all.iter() {
            for (state, n) in [
                ("active", s.last.active),
                ("dropped", s.last.dropped),
                ("invalid", s.last.invalid),
            ] {
                write_line(
                    out,
                    "connectord_discovery_targets",
                    id,
                    s,
                    Some(("state", state)),
                    n,
                );
            }
        }
        family(
            out,
            "connectord_discovery_refreshes_total",
            "counter",
            "Refreshes run by this process, by outcome (ok, error: the targets were kept).",
        );
        for (id, s) in all.iter() {
            write_line(
                out,
                "connectord_discovery_refreshes_total",
                id,
                s,
                Some(("outcome", "ok")),
                s.refreshes_ok,
            );
            write_line(
                out,
                "connectord_discovery_refreshes_total",
                id,
                s,
                Some(("outcome", "error")),
                s.refreshes_failed,
            );
        }
        family(
            out,
            "connectord_discovery_connector_changes_total",
            "counter",
            "Managed connectors the refreshes created, changed and removed.",
        );
        for (id, s) in all.iter() {
            for (change, n) in [
                ("created", s.created),
                ("updated", s.updated),
                ("removed", s.removed),
            ] {
                write_line(
                    out,
                    "connectord_discovery_connector_changes_total",
                    id,
                    s,
                    Some(("change", change)),
                    n,
                );
            }
        }
        family(
            out,
            "connectord_discovery_refresh_duration_seconds",
            "gauge",
            "Wall time of the last refresh.",
        );
        for (id, s) in all.iter() {
            write_line(
                out,
                "connectord_discovery_refresh_duration_seconds",
                id,
                s,
                None,
                s.last.duration_seconds,
            );
        }
        family(
            out,
            "connectord_discovery_last_refresh_timestamp_seconds",
            "gauge",
            "Unix time of the last refresh, whatever its outcome.",
        );
        for (id, s) in all.iter() {
            write_line(
                out,
                "connectord_discovery_last_refresh_timestamp_seconds",
                id,
                s,
                None,
                s.last.at_seconds,
            );
        }
    }
}
