//! The scan and the parse tree hold a query to an org alike: where the scan
//! answers, `promql-parser` reads its output as the tree's output, and the scan
//! answers for what dashboards send (else the fast path would be dead weight).

use promql_org::{
    confine_query, confine_query_by_scan, confine_selector_by_scan, scan_disagreement,
};
use proptest::prelude::*;

/// Queries the scan must answer itself: dashboard shapes, every modifier, and the
/// hostile queries of connectord's live test that it is sure of.
const SCANNED: &[&str] = &[
    "up",
    "up{job=\"node\"}",
    "up {job=\"node\",}",
    "up{org_id=\"b\"}",
    "up{org_id=~\"a|b\",job=\"x\"}",
    "{__name__=~\"connectord_.*\",org_id=\"b\"}",
    "{org_id=\"b\"} or {org_id=\"a\"}",
    "connectord_connector_state{org_id!=\"a\"}",
    "{job!=\"\"}",
    "rate(x[5m]) or y offset 1h",
    "x offset -5m",
    "max_over_time(sum(x)[10m:1m])",
    "max_over_time(x{org_id=\"b\"}[1m:])",
    "max_over_time(x[1h30m:15s] offset 1m) @ end()",
    "x @ 1700000000.5",
    "x @ start()",
    "1 + 1",
    "-x ^ 2 % 3",
    "1e-3 * .5 - 0x1f",
    "NaN",
    "Inf + inf",
    "\"text\"",
    "label_replace(x, \"org_id\", \"b\", \"\", \"\")",
    "label_join(x, \"org_id\", \"\", \"connector_id\")",
    "count_values(\"org_id\", x) > bool 1",
    "a * on() group_left(org_id) b or c unless d",
    "a + ignoring(job, instance) group_right b",
    "a + on(connector_id) group_right() b",
    "a * on(job) group_left c",
    "absent(x{org_id=\"b\"})",
    "topk(1000, {__name__=~\".+\"})",
    "{__name__=~\".+\",org_id=~\"b|\"}",
    "quantile(0.9, x)",
    "sum by (org_id, connector_id) (rate(total_contribution_bytes_sum[1m]))",
    "sum without (instance) (x) / ignoring (le) sum(y) by (job)",
    "histogram_quantile(0.99, sum by (le) (rate(latency_bucket{i=\"3\"}[1m])))",
    "max_over_time(up{instance=~\"10\\\\.0\\\\..*\",i=\"1\"}[10m:1m])",
    "x{a='single',b=`raw \"`,c=\"\\\"esc\\n\"}",
    "x{label=\"ünïcödé ☃\"}",
    "job:http_requests:rate5m",
    ":job:rate5m{a=\"b\"}",
    "time() - max by (connector_id) (connectord_last_success_timestamp_seconds)",
    "vector(1)",
    "scalar(x) atan2 y",
    "sum(x) > 1 and on(job) y",
];

/// Texts the scan leaves to the tree: it is not sure, or they do not parse.
const LEFT_TO_THE_TREE: &[&str] = &[
    "",
    "sum(",
    "up{",
    "up # a comment",
    "{}",
    "{org_id=\"\"}",
    "{org_id=~\".*\",__name__=~\"x\"}",
    "x{a=\"1\" or b=\"2\"}",
    "SUM(x)",
    "sum",
    "sum{job=\"x\"}",
    "offset",
    "x{a=\"\\x41\"}",
    "x{a=\"\\u00e9\"}",
    "x{a=`raw \\ backslash`}",
    "x{org_id=~\"a|(\"}",
    "x{\"quoted.name\"=\"v\"}",
    "limitk(2, x)",
    "x == = y",
    "x[5m",
    "start",
    "5m",
    "sum by (on) (x)",
    "abs( or )",
    "x offset 5m offset",
    "sum(x) on(job) y",
    "x + -on(a) y",
];

#[test]
fn the_scan_answers_for_dashboard_shapes_and_agrees_with_the_tree() {
    for query in SCANNED {
        let scanned = confine_query_by_scan(query, "a")
            .unwrap_or_else(|| panic!("the scan leaves `{query}` to the tree"));
        assert_eq!(scan_disagreement(query, "a"), None);
        let foreign = scanned.matches("org_id=\"b\"").count()
            + scanned.matches("org_id=~").count()
            + scanned.matches("org_id!").count();
        assert_eq!(foreign, 0, "`{query}` became `{scanned}`");
    }
}

#[test]
fn the_scan_keeps_the_callers_text_and_rewrites_only_selectors() {
    for (query, expected) in [
        ("up", "up{org_id=\"a\"}"),
        ("up {job=\"n\", org_id=\"b\"}", "up{job=\"n\",org_id=\"a\"}"),
        ("{org_id=\"b\"}", "{org_id=\"a\"}"),
        (
            "sum by (job) (rate(x[5m]))",
            "sum by (job) (rate(x{org_id=\"a\"}[5m]))",
        ),
        (
            "a * on(job) group_left(org_id) b",
            "a{org_id=\"a\"} * on(job) group_left(org_id) b{org_id=\"a\"}",
        ),
        ("x @ start()", "x{org_id=\"a\"} @ start()"),
        ("NaN", "NaN"),
    ] {
        assert_eq!(
            confine_query_by_scan(query, "a").as_deref(),
            Some(expected),
            "{query}"
        );
    }
    assert_eq!(
        confine_selector_by_scan("up{job=\"n\"}", "a").as_deref(),
        Some("up{job=\"n\",org_id=\"a\"}")
    );
    assert_eq!(confine_selector_by_scan("sum(up)", "a"), None);
    assert_eq!(confine_selector_by_scan("up offset 5m", "a"), None);
}

#[test]
fn what_the_scan_is_not_sure_of_goes_to_the_tree() {
    for text in LEFT_TO_THE_TREE {
        assert_eq!(confine_query_by_scan(text, "a"), None, "`{text}`");
        assert_eq!(scan_disagreement(text, "a"), None, "`{text}`");
    }
    // The tree still answers for what it can read, and refuses the rest.
    assert_eq!(
        confine_query("SUM(x)", "a").as_deref(),
        Ok("sum(x{org_id=\"a\"})")
    );
    assert!(confine_query("sum(", "a").is_err());
    assert!(confine_query("{}", "a").is_err());
}

#[test]
fn the_dashboards_and_alerts_queries_are_scanned() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/connectord.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("json");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for expr in exprs {
        // What Grafana sends: its variables interpolated.
        let sent = expr
            .replace("$__rate_interval", "1m")
            .replace("$org_id", "a|b")
            .replace("$connector_id", ".*")
            .replace("$connector_type_id", ".*");
        assert!(
            confine_query_by_scan(&sent, "a").is_some(),
            "the scan leaves the dashboard's `{sent}` to the tree"
        );
        assert_eq!(scan_disagreement(&sent, "a"), None);
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr", Some(expr)) => out.push(expr.to_owned()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// PromQL built from its grammar, with the odd corners (keywords as label names,
/// `org_id` matchers of every kind, escapes, every modifier) drawn often.
fn expr() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "up",
        "x",
        "job:rate5m",
        "org_id",
        "sum_total",
        "on_x",
        "bool_y",
        "le",
        "info",
        "or",
        "and",
        "on",
        "bool",
        "offset",
        "sum",
        "start",
        "by",
        "group_left",
        "NaN",
        ":a",
    ]);
    let label = prop::sample::select(vec![
        "job", "org_id", "__name__", "le", "on", "by", "offset", "a_b",
    ]);
    let op = prop::sample::select(vec!["=", "!=", "=~", "!~"]);
    let value = prop::sample::select(vec![
        "\"\"",
        "\"a\"",
        "\"b\"",
        "\"a|b\"",
        "\".*\"",
        "\".+\"",
        "'q'",
        "`r\\`",
        "\"\\\"\"",
        "\"\\\\.\"",
        "\"é\"",
    ]);
    let matcher = (label, op, value).prop_map(|(l, o, v)| format!("{l}{o}{v}"));
    let selector = (
        prop::option::of(name),
        prop::collection::vec(matcher, 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(name, matchers, braces)| match (name, braces || !matchers.is_empty()) {
                (Some(n), false) => n.to_owned(),
                (n, _) => format!("{}{{{}}}", n.unwrap_or(""), matchers.join(",")),
            },
        );
    let modifier = prop::sample::select(vec![
        "",
        "",
        "[5m]",
        "[1h30m:1m]",
        "[5m:]",
        " offset 1h",
        " offset -5m",
        " @ 100",
        " @ end()",
        "[5m] offset 1m",
    ]);
    let leaf = prop_oneof![
        4 => (selector, modifier).prop_map(|(s, m)| format!("{s}{m}")),
        1 => prop::sample::select(vec!["1", "0.5", "1e3", "NaN", "Inf", "\"s\"", ".5"])
            .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        let binop = prop::sample::select(vec![
            " + ",
            " * ",
            " / ",
            " > bool ",
            " == ",
            " and ",
            " or ",
            " unless ",
            " * on(job) group_left(org_id) ",
            " / ignoring(le) ",
            " - on() group_right ",
            " atan2 ",
        ]);
        let func = prop::sample::select(vec![
            "rate",
            "abs",
            "absent",
            "max_over_time",
            "vector",
            "time",
            "label_replace",
        ]);
        let agg = prop::sample::select(vec![
            "sum",
            "max by (job)",
            "count without (org_id, le)",
            "topk",
            "count_values",
        ]);
        prop_oneof![
            (inner.clone(), binop, inner.clone()).prop_map(|(a, o, b)| format!("{a}{o}{b}")),
            (func, prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (agg, prop::collection::vec(inner.clone(), 1..3))
                .prop_map(|(a, args)| format!("{a}({})", args.join(", "))),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("-{e}")),
            inner.prop_map(|e| format!("({e})[10m:1m]")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn generated_queries_get_the_same_answer_by_scan_and_by_tree(query in expr()) {
        prop_assert_eq!(scan_disagreement(&query, "a"), None);
    }

    #[test]
    fn mangled_queries_get_the_same_answer_by_scan_and_by_tree(
        query in expr(),
        cut in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec![
            "", "{", "}", "(", ")", "\"", ",", " by ", " offset ", "[", "]", ":", "#", "\\",
            "org_id=\"b\"", "@", " or ", "=",
        ]),
    ) {
        let mut at = cut.index(query.len() + 1);
        while !query.is_char_boundary(at) {
            at -= 1;
        }
        let mangled = format!("{}{insert}{}", &query[..at], &query[at..]);
        prop_assert_eq!(scan_disagreement(&mangled, "a"), None);
    }
}
