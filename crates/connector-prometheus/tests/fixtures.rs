//! Every fixture under `fixtures/exposition/` against its golden output.

use std::path::PathBuf;

use connector_prometheus::fixtures::{golden, golden_path, inputs};

#[test]
fn fixtures_match_their_goldens() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/exposition");
    let inputs = inputs(&dir).unwrap();
    assert!(
        inputs.len() >= 14,
        "expected the fixture set, found {} inputs",
        inputs.len()
    );
    let mut mismatches = Vec::new();
    let (mut samples, mut errors) = (0, 0);
    for input in &inputs {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let actual = golden(&name, &std::fs::read(input).unwrap());
        let expected = std::fs::read_to_string(golden_path(input))
            .unwrap_or_else(|e| panic!("{name} has no golden ({e}): run `cargo xtask fixtures`"));
        if name.starts_with("error-") != actual.starts_with("error: ") {
            mismatches.push(format!("{name}: `error-` fixtures must fail and only they"));
        }
        if actual != expected {
            mismatches.push(format!("{name}: output differs from its golden"));
        }
        samples += actual.lines().filter(|l| l.starts_with('{')).count();
        errors += usize::from(actual.starts_with("error: "));
    }
    eprintln!(
        "{} fixtures: {samples} samples, {errors} expected errors",
        inputs.len()
    );
    assert!(
        mismatches.is_empty(),
        "{}\nif the change is intended, run `cargo xtask fixtures` and review the diff",
        mismatches.join("\n")
    );
}

/// Strict mode on real exporters' output: the Prometheus text scrapes follow every
/// family rule; the OpenMetrics example from the Prometheus repository does not (its
/// histogram has negative buckets and a `_sum`, which OpenMetrics 1.0 forbids), which
/// is why lenient mode is the default for scraping.
#[test]
fn strict_mode_on_upstream_fixtures() {
    use connector_prometheus::exposition::{Format, ParseErrorKind, Parser};
    use connector_prometheus::fixtures::declared_format;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/exposition");
    let strict = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let format = declared_format(name).unwrap_or(Format::Prometheus);
        Parser::new(&text, format)
            .strict(true)
            .try_fold(0, |n, s| s.map(|_| n + 1))
    };
    for (name, samples) in [
        ("upstream-node_exporter.e2e-output.prom.txt", 3027),
        ("upstream-cadvisor.prometheus_metrics.prom.txt", 287),
        ("upstream-alltypes.237mfs.prom.txt", 1857),
        ("upstream-promtestdata.txt", 410),
        ("upstream-1histogram.om.txt", 42),
        ("edge-types.om.txt", 13),
    ] {
        assert_eq!(strict(name), Ok(samples), "{name}");
    }
    let err = strict("upstream-alltypes.5mfs.om.txt").unwrap_err();
    assert_eq!(err.kind(), ParseErrorKind::Semantic);
    assert_eq!(err.line(), 33);
    assert!(err.message().contains("_sum"), "{err}");
}
