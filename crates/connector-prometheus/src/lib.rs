//! The reference connector: scrapes Prometheus and OpenMetrics endpoints.
//!
//! [`exposition`] is the parser, usable on its own; [`config`] is the connector's
//! validated configuration.

pub mod config;
pub mod exposition;
pub mod fixtures;

pub use config::{Auth, PrometheusConfig};
