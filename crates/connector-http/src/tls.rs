use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::HttpError;

/// The largest PEM file read: a bundle of every public CA is about 220 KiB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// TLS settings for `https://` requests, as operators write them under `tls` in a
/// connector's config. Without a `ca_file` the web PKI roots are trusted.
///
/// Files are read when a request needs them, off the async workers, and must be
/// regular files of at most [`MAX_PEM_BYTES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust instead of the web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A PEM client certificate (chain) to present; needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// The PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Accept any server certificate. For tests and emergencies only: it logs a
    /// warning every time a client is built with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// The files these settings name, keyed under `key` (`"tls"` → `tls.ca_file`),
    /// for [`connector_core::Connector::config_files`].
    pub fn files(&self, key: &str) -> Vec<connector_core::ConfigFile> {
        [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(name, path)| {
            path.as_ref().map(|path| connector_core::ConfigFile {
                key: format!("{key}.{name}"),
                path: path.into(),
            })
        })
        .collect()
    }

    /// Checks the settings without touching the file system; `key` is where they
    /// sit in the connector's config (`"tls"`).
    pub fn validate(&self, key: &str) -> Result<(), connector_core::ConnectorError> {
        let fail = |m: String| Err(connector_core::ConnectorError::config(m));
        for (name, value) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return fail(format!("{key}.{name}: must name a PEM file"));
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => fail(format!("{key}.cert_file: needs {key}.key_file too")),
            (None, Some(_)) => fail(format!("{key}.key_file: needs {key}.cert_file too")),
            _ => Ok(()),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM file named by config key `key`: a regular file of at most
/// [`MAX_PEM_BYTES`]. Blocking; call it on a blocking thread.
///
/// Anything else (missing, unreadable, a folder, a FIFO, a device) gets one and the
/// same message, so the error is no oracle for what exists on the file system. The
/// type is checked before opening, since opening a FIFO blocks until a writer comes.
fn read_pem(key: &str, path: &str) -> Result<Vec<u8>, HttpError> {
    let unreadable =
        || HttpError::config(format!("tls.{key}: cannot read `{path}` as a regular file"));
    let is_file = |meta: std::io::Result<std::fs::Metadata>| meta.is_ok_and(|m| m.is_file());
    if !is_file(std::fs::metadata(path)) {
        return Err(unreadable());
    }
    let file = std::fs::File::open(Path::new(path)).map_err(|_| unreadable())?;
    if !is_file(file.metadata()) {
        return Err(unreadable());
    }
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|_| unreadable())?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(HttpError::config(format!(
            "tls.{key}: `{path}` is larger than {MAX_PEM_BYTES} bytes"
        )));
    }
    Ok(pem)
}

fn certificates(
    key: &str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            HttpError::config(format!("tls.{key}: `{path}` is not valid PEM")).with_source(e)
        })?;
    if certs.is_empty() {
        return Err(HttpError::config(format!(
            "tls.{key}: `{path}` holds no certificate"
        )));
    }
    Ok(certs)
}

/// Builds the rustls client configuration for `tls` (web PKI roots when `None`).
/// Reads files, so it runs on a blocking thread.
pub(crate) fn client_config(tls: Option<&TlsConfig>) -> Result<rustls::ClientConfig, HttpError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::config("tls: cannot build the TLS configuration").with_source(e))?;
    let tls_default = TlsConfig::default();
    let tls = tls.unwrap_or(&tls_default);
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    match &tls.ca_file {
        Some(path) if !tls.insecure_skip_verify => {
            let pem = read_pem("ca_file", path)?;
            for cert in certificates("ca_file", path, &pem)? {
                roots.add(cert.clone()).map_err(|e| {
                    HttpError::config(format!(
                        "tls.ca_file: `{path}` holds an unusable certificate"
                    ))
                    .with_source(e)
                })?;
                pinned.push(cert);
            }
        }
        _ => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
    if tls.insecure_skip_verify {
        tracing::warn!("tls.insecure_skip_verify is set: server certificates are not verified");
    }
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| {
                HttpError::config("tls: cannot build the certificate verifier").with_source(e)
            })?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier {
            webpki,
            pinned,
            insecure: tls.insecure_skip_verify,
        }));
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = certificates("cert_file", cert_path, &read_pem("cert_file", cert_path)?)?;
            let key =
                PrivateKeyDer::from_pem_slice(&read_pem("key_file", key_path)?).map_err(|e| {
                    HttpError::config(format!(
                        "tls.key_file: `{key_path}` holds no usable private key"
                    ))
                    .with_source(e)
                })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                HttpError::config("tls: the client certificate does not match its key")
                    .with_source(e)
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The web PKI verifier, plus pinning: a server certificate that is itself one of
/// the certificates in `ca_file` (a self-signed server certificate, as curl's
/// `--cacert` and Prometheus accept) is trusted if it names the host. rustls alone
/// refuses such a certificate (`CaUsedAsEndEntity`) when it is marked as a CA, as
/// `openssl req -x509` marks it by default. With `insecure` (`insecure_skip_verify`)
/// any certificate passes; the handshake's signatures are checked either way, so the
/// connection is at least to the key holder.
#[derive(Debug)]
struct ServerVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    insecure: bool,
}

impl rustls::client::danger::ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let verdict =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if verdict.is_err()
            && self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What is wrong with a refused server certificate, in an operator's words, if the
/// error (or one of its causes) is a certificate verification failure.
pub(crate) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    /// The rustls error `e` is, or wraps in (possibly nested) io::Errors, which hide
    /// their inner error from `source()`.
    fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner: &(dyn std::error::Error + 'static) =
            e.downcast_ref::<std::io::Error>()?.get_ref()?;
        rustls_error(inner)
    }
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error(e) {
            return Some(match problem {
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
                C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
                C::NotValidForName => "it is not valid for the host name".to_owned(),
                C::NotValidForNameContext { expected, presented } => format!(
                    "it is valid for {}, not for {}",
                    presented
                        .iter()
                        .map(|name| unquote(name))
                        .collect::<Vec<_>>()
                        .join(", "),
                    expected.to_str()
                ),
                C::UnknownIssuer => "its issuer is unknown: name the CA that signed it (or the certificate itself) in tls.ca_file".to_owned(),
                C::BadSignature => "its signature does not verify against the trusted CA".to_owned(),
                C::Revoked => "it was revoked".to_owned(),
                other => format!("{other:?}"),
            });
        }
        next = e.source();
    }
    None
}

/// `DnsName("example.com")`, as rustls lists presented names, becomes `example.com`.
fn unquote(name: &str) -> &str {
    match (name.find('"'), name.rfind('"')) {
        (Some(start), Some(end)) if end > start => &name[start + 1..end],
        _ => name,
    }
}
