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
