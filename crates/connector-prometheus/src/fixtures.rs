//! How the goldens under `fixtures/exposition/` are produced. The table-driven test
//! and `cargo xtask fixtures` both call [`golden`], so the check and the regeneration
//! cannot drift apart.

use std::path::Path;

use crate::exposition::{Format, ParseError, Parser, render_jsonl};

/// The golden file that belongs beside `input`: `NAME.txt` → `NAME.txt.golden`.
pub fn golden_path(input: &Path) -> std::path::PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".golden");
    name.into()
}

/// The format a fixture's file name declares: `.prom.txt` is Prometheus text,
/// `.om.txt` OpenMetrics; `None` means detect.
pub fn declared_format(file_name: &str) -> Option<Format> {
    if file_name.ends_with(".prom.txt") {
        Some(Format::Prometheus)
    } else if file_name.ends_with(".om.txt") {
        Some(Format::OpenMetrics)
    } else {
        None
    }
}

/// What `connectord parse` prints for the fixture: its JSON lines, or the one
/// `error: ...` line of an input that must fail.
pub fn golden(file_name: &str, bytes: &[u8]) -> String {
    let rendered = std::str::from_utf8(bytes)
        .map_err(|e| ParseError::from_utf8_error(bytes, &e))
        .and_then(|text| {
            let format = declared_format(file_name).unwrap_or_else(|| Format::detect(text));
            render_jsonl(Parser::new(text, format))
        });
    match rendered {
        Ok(out) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("error: {e}\n"),
    }
}

/// The fixture inputs (`*.txt`) in `dir`, sorted.
pub fn inputs(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            inputs.push(path);
        }
    }
    inputs.sort();
    Ok(inputs)
}
