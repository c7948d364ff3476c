//! A discovered target's labels through Prometheus 2.42's `PopulateLabels`, and its
//! scrape URL as `Target.URL` builds it.

use std::collections::BTreeMap;

use crate::{Labels, Rule, process};

/// What a scrape job puts on every target before relabeling, when discovery did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeDefaults {
    /// `job`: the job's (discovery's) name.
    pub job: String,
    /// `__scheme__` (default `http`).
    pub scheme: String,
    /// `__metrics_path__` (default `/metrics`).
    pub metrics_path: String,
    /// The job's `params`: each becomes `__param_<name>`, overriding discovery.
    pub params: BTreeMap<String, String>,
}

impl ScrapeDefaults {
    /// Prometheus's defaults for a job called `job`.
    pub fn new(job: impl Into<String>) -> Self {
        ScrapeDefaults {
            job: job.into(),
            scheme: "http".to_owned(),
            metrics_path: "/metrics".to_owned(),
            params: BTreeMap::new(),
        }
    }
}

/// A target that passed relabeling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// Every label after relabeling, `__meta_*` removed, `instance` defaulted; the
    /// `__`-prefixed ones (`__address__`, `__scheme__`, `__param_*`, ...) still in.
    pub labels: Labels,
}

impl ScrapeTarget {
    /// The labels every sample of the target carries: those not starting with `__`.
    pub fn public_labels(&self) -> Labels {
        self.labels
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn get(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// `__scheme__://__address____metrics_path__?__param_*`, as Prometheus builds it:
    /// parameters sorted by name and query-escaped, the path percent-escaped.
    pub fn url(&self) -> String {
        let mut url = format!("{}://{}", self.get("__scheme__"), self.get("__address__"));
        let path = self.get("__metrics_path__");
        if !path.is_empty() && !path.starts_with('/') {
            url.push('/');
        }
        escape_into(&mut url, path, false);
        let params: Vec<(&str, &str)> = self
            .labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("__param_")?, v.as_str())))
            .collect();
        if !params.is_empty() {
            url.push('?');
            for (i, (name, value)) in params.into_iter().enumerate() {
                if i > 0 {
                    url.push('&');
                }
                escape_into(&mut url, name, true);
                url.push('=');
                escape_into(&mut url, value, true);
            }
        }
        url
    }
}

/// Go's `url.PathEscape`-for-paths and `url.QueryEscape`, byte for byte.
fn escape_into(out: &mut String, s: &str, query: bool) {
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!query
                && matches!(
                    b,
                    b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'@'
                ));
        if keep {
            out.push(char::from(b));
        } else if query && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// What became of one discovered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetOutcome {
    /// Kept: scrape it. `discovered` is the label set relabeling started from.
    Active {
        /// The target.
        target: ScrapeTarget,
        /// The labels before relabeling (Prometheus's `discoveredLabels`).
        discovered: Labels,
    },
    /// A `keep`/`drop` rule dropped it.
    Dropped {
        /// The labels before relabeling.
        discovered: Labels,
    },
    /// Relabeling left it unusable (no address, a bad scheme, a path in the address).
    Invalid {
        /// The labels before relabeling.
        discovered: Labels,
        /// Prometheus's reason.
        reason: String,
    },
}

/// Go's `net.SplitHostPort` succeeding (the port may be empty).
fn splits_host_port(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let after = &rest[end + 1..];
        return after.starts_with(':')
            && !after[1..].contains([':', '[', ']'])
            && !rest[..end].contains(['[', ']']);
    }
    match s.rfind(':') {
        None => false,
        Some(i) => !s[..i].contains([':', '[', ']']) && !s[i + 1..].contains(['[', ']']),
    }
}

/// Prometheus's `PopulateLabels`: `discovered` is a target's labels as discovery gave
/// them (`__address__`, the group's labels, `__meta_*`).
pub fn populate_target(
    discovered: &Labels,
    defaults: &ScrapeDefaults,
    rules: &[Rule],
) -> TargetOutcome {
    let mut labels = discovered.clone();
    for (name, value) in [
        ("job", &defaults.job),
        ("__metrics_path__", &defaults.metrics_path),
        ("__scheme__", &defaults.scheme),
    ] {
        if labels.get(name).is_none_or(String::is_empty) {
            labels.insert(name.to_owned(), value.clone());
        }
    }
    for (name, value) in &defaults.params {
        labels.insert(format!("__param_{name}"), value.clone());
    }
    labels.retain(|_, v| !v.is_empty());
    let pre_relabel = labels.clone();
    if !process(&mut labels, rules) {
        return TargetOutcome::Dropped {
            discovered: pre_relabel,
        };
    }
    let invalid = |reason: String| TargetOutcome::Invalid {
        discovered: pre_relabel.clone(),
        reason,
    };
    let mut address = labels.get("__address__").cloned().unwrap_or_default();
    if address.is_empty() {
        return invalid("no address".to_owned());
    }
    if !splits_host_port(&address) && splits_host_port(&format!("{address}:1234")) {
        match labels.get("__scheme__").map_or("", String::as_str) {
            "http" | "" => address.push_str(":80"),
            "https" => address.push_str(":443"),
            _ => return invalid(format!("invalid scheme: \"{}\"", defaults.scheme)),
        }
        labels.insert("__address__".to_owned(), address.clone());
    }
    if address.contains('/') {
        return invalid(format!("\"{address}\" is not a valid hostname"));
    }
    labels.retain(|name, _| !name.starts_with("__meta_"));
    if labels.get("instance").is_none_or(String::is_empty) {
        labels.insert("instance".to_owned(), address);
    }
    TargetOutcome::Active {
        target: ScrapeTarget { labels },
        discovered: pre_relabel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_labels as labels;

    #[test]
    fn defaults_port_instance_and_url() {
        let mut defaults = ScrapeDefaults::new("node");
        defaults.params.insert("module".into(), "http 2xx".into());
        let discovered = labels(&[
            ("__address__", "host"),
            ("__meta_filepath", "/f.json"),
            ("env", "prod"),
        ]);
        let TargetOutcome::Active { target, discovered } =
            populate_target(&discovered, &defaults, &[])
        else {
            panic!("not active");
        };
        assert_eq!(discovered["job"], "node");
        assert_eq!(discovered["__param_module"], "http 2xx");
        assert_eq!(
            target.public_labels(),
            labels(&[("env", "prod"), ("instance", "host:80"), ("job", "node")])
        );
        assert_eq!(target.url(), "http://host:80/metrics?module=http+2xx");
    }

    #[test]
    fn go_host_port_rules() {
        assert!(splits_host_port("a:1"));
        assert!(splits_host_port("a:"));
        assert!(splits_host_port("[::1]:80"));
        assert!(!splits_host_port("::1"));
        assert!(!splits_host_port("[::1]"));
        assert!(!splits_host_port("a"));
        let t = |addr: &str, scheme: &str| {
            let mut d = ScrapeDefaults::new("j");
            d.scheme = scheme.into();
            populate_target(&labels(&[("__address__", addr)]), &d, &[])
        };
        assert!(
            matches!(t("[::1]", "https"), TargetOutcome::Active { target, .. } if target.labels["instance"] == "[::1]:443")
        );
        assert!(
            matches!(t("a/b", "http"), TargetOutcome::Invalid { reason, .. } if reason == "\"a/b:80\" is not a valid hostname")
        );
        assert!(
            matches!(t("a", "ftp"), TargetOutcome::Invalid { reason, .. } if reason == "invalid scheme: \"ftp\"")
        );
        assert!(
            matches!(t("", "http"), TargetOutcome::Invalid { reason, .. } if reason == "no address")
        );
    }

    #[test]
    fn url_escapes_like_go() {
        let target = ScrapeTarget {
            labels: labels(&[
                ("__scheme__", "https"),
                ("__address__", "h:1"),
                ("__metrics_path__", "probe path/x?y"),
                ("__param_b", "1&2"),
                ("__param_a", "é"),
            ]),
        };
        assert_eq!(
            target.url(),
            "https://h:1/probe%20path/x%3Fy?a=%C3%A9&b=1%262"
        );
    }
}
