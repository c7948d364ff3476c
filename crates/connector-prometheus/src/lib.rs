//! The reference connector: scrapes Prometheus and OpenMetrics endpoints.
//!
//! [`PrometheusConnector`] is the connector; [`exposition`] is the parser, usable on
//! its own; [`config`] is the connector's validated configuration.
//!
//! The connector and its configuration come with the `scrape` feature, on by default.
//! `default-features = false` leaves the parser and the fixtures alone, with no HTTP
//! client, TLS or async runtime to build: the fuzz targets depend on it that way.

#[cfg(feature = "scrape")]
pub mod config;
pub mod exposition;
pub mod fixtures;
#[cfg(feature = "scrape")]
mod scrape;
#[cfg(feature = "scrape")]
mod target_labels;

#[cfg(feature = "scrape")]
pub use config::{Auth, PrometheusConfig, TlsConfig};
#[cfg(feature = "scrape")]
pub use scrape::{ACCEPT_HEADER, PrometheusConnector};
