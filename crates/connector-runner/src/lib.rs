//! Runs connectors: bucketed scheduling, leases, tick execution and outcome handling.
//!
//! The runner defines what it needs from storage as two traits, [`StateStore`]
//! (connectors, leases, tick history) and [`Sink`] (rows, at most once per bucket),
//! and knows nothing of HTTP servers, TOML or any particular database.

#[cfg(feature = "store-contract")]
pub mod contract;
pub mod protocol;
mod runner;
pub mod schedule;
mod spec;
mod store;

pub use runner::{Runner, RunnerConfig, RunnerHandle};
pub use spec::{
    ConnectorRecord, ConnectorSpec, ConnectorState, MAX_IDENTIFIER_LEN, MAX_NAME_LEN, Origin,
    SCHEDULE_MS_RANGE, SpecError,
};
pub use store::{
    CommitReport, Lease, ListQuery, RowQuery, RowsRead, Sink, StateStore, StatusChange, StoreError,
    StoreErrorKind, Target, TickOutcome, TickRecord,
};

/// The duration histogram's name, for exporters that set its buckets.
pub const TICK_DURATION_METRIC: &str = "connectord_tick_duration_seconds";

/// Registers help text for every metric the runner emits. Call once after installing
/// a `metrics` recorder. Every series carries `connector_id` and `connector_type_id`.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "connectord_ticks_total",
        "Ticks run, by outcome (ok, transient, permanent, config, timeout, panic, fenced, sink_error)."
    );
    describe_histogram!(
        TICK_DURATION_METRIC,
        Unit::Seconds,
        "Wall time of a tick, from claim to commit."
    );
    describe_counter!(
        "connectord_rows_emitted_total",
        "Rows committed to the sink."
    );
    describe_counter!(
        "connectord_source_bytes_total",
        Unit::Bytes,
        "Bytes read from the source, as received (before decompression)."
    );
    describe_counter!(
        "connectord_source_retries_total",
        "Requests to the source that failed and were tried again within a tick."
    );
    describe_counter!(
        "connectord_sink_bytes_total",
        Unit::Bytes,
        "Payload bytes written to the sink."
    );
    describe_gauge!(
        "connectord_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last tick that committed."
    );
    describe_counter!(
        "connectord_lease_claims_total",
        "Bucket lease claims, by result (won, lost)."
    );
    describe_gauge!(
        "connectord_connector_state",
        "1 for the connector's current state (enabled, paused, disabled), 0 for the others."
    );
    describe_gauge!(
        "connectord_connector_schedule_seconds",
        Unit::Seconds,
        "The connector's schedule_ms, in seconds."
    );
}
