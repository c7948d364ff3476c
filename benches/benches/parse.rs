//! Parser throughput against its peers, on the same inputs in the same run.
//!
//! For each input: our parser (every label name and value decoded, every value an
//! f64), the `prometheus-parse` crate (fed lines, as its API takes them), and a
//! memchr newline count as the floor any line-oriented parser must pay.

use std::hint::black_box;

use benches::{fixture, generate_exposition};
use connector_prometheus::exposition::{Format, Parser};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn inputs() -> Vec<(&'static str, String)> {
    vec![
        (
            "node_exporter",
            fixture("upstream-node_exporter.e2e-output.prom.txt"),
        ),
        (
            "prometheus_alltypes",
            fixture("upstream-alltypes.237mfs.prom.txt"),
        ),
        (
            "cadvisor",
            fixture("upstream-cadvisor.prometheus_metrics.prom.txt"),
        ),
        ("generated_5mb", generate_exposition(5 * 1024 * 1024)),
    ]
}

fn ours(text: &str) -> usize {
    let mut n = 0;
    for sample in Parser::new(text, Format::Prometheus) {
        let sample = match sample {
            Ok(sample) => sample,
            Err(e) => panic!("benchmark input failed to parse: {e}"),
        };
        black_box(sample.name);
        black_box(sample.value);
        black_box(sample.timestamp_ms);
        for (name, value) in sample.labels.iter_decoded() {
            black_box(name);
            black_box(value);
        }
        n += 1;
    }
    n
}

fn prometheus_parse(text: &str) -> usize {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    match prometheus_parse::Scrape::parse(lines) {
        Ok(scrape) => black_box(scrape).samples.len(),
        Err(e) => panic!("prometheus-parse failed: {e}"),
    }
}

fn memchr_newlines(text: &str) -> usize {
    memchr::memchr_iter(b'\n', text.as_bytes()).count()
}

fn parse(c: &mut Criterion) {
    for (name, text) in inputs() {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(text.len() as u64));
        if text.len() > 1 << 20 {
            group.sample_size(20);
        }
        group.bench_function("ours", |b| b.iter(|| ours(black_box(&text))));
        group.bench_function("prometheus_parse", |b| {
            b.iter(|| prometheus_parse(black_box(&text)))
        });
        group.bench_function("memchr_newlines", |b| {
            b.iter(|| memchr_newlines(black_box(&text)))
        });
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
