//! Peak memory of parsing the generated 5 MB exposition, from the kernel's own
//! high-water mark (`VmHWM` in `/proc/self/status`): before parsing (the text is
//! already in memory) and after walking every sample with its labels decoded.
//!
//! `cargo run --release -p benches --example peak_memory`

use std::hint::black_box;

use benches::generate_exposition;
use connector_prometheus::exposition::{Format, Parser};

fn high_water_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let text = generate_exposition(5 * 1024 * 1024);
    let before = high_water_kib();
    let (mut samples, mut labels) = (0usize, 0usize);
    for sample in Parser::new(&text, Format::Prometheus) {
        let sample = match sample {
            Ok(sample) => sample,
            Err(e) => panic!("the generated text failed to parse: {e}"),
        };
        for (name, value) in sample.labels.iter_decoded() {
            black_box((name, value));
            labels += 1;
        }
        samples += 1;
    }
    let after = high_water_kib();
    println!(
        "input {} bytes, {samples} samples, {labels} labels decoded; peak RSS before parsing {before} KiB, after {after} KiB (parser added {} KiB)",
        text.len(),
        after.saturating_sub(before)
    );
}
