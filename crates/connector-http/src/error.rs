use std::error::Error as StdError;
use std::fmt;

use connector_core::{ConnectorError, ErrorChain, ErrorKind};

/// Why a request, or the settings for one, failed.
///
/// Its [`kind`](HttpError::kind) is the connector error kind the failure maps to
/// (429, 5xx, timeouts and connection errors are `Transient`; other 4xx, redirects,
/// oversized or corrupt bodies are `Permanent`; unusable settings and unresolvable
/// secrets are `Config`). `{}` prints the message, `{:#}` the message and its cause
/// chain; `?` in a connector's `tick` turns it into a [`ConnectorError`] of that kind
/// with the cause kept.
#[derive(Debug)]
pub struct HttpError {
    kind: ErrorKind,
    message: String,
    status: Option<http::StatusCode>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl HttpError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HttpError {
            kind,
            message: message.into(),
            status: None,
            source: None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_status(mut self, status: http::StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What the runner should do about it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status of the last response, when the failure was an HTTP status.
    pub fn status(&self) -> Option<http::StatusCode> {
        self.status
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            ErrorChain(self).fmt(f)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl StdError for HttpError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<HttpError> for ConnectorError {
    fn from(mut err: HttpError) -> Self {
        let connector = ConnectorError::new(err.kind, std::mem::take(&mut err.message));
        match err.source {
            Some(source) => connector.with_source(source),
            None => connector,
        }
    }
}
