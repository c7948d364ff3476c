//! Prometheus's HTTP SD: GET the URL, expect `application/json`, read a list of
//! target groups. Every target gets `__meta_url`.

use connector_core::TickContext;
use connector_http::HttpClient;
use connector_http::http::header::{ACCEPT, HeaderName};
use relabel::Labels;

use crate::targets::TargetGroup;

/// The largest SD response read: 64 MiB holds far more than 100,000 targets.
pub const MAX_BODY_BYTES: u64 = 64 << 20;

/// `timeout_ms` when the spec leaves it out.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Prometheus's content-type rule for HTTP SD responses.
fn is_json(content_type: &str) -> bool {
    let lower = content_type.trim().to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("application/json") else {
        return false;
    };
    let rest = rest.trim_start();
    rest.is_empty()
        || rest
            .strip_prefix(';')
            .map(str::trim_start)
            .and_then(|p| p.strip_prefix("charset="))
            .is_some_and(|c| c == "utf-8" || c == "\"utf-8\"")
}

/// Reads the target groups at `spec.url`; an error says what went wrong in the
/// operator's words (the status, the content type, the line and column of bad JSON).
pub async fn discover(
    client: &HttpClient,
    ctx: &TickContext,
    spec: &crate::DiscoverySpec,
    refresh_ms: u64,
) -> Result<Vec<Labels>, String> {
    let url = spec.url.as_deref().unwrap_or_default();
    let auth = spec.auth.clone().unwrap_or_default();
    let response = client
        .get(url)
        .action("discover")
        .header(ACCEPT, "application/json")
        .header(
            HeaderName::from_static("x-prometheus-refresh-interval-seconds"),
            (refresh_ms / 1000).max(1).to_string(),
        )
        .auth(&auth)
        .tls(spec.tls.as_ref())
        .timeout_ms(spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
        .body_limit(MAX_BODY_BYTES)
        .send(ctx)
        .await
        .map_err(|e| ctx.redact(&format!("{e:#}")))?;
    let content_type = response.content_type().unwrap_or_default();
    if !is_json(content_type) {
        return Err(format!(
            "{url} answered with content type `{content_type}`; HTTP SD needs application/json"
        ));
    }
    parse(response.body(), url)
}

/// The target groups of an HTTP SD body, each target with `__meta_url`.
pub fn parse(body: &[u8], url: &str) -> Result<Vec<Labels>, String> {
    let groups: Vec<TargetGroup> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{url}: line {}, column {}: {}",
            e.line(),
            e.column(),
            connector_core::ErrorChain(&e)
        )
    })?;
    let mut targets = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        group
            .check()
            .map_err(|e| format!("{url}: target group {i}: {e}"))?;
        targets.extend(group.discovered(("__meta_url", url)));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_as_prometheus_accepts_them() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=\"utf-8\"",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json; charset=latin1",
            "application/jsonx",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let err = parse(
            b"[\n {\"targets\": [\"a:1\"],\n  \"labels\": {\"a\": 1}}]",
            "http://sd",
        )
        .unwrap_err();
        assert!(err.starts_with("http://sd: line 3, column"), "{err}");
        let err = parse(
            br#"[{"targets": ["a:1"], "labels": {"1a": "x"}}]"#,
            "http://sd",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "http://sd: target group 0: \"1a\" is not a valid label name"
        );
    }
}
