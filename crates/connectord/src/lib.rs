//! connectord as a library: the whole daemon (CLI, TOML config, REST API, `/metrics`,
//! SQLite and PostgreSQL stores, the runner, clean shutdown) for a binary that adds
//! its own connectors. Nobody forks connectord to add a connector type.
//!
//! ```no_run
//! use std::sync::Arc;
//! use connector_core::*;
//!
//! struct Hello;
//!
//! #[async_trait]
//! impl Connector for Hello {
//!     const TYPE_ID: &'static str = "hello";
//!     type Config = ();
//!     fn schema(&self) -> Arc<Schema> {
//!         Arc::new(Schema::new([("timestamp", ColumnType::Timestamp), ("greeting", ColumnType::String)]))
//!     }
//!     fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
//!         config_from_json(raw)
//!     }
//!     async fn tick(&self, ctx: &TickContext, _: &()) -> Result<Batch, ConnectorError> {
//!         let mut batch = Batch::new(self.schema());
//!         batch.row().timestamp(ctx.scheduled_for_ms()).string("hello").finish()?;
//!         Ok(batch)
//!     }
//! }
//!
//! // The allocator connectord's own binary uses; see [`Allocator`].
//! #[global_allocator]
//! static ALLOCATOR: connectord::Allocator = connectord::Allocator;
//!
//! fn main() -> std::process::ExitCode {
//!     // `run --config FILE`, `validate`, `rows` and `parse`, with `hello` beside
//!     // the built-in `prometheus` type.
//!     connectord::Daemon::new().connector(Hello).run_from_args()
//! }
//! ```
#![warn(missing_docs)]

mod api;
mod cli;
mod config;
mod listener;
mod parse;
mod query;
mod rows;
mod run;

use std::ffi::OsString;
use std::process::ExitCode;

use connector_core::{Connector, Destination, PushConnector, Registry, RegistryError};
use connector_prometheus::PrometheusConnector;
use destination_influx::InfluxDestination;
use destination_remote_write::RemoteWriteDestination;

/// The global allocator connectord's binary runs with (mimalloc); a binary built on
/// this library should declare it too:
/// `#[global_allocator] static ALLOCATOR: connectord::Allocator = connectord::Allocator;`
///
/// Why: a tick allocates its body and its batch (megabytes for a large target) and
/// frees them when the commit ends. glibc's malloc gave those pages back to the
/// kernel and faulted them in again on the next tick: page faults were a fifth of a
/// label-heavy tick in `perf` (76,000 a second); mimalloc keeps them for reuse
/// (under 1,000 a second). Measured by `cargo bench -p benches --bench ingest`,
/// which runs with this allocator.
pub use mimalloc::MiMalloc as Allocator;

/// The daemon with a set of connector types. Build it, add your connectors, run it.
///
/// ```
/// # use std::sync::Arc;
/// # use connector_core::*;
/// # struct Noop;
/// # #[async_trait]
/// # impl Connector for Noop {
/// #     const TYPE_ID: &'static str = "noop";
/// #     type Config = ();
/// #     fn schema(&self) -> Arc<Schema> { Arc::new(Schema::new([("timestamp", ColumnType::Timestamp)])) }
/// #     fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> { config_from_json(raw) }
/// #     async fn tick(&self, _: &TickContext, _: &()) -> Result<Batch, ConnectorError> { Ok(Batch::new(self.schema())) }
/// # }
/// let daemon = connectord::Daemon::new().connector(Noop);
/// let types: Vec<_> = daemon.registry().connector_types().collect();
/// assert_eq!(types, ["noop", "otlp_metrics", "prometheus", "spanmetrics"]);
///
/// // A second connector with a type id already taken is refused when the daemon runs.
/// let clash = connectord::Daemon::new().connector(connector_prometheus::PrometheusConnector::new());
/// assert_eq!(clash.run_with_args(["connectord", "validate", "--config", "x.toml"]), std::process::ExitCode::FAILURE);
/// ```
#[derive(Debug)]
pub struct Daemon {
    registry: Registry,
    errors: Vec<RegistryError>,
}

impl Default for Daemon {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemon {
    /// The daemon with the connectors and destinations this repository ships
    /// (`prometheus`, the push sources `spanmetrics` and `otlp_metrics`; `influx` and
    /// `prometheus_remote_write`).
    pub fn new() -> Self {
        Self::without_builtins()
            .connector(PrometheusConnector::new())
            .push_connector(connector_spanmetrics::SpanMetrics)
            .push_connector(connector_otlp_metrics::OtlpMetrics)
            .destination(InfluxDestination::new())
            .destination(RemoteWriteDestination::new())
    }

    /// The daemon with no connector or destination types at all: only the ones you add.
    pub fn without_builtins() -> Self {
        Daemon {
            registry: Registry::new(),
            errors: Vec::new(),
        }
    }

    /// Adds a connector type. A type id that is already taken is reported when the
    /// daemon runs, before anything starts.
    pub fn connector<C: Connector>(mut self, connector: C) -> Self {
        if let Err(e) = self.registry.register(connector) {
            self.errors.push(e);
        }
        self
    }

    /// Adds a push connector type: connectord serves its paths under
    /// `/v1/ingest/{connector name}/`. Type ids are shared with [`Daemon::connector`].
    pub fn push_connector<P: PushConnector>(mut self, connector: P) -> Self {
        if let Err(e) = self.registry.register_push(connector) {
            self.errors.push(e);
        }
        self
    }

    /// Adds a destination type. A type id that is already taken is reported when
    /// the daemon runs, before anything starts.
    pub fn destination<D: Destination>(mut self, destination: D) -> Self {
        if let Err(e) = self.registry.register_destination(destination) {
            self.errors.push(e);
        }
        self
    }

    /// The connector and destination types so far.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs the command line of this process (`run`, `validate`, `rows`, `parse`).
    pub fn run_from_args(self) -> ExitCode {
        self.run_with_args(std::env::args_os())
    }

    /// Runs a command line given as arguments, the program name first.
    pub fn run_with_args<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        if let Some(e) = self.errors.first() {
            eprintln!("error: {e}: each type id must be unique in one build");
            return ExitCode::FAILURE;
        }
        cli::main(self.registry, args.into_iter().map(Into::into))
    }
}
