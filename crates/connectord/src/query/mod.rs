//! The Prometheus query API at `/metrics/api/v1/`: connectord holds no series of
//! its own, so it forwards each request to the backend that scrapes it (`[query]`),
//! with an org token's request held to its org (crate `promql-org`), and hands the
//! backend's answer back as it came (`proxy`).

pub(crate) mod proxy;

use serde::Deserialize;

/// `[query]`: the Prometheus-compatible backend that scrapes connectord and answers
/// the queries Grafana sends to `/metrics/api/v1/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The backend's base URL, `http://127.0.0.1:8428` (its API is `<url>/api/v1/`).
    pub url: String,
    /// `prometheus` or `victoriametrics`; VictoriaMetrics also gets
    /// `extra_label=org_id=<org>` on an org token's requests.
    #[serde(default)]
    pub kind: BackendKind,
    /// How long one forwarded request may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest answer passed on; a larger one is a 502.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

/// What kind of backend `[query] url` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Prometheus (2.x): the rewritten query alone holds a request to its org.
    #[default]
    Prometheus,
    /// VictoriaMetrics: `extra_label` holds it a second time, server-side.
    Victoriametrics,
}

/// Bounds of `[query] timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

/// Bounds of `[query] max_response_bytes`.
pub const MAX_RESPONSE_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=1 << 30;

fn default_timeout_ms() -> u64 {
    // Grafana's own data source timeout is 30 s; a longer backend answer would be
    // thrown away by it anyway.
    30_000
}

fn default_max_response_bytes() -> u64 {
    64 << 20
}

impl QueryConfig {
    /// Checks the URL and the bounds, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let url = self.url.trim_end_matches('/');
        let parsed: Result<axum::http::Uri, _> = url.parse();
        match parsed {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.query().is_none() => {}
            _ => {
                return Err(format!(
                    "query.url: `{}` is not an http(s) URL like \"http://127.0.0.1:9090\"",
                    self.url
                ));
            }
        }
        for (key, value, range) in [
            ("query.timeout_ms", self.timeout_ms, TIMEOUT_MS_RANGE),
            (
                "query.max_response_bytes",
                self.max_response_bytes,
                MAX_RESPONSE_BYTES_RANGE,
            ),
        ] {
            if !range.contains(&value) {
                return Err(format!(
                    "{key}: {value} is out of range, expected {} to {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(())
    }

    /// The backend's URL for `path` under `/api/v1/`.
    pub(crate) fn api_url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> QueryConfig {
        QueryConfig {
            url: url.to_owned(),
            kind: BackendKind::Prometheus,
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
        }
    }

    #[test]
    fn urls_and_bounds_are_checked() {
        assert!(config("http://127.0.0.1:8428").check().is_ok());
        assert_eq!(
            config("http://vm:8428/").api_url("query"),
            "http://vm:8428/api/v1/query"
        );
        for bad in ["127.0.0.1:8428", "ftp://x", "http://x/?a=1", ""] {
            let err = config(bad).check().unwrap_err();
            assert!(err.starts_with("query.url: "), "{err}");
        }
        let mut slow = config("http://x");
        slow.timeout_ms = 10;
        assert_eq!(
            slow.check().unwrap_err(),
            "query.timeout_ms: 10 is out of range, expected 100 to 600000"
        );
    }
}
