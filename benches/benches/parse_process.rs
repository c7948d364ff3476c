//! `connectord parse --count` as a whole process (start, map, UTF-8 check, parse,
//! exit) on a 46 MB kube-state-metrics-like file, beside a process doing the same
//! with the `prometheus-parse` crate.
//!
//! Run through `cargo xtask bench`, which builds both binaries in release mode first
//! and names them in `CONNECTORD_BIN` and `PEER_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

use benches::generate_exposition;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// "46 MB", as the hardening issue measured it.
const INPUT_BYTES: usize = 46_000_000;

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/release")
                .join(default)
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask bench`, which builds it (or set {var})",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the benchmarked process starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse_process(c: &mut Criterion) {
    let connectord = binary("CONNECTORD_BIN", "connectord");
    let peer = binary("PEER_BIN", "examples/prometheus_parse_file");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("kube-46mb.prom");
    let text = generate_exposition(INPUT_BYTES);
    std::fs::write(&file, &text).expect("the input is written");

    // Both must agree on the sample count before their times mean anything.
    let ours = run(Command::new(&connectord)
        .args(["parse", "--count"])
        .arg(&file));
    let theirs = run(Command::new(&peer).arg(&file));
    let samples = |s: &str| {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix("samples="))
            .map(str::to_owned)
    };
    assert_eq!(samples(&ours), samples(&theirs), "{ours} vs {theirs}");

    let mut group = c.benchmark_group("whole_process_kube_46mb");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    group.bench_function("connectord_parse_count", |b| {
        b.iter(|| {
            run(Command::new(&connectord)
                .args(["parse", "--count"])
                .arg(&file))
        })
    });
    group.bench_function("prometheus_parse_process", |b| {
        b.iter(|| run(Command::new(&peer).arg(&file)))
    });
    group.finish();
}

criterion_group!(benches, parse_process);
criterion_main!(benches);
