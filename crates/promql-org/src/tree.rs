//! The rewrite by parse tree, the way prom-label-proxy does it: `promql-parser`
//! reads the query, every vector and matrix selector gets `org_id="<org>"` in place
//! of any `org_id` matcher the caller wrote, and the tree is printed back.
//!
//! The printed query is parsed again and checked, so a printer that dropped or
//! reshaped a matcher would fail closed with an error rather than send a query
//! that reaches past the org.

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{self, Expr, VectorSelector};

use crate::{ORG_LABEL, RewriteError};

/// [`crate::confine_query`] by parse tree: the reference the scan is checked
/// against, and the path that words the error for a query that does not parse.
pub fn confine_query_by_tree(query: &str, org: &str) -> Result<String, RewriteError> {
    let mut expr = parse(query)?;
    confine_expr(&mut expr, org)?;
    let printed = expr.to_string();
    verify(&printed, org, false)?;
    Ok(printed)
}

/// [`crate::confine_selector`] by parse tree.
pub fn confine_selector_by_tree(selector: &str, org: &str) -> Result<String, RewriteError> {
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

/// `text` parsed and printed, as the scan's output is checked.
pub(crate) fn parse_and_print(text: &str) -> Result<String, RewriteError> {
    parse(text).map(|expr| expr.to_string())
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
