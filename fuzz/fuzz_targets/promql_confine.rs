#![no_main]

//! Holding PromQL to an org never panics, and whatever it returns parses again with
//! every selector held to the org (the rewrite checks that itself; a bug there
//! would surface here as an `Ok` that fails the second check). Where the scan
//! answers, the parse tree gives the same answer.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(disagreement) = promql_org::scan_disagreement(text, "a") {
        panic!("{disagreement}");
    }
    if let Ok(query) = promql_org::confine_query(text, "a") {
        let again = promql_org::confine_query(&query, "a").expect("a rewritten query rewrites again");
        // The scan keeps the caller's matcher order, so compare as the tree reads them.
        assert_eq!(
            promql_org::confine_query_by_tree(&again, "a"),
            promql_org::confine_query_by_tree(&query, "a"),
            "the rewrite is idempotent"
        );
    }
    if let Ok(selector) = promql_org::confine_selector(text, "a") {
        promql_org::confine_selector(&selector, "a").expect("a rewritten selector rewrites again");
    }
});
