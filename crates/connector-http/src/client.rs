use std::io::Read as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use connector_core::{ErrorChain, ErrorKind, TickContext};
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
    USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{Auth, HttpError, TlsConfig};

/// Retries after the first attempt, for 429, 5xx, timeouts and connection errors.
pub const DEFAULT_RETRIES: u32 = 3;

/// The first backoff; the n-th retry waits `BACKOFF_BASE × 2^n` plus up to half again of jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The longest `Retry-After` a request waits out; a server asking for more fails the
/// request as `Transient` at once, so the next tick tries again instead.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The whole-exchange timeout of one attempt when a connector sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest body accepted (before and after gzip decoding) when a connector sets none.
pub const DEFAULT_BODY_LIMIT: u64 = 64 * 1024 * 1024;

type Inner = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One pooled HTTP/1.1 client (hyper, rustls with aws-lc) for a connector to share
/// across ticks. Cloning is cheap and shares the pool.
///
/// ```no_run
/// # use connector_core::{ConnectorError, TickContext};
/// # async fn tick(ctx: &TickContext) -> Result<(), ConnectorError> {
/// use connector_http::{Auth, HttpClient};
///
/// let client = HttpClient::new();
/// let response = client
///     .get("https://api.example.com/v1/readings")
///     .header(http::header::ACCEPT, "application/json")
///     .auth(&Auth::None)
///     .timeout_ms(5_000)
///     .send(ctx)
///     .await?; // a failure becomes a ConnectorError of the right kind
/// let readings: serde_json::Value = response.json()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn build(tls: rustls::ClientConfig) -> Inner {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

impl HttpClient {
    /// A client whose HTTPS requests trust the web PKI roots.
    ///
    /// # Panics
    ///
    /// Never in practice: only if the TLS library rejects its own default protocol versions.
    pub fn new() -> Self {
        match crate::tls::client_config(None) {
            Ok(tls) => HttpClient { inner: build(tls) },
            Err(e) => panic!("the TLS library rejected its default configuration: {e:#}"),
        }
    }

    /// A client with `tls`'s roots and client certificate. Its files are read on a
    /// blocking thread, never on an async worker.
    pub async fn with_tls(tls: &TlsConfig) -> Result<Self, HttpError> {
        let tls = tls.clone();
        let config = tokio::task::spawn_blocking(move || crate::tls::client_config(Some(&tls)))
            .await
            .map_err(|e| HttpError::config("tls: reading the TLS files failed").with_source(e))??;
        Ok(HttpClient {
            inner: build(config),
        })
    }

    /// Starts a GET of `url`.
    pub fn get(&self, url: &str) -> RequestBuilder<'_> {
        self.request(Method::GET, url)
    }

    /// Starts a request.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            method,
            url: url.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            auth: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            retries: DEFAULT_RETRIES,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            action: None,
            limit_key: None,
            retry_too_many_requests: true,
            any_status: false,
        }
    }
}

/// A request being put together; [`send`](RequestBuilder::send) runs it with retries.
#[derive(Debug)]
#[must_use = "a request does nothing until `send` is awaited"]
pub struct RequestBuilder<'a> {
    client: &'a HttpClient,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    auth: Option<&'a Auth>,
    tls: Option<&'a TlsConfig>,
    timeout: Duration,
    body_limit: u64,
    retries: u32,
    max_retry_after: Duration,
    action: Option<&'a str>,
    limit_key: Option<&'a str>,
    retry_too_many_requests: bool,
    any_status: bool,
}

impl<'a> RequestBuilder<'a> {
    /// Returns every answer but a redirect as a [`Response`], 4xx and 5xx included
    /// and none retried, for a caller that passes the server's answer on as it is
    /// (connectord's query API in front of Prometheus).
    pub fn any_status(mut self) -> Self {
        self.any_status = true;
        self
    }

    /// Whether a 429 is retried (the default) or fails at once as `Permanent`, as a
    /// remote-write sender does with `retry_on_http_429 = false`.
    pub fn retry_too_many_requests(mut self, retry: bool) -> Self {
        self.retry_too_many_requests = retry;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: impl TryInto<HeaderValue>) -> Self {
        if let Ok(value) = value.try_into() {
            self.headers.append(name, value);
        }
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Authenticates with `auth`; its secrets resolve when the request is sent.
    pub fn auth(mut self, auth: &'a Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Uses `tls` (a CA file, a client certificate) instead of the shared client's
    /// web PKI roots. `None` keeps the shared client.
    pub fn tls(mut self, tls: Option<&'a TlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Bounds each attempt, from connecting to the last byte of the body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// [`timeout`](Self::timeout) in milliseconds, as connector configs carry it.
    pub fn timeout_ms(self, ms: u64) -> Self {
        self.timeout(Duration::from_millis(ms))
    }

    /// The largest body accepted, checked on `Content-Length`, while reading, and
    /// again after gzip decoding. A larger body fails as `Permanent`.
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Names the config key of the body limit in the error, so the operator knows
    /// what to raise: `body exceeds body_size_limit_bytes (64 bytes)`.
    pub fn limit_key(mut self, key: &'a str) -> Self {
        self.limit_key = Some(key);
        self
    }

    /// How many times a retryable failure is tried again (3 by default; 0 for none).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The longest `Retry-After` waited out (30 s by default).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The verb error messages start with (`"scrape"` gives `scrape http://...: HTTP
    /// 503 ...`); the method by default.
    pub fn action(mut self, action: &'a str) -> Self {
        self.action = Some(action);
        self
    }

    /// Sends the request, retrying 429, 5xx, timeouts and connection errors with
    /// exponential backoff and jitter (or the server's `Retry-After`), and returns a
    /// 2xx response with its whole body, gzip decoded. Redirects are not followed.
    ///
    /// Bytes read are recorded on `ctx` (as received) and so are retries, for the
    /// daemon's metrics.
    pub async fn send(self, ctx: &TickContext) -> Result<Response, HttpError> {
        let what = format!(
            "{} {}",
            self.action.unwrap_or(self.method.as_str()),
            self.url
        );
        let shared;
        let client = match self.tls {
            Some(tls) => {
                shared = HttpClient::with_tls(tls).await?;
                &shared
            }
            None => self.client,
        };
        let authorization = match self.auth {
            Some(auth) => auth.header(ctx)?,
            None => None,
        };
        let mut retry = 0;
        loop {
            let attempt = tokio::time::timeout(
                self.timeout,
                self.attempt(client, ctx, authorization.as_ref(), &what),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Attempt::Retry {
                    reason: format!("timed out after {} ms", self.timeout.as_millis()),
                    status: None,
                    retry_after: None,
                })
            });
            let (reason, status, retry_after) = match attempt {
                Ok(response) => return Ok(response),
                Err(Attempt::Fail(e)) => return Err(e.context(&what)),
                Err(Attempt::Retry {
                    reason,
                    status,
                    retry_after,
                }) => (reason, status, retry_after),
            };
            let give_up = |message: String| {
                let err = HttpError::new(ErrorKind::Transient, format!("{what}: {message}"));
                match status {
                    Some(status) => err.with_status(status),
                    None => err,
                }
            };
            if retry >= self.retries {
                return Err(give_up(format!("{reason} (after {} attempts)", retry + 1)));
            }
            if ctx.is_stopping() {
                return Err(give_up(format!(
                    "{reason} (not retried: connectord is stopping)"
                )));
            }
            let wait = match retry_after {
                Some(asked) if asked > self.max_retry_after => {
                    return Err(give_up(format!(
                        "{reason}; the server asked to retry after {} s, longer than the {} s a request waits",
                        asked.as_secs(),
                        self.max_retry_after.as_secs()
                    )));
                }
                Some(asked) => asked,
                None => backoff(retry),
            };
            tracing::debug!(request = %what, %reason, retry, wait_ms = wait.as_millis() as u64, "attempt failed, retrying");
            ctx.record_retry();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = ctx.stopping() => {
                    return Err(give_up(format!(
                        "{reason} (not retried: connectord is stopping)"
                    )));
                }
            }
            retry += 1;
        }
    }

    async fn attempt(
        &self,
        client: &HttpClient,
        ctx: &TickContext,
        authorization: Option<&HeaderValue>,
        what: &str,
    ) -> Result<Response, Attempt> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(self.url.as_str());
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.headers.clone());
            headers
                .entry(USER_AGENT)
                .or_insert(HeaderValue::from_static(concat!(
                    "connectord/",
                    env!("CARGO_PKG_VERSION")
                )));
            if let Some(value) = authorization {
                headers.insert(AUTHORIZATION, value.clone());
            }
        }
        ctx.record_sent_bytes(self.body.len() as u64);
        let request = request.body(Full::new(self.body.clone())).map_err(|e| {
            Attempt::Fail(HttpError::config("cannot build the request").with_source(e))
        })?;
        let response = client.inner.request(request).await.map_err(|e| {
            // A certificate that fails verification will fail again at once: the
            // tick stops here, saying what is wrong with it.
            if let Some(problem) = crate::tls::certificate_problem(&e) {
                return Attempt::Fail(HttpError::permanent(format!(
                    "the server's TLS certificate was refused: {problem}"
                )));
            }
            let what = if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            Attempt::Retry {
                reason: format!("{what}: {}", ErrorChain(&e)),
                status: None,
                retry_after: None,
            }
        })?;
        let status = response.status();
        let too_many = status == StatusCode::TOO_MANY_REQUESTS;
        if !self.any_status
            && ((too_many && self.retry_too_many_requests) || status.is_server_error())
        {
            let retry_after = retry_after(response.headers(), SystemTime::now());
            let said = error_text(response.into_body()).await;
            return Err(Attempt::Retry {
                reason: format!("HTTP {status}{said}"),
                status: Some(status),
                retry_after,
            });
        }
        if status.is_redirection() {
            let to = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("an unnamed location");
            return Err(Attempt::Fail(
                HttpError::permanent(format!(
                    "HTTP {status}: redirected to {to}; point the connector at the final URL"
                ))
                .with_status(status),
            ));
        }
        if !status.is_success() && !self.any_status {
            let said = error_text(response.into_body()).await;
            return Err(Attempt::Fail(
                HttpError::permanent(format!("HTTP {status}{said}")).with_status(status),
            ));
        }
        let limit = self.body_limit;
        let too_large = || {
            Attempt::Fail(HttpError::permanent(match self.limit_key {
                Some(key) => format!("body exceeds {key} ({limit} bytes)"),
                None => format!("body exceeds the limit of {limit} bytes"),
            }))
        };
        let headers = response.headers().clone();
        let length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let gzip = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut body = response.into_body();
        let capacity = length.unwrap_or(0).min(limit);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Attempt::Retry {
                reason: format!("reading the body failed: {}", ErrorChain(&e)),
                status: None,
                retry_after: None,
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
            let mut decoded = Vec::with_capacity(bytes.len().saturating_mul(4));
            flate2::read::GzDecoder::new(bytes.as_slice())
                .take(limit + 1)
                .read_to_end(&mut decoded)
                .map_err(|e| {
                    Attempt::Fail(HttpError::permanent("the gzip body is corrupt").with_source(e))
                })?;
            if decoded.len() as u64 > limit {
                return Err(too_large());
            }
            bytes = decoded;
        }
        Ok(Response {
            request: what.to_owned(),
            status,
            headers,
            body: bytes,
        })
    }
}

enum Attempt {
    /// 429, 5xx, a timeout or a connection error: worth another try.
    Retry {
        reason: String,
        status: Option<StatusCode>,
        retry_after: Option<Duration>,
    },
    /// Anything else: the request fails now.
    Fail(HttpError),
}

/// The start of an error response's body as `: text` on one line, for the message
/// an operator reads (a receiver says why it refused: `unknown field`, a bad line).
/// Empty when the body is empty, unreadable or not text.
async fn error_text(mut body: hyper::body::Incoming) -> String {
    /// Enough for any receiver's one-line reason; a page of HTML is cut.
    const SHOWN: usize = 512;
    let mut bytes = Vec::new();
    while bytes.len() < SHOWN {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        String::new()
    } else if bytes.len() > SHOWN {
        format!(": {line}…")
    } else {
        format!(": {line}")
    }
}

fn backoff(retry: u32) -> Duration {
    use std::hash::{BuildHasher as _, RandomState};
    let base = BACKOFF_BASE * 2u32.saturating_pow(retry);
    // RandomState is randomly keyed per instance: enough jitter without a rand dependency.
    let jitter = RandomState::new().hash_one(retry) % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A 2xx response with its whole body (gzip decoded).
#[derive(Debug, Clone)]
pub struct Response {
    request: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    /// The status: 2xx, or any but a redirect after [`RequestBuilder::any_status`].
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `Content-Type`, if it is valid text.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE)?.to_str().ok()
    }

    /// The body, decoded from gzip if it came compressed.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, owned.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body parsed as JSON into `T`; a body that does not fit is `Permanent`,
    /// naming the request, with serde's line and column as the cause.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::permanent(format!(
                "{}: the body is not the expected JSON",
                self.request
            ))
            .with_source(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(12)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        for retry in 0..4 {
            let base = BACKOFF_BASE * 2u32.pow(retry);
            let wait = backoff(retry);
            assert!(wait >= base && wait <= base + base / 2, "{retry}: {wait:?}");
        }
    }
}
