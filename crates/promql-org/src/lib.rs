//! Holds PromQL to one org, the way prom-label-proxy does: every vector and
//! matrix selector gets `org_id="<org>"`, replacing any `org_id` matcher the caller
//! wrote. Functions that write `org_id` on their output (`label_replace`,
//! `count_values`) only relabel series that were selected inside the org, so no
//! selector can reach another org's data.
//!
//! Two paths give the same answer. The scan ([`confine_query_by_scan`]) rewrites
//! the caller's text in one pass over its tokens and answers only where it is sure
//! of every selector; otherwise the parse tree ([`confine_query_by_tree`],
//! `promql-parser`, printed, parsed again and checked) decides, and words the
//! error for a query that does not parse. Tests and the fuzz target
//! `promql_confine` hold the scan to the tree: where the scan answers,
//! `promql-parser` reads its output as the tree's output.

mod cache;
mod scan;
mod tree;

pub use cache::RewriteCache;
pub use tree::{confine_query_by_tree, confine_selector_by_tree};

/// The label every series of connectord carries, and the one a query is held to.
pub const ORG_LABEL: &str = "org_id";

/// A query or selector that cannot be confined: it does not parse, or is not what
/// the parameter takes. The message is what Prometheus would say after
/// `invalid parameter "<name>": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RewriteError {
    message: String,
}

impl RewriteError {
    fn new(message: impl Into<String>) -> Self {
        RewriteError {
            message: message.into(),
        }
    }
}

/// `query` with every selector held to `org`.
pub fn confine_query(query: &str, org: &str) -> Result<String, RewriteError> {
    match confine_query_by_scan(query, org) {
        Some(confined) => Ok(confined),
        None => confine_query_by_tree(query, org),
    }
}

/// A series selector (`match[]`), held to `org`: it must be a plain selector, as
/// Prometheus requires there.
pub fn confine_selector(selector: &str, org: &str) -> Result<String, RewriteError> {
    match confine_selector_by_scan(selector, org) {
        Some(confined) => Ok(confined),
        None => confine_selector_by_tree(selector, org),
    }
}

/// [`confine_query`] by scanning the text, or `None` where the scan is not sure of
/// every selector. Keeps the caller's spelling apart from the selectors.
pub fn confine_query_by_scan(query: &str, org: &str) -> Option<String> {
    scan::confine(query, org, scan::Shape::Query)
}

/// [`confine_selector`] by scanning the text, or `None` where the scan is not sure.
pub fn confine_selector_by_scan(selector: &str, org: &str) -> Option<String> {
    scan::confine(selector, org, scan::Shape::Selector)
}

/// Where the scan and the parse tree part for `text`, what they say; `None` where
/// they agree (or the scan leaves the text to the tree). They agree when the tree's
/// answer is what `promql-parser` reads in the scan's, or both refuse. The check
/// tests and the fuzz target `promql_confine` run on every input.
pub fn scan_disagreement(text: &str, org: &str) -> Option<String> {
    type ByTree = fn(&str, &str) -> Result<String, RewriteError>;
    let pairs: [(&str, Option<String>, ByTree); 2] = [
        (
            "query",
            confine_query_by_scan(text, org),
            confine_query_by_tree,
        ),
        (
            "selector",
            confine_selector_by_scan(text, org),
            confine_selector_by_tree,
        ),
    ];
    for (shape, scanned, by_tree) in pairs {
        let Some(scanned) = scanned else { continue };
        let reread = tree::parse_and_print(&scanned);
        match (by_tree(text, org), reread) {
            (Ok(tree), Ok(reread)) if tree == reread => {}
            (Err(_), Err(_)) => {}
            (tree, reread) => {
                return Some(format!(
                    "{shape} `{text}`: the scan gives `{scanned}`, which reads as {reread:?}; the tree gives {tree:?}"
                ));
            }
        }
    }
    None
}

/// The selector of everything in `org`: what `labels` and `label/<name>/values`
/// get when the caller gave no `match[]`.
pub fn org_selector(org: &str) -> String {
    format!("{{{ORG_LABEL}=\"{org}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_is_held_to_the_org() {
        for (query, expected) in [
            ("up", "up{org_id=\"a\"}"),
            ("up{org_id=\"b\"}", "up{org_id=\"a\"}"),
            (
                "up{org_id=~\"a|b\",job=\"x\"}",
                "up{job=\"x\",org_id=\"a\"}",
            ),
            ("{__name__=~\".+\"}", "{__name__=~\".+\",org_id=\"a\"}"),
            (
                "rate(x[5m]) or y offset 1h",
                "rate(x{org_id=\"a\"}[5m]) or y{org_id=\"a\"} offset 1h",
            ),
            (
                "max_over_time(sum(x)[10m:1m])",
                "max_over_time(sum(x{org_id=\"a\"})[10m:1m])",
            ),
            ("1 + 1", "1 + 1"),
            (
                "label_replace(x, \"org_id\", \"b\", \"\", \"\")",
                "label_replace(x{org_id=\"a\"}, \"org_id\", \"b\", \"\", \"\")",
            ),
        ] {
            assert_eq!(confine_query(query, "a").unwrap(), expected, "{query}");
        }
    }

    #[test]
    fn selectors_must_be_selectors_and_bad_queries_say_why() {
        assert_eq!(
            confine_selector("up{job=\"n\"}", "a").unwrap(),
            "up{job=\"n\",org_id=\"a\"}"
        );
        let err = confine_selector("sum(up)", "a").unwrap_err().to_string();
        assert!(err.contains("is not a series selector"), "{err}");
        assert!(confine_query("sum(", "a").is_err());
        assert!(confine_query("up{", "a").is_err());
        assert_eq!(org_selector("a"), "{org_id=\"a\"}");
    }
}
