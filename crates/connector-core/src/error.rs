use std::error::Error as StdError;
use std::fmt;

/// What the runner does after a failed tick.
///
/// The kind is data, not a type: runners and sinks match on it, and it survives
/// type erasure in the [`Registry`](crate::Registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The tick failed for a reason that may pass on its own (a timeout, a 503).
    /// The next scheduled tick runs normally.
    Transient,
    /// The tick failed and will likely fail again until the source changes (a 404,
    /// a body that is not exposition text). The connector keeps ticking and its
    /// status shows the error.
    Permanent,
    /// The configuration cannot work (an unknown key, an unresolvable secret).
    /// The connector is disabled until an operator fixes the cause and resumes it.
    Config,
}

impl ErrorKind {
    /// The lowercase name used in APIs, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a connector returns from [`validate_config`](crate::Connector::validate_config)
/// or [`tick`](crate::Connector::tick).
///
/// It carries its [`ErrorKind`], a message written for the operator (lowercase, no
/// trailing period) and, where there is one, the underlying error as its
/// [`source`](std::error::Error::source).
///
/// `{}` prints the message alone and `source()` returns the cause, so error reporters
/// (anyhow's `{:#}`, tracing) print each cause once; `{:#}` prints the whole chain
/// through [`ErrorChain`], which is what operators see in `last_error`.
///
/// ```
/// use connector_core::{ConnectorError, ErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
/// let err = ConnectorError::transient("scrape http://127.0.0.1:9100/metrics").with_source(io);
/// assert_eq!(err.kind(), ErrorKind::Transient);
/// assert_eq!(err.to_string(), "scrape http://127.0.0.1:9100/metrics");
/// assert_eq!(format!("{err:#}"), "scrape http://127.0.0.1:9100/metrics: read timed out");
/// ```
pub struct ConnectorError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl ConnectorError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A [`ErrorKind::Transient`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// A [`ErrorKind::Permanent`] error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// A [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Keeps `source` as the cause; `{:#}` prints its text (and its causes') after a colon.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Puts `context` in front of the message, keeping kind and source:
    /// `"token resolve"` turns `"environment variable X is not set"` into
    /// `"token resolve: environment variable X is not set"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What the runner does about this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the source's text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            ErrorChain(self).fmt(f)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// Prints an error and every cause behind it, each once, joined by `": "`.
///
/// A cause is left out when the text before it already ends with the cause's text,
/// since some libraries repeat their source in their own message.
///
/// ```
/// use connector_core::{ConnectorError, ErrorChain};
///
/// let inner = ConnectorError::permanent("bad gateway");
/// let outer = ConnectorError::transient("scrape http://h/").with_source(inner);
/// assert_eq!(ErrorChain(&outer).to_string(), "scrape http://h/: bad gateway");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let next = error.to_string();
            if !next.is_empty() && !text.ends_with(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = error.source();
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for ConnectorError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_prints_each_cause_once() {
        let err = ConnectorError::permanent("parse body").with_source(std::io::Error::other(
            "line 3, column 1 (byte 40): expected metric name",
        ));
        assert_eq!(err.to_string(), "parse body");
        assert_eq!(
            format!("{err:#}"),
            "parse body: line 3, column 1 (byte 40): expected metric name"
        );
        assert!(StdError::source(&err).is_some());
        assert_eq!(err.message(), "parse body");
        let outer = ConnectorError::transient("tick").with_source(err);
        assert_eq!(
            format!("{outer:#}"),
            "tick: parse body: line 3, column 1 (byte 40): expected metric name"
        );
    }

    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "request failed: {}", self.0)
        }
    }

    impl StdError for Repeats {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_its_parent_already_printed_is_left_out() {
        let err = ConnectorError::transient("scrape")
            .with_source(Repeats(std::io::Error::other("connection refused")));
        assert_eq!(
            format!("{err:#}"),
            "scrape: request failed: connection refused"
        );
    }

    #[test]
    fn context_prefixes_message() {
        let err = ConnectorError::config("environment variable `TOKEN` is not set")
            .context("token resolve");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.to_string(),
            "token resolve: environment variable `TOKEN` is not set"
        );
    }

    #[test]
    fn kind_names_are_stable() {
        assert_eq!(ErrorKind::Transient.as_str(), "transient");
        assert_eq!(ErrorKind::Permanent.to_string(), "permanent");
        assert_eq!(ErrorKind::Config.as_str(), "config");
    }
}
