//! The connector itself: one HTTP scrape per tick, parsed into one row per sample.

use std::io::Read as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use connector_core::{
    Batch, ColumnType, Connector, ConnectorError, Schema, TickContext, async_trait,
};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    LOCATION, USER_AGENT,
};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Auth, PrometheusConfig};
use crate::exposition::{Format, ParseError, Parser};

/// What the scrape asks for, in Prometheus's order of preference: OpenMetrics 1.0,
/// then the 0.0.1 draft, then text 0.0.4, then anything.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0;q=0.75,\
application/openmetrics-text;version=0.0.1;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Retries after the first attempt, for 429, 5xx, timeouts and connection errors.
pub const MAX_RETRIES: u32 = 3;

/// The first backoff; the n-th retry waits `BACKOFF_BASE × 2^n` plus up to half again of jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);

static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    Arc::new(Schema::new([
        ("timestamp", ColumnType::Timestamp),
        ("name", ColumnType::String),
        ("value", ColumnType::Real),
        ("labels", ColumnType::Dynamic),
    ]))
});

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The Prometheus connector, `type = "prometheus"`.
///
/// Each tick GETs `endpoint` (retrying 429, 5xx, timeouts and connection errors up to
/// three times with exponential backoff), decodes gzip, picks the parser by the
/// response's content type, and emits one row per sample: `timestamp` (the bucket's
/// `scheduled_for`), `name`, `value` (null for NaN and ±Inf) and `labels` (a JSON
/// object). A body that does not parse commits nothing.
#[derive(Clone)]
pub struct PrometheusConnector {
    client: HttpClient,
}

impl std::fmt::Debug for PrometheusConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusConnector")
            .finish_non_exhaustive()
    }
}

fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_with_roots(roots: rustls::RootCertStore) -> Result<HttpClient, rustls::Error> {
    let tls = rustls::ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

impl PrometheusConnector {
    /// A connector whose HTTPS scrapes trust the web PKI roots.
    ///
    /// # Panics
    ///
    /// Never in practice: only if the TLS library rejects its own default protocol versions.
    pub fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        match client_with_roots(roots) {
            Ok(client) => PrometheusConnector { client },
            Err(e) => panic!("the TLS library rejected its default configuration: {e}"),
        }
    }

    fn client_for(&self, config: &PrometheusConfig) -> Result<HttpClient, ConnectorError> {
        let Some(tls) = &config.tls else {
            return Ok(self.client.clone());
        };
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let pem = std::fs::read(&tls.ca_file).map_err(|e| {
            ConnectorError::config(format!("tls.ca_file: cannot read `{}`", tls.ca_file))
                .with_source(e)
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                ConnectorError::config(format!("tls.ca_file: `{}` is not valid PEM", tls.ca_file))
                    .with_source(e)
            })?;
            roots.add(cert).map_err(|e| {
                ConnectorError::config(format!(
                    "tls.ca_file: `{}` holds an unusable certificate",
                    tls.ca_file
                ))
                .with_source(e)
            })?;
        }
        if roots.is_empty() {
            return Err(ConnectorError::config(format!(
                "tls.ca_file: `{}` holds no certificate",
                tls.ca_file
            )));
        }
        client_with_roots(roots).map_err(|e| {
            ConnectorError::config("tls: cannot build the TLS configuration").with_source(e)
        })
    }
}

impl Default for PrometheusConnector {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of a successful response.
struct Fetched {
    body: Vec<u8>,
    content_type: Option<String>,
}

enum AttemptError {
    /// 429, 5xx, a timeout or a connection error: worth another try.
    Retry(String),
    /// Anything else: the tick fails now.
    Fail(ConnectorError),
}

fn authorization(ctx: &TickContext, auth: &Auth) -> Result<Option<HeaderValue>, ConnectorError> {
    use base64::Engine as _;
    let resolve = |r| {
        ctx.resolve(r)
            .map_err(|e| ConnectorError::from(e).context("token resolve"))
    };
    let value = match auth {
        Auth::None => return Ok(None),
        Auth::Bearer { token_ref } => format!("Bearer {}", resolve(token_ref)?.expose()),
        Auth::Basic {
            username,
            password_ref,
        } => {
            let password = resolve(password_ref)?;
            let raw = format!("{username}:{}", password.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        }
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        // Never echo the value: it holds the secret.
        ConnectorError::config(
            "token resolve: the secret holds characters an HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

fn backoff(retry: u32) -> Duration {
    use std::hash::{BuildHasher as _, RandomState};
    let base = BACKOFF_BASE * 2u32.pow(retry);
    // RandomState is randomly keyed per instance: enough jitter without a rand dependency.
    let jitter = RandomState::new().hash_one(retry) % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

async fn attempt(
    client: &HttpClient,
    ctx: &TickContext,
    config: &PrometheusConfig,
    authorization: Option<&HeaderValue>,
) -> Result<Fetched, AttemptError> {
    let mut request = Request::get(config.endpoint.as_str())
        .header(ACCEPT, ACCEPT_HEADER)
        .header(ACCEPT_ENCODING, "gzip")
        .header(
            USER_AGENT,
            concat!("connectord/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!(
                "{:.3}",
                Duration::from_millis(config.timeout_ms).as_secs_f64()
            ),
        );
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value.clone());
    }
    let request = request.body(Empty::new()).map_err(|e| {
        AttemptError::Fail(
            ConnectorError::config("endpoint: cannot build a request").with_source(e),
        )
    })?;
    let response = client.request(request).await.map_err(|e| {
        let what = if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        AttemptError::Retry(format!("{what}: {}", connector_core::ErrorChain(&e)))
    })?;
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(AttemptError::Retry(format!("HTTP {status}")));
    }
    if status.is_redirection() {
        let to = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("an unnamed location");
        return Err(AttemptError::Fail(ConnectorError::permanent(format!(
            "HTTP {status}: redirected to {to}; point endpoint at the final URL"
        ))));
    }
    if !status.is_success() {
        return Err(AttemptError::Fail(ConnectorError::permanent(format!(
            "HTTP {status}"
        ))));
    }
    let limit = config.body_size_limit_bytes;
    let too_large = || {
        AttemptError::Fail(ConnectorError::permanent(format!(
            "body exceeds body_size_limit_bytes ({limit} bytes)"
        )))
    };
    let length = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let gzip = response
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut body = response.into_body();
    let mut bytes = Vec::with_capacity(usize::try_from(length.unwrap_or(0)).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            AttemptError::Retry(format!("reading the body failed: {}", connector_core::ErrorChain(&e)))
        })?;
        if let Some(data) = frame.data_ref() {
            ctx.record_source_bytes(data.len() as u64);
            if (bytes.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    if gzip {
        let mut decoded = Vec::with_capacity(bytes.len() * 4);
        flate2::read::GzDecoder::new(bytes.as_slice())
            .take(limit + 1)
            .read_to_end(&mut decoded)
            .map_err(|e| {
                AttemptError::Fail(
                    ConnectorError::permanent("the gzip body is corrupt").with_source(e),
                )
            })?;
        if decoded.len() as u64 > limit {
            return Err(too_large());
        }
        bytes = decoded;
    }
    Ok(Fetched {
        body: bytes,
        content_type,
    })
}

async fn fetch(
    client: &HttpClient,
    ctx: &TickContext,
    config: &PrometheusConfig,
) -> Result<Fetched, ConnectorError> {
    let authorization = authorization(ctx, &config.auth)?;
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut retry = 0;
    loop {
        let result = match tokio::time::timeout(
            timeout,
            attempt(client, ctx, config, authorization.as_ref()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Retry(format!(
                "timed out after {} ms",
                config.timeout_ms
            ))),
        };
        match result {
            Ok(fetched) => return Ok(fetched),
            Err(AttemptError::Fail(e)) => {
                return Err(e.context(format!("scrape {}", config.endpoint)));
            }
            Err(AttemptError::Retry(reason)) if retry < MAX_RETRIES => {
                tracing::debug!(endpoint = %config.endpoint, %reason, retry, "scrape attempt failed, retrying");
                tokio::time::sleep(backoff(retry)).await;
                retry += 1;
            }
            Err(AttemptError::Retry(reason)) => {
                return Err(ConnectorError::transient(format!(
                    "scrape {}: {reason} (after {} attempts)",
                    config.endpoint,
                    MAX_RETRIES + 1
                )));
            }
        }
    }
}

fn to_batch(
    fetched: &Fetched,
    ctx: &TickContext,
    config: &PrometheusConfig,
) -> Result<Batch, ConnectorError> {
    let parse_failed = |e: ParseError| {
        ConnectorError::permanent(format!("parse body of {}: {e}", config.endpoint))
    };
    let text = std::str::from_utf8(&fetched.body)
        .map_err(|e| parse_failed(ParseError::from_utf8_error(&fetched.body, &e)))?;
    let format = fetched
        .content_type
        .as_deref()
        .and_then(Format::from_content_type)
        .unwrap_or_else(|| Format::detect(text));
    // A rough guess of the sample count saves most reallocations of the columns.
    let mut batch = Batch::with_capacity(SCHEMA.clone(), text.len() / 64);
    let scheduled_for = ctx.scheduled_for_ms();
    for sample in Parser::new(text, format).strict(config.strict) {
        let sample = sample.map_err(parse_failed)?;
        if config
            .sample_limit
            .is_some_and(|limit| batch.len() as u64 >= limit)
        {
            return Err(ConnectorError::permanent(format!(
                "scrape {}: more than sample_limit ({}) samples",
                config.endpoint,
                config.sample_limit.unwrap_or_default()
            )));
        }
        let row = batch.row().timestamp(scheduled_for).string(sample.name);
        let row = if sample.value.is_finite() {
            row.real(sample.value)
        } else {
            row.null()
        };
        row.map(sample.labels.iter_decoded()).finish()?;
    }
    Ok(batch)
}

#[async_trait]
impl Connector for PrometheusConnector {
    const TYPE_ID: &'static str = "prometheus";
    type Config = PrometheusConfig;

    fn schema(&self) -> Arc<Schema> {
        SCHEMA.clone()
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<PrometheusConfig, ConnectorError> {
        PrometheusConfig::from_json(raw)
    }

    async fn tick(
        &self,
        ctx: &TickContext,
        config: &PrometheusConfig,
    ) -> Result<Batch, ConnectorError> {
        let client = self.client_for(config)?;
        let fetched = fetch(&client, ctx, config).await?;
        to_batch(&fetched, ctx, config)
    }
}
