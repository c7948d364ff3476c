//! A scriptable HTTP/HTTPS server on 127.0.0.1 for connector tests (feature
//! `testing`). Every reply is scripted by a closure of the request's number; every
//! request is recorded (method, path, headers, body).
//!
//! ```
//! use connector_http::testing::{Reply, TestServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = TestServer::start(|n| match n {
//!     0 => Reply::status(503).header("retry-after", "0"),
//!     _ => Reply::json(&serde_json::json!({"devices": []})).gzip(),
//! })
//! .await;
//! let url = server.url("/v1/readings");
//! # let _ = url;
//! // ... point the connector at `url`, tick, then:
//! assert_eq!(server.count(), 0);
//! # }
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Bytes,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Reply {
    /// 200 with `body` as Prometheus text 0.0.4.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::text(body, "text/plain; version=0.0.4; charset=utf-8")
    }

    /// 200 with `body` and a content type.
    pub fn text(body: impl Into<Bytes>, content_type: &str) -> Self {
        Reply::status(200)
            .header("content-type", content_type)
            .body(body)
    }

    /// 200 with `value` as JSON.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::text(value.to_string(), "application/json")
    }

    /// An empty response with `status`.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Replaces (or adds) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Compresses the body with gzip and says so in `Content-Encoding`.
    ///
    /// # Panics
    ///
    /// If compressing into memory fails, which it does not.
    pub fn gzip(mut self) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&self.body).expect("gzip into memory");
        self.body = encoder.finish().expect("gzip into memory").into();
        self.header("content-encoding", "gzip")
    }

    /// Answers after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: http::Method,
    /// The request path and query.
    pub path: String,
    /// The request headers.
    pub headers: http::HeaderMap,
    /// The request body.
    pub body: Bytes,
}

type Handler = dyn Fn(usize) -> Reply + Send + Sync;

/// A scriptable server on 127.0.0.1 (port 0); stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    scheme: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    ca_dir: Option<tempfile::TempDir>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves HTTP; `handler(n)` scripts the reply to the n-th request (from 0).
    pub async fn start(handler: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn(Arc::new(handler), None).await
    }

    /// Serves HTTPS with a certificate for `127.0.0.1` and `localhost` signed by a
    /// fresh CA, whose PEM file is at [`TestServer::ca_file`].
    ///
    /// # Panics
    ///
    /// If the certificate cannot be generated or the CA file written.
    pub async fn start_tls(handler: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn_tls(Arc::new(handler), false).await
    }

    /// Like [`start_tls`](TestServer::start_tls), and the server also demands a
    /// client certificate signed by its CA: one is at
    /// [`client_cert_file`](TestServer::client_cert_file) with its key at
    /// [`client_key_file`](TestServer::client_key_file).
    pub async fn start_mtls(handler: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::spawn_tls(Arc::new(handler), true).await
    }

    /// Serves HTTPS with a certificate of the given kind (for testing how clients
    /// treat self-signed, expired or misnamed certificates); `ca.pem` holds what a
    /// client should trust.
    pub async fn start_tls_with(
        handler: impl Fn(usize) -> Reply + Send + Sync + 'static,
        cert: TestCert,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder for the CA");
        let config = tls_config(dir.path(), false, cert);
        let mut server = Self::spawn(Arc::new(handler), Some(Arc::new(config))).await;
        server.ca_dir = Some(dir);
        server
    }

    async fn spawn_tls(handler: Arc<Handler>, client_auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder for the CA");
        let config = tls_config(dir.path(), client_auth, TestCert::SignedByCa);
        let mut server = Self::spawn(handler, Some(Arc::new(config))).await;
        server.ca_dir = Some(dir);
        server
    }

    async fn spawn(handler: Arc<Handler>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let state = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let seen = Arc::clone(&state);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let handler = Arc::clone(&handler);
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, hyper::Error>(answer(req, &*handler, &seen).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            scheme,
            seen,
            task,
            ca_dir: None,
        }
    }

    /// `http(s)://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.addr.port())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA file to trust for an HTTPS server.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca_dir.as_ref().map(|d| d.path().join("ca.pem"))
    }

    /// A client certificate the HTTPS server's CA signed (PEM).
    pub fn client_cert_file(&self) -> Option<PathBuf> {
        self.ca_dir.as_ref().map(|d| d.path().join("client.pem"))
    }

    /// The private key of [`client_cert_file`](TestServer::client_cert_file) (PEM).
    pub fn client_key_file(&self) -> Option<PathBuf> {
        self.ca_dir
            .as_ref()
            .map(|d| d.path().join("client-key.pem"))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let n = {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.push(Seen {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        });
        seen.len() - 1
    };
    let reply = handler(n);
    // A zero sleep still waits for the timer's next 1 ms tick: half of a benchmark
    // tick's wall time was this wait.
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = hyper::Response::new(Full::new(reply.body));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The server certificate of [`TestServer::start_tls_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TestCert {
    /// For `127.0.0.1` and `localhost`, signed by a fresh CA in `ca.pem`.
    SignedByCa,
    /// Self-signed and marked as a CA, as `openssl req -x509` makes it by default;
    /// `ca.pem` is the certificate itself.
    SelfSigned,
    /// Signed by the CA, but expired a day ago.
    Expired,
    /// Signed by the CA, but for `example.invalid` only.
    OtherName,
}

/// A server configuration with a fresh CA, whose certificate (and a client
/// certificate and key it signed) are written to `dir`.
fn tls_config(dir: &std::path::Path, client_auth: bool, kind: TestCert) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("a server key");
    let names = match kind {
        TestCert::OtherName => vec!["example.invalid".to_owned()],
        _ => vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
    };
    let mut leaf_params = CertificateParams::new(names).expect("server parameters");
    if kind == TestCert::Expired {
        leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let leaf = if kind == TestCert::SelfSigned {
        leaf_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        leaf_params
            .self_signed(&leaf_key)
            .expect("a self-signed certificate")
    } else {
        leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("a server certificate")
    };
    let client_key = KeyPair::generate().expect("a client key");
    let client = CertificateParams::new(vec!["connector".to_owned()])
        .expect("client parameters")
        .signed_by(&client_key, &issuer)
        .expect("a client certificate");
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).expect("a certificate file is written");
    };
    let trusted = if kind == TestCert::SelfSigned {
        leaf.der()
    } else {
        ca_cert.der()
    };
    write("ca.pem", pem("CERTIFICATE", trusted));
    write("client.pem", pem("CERTIFICATE", client.der()));
    write(
        "client-key.pem",
        pem("PRIVATE KEY", &client_key.serialize_der()),
    );
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("a DER key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_cert.der().clone())
            .expect("the CA is a usable root");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("a server TLS configuration")
}

/// PEM-encodes DER (`label` is `CERTIFICATE`, `PRIVATE KEY`, ...), 64 base64
/// characters a line, for tests that write their own certificates.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
