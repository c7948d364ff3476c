use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to a secret, written `$env:NAME` in configuration.
///
/// Configs hold references, never values: the reference is checked when the config is
/// validated and resolved through a [`SecretSource`] at tick time, so a secret is never
/// stored resolved, never logged and never returned by an API. Serializing a reference
/// writes the reference back (`"$env:NAME"`), not the value.
///
/// ```
/// use connector_core::SecretRef;
///
/// let r: SecretRef = "$env:SCRAPE_TOKEN".parse().unwrap();
/// assert_eq!(r.to_string(), "$env:SCRAPE_TOKEN");
/// let err = "hunter2".parse::<SecretRef>().unwrap_err();
/// assert!(err.to_string().starts_with("invalid secret reference"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    env: String,
}

/// Why a string is not a [`SecretRef`].
///
/// The message quotes the rejected text only when it does not look like an
/// attempt to paste a secret value inline; otherwise it gives only its length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret reference {shown}: {reason}")]
pub struct SecretRefError {
    shown: String,
    reason: &'static str,
}

const ENV_PREFIX: &str = "$env:";

impl SecretRef {
    /// The environment variable this reference names.
    pub fn env_name(&self) -> &str {
        &self.env
    }
}

impl std::str::FromStr for SecretRef {
    type Err = SecretRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(name) = s.strip_prefix(ENV_PREFIX) else {
            // Without the prefix the text may be the secret itself: never echo it.
            let shown = if s.starts_with('$') {
                format!("`{s}`")
            } else {
                format!("({} characters, not shown)", s.chars().count())
            };
            return Err(SecretRefError {
                shown,
                reason: "expected `$env:NAME`, for example `$env:SCRAPE_TOKEN`",
            });
        };
        let mut chars = name.chars();
        let valid = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(SecretRefError {
                shown: format!("`{s}`"),
                reason: "the variable name must start with a letter or `_` and hold only ASCII letters, digits and `_`",
            });
        }
        Ok(SecretRef {
            env: name.to_owned(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ENV_PREFIX}{}", self.env)
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A resolved secret value. Its `Debug` and `Display` print `<redacted>`; read it
/// with [`Secret::expose`] at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a header, a connection string).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a [`SecretRef`] could not be resolved. Names the variable, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The variable is not set in the environment of the process.
    #[error("environment variable `{0}` is not set")]
    NotSet(String),
    /// The variable is set but is not valid UTF-8.
    #[error("environment variable `{0}` is not valid UTF-8")]
    NotUnicode(String),
}

impl From<SecretError> for crate::ConnectorError {
    fn from(err: SecretError) -> Self {
        crate::ConnectorError::config(err.to_string())
    }
}

/// Where secrets come from at tick time. The daemon uses [`EnvSecrets`]; tests use
/// [`MapSecrets`] so they need not change the process environment.
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// Looks up the value a reference points to.
    fn resolve(&self, secret: &SecretRef) -> Result<Secret, SecretError>;
}

/// Resolves `$env:NAME` from the process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn resolve(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        match std::env::var(secret.env_name()) {
            Ok(value) => Ok(Secret(value)),
            Err(std::env::VarError::NotPresent) => {
                Err(SecretError::NotSet(secret.env_name().to_owned()))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(SecretError::NotUnicode(secret.env_name().to_owned()))
            }
        }
    }
}

/// Resolves `$env:NAME` from a fixed map; for tests and embedding.
#[derive(Clone, Default)]
pub struct MapSecrets(HashMap<String, String>);

impl MapSecrets {
    /// An empty map: every reference fails to resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name = value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for MapSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretSource for MapSecrets {
    fn resolve(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        self.0
            .get(secret.env_name())
            .map(|v| Secret(v.clone()))
            .ok_or_else(|| SecretError::NotSet(secret.env_name().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_reference() {
        let r: SecretRef = "$env:_TOKEN_2".parse().unwrap();
        assert_eq!(r.env_name(), "_TOKEN_2");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"$env:_TOKEN_2\"");
    }

    #[test]
    fn rejects_malformed_references_without_echoing_values() {
        let err = "s3cr3t-value".parse::<SecretRef>().unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert_eq!(
            err,
            "invalid secret reference (12 characters, not shown): expected `$env:NAME`, for example `$env:SCRAPE_TOKEN`"
        );
        for bad in ["$env:", "$env:1ABC", "$env:A-B", "$vault:x"] {
            let err = bad.parse::<SecretRef>().unwrap_err().to_string();
            assert!(
                err.starts_with("invalid secret reference `"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn deserialize_reports_reason() {
        let err = serde_json::from_str::<SecretRef>("\"$env:\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid secret reference `$env:`"), "{err}");
    }

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
        let map = MapSecrets::new().with("T", "hunter2");
        assert!(!format!("{map:?}").contains("hunter2"));
    }

    #[test]
    fn resolution_errors_name_the_variable() {
        let r: SecretRef = "$env:CONNECTOR_CORE_TEST_SURELY_UNSET".parse().unwrap();
        assert_eq!(
            EnvSecrets.resolve(&r).unwrap_err().to_string(),
            "environment variable `CONNECTOR_CORE_TEST_SURELY_UNSET` is not set"
        );
        let map = MapSecrets::new().with("CONNECTOR_CORE_TEST_SURELY_UNSET", "v");
        assert_eq!(map.resolve(&r).unwrap().expose(), "v");
        let err: crate::ConnectorError = MapSecrets::new().resolve(&r).unwrap_err().into();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }
}
