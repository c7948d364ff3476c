//! Holds PromQL to one org, the way prom-label-proxy does: every vector and
//! matrix selector of a parsed query gets `org_id="<org>"`, replacing any `org_id`
//! matcher the caller wrote, and the tree is printed back. Functions that write
//! `org_id` on their output (`label_replace`, `count_values`) only relabel series
//! that were selected inside the org, so no selector can reach another org's data.
//!
//! The printed query is parsed again and checked, so a printer that dropped or
//! reshaped a matcher would fail closed with an error rather than send a query
//! that reaches past the org.

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{self, Expr, VectorSelector};

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

/// `query` with every selector held to `org`, printed back.
pub fn confine_query(query: &str, org: &str) -> Result<String, RewriteError> {
    let mut expr = parse(query)?;
    confine_expr(&mut expr, org)?;
    let printed = expr.to_string();
    verify(&printed, org, false)?;
    Ok(printed)
}

/// A series selector (`match[]`), held to `org`: it must be a plain selector, as
/// Prometheus requires there.
pub fn confine_selector(selector: &str, org: &str) -> Result<String, RewriteError> {
    let mut expr = parse(selector)?;
    match &mut expr {
        Expr::VectorSelector(vs) => confine_selector_in(vs, org),
        _ => {
            return Err(RewriteError::new(format!(
                "`{selector}` is not a series selector (like `up{{job=\"node\"}}`)"
            )));
        }
    }
    let printed = expr.to_string();
    verify(&printed, org, true)?;
    Ok(printed)
}

/// Rewritten queries and selectors by org and text. Parsing is the rewrite's whole
/// cost (`cargo bench -p benches --bench query`: 2.0 ms for a 20-selector query,
/// half of it compiling the regexes of `=~` matchers, parsed twice), and Grafana
/// sends a dashboard's queries again at every refresh with only the times changed.
#[derive(Debug)]
pub struct RewriteCache {
    entries: std::sync::Mutex<std::collections::HashMap<(Kind, String, String), String>>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Query,
    Selector,
}

impl RewriteCache {
    /// A cache of at most `capacity` rewrites; when full it starts over, which
    /// keeps it bounded without bookkeeping on every hit.
    pub fn new(capacity: usize) -> Self {
        RewriteCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity,
        }
    }

    /// [`confine_query`], remembered.
    pub fn query(&self, query: &str, org: &str) -> Result<String, RewriteError> {
        self.get_or(Kind::Query, query, org, confine_query)
    }

    /// [`confine_selector`], remembered.
    pub fn selector(&self, selector: &str, org: &str) -> Result<String, RewriteError> {
        self.get_or(Kind::Selector, selector, org, confine_selector)
    }

    fn get_or(
        &self,
        kind: Kind,
        text: &str,
        org: &str,
        rewrite: fn(&str, &str) -> Result<String, RewriteError>,
    ) -> Result<String, RewriteError> {
        let key = (kind, org.to_owned(), text.to_owned());
        let lock = || {
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(hit) = lock().get(&key) {
            return Ok(hit.clone());
        }
        let rewritten = rewrite(text, org)?;
        let mut entries = lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, rewritten.clone());
        Ok(rewritten)
    }
}

/// The selector of everything in `org`: what `labels` and `label/<name>/values`
/// get when the caller gave no `match[]`.
pub fn org_selector(org: &str) -> String {
    format!("{{{ORG_LABEL}=\"{org}\"}}")
}

/// Parses `text`; a panic inside the parser is an error like any other, so no query
/// an API user sends can take down the task serving it.
fn parse(text: &str) -> Result<Expr, RewriteError> {
    std::panic::catch_unwind(|| parser::parse(text))
        .unwrap_or_else(|_| Err("the PromQL parser failed on this query".to_owned()))
        .map_err(RewriteError::new)
}

fn confine_expr(expr: &mut Expr, org: &str) -> Result<(), RewriteError> {
    match expr {
        Expr::VectorSelector(vs) => confine_selector_in(vs, org),
        Expr::MatrixSelector(ms) => confine_selector_in(&mut ms.vs, org),
        Expr::Aggregate(agg) => {
            confine_expr(&mut agg.expr, org)?;
            if let Some(param) = &mut agg.param {
                confine_expr(param, org)?;
            }
        }
        Expr::Unary(unary) => confine_expr(&mut unary.expr, org)?,
        Expr::Binary(binary) => {
            confine_expr(&mut binary.lhs, org)?;
            confine_expr(&mut binary.rhs, org)?;
        }
        Expr::Paren(paren) => confine_expr(&mut paren.expr, org)?,
        Expr::Subquery(sub) => confine_expr(&mut sub.expr, org)?,
        Expr::Call(call) => {
            for arg in &mut call.args.args {
                confine_expr(arg, org)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => {
            return Err(RewriteError::new(
                "the query holds an expression connectord cannot check",
            ));
        }
    }
    Ok(())
}

fn org_matcher(org: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, ORG_LABEL, org)
}

/// Replaces every `org_id` matcher, in the plain list and in each `or` group, with
/// the org's own.
fn confine_selector_in(vs: &mut VectorSelector, org: &str) {
    let Matchers {
        matchers,
        or_matchers,
    } = &mut vs.matchers;
    matchers.retain(|m| m.name != ORG_LABEL);
    for group in or_matchers.iter_mut() {
        group.retain(|m| m.name != ORG_LABEL);
        group.push(org_matcher(org));
    }
    // With `or` groups the plain list is empty and each group stands alone.
    if or_matchers.is_empty() {
        matchers.push(org_matcher(org));
    }
}

/// Parses the printed query again: every selector must hold exactly the org's
/// matcher (in each `or` group), or the query is refused.
fn verify(printed: &str, org: &str, selector_only: bool) -> Result<(), RewriteError> {
    let expr = parse(printed).map_err(|e| {
        RewriteError::new(format!(
            "the query could not be held to org `{org}`: its rewritten form `{printed}` does not parse ({e})"
        ))
    })?;
    if selector_only && !matches!(expr, Expr::VectorSelector(_)) {
        return Err(RewriteError::new(
            "the rewritten selector is not a selector",
        ));
    }
    let mut selectors = Vec::new();
    collect_selectors(&expr, &mut selectors);
    let held = |group: &[Matcher]| {
        let mut org_matchers = group.iter().filter(|m| m.name == ORG_LABEL);
        matches!(
            (org_matchers.next(), org_matchers.next()),
            (Some(m), None) if m.op == MatchOp::Equal && m.value == org
        )
    };
    for vs in selectors {
        let m = &vs.matchers;
        let ok = if m.or_matchers.is_empty() {
            held(&m.matchers)
        } else {
            m.matchers.is_empty() && m.or_matchers.iter().all(|g| held(g))
        };
        if !ok {
            return Err(RewriteError::new(format!(
                "the query could not be held to org `{org}`: `{vs}` escaped the rewrite"
            )));
        }
    }
    Ok(())
}

fn collect_selectors<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Aggregate(agg) => {
            collect_selectors(&agg.expr, out);
            if let Some(param) = &agg.param {
                collect_selectors(param, out);
            }
        }
        Expr::Unary(unary) => collect_selectors(&unary.expr, out),
        Expr::Binary(binary) => {
            collect_selectors(&binary.lhs, out);
            collect_selectors(&binary.rhs, out);
        }
        Expr::Paren(paren) => collect_selectors(&paren.expr, out),
        Expr::Subquery(sub) => collect_selectors(&sub.expr, out),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_selectors(arg, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
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
    fn the_cache_answers_as_the_rewrite_does_and_stays_bounded() {
        let cache = RewriteCache::new(2);
        for _ in 0..2 {
            assert_eq!(cache.query("up", "a").unwrap(), "up{org_id=\"a\"}");
            assert_eq!(cache.query("up", "b").unwrap(), "up{org_id=\"b\"}");
        }
        assert_eq!(cache.selector("up", "a").unwrap(), "up{org_id=\"a\"}");
        assert!(cache.selector("sum(up)", "a").is_err());
        assert!(cache.entries.lock().unwrap().len() <= 2);
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
