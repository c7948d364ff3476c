//! The Prometheus connector's configuration.
//!
//! ```json
//! { "endpoint": "http://node-exporter:9100/metrics", "auth": { "type": "none" }, "timeout_ms": 5000 }
//! ```

use connector_core::{ConnectorError, check_range, config_from_json};
pub use connector_http::{Auth, TlsConfig};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bounds of `timeout_ms`, inclusive.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// `timeout_ms` when the config leaves it out.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// `body_size_limit_bytes` when the config leaves it out: 64 MiB.
pub const DEFAULT_BODY_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Bounds of `body_size_limit_bytes`: at most 1 GiB.
pub const BODY_SIZE_LIMIT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1..=1024 * 1024 * 1024;

/// Bounds of `sample_limit` when set.
pub const SAMPLE_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000_000;

/// `label_limit` when the config leaves it out: labels on one sample, the metric
/// name not counted. Real exporters stay far below; Mimir's default is 30.
pub const DEFAULT_LABEL_LIMIT: u64 = 256;

/// Bounds of `label_limit`.
pub const LABEL_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;

/// `label_name_length_limit` when the config leaves it out: 1 KiB.
pub const DEFAULT_LABEL_NAME_LENGTH_LIMIT: u64 = 1024;

/// Bounds of `label_name_length_limit`.
pub const LABEL_NAME_LENGTH_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=65_536;

/// `label_value_length_limit` when the config leaves it out: 64 KiB.
pub const DEFAULT_LABEL_VALUE_LENGTH_LIMIT: u64 = 64 * 1024;

/// Bounds of `label_value_length_limit`.
pub const LABEL_VALUE_LENGTH_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=16 * 1024 * 1024;

/// A validated Prometheus connector config. Build it with [`PrometheusConfig::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The `http://` or `https://` URL to scrape.
    pub endpoint: String,
    /// How to authenticate; none by default.
    #[serde(default)]
    pub auth: Auth,
    /// Per-request timeout in milliseconds, within [`TIMEOUT_MS_RANGE`].
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest body accepted, before and after gzip decoding; a larger one fails
    /// the tick as `Permanent`. 64 MiB by default.
    #[serde(default = "default_body_size_limit_bytes")]
    pub body_size_limit_bytes: u64,
    /// The most samples one scrape may return (as Prometheus's `sample_limit`); a
    /// scrape with more fails as `Permanent` and commits nothing. No limit by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u64>,
    /// The most labels one sample may carry, the metric name not counted (as
    /// Prometheus's `label_limit`); more fails the scrape as `Permanent`. 256 by default.
    #[serde(default = "default_label_limit")]
    pub label_limit: u64,
    /// The longest label name, in bytes (Prometheus's `label_name_length_limit`).
    /// 1 KiB by default.
    #[serde(default = "default_label_name_length_limit")]
    pub label_name_length_limit: u64,
    /// The longest label value, in bytes after unescaping (Prometheus's
    /// `label_value_length_limit`). 64 KiB by default.
    #[serde(default = "default_label_value_length_limit")]
    pub label_value_length_limit: u64,
    /// TLS settings for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Parse in strict mode ([`crate::exposition::Parser::strict`]): a body that
    /// breaks a family-level rule of its format (bucket order, counter values,
    /// metadata placement, …) fails the tick as `Permanent`. Off by default, because
    /// real exporters break some of these rules and their data is still useful.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Labels added to every row, as Prometheus adds a target's labels (`job`,
    /// `instance`, ...) to every sample it scrapes. None by default: rows carry the
    /// exposition's labels only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Who wins when a scraped label has the name of one of `labels`: false (the
    /// default, as Prometheus) keeps `labels` and renames the scraped one
    /// `exported_<name>`; true keeps the scraped one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honor_labels: bool,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_body_size_limit_bytes() -> u64 {
    DEFAULT_BODY_SIZE_LIMIT_BYTES
}

fn default_label_limit() -> u64 {
    DEFAULT_LABEL_LIMIT
}

fn default_label_name_length_limit() -> u64 {
    DEFAULT_LABEL_NAME_LENGTH_LIMIT
}

fn default_label_value_length_limit() -> u64 {
    DEFAULT_LABEL_VALUE_LENGTH_LIMIT
}

impl PrometheusConfig {
    /// Deserializes and checks a raw config. Pure: no I/O and no environment lookups.
    ///
    /// Unknown keys fail with serde's message verbatim; other errors name the key.
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, ConnectorError> {
        let config: PrometheusConfig = config_from_json(raw)?;
        connector_http::check_endpoint("endpoint", &config.endpoint)?;
        check_range("timeout_ms", config.timeout_ms, TIMEOUT_MS_RANGE)?;
        check_range(
            "body_size_limit_bytes",
            config.body_size_limit_bytes,
            BODY_SIZE_LIMIT_BYTES_RANGE,
        )?;
        if let Some(limit) = config.sample_limit {
            check_range("sample_limit", limit, SAMPLE_LIMIT_RANGE)?;
        }
        check_range("label_limit", config.label_limit, LABEL_LIMIT_RANGE)?;
        check_range(
            "label_name_length_limit",
            config.label_name_length_limit,
            LABEL_NAME_LENGTH_LIMIT_RANGE,
        )?;
        check_range(
            "label_value_length_limit",
            config.label_value_length_limit,
            LABEL_VALUE_LENGTH_LIMIT_RANGE,
        )?;
        if let Some(tls) = &config.tls {
            tls.validate("tls")?;
        }
        check_target_labels(&config)?;
        Ok(config)
    }
}

/// Target labels are label names Prometheus would accept on a series, not reserved
/// (`__*`), with a value, and no more than a sample may carry.
fn check_target_labels(config: &PrometheusConfig) -> Result<(), ConnectorError> {
    for (name, value) in &config.labels {
        let problem = if !relabel::is_valid_label_name(name) {
            "is not a valid label name (letters, digits and `_`, not starting with a digit)"
        } else if name.starts_with("__") {
            "starts with `__`, which Prometheus reserves for internal labels"
        } else if value.is_empty() {
            "has an empty value, which Prometheus reads as no label; leave it out"
        } else {
            continue;
        };
        return Err(ConnectorError::config(format!(
            "labels: `{name}` {problem}"
        )));
    }
    if config.labels.len() as u64 > config.label_limit {
        return Err(ConnectorError::config(format!(
            "labels: {} labels, more than label_limit ({})",
            config.labels.len(),
            config.label_limit
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use connector_core::ErrorKind;
    use serde_json::json;

    use super::*;

    fn error_of(raw: serde_json::Value) -> String {
        let err = PrometheusConfig::from_json(&raw).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        format!("{err:#}")
    }

    #[test]
    fn brief_example_is_valid() {
        let config = PrometheusConfig::from_json(&json!({
            "endpoint": "http://node-exporter:9100/metrics",
            "auth": { "type": "none" },
            "timeout_ms": 5000
        }))
        .unwrap();
        assert_eq!(config.auth, Auth::None);
        assert_eq!(config.timeout_ms, 5000);
    }

    #[test]
    fn defaults_and_auth_shapes() {
        let config =
            PrometheusConfig::from_json(&json!({"endpoint": "https://h/metrics"})).unwrap();
        assert_eq!(
            (config.auth, config.timeout_ms),
            (Auth::None, DEFAULT_TIMEOUT_MS)
        );
        let config = PrometheusConfig::from_json(&json!({
            "endpoint": "https://h/metrics",
            "auth": {"type": "bearer", "token_ref": "$env:TOKEN"}
        }))
        .unwrap();
        assert_eq!(
            config.auth,
            Auth::Bearer {
                token_ref: "$env:TOKEN".parse().unwrap()
            }
        );
        let config = PrometheusConfig::from_json(&json!({
            "endpoint": "http://h:1/m",
            "auth": {"type": "basic", "username": "u", "password_ref": "$env:PW"}
        }))
        .unwrap();
        assert!(matches!(config.auth, Auth::Basic { ref username, .. } if username == "u"));
    }

    #[test]
    fn target_labels_are_checked() {
        let with = |labels: serde_json::Value| json!({"endpoint": "http://h/m", "labels": labels});
        assert_eq!(
            error_of(with(json!({"1x": "a"}))),
            "labels: `1x` is not a valid label name (letters, digits and `_`, not starting with a digit)"
        );
        assert_eq!(
            error_of(with(json!({"__address__": "a"}))),
            "labels: `__address__` starts with `__`, which Prometheus reserves for internal labels"
        );
        assert_eq!(
            error_of(with(json!({"job": ""}))),
            "labels: `job` has an empty value, which Prometheus reads as no label; leave it out"
        );
        let mut raw = with(json!({"a": "1", "b": "2"}));
        raw["label_limit"] = json!(1);
        assert_eq!(error_of(raw), "labels: 2 labels, more than label_limit (1)");
        let config = PrometheusConfig::from_json(&with(json!({"job": "node"}))).unwrap();
        assert_eq!(config.labels["job"], "node");
        assert!(!config.honor_labels);
    }

    #[test]
    fn bad_scheme() {
        assert_eq!(
            error_of(json!({"endpoint": "ftp://h/metrics"})),
            "endpoint: scheme `ftp` is not supported, use http:// or https://"
        );
        assert_eq!(
            error_of(json!({"endpoint": "node-exporter:9100/metrics"})),
            "endpoint: `node-exporter:9100/metrics` has no scheme, use http:// or https://"
        );
        assert_eq!(
            error_of(json!({"endpoint": "/metrics"})),
            "endpoint: `/metrics` has no scheme, use http:// or https://"
        );
        assert!(
            error_of(json!({"endpoint": "http://bad host/"}))
                .starts_with("endpoint: `http://bad host/` is not a valid URL")
        );
    }

    #[test]
    fn unknown_key_is_serde_text_verbatim() {
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "timeout": 5})),
            "unknown field `timeout`, expected one of `endpoint`, `auth`, `timeout_ms`, `body_size_limit_bytes`, `sample_limit`, `label_limit`, `label_name_length_limit`, `label_value_length_limit`, `tls`, `strict`, `labels`, `honor_labels`"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "auth": {"type": "bearer", "token": "x"}})),
            "unknown field `token`, expected `token_ref`"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "auth": {"type": "digest"}})),
            "auth.type: unknown variant `digest`, expected one of `none`, `bearer`, `basic`"
        );
        assert_eq!(error_of(json!({})), "missing field `endpoint`");
    }

    #[test]
    fn optional_limits_and_tls() {
        let config = PrometheusConfig::from_json(&json!({"endpoint": "http://h/"})).unwrap();
        assert_eq!(config.body_size_limit_bytes, 64 * 1024 * 1024);
        assert_eq!((config.sample_limit, &config.tls), (None, &None));
        assert!(!config.strict);
        assert_eq!(
            serde_json::to_value(&config).unwrap().get("strict"),
            None,
            "a default config stores no `strict` key"
        );
        let config = PrometheusConfig::from_json(&json!({
            "endpoint": "https://h/", "body_size_limit_bytes": 1024, "sample_limit": 10,
            "tls": {"ca_file": "/etc/ca.pem"}, "strict": true
        }))
        .unwrap();
        assert_eq!(
            (
                config.body_size_limit_bytes,
                config.sample_limit,
                config.strict
            ),
            (1024, Some(10), true)
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "strict": "yes"})),
            "strict: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "sample_limit": 0})),
            "sample_limit: 0 is out of range, expected 1 to 1000000000"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "body_size_limit_bytes": 0})),
            "body_size_limit_bytes: 0 is out of range, expected 1 to 1073741824"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "body_size_limit_bytes": u64::MAX})),
            "body_size_limit_bytes: 18446744073709551615 is out of range, expected 1 to 1073741824"
        );
        assert_eq!(
            (
                config.label_limit,
                config.label_name_length_limit,
                config.label_value_length_limit
            ),
            (256, 1024, 65536)
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "label_limit": 0})),
            "label_limit: 0 is out of range, expected 1 to 10000"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "label_value_length_limit": 1u64 << 40})),
            "label_value_length_limit: 1099511627776 is out of range, expected 1 to 16777216"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "tls": {"ca": "x"}})),
            "tls: unknown field `ca`, expected one of `ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://user:pw@h/"})),
            "endpoint: credentials in the URL are not allowed, use `auth` with a `$env:` reference"
        );
    }

    #[test]
    fn timeout_bounds() {
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "timeout_ms": 99})),
            "timeout_ms: 99 is out of range, expected 100 to 60000"
        );
        assert_eq!(
            error_of(json!({"endpoint": "http://h/", "timeout_ms": 60001})),
            "timeout_ms: 60001 is out of range, expected 100 to 60000"
        );
        for ok in [100, 60_000] {
            PrometheusConfig::from_json(&json!({"endpoint": "http://h/", "timeout_ms": ok}))
                .unwrap();
        }
        assert!(
            error_of(json!({"endpoint": "http://h/", "timeout_ms": -1}))
                .starts_with("timeout_ms: invalid value: integer `-1`")
        );
    }

    #[test]
    fn malformed_secret_reference() {
        let err = error_of(json!({
            "endpoint": "http://h/",
            "auth": {"type": "bearer", "token_ref": "my-plain-token"}
        }));
        assert_eq!(
            err,
            "auth: token_ref: invalid secret reference (14 characters, not shown): expected `$env:NAME`, for example `$env:SCRAPE_TOKEN`"
        );
        let err = error_of(json!({
            "endpoint": "http://h/",
            "auth": {"type": "basic", "username": "u", "password_ref": "$env:1X"}
        }));
        assert!(
            err.starts_with("auth: password_ref: invalid secret reference `$env:1X`"),
            "{err}"
        );
    }
}
