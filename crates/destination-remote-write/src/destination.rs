//! The `prometheus_remote_write` destination: committed metric rows sent as
//! Remote-Write 1.0 requests to Prometheus (`--web.enable-remote-write-receiver`,
//! `/api/v1/write`), VictoriaMetrics, Mimir, Thanos or Grafana Cloud.
//!
//! ```json
//! { "endpoint": "http://127.0.0.1:9090/api/v1/write",
//!   "headers": { "X-Scope-OrgID": "team-a" } }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use connector_core::{
    Batch, ConfigFile, ConnectorError, Delivered, Destination, Schema, TickContext, async_trait,
    check_range, config_from_json,
};
use connector_http::http::Method;
use connector_http::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use connector_http::{Auth, HttpClient, TlsConfig};
use metric_rows::MetricReader;
use serde::{Deserialize, Serialize};

use crate::encode;

/// `max_samples_per_send` when the config leaves it out (Prometheus's default).
pub const DEFAULT_MAX_SAMPLES_PER_SEND: u64 = 2000;

/// Bounds of `max_samples_per_send`.
pub const MAX_SAMPLES_PER_SEND_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;

/// `timeout_ms` when the config leaves it out (Prometheus's `remote_timeout`).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Bounds of `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// Headers the protocol or the connection owns: `headers` may not set them (the
/// list Prometheus keeps for itself).
pub const RESERVED_HEADERS: [&str; 11] = [
    "authorization",
    "host",
    "content-encoding",
    "content-type",
    "x-prometheus-remote-write-version",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
];

/// The `prometheus_remote_write` destination's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's URL (`http://prometheus:9090/api/v1/write`).
    pub endpoint: String,
    /// How to authenticate; none by default.
    #[serde(default)]
    pub auth: Auth,
    /// TLS settings for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The most samples in one request.
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: u64,
    /// Whether a 429 is retried (honouring `Retry-After`) or refuses the bucket for
    /// good, as Prometheus's own option of that name.
    #[serde(default = "default_true")]
    pub retry_on_http_429: bool,
    /// Extra headers (`X-Scope-OrgID`); the protocol's own cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_samples_per_send() -> u64 {
    DEFAULT_MAX_SAMPLES_PER_SEND
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl RemoteWriteConfig {
    /// Deserializes and checks a raw config. Pure.
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, ConnectorError> {
        let config: RemoteWriteConfig = config_from_json(raw)?;
        connector_http::check_endpoint("endpoint", &config.endpoint)?;
        check_range(
            "max_samples_per_send",
            config.max_samples_per_send,
            MAX_SAMPLES_PER_SEND_RANGE,
        )?;
        check_range("timeout_ms", config.timeout_ms, TIMEOUT_MS_RANGE)?;
        if let Some(tls) = &config.tls {
            tls.validate("tls")?;
        }
        for (name, value) in &config.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConnectorError::config(format!(
                    "headers: `{name}` is not a valid header name"
                )));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ConnectorError::config(format!(
                    "headers: `{name}` is set by the protocol or the connection and cannot be overridden"
                )));
            }
            if HeaderValue::from_str(value).is_err() {
                return Err(ConnectorError::config(format!(
                    "headers: the value of `{name}` is not a valid header value (visible ASCII only)"
                )));
            }
        }
        Ok(config)
    }
}

/// The `prometheus_remote_write` destination. Its HTTP client (a connection pool)
/// is shared by every destination of this type.
#[derive(Debug, Clone, Default)]
pub struct RemoteWriteDestination {
    client: HttpClient,
}

impl RemoteWriteDestination {
    /// A destination with a fresh connection pool.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Requests of one delivery in flight at once when no series spans two of them, so
/// a bucket's requests overlap the receiver's handling of each other (measured: the
/// receiver's round trip was most of a delivery).
const CONCURRENT_REQUESTS: usize = 4;

/// One remote-write POST; returns the bytes sent.
async fn post(
    client: HttpClient,
    ctx: TickContext,
    config: Arc<RemoteWriteConfig>,
    body: Vec<u8>,
) -> Result<u64, connector_http::HttpError> {
    let sent = body.len() as u64;
    let mut builder = client
        .request(Method::POST, &config.endpoint)
        .action("remote write")
        .header(CONTENT_ENCODING, "snappy")
        .header(CONTENT_TYPE, "application/x-protobuf")
        .header(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            "0.1.0",
        )
        .auth(&config.auth)
        .tls(config.tls.as_ref())
        .timeout_ms(config.timeout_ms)
        .retry_too_many_requests(config.retry_on_http_429);
    for (name, value) in &config.headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            builder = builder.header(name, value.as_str());
        }
    }
    builder.body(body).send(&ctx).await?;
    Ok(sent)
}

#[async_trait]
impl Destination for RemoteWriteDestination {
    const TYPE_ID: &'static str = "prometheus_remote_write";
    type Config = RemoteWriteConfig;

    fn validate_config(
        &self,
        raw: &serde_json::Value,
    ) -> Result<RemoteWriteConfig, ConnectorError> {
        RemoteWriteConfig::from_json(raw)
    }

    fn check_schema(&self, schema: &Schema) -> Result<(), ConnectorError> {
        MetricReader::new(schema)
            .map(|_| ())
            .map_err(|e| ConnectorError::config(e.to_string()))
    }

    async fn deliver(
        &self,
        ctx: &TickContext,
        config: &RemoteWriteConfig,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError> {
        let per_request = usize::try_from(config.max_samples_per_send).unwrap_or(usize::MAX);
        let encoded =
            encode(rows, per_request).map_err(|e| ConnectorError::permanent(e.to_string()))?;
        let mut delivered = Delivered::default();
        let in_flight = if encoded.ordered {
            1
        } else {
            CONCURRENT_REQUESTS
        };
        let config = Arc::new(config.clone());
        let mut sending = tokio::task::JoinSet::new();
        let mut requests = encoded.requests.into_iter();
        loop {
            while sending.len() < in_flight {
                let Some(request) = requests.next() else {
                    break;
                };
                let send = post(
                    self.client.clone(),
                    ctx.clone(),
                    Arc::clone(&config),
                    request.body,
                );
                let samples = request.samples as u64;
                sending.spawn(async move { send.await.map(|bytes| (samples, bytes)) });
            }
            let Some(done) = sending.join_next().await else {
                break;
            };
            let (samples, bytes) = match done {
                Ok(Ok(sent)) => sent,
                // The bucket is sent again whole; the requests still in flight are
                // dropped (a receiver keeps one sample per series and timestamp).
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(ConnectorError::permanent(format!(
                        "a remote-write request task failed: {e}"
                    )));
                }
            };
            delivered.rows += samples;
            delivered.bytes += bytes;
            delivered.requests += 1;
        }
        delivered.skipped = encoded.skipped.by_name();
        Ok(delivered)
    }

    fn config_files(&self, config: &RemoteWriteConfig) -> Vec<ConfigFile> {
        config
            .tls
            .as_ref()
            .map(|t| t.files("tls"))
            .unwrap_or_default()
    }
}
