//! The `influx` destination: committed metric rows as Influx line protocol, POSTed to
//! Grafana Cloud (`/api/v1/push/influx/write`), InfluxDB 1.x (`/write?db=...`) or
//! VictoriaMetrics (`/influx/write`).
//!
//! ```json
//! { "endpoint": "https://influx-prod.grafana.net/api/v1/push/influx/write",
//!   "auth": { "type": "basic", "username": "123456", "password_ref": "$env:GRAFANA_API_KEY" } }
//! ```

use std::io::Write as _;

use connector_core::{
    Batch, ConfigFile, ConnectorError, Delivered, Destination, Schema, TickContext, async_trait,
    check_range, config_from_json,
};
use connector_http::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use connector_http::http::{Method, StatusCode};
use connector_http::{Auth, HttpClient, TlsConfig};
use serde::{Deserialize, Serialize};

use crate::line_protocol::Encoder;

/// `max_request_bytes` when the config leaves it out: 1 MiB of lines (before gzip).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;

/// Bounds of `max_request_bytes`.
pub const MAX_REQUEST_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=64 * 1024 * 1024;

/// `timeout_ms` when the config leaves it out.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Bounds of `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// The `influx` destination's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// The write URL, `http://` or `https://`, with its query (`/write?db=metrics`).
    pub endpoint: String,
    /// How to authenticate: Grafana Cloud takes basic auth with the instance id as
    /// user and an API key as password.
    #[serde(default)]
    pub auth: Auth,
    /// TLS settings for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The largest request body, in bytes of lines before compression: a larger
    /// bucket is split, and a request the receiver refuses as too large (413) is
    /// halved and sent again.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Compress request bodies with gzip (`Content-Encoding: gzip`). On by default.
    #[serde(default = "default_gzip")]
    pub gzip: bool,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_request_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BYTES
}

fn default_gzip() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl InfluxConfig {
    /// Deserializes and checks a raw config. Pure.
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, ConnectorError> {
        let config: InfluxConfig = config_from_json(raw)?;
        connector_http::check_endpoint("endpoint", &config.endpoint)?;
        check_range(
            "max_request_bytes",
            config.max_request_bytes,
            MAX_REQUEST_BYTES_RANGE,
        )?;
        check_range("timeout_ms", config.timeout_ms, TIMEOUT_MS_RANGE)?;
        if let Some(tls) = &config.tls {
            tls.validate("tls")?;
        }
        Ok(config)
    }
}

/// The `influx` destination. Its HTTP client (a connection pool) is shared by every
/// destination of this type.
#[derive(Debug, Clone, Default)]
pub struct InfluxDestination {
    client: HttpClient,
}

impl InfluxDestination {
    /// A destination with a fresh connection pool.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Lines of one request, and where each line ends (to halve on a 413).
struct Lines {
    body: Vec<u8>,
    ends: Vec<usize>,
}

#[async_trait]
impl Destination for InfluxDestination {
    const TYPE_ID: &'static str = "influx";
    type Config = InfluxConfig;

    fn validate_config(&self, raw: &serde_json::Value) -> Result<InfluxConfig, ConnectorError> {
        InfluxConfig::from_json(raw)
    }

    fn check_schema(&self, schema: &Schema) -> Result<(), ConnectorError> {
        Encoder::new(schema)
            .map(|_| ())
            .map_err(|e| ConnectorError::config(e.to_string()))
    }

    async fn deliver(
        &self,
        ctx: &TickContext,
        config: &InfluxConfig,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError> {
        let mut encoder =
            Encoder::new(rows.schema()).map_err(|e| ConnectorError::permanent(e.to_string()))?;
        let limit = usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX);
        let mut delivered = Delivered::default();
        let mut lines = Lines {
            body: Vec::with_capacity(limit.min(4 * 1024 * 1024)),
            ends: Vec::new(),
        };
        for row in rows.rows() {
            let start = lines.body.len();
            let Some(length) = encoder.row(&row, &mut lines.body) else {
                continue;
            };
            if length > limit {
                let line = &lines.body[start..];
                let name_end = line
                    .iter()
                    .position(|b| *b == b',' || *b == b' ')
                    .unwrap_or(0);
                return Err(ConnectorError::permanent(format!(
                    "a sample of `{}` is a line of {length} bytes, more than max_request_bytes ({limit}); raise it to send this bucket",
                    String::from_utf8_lossy(&line[..name_end])
                )));
            }
            if lines.body.len() > limit {
                // This line starts the next request.
                let tail = lines.body.split_off(start);
                self.send(ctx, config, &lines, &mut delivered).await?;
                lines.body = tail;
                lines.ends.clear();
            }
            lines.ends.push(lines.body.len());
        }
        if !lines.ends.is_empty() {
            self.send(ctx, config, &lines, &mut delivered).await?;
        }
        delivered.skipped = encoder.skipped().by_name();
        Ok(delivered)
    }

    fn config_files(&self, config: &InfluxConfig) -> Vec<ConfigFile> {
        config
            .tls
            .as_ref()
            .map(|t| t.files("tls"))
            .unwrap_or_default()
    }
}

impl InfluxDestination {
    /// Sends `lines` as one request, or, when the receiver says it is too large, as
    /// two halves (and so on down to one line).
    async fn send(
        &self,
        ctx: &TickContext,
        config: &InfluxConfig,
        lines: &Lines,
        delivered: &mut Delivered,
    ) -> Result<(), ConnectorError> {
        let mut pending: Vec<(usize, usize)> = vec![(0, lines.ends.len())];
        while let Some((from, to)) = pending.pop() {
            let start = if from == 0 { 0 } else { lines.ends[from - 1] };
            let body = &lines.body[start..lines.ends[to - 1]];
            match self.post(ctx, config, body).await {
                Ok(sent) => {
                    delivered.rows += (to - from) as u64;
                    delivered.bytes += sent;
                    delivered.requests += 1;
                }
                Err(PostError::Http(e))
                    if e.status() == Some(StatusCode::PAYLOAD_TOO_LARGE) && to - from > 1 =>
                {
                    let middle = from + (to - from) / 2;
                    // Popped last-in first-out: the first half goes first.
                    pending.push((middle, to));
                    pending.push((from, middle));
                }
                Err(PostError::Http(e)) => return Err(e.into()),
                Err(PostError::Local(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// One POST; returns the bytes sent.
    async fn post(
        &self,
        ctx: &TickContext,
        config: &InfluxConfig,
        lines: &[u8],
    ) -> Result<u64, PostError> {
        let body = if config.gzip {
            gzip(lines).map_err(|e| {
                PostError::Local(ConnectorError::permanent(format!(
                    "cannot gzip the request: {e}"
                )))
            })?
        } else {
            lines.to_vec()
        };
        let sent = body.len() as u64;
        let mut request = self
            .client
            .request(Method::POST, &config.endpoint)
            .action("influx write")
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .auth(&config.auth)
            .tls(config.tls.as_ref())
            .timeout_ms(config.timeout_ms)
            .body(body);
        if config.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        request.send(ctx).await.map_err(PostError::Http)?;
        Ok(sent)
    }
}

/// A request that failed, on the wire or before it.
enum PostError {
    Http(connector_http::HttpError),
    Local(ConnectorError),
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    // Level 1: line protocol compresses about 10:1 even so, and the sender stays
    // far faster than the network it feeds.
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}
