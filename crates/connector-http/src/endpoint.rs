use connector_core::ConnectorError;

/// Checks that `value`, the config key `key`, is an `http://` or `https://` URL with a
/// host and no credentials. Pure: call it from `validate_config`.
///
/// The scheme is checked before the URL is parsed, so `file:///etc/passwd` is told
/// that its scheme is not supported rather than that it is not a valid URL.
///
/// ```
/// use connector_http::check_endpoint;
///
/// assert!(check_endpoint("endpoint", "https://api.example.com/v1/readings").is_ok());
/// let err = check_endpoint("endpoint", "file:///etc/passwd").unwrap_err();
/// assert_eq!(err.to_string(), "endpoint: scheme `file` is not supported, use http:// or https://");
/// ```
pub fn check_endpoint(key: &str, value: &str) -> Result<(), ConnectorError> {
    match scheme_of(value) {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(s) => {
            return Err(ConnectorError::config(format!(
                "{key}: scheme `{s}` is not supported, use http:// or https://"
            )));
        }
        None => {
            return Err(ConnectorError::config(format!(
                "{key}: `{value}` has no scheme, use http:// or https://"
            )));
        }
    }
    let uri: http::Uri = value.parse().map_err(|e| {
        ConnectorError::config(format!("{key}: `{value}` is not a valid URL")).with_source(e)
    })?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConnectorError::config(format!(
            "{key}: `{value}` has no host"
        )));
    }
    let authority = uri.authority().map_or("", http::uri::Authority::as_str);
    if authority.contains('@') {
        // Credentials in a URL end up in logs and API responses; secrets belong in `auth`.
        return Err(ConnectorError::config(format!(
            "{key}: credentials in the URL are not allowed, use `auth` with a `$env:` reference"
        )));
    }
    Ok(())
}

/// The scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`) before `:`,
/// unless what follows the colon is a port (`host:9100/metrics` has no scheme).
fn scheme_of(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(':')?;
    let mut bytes = scheme.bytes();
    let well_formed = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let port_follows = !rest.starts_with("//") && rest.starts_with(|c: char| c.is_ascii_digit());
    (well_formed && !port_follows).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(value: &str) -> String {
        format!("{:#}", check_endpoint("endpoint", value).unwrap_err())
    }

    #[test]
    fn schemes() {
        for ok in ["http://h/", "https://h:9100/metrics", "HTTP://h/x?y=1"] {
            assert!(check_endpoint("endpoint", ok).is_ok(), "{ok}");
        }
        assert_eq!(
            error("ftp://h/metrics"),
            "endpoint: scheme `ftp` is not supported, use http:// or https://"
        );
        assert_eq!(
            error("file:///x"),
            "endpoint: scheme `file` is not supported, use http:// or https://"
        );
        assert_eq!(
            error("/metrics"),
            "endpoint: `/metrics` has no scheme, use http:// or https://"
        );
        assert_eq!(
            error("node-exporter:9100/metrics"),
            "endpoint: `node-exporter:9100/metrics` has no scheme, use http:// or https://"
        );
        assert_eq!(
            error("mailto:ops@example.com"),
            "endpoint: scheme `mailto` is not supported, use http:// or https://"
        );
        assert_eq!(
            error("127.0.0.1:9100/metrics"),
            "endpoint: `127.0.0.1:9100/metrics` has no scheme, use http:// or https://"
        );
    }

    #[test]
    fn hosts_and_credentials() {
        assert!(
            error("http://bad host/")
                .starts_with("endpoint: `http://bad host/` is not a valid URL")
        );
        assert_eq!(
            error("http://user:pw@h/"),
            "endpoint: credentials in the URL are not allowed, use `auth` with a `$env:` reference"
        );
    }
}
