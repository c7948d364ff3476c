//! The HTTP toolkit every HTTP connector shares, so a connector holds only its own
//! logic and `connector-core` stays free of hyper.
//!
//! - [`HttpClient`]: one pooled client (hyper + rustls, web PKI roots or a CA file,
//!   client certificates, `insecure_skip_verify` that logs a warning), whose
//!   [`RequestBuilder::send`] bounds every attempt by a timeout over the whole
//!   exchange, caps the body before and after gzip decoding, maps statuses to error
//!   kinds (429, 5xx, timeouts, connection errors → `Transient`; other 4xx →
//!   `Permanent`), retries with exponential backoff and jitter or the server's
//!   `Retry-After`, and records bytes and retries on the tick's context.
//! - [`check_endpoint`]: `http://` / `https://` only, for `validate_config`.
//! - [`Auth`] and [`TlsConfig`]: the config shapes operators write, with secrets
//!   as `$env:NAME` references resolved at request time.
//! - [`HttpError`]: one error type whose kind is the connector error kind.
//! - `testing` (feature): [`testing::TestServer`], a scriptable HTTP/HTTPS server
//!   on 127.0.0.1 for connector tests.
#![warn(missing_docs)]

mod auth;
mod client;
mod endpoint;
mod error;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use auth::Auth;
pub use client::{
    BACKOFF_BASE, DEFAULT_BODY_LIMIT, DEFAULT_MAX_RETRY_AFTER, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
    HttpClient, RequestBuilder, Response,
};
pub use endpoint::check_endpoint;
pub use error::HttpError;
pub use http;
pub use tls::{MAX_PEM_BYTES, TlsConfig};
