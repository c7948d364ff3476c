//! The reference connector: scrapes Prometheus and OpenMetrics endpoints.
//!
//! [`PrometheusConnector`] is the connector; [`exposition`] is the parser, usable on
//! its own; [`config`] is the connector's validated configuration.

pub mod config;
pub mod exposition;
pub mod fixtures;
mod scrape;
mod target_labels;

pub use config::{Auth, PrometheusConfig, TlsConfig};
pub use scrape::{ACCEPT_HEADER, PrometheusConnector};
