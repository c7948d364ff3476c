//! The OpenMetrics 1.0 parser conformance suite from `../shared/conformance/openmetrics`.
//!
//! Strict mode must agree with every case (211/211): the 44 `shouldParse: true` cases
//! parse, the 167 bad ones are rejected. Lenient mode must parse every good case; the
//! bad cases it accepts are the family-level ones, counted and printed.

#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

use std::path::{Path, PathBuf};

use connector_prometheus::exposition::{Format, ParseError, Parser};

fn suite_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("CONNECTOR_SHARED_DIR") {
        Some(shared) => PathBuf::from(shared).join("conformance/openmetrics"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance/openmetrics"),
    };
    dir.is_dir().then_some(dir)
}

struct Case {
    name: String,
    should_parse: bool,
    bytes: Vec<u8>,
}

fn load_cases(dir: &Path) -> Vec<Case> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|case| {
            let spec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(case.join("test.json")).unwrap()).unwrap();
            Case {
                name: case.file_name().unwrap().to_string_lossy().into_owned(),
                should_parse: spec["shouldParse"].as_bool().unwrap(),
                bytes: std::fs::read(case.join("metrics")).unwrap(),
            }
        })
        .collect()
}

fn parse_case(bytes: &[u8], strict: bool) -> Result<usize, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ParseError::from_utf8_error(bytes, &e).to_string())?;
    Parser::new(text, Format::OpenMetrics)
        .strict(strict)
        .try_fold(0, |n, sample| sample.map(|_| n + 1))
        .map_err(|e| e.to_string())
}

fn cases_or_skip() -> Option<Vec<Case>> {
    let Some(dir) = suite_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the conformance suite is missing: CI must run it (set CONNECTOR_SHARED_DIR or put shared/ beside the repository)"
        );
        eprintln!("skipped: ../shared/conformance/openmetrics not found");
        return None;
    };
    let cases = load_cases(&dir);
    assert_eq!(cases.len(), 211, "the suite should have 211 cases");
    assert_eq!(cases.iter().filter(|c| c.should_parse).count(), 44);
    Some(cases)
}

#[test]
fn strict_mode_agrees_with_every_case() {
    let Some(cases) = cases_or_skip() else {
        return;
    };
    let mut wrong = Vec::new();
    for case in &cases {
        match (case.should_parse, parse_case(&case.bytes, true)) {
            (true, Err(e)) => wrong.push(format!("{}: should parse, got {e}", case.name)),
            (false, Ok(n)) => wrong.push(format!("{}: accepted with {n} samples", case.name)),
            (false, Err(e)) => eprintln!("{}: {e}", case.name),
            (true, Ok(_)) => {}
        }
    }
    eprintln!(
        "openmetrics conformance (strict): {}/211 agree",
        211 - wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "strict mode disagrees:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn lenient_mode_parses_every_good_case() {
    let Some(cases) = cases_or_skip() else {
        return;
    };
    let mut good_failed = Vec::new();
    let mut bad_accepted = Vec::new();
    for case in &cases {
        match (case.should_parse, parse_case(&case.bytes, false)) {
            (true, Err(e)) => good_failed.push(format!("{}: {e}", case.name)),
            (false, Ok(_)) => bad_accepted.push(case.name.as_str()),
            _ => {}
        }
    }
    eprintln!(
        "openmetrics conformance (lenient): bad {} rejected, {} accepted (family-level rules, strict mode only): {}",
        167 - bad_accepted.len(),
        bad_accepted.len(),
        bad_accepted.join(" ")
    );
    assert!(
        good_failed.is_empty(),
        "good cases that failed:\n{}",
        good_failed.join("\n")
    );
}
