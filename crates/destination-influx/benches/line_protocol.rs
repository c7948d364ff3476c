//! Encoding committed metric rows (node_exporter's, labels stored as JSON) as line
//! protocol: ours from the rows as stored, beside the `influxdb-line-protocol`
//! crate's builder fed the same rows with their labels already parsed (the parse
//! is left out of the peer's time, which favours it).

use connector_core::{Batch, Value};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use influxdb_line_protocol::LineProtocolBuilder;
use std::hint::black_box;

fn node_exporter_rows() -> Batch {
    // Ten scrapes' worth, a bucket of a busy source.
    benches::metric_rows(
        &benches::fixture("upstream-node_exporter.e2e-output.prom.txt"),
        10,
    )
}

type Prepared = (String, Vec<(String, String)>, f64, i64);

fn prepared(batch: &Batch) -> Vec<Prepared> {
    batch
        .rows()
        .filter_map(|row| {
            let (
                Value::Timestamp(ms),
                Value::String(name),
                Value::Real(value),
                Value::Dynamic(labels),
            ) = (row.at(0), row.at(1), row.at(2), row.at(3))
            else {
                return None;
            };
            let labels: std::collections::BTreeMap<String, String> =
                serde_json::from_str(labels).expect("labels are an object");
            Some((
                name.to_owned(),
                labels.into_iter().collect(),
                value,
                ms * 1_000_000,
            ))
        })
        .collect()
}

fn peer(rows: &[Prepared]) -> Vec<u8> {
    let mut lp = LineProtocolBuilder::new_with(Vec::with_capacity(rows.len() * 128));
    for (name, labels, value, ns) in rows {
        let mut line = lp.measurement(name);
        for (k, v) in labels {
            if !v.is_empty() {
                line = line.tag(k, v);
            }
        }
        lp = line.field("value", *value).timestamp(*ns).close_line();
    }
    lp.build()
}

fn encode(c: &mut Criterion) {
    let batch = node_exporter_rows();
    let rows = prepared(&batch);
    let mut group = c.benchmark_group("line_protocol_node_exporter");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("ours_from_stored_rows", |b| {
        let mut out = Vec::with_capacity(batch.len() * 128);
        b.iter(|| {
            out.clear();
            destination_influx::encode(black_box(&batch), &mut out).expect("metric rows");
            out.len()
        })
    });
    group.bench_function("influxdb_line_protocol_builder_preparsed", |b| {
        b.iter(|| peer(black_box(&rows)).len())
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
