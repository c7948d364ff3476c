//! Encoding committed metric rows (node_exporter's, ten scrapes) as snappy-compressed
//! Remote-Write 1.0 bodies of 2,000 samples (Prometheus's `max_samples_per_send`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn encode(c: &mut Criterion) {
    let batch = benches::metric_rows(
        &benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
        10,
    );
    let mut group = c.benchmark_group("remote_write_node_exporter");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("ours_from_stored_rows", |b| {
        b.iter(|| {
            destination_remote_write::encode(black_box(&batch), 2000)
                .expect("metric rows")
                .requests
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
