//! Service discovery for connectord, the way Prometheus users already write it.
//!
//! A discovery ([`DiscoverySpec`]) finds targets with Prometheus's HTTP SD or file SD
//! formats, shapes them with `relabel_configs` (the `relabel` crate, Prometheus 2.42
//! semantics), and turns each kept target into a managed connector built from its
//! `template`: the endpoint from `__scheme__`, `__address__`, `__metrics_path__` and
//! `__param_*`, the target's labels (`job`, `instance`, ...) as the connector's
//! `labels`. The [`Manager`] keeps each discovery's connectors in step with its
//! targets through [`connector_runner::DiscoveryStore::sync_managed`].
//!
//! Invariants:
//! - A managed connector's name is `<discovery>/<instance>/<hash of URL and labels>`
//!   and its id a UUID v5 of the name: the same target has the same id after a
//!   restart, and one that disappears and comes back gets its id back.
//! - A refresh that fails (HTTP error, bad JSON, a file that never parsed) changes
//!   no connector; the status shows the error and the last good targets.
//! - Blocking file reads run on the blocking pool, never on the async workers.

mod file_sd;
mod http_sd;
mod manager;
mod spec;
mod targets;

pub use file_sd::FileStatus;
pub use manager::Manager;
pub use spec::{
    Discovery, DiscoverySpec, MAX_NAME_LEN, REFRESH_MS_RANGE, SdType, SpecError, TIMEOUT_MS_RANGE,
    TargetTemplate,
};
pub use targets::{
    ActiveTarget, DroppedTarget, InvalidTarget, TargetGroup, Targets, connector_id, connector_name,
};
