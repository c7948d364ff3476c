//! A bounded pool of connections, opened on demand, over TLS when the URL asks.
//!
//! `sslmode` is read from the URL as libpq reads it: `disable`, `prefer` (the
//! default: TLS when the server offers it, unverified), `require` (TLS, unverified),
//! `verify-ca` (TLS, the chain checked against `sslrootcert`) and `verify-full` (also
//! the host name). `sslrootcert` names a PEM file; without it `verify-*` trust the
//! web PKI roots. `connect_timeout` (seconds) defaults to 10.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use connector_runner::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::Semaphore;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use crate::backend;

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free connection before the store reports it busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS as the URL asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `sslmode=disable`.
    Disable,
    /// `prefer` and `require`: encrypted, the certificate not checked (as libpq).
    Unverified,
    /// `verify-ca`: the chain checked, not the host name.
    VerifyCa,
    /// `verify-full`: the chain and the host name.
    VerifyFull,
}

/// A parsed connection URL with connectord's TLS settings taken out of it.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: TlsMode,
    pub(crate) root_cert: Option<String>,
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::new(connector_runner::StoreErrorKind::Invalid, message)
}

/// Decodes `%XX` escapes in a URL query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ConnectOptions {
    /// Parses a `postgres://` URL. Never echoes the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut tls = TlsMode::Unverified;
        let mut prefer = true;
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    (tls, prefer) = match value {
                        "disable" => (TlsMode::Disable, false),
                        "prefer" => (TlsMode::Unverified, true),
                        "require" => (TlsMode::Unverified, false),
                        "verify-ca" => (TlsMode::VerifyCa, false),
                        "verify-full" => (TlsMode::VerifyFull, false),
                        other => {
                            return Err(invalid(format!(
                                "the PostgreSQL URL's sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                            )));
                        }
                    };
                }
                "sslrootcert" => root_cert = Some(percent_decode(value)),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|e| invalid("the PostgreSQL URL is not valid").with_cause(e))?;
        config.ssl_mode(match (tls, prefer) {
            (TlsMode::Disable, _) => SslMode::Disable,
            (_, true) => SslMode::Prefer,
            _ => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        Ok(ConnectOptions {
            config,
            tls,
            root_cert,
        })
    }

    /// The rustls configuration for this mode; reads `sslrootcert` (blocking, once,
    /// when the store connects).
    fn rustls(&self) -> Result<rustls::ClientConfig, StoreError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::backend("cannot build the TLS configuration", e))?;
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            None => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    invalid(format!("sslrootcert: cannot read `{path}`")).with_cause(e)
                })?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        invalid(format!("sslrootcert: `{path}` is not valid PEM")).with_cause(e)
                    })?;
                    roots.add(cert).map_err(|e| {
                        invalid(format!(
                            "sslrootcert: `{path}` holds an unusable certificate"
                        ))
                        .with_cause(e)
                    })?;
                }
                if roots.is_empty() {
                    return Err(invalid(format!(
                        "sslrootcert: `{path}` holds no certificate"
                    )));
                }
            }
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| StoreError::backend("cannot build the certificate verifier", e))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.tls {
            TlsMode::VerifyFull | TlsMode::Disable => webpki,
            mode => Arc::new(Relaxed { webpki, mode }),
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }
}

/// The web PKI verifier, relaxed as libpq relaxes it: `verify-ca` skips the
/// host-name check, `prefer` and `require` skip the certificate check. The
/// handshake's signatures are always checked.
#[derive(Debug)]
struct Relaxed {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    mode: TlsMode,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        if self.mode == TlsMode::Unverified {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// At most `max` connections, opened on demand and kept while healthy.
pub(crate) struct Pool {
    pub(crate) options: ConnectOptions,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    max: usize,
}

pub(crate) struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled client is present until dropped"))
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("a pooled client is present until dropped"))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
    }
}

impl Pool {
    pub(crate) fn new(options: ConnectOptions, max: usize) -> Result<Self, StoreError> {
        let tls = match options.tls {
            TlsMode::Disable => None,
            _ => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                options.rustls()?,
            )),
        };
        let max = max.max(2);
        Ok(Pool {
            options,
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
            max,
        })
    }

    pub(crate) async fn get(self: &Arc<Self>) -> Result<Pooled, StoreError> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| {
                StoreError::new(
                    connector_runner::StoreErrorKind::Backend,
                    format!(
                        "all {} connections to PostgreSQL stayed busy for {} s; raise [storage] max_connections or check the database",
                        self.max,
                        ACQUIRE_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| StoreError::backend("the connection pool is closed", e))?;
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let client = match reused {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Opens a connection, bounded by the connect timeout as a whole: tokio-postgres
    /// bounds only the TCP connect, and a server that accepts and then says nothing
    /// would hang the handshake forever.
    async fn connect(&self) -> Result<Client, StoreError> {
        let limit = self
            .options
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        tokio::time::timeout(limit, self.handshake())
            .await
            .map_err(|_| {
                StoreError::new(
                    connector_runner::StoreErrorKind::Backend,
                    format!(
                        "cannot connect to PostgreSQL: no answer within the connect timeout ({} s)",
                        limit.as_secs()
                    ),
                )
            })?
    }

    async fn handshake(&self) -> Result<Client, StoreError> {
        match &self.tls {
            None => open(&self.options.config, tokio_postgres::NoTls).await,
            Some(tls) => open(&self.options.config, tls.clone()).await,
        }
    }
}

/// Connects with `tls` and drives the connection on a task of its own.
async fn open<T>(config: &tokio_postgres::Config, tls: T) -> Result<Client, StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(backend("cannot connect to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = format!("{e:#}"), "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_root_cert_come_out_of_the_url() {
        let o = ConnectOptions::parse("postgres://u:pw@db.example:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=c").unwrap();
        assert_eq!(o.tls, TlsMode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(o.config.get_application_name(), Some("c"));
        assert_eq!(
            o.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        let o = ConnectOptions::parse("postgres://h/db?connect_timeout=3").unwrap();
        assert_eq!(o.tls, TlsMode::Unverified);
        assert_eq!(o.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(
            o.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let o = ConnectOptions::parse("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(o.config.get_ssl_mode(), SslMode::Disable);
        let err = ConnectOptions::parse("postgres://u:secret@h/db?sslmode=sometimes").unwrap_err();
        assert!(!format!("{err:#}").contains("secret"));
        assert!(err.to_string().contains("sslmode `sometimes`"), "{err}");
    }
}
