//! `otlp_metrics` decode + convert, in data points per second on one core, against
//! its floor: prost decoding the same OTLP bodies into `opentelemetry-proto`'s types
//! and nothing else (what any Rust OTLP receiver pays before it looks at a point).
//!
//! - `prost_decode`: the floor.
//! - `accept`: what connectord runs per request before staging: decode, convert every
//!   point to a Prometheus series, encode the staged families and the OTLP response.
//! - `commit`: a bucket of 100 staged requests folded into the running series and
//!   written as metric rows.
//! - `prost_decode_instruments`, `accept_instruments`: the same for requests of 200
//!   metrics of two points each (`benches::otlp_metrics_instruments`), where what
//!   a request pays per metric (its family, the names check) shows.

// The allocator connectord runs with (`connectord::Allocator`): a request pays for
// memory what it pays in the daemon. glibc's malloc and free were 40 % of `accept`'s
// samples under `perf record`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use connector_core::{IngestRequest, PushConnector};
use connector_otlp_metrics::OtlpMetrics;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

const POINTS_PER_REQUEST: usize = 510;
const REQUESTS: usize = 16;

/// Requests of many metrics with few points each.
fn instruments(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    connector: &OtlpMetrics,
    config: &<OtlpMetrics as PushConnector>::Config,
) {
    const INSTRUMENTS: usize = 200;
    let requests: Vec<IngestRequest> = (0..REQUESTS as u64)
        .map(|seed| IngestRequest {
            path: "v1/metrics".into(),
            headers: vec![("content-type".into(), "application/x-protobuf".into())],
            body: benches::otlp_metrics_instruments(INSTRUMENTS, seed),
            ..IngestRequest::default()
        })
        .collect();
    let points = REQUESTS * INSTRUMENTS * 2;
    group.throughput(Throughput::Elements(points as u64));
    group.bench_function("prost_decode_instruments", |b| {
        b.iter(|| {
            for request in &requests {
                let decoded =
                    ExportMetricsServiceRequest::decode(request.body.as_slice()).expect("decodes");
                std::hint::black_box(decoded);
            }
        });
    });
    group.bench_function("accept_instruments", |b| {
        b.iter(|| {
            for request in &requests {
                let accepted = connector.accept(config, request).expect("accepted");
                assert_eq!(accepted.accepted as usize, INSTRUMENTS * 2);
                std::hint::black_box(accepted);
            }
        });
    });
    group.throughput(Throughput::Elements((REQUESTS * POINTS_PER_REQUEST) as u64));
}

fn decode(c: &mut Criterion) {
    let bodies: Vec<Vec<u8>> = (0..REQUESTS as u64)
        .map(|seed| benches::otlp_metrics(POINTS_PER_REQUEST, seed).0)
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let connector = OtlpMetrics;
    let config = connector
        .validate_config(&serde_json::Value::Null)
        .expect("config");
    let requests: Vec<IngestRequest> = bodies
        .iter()
        .map(|body| IngestRequest {
            path: "v1/metrics".into(),
            headers: vec![("content-type".into(), "application/x-protobuf".into())],
            body: body.clone(),
            ..IngestRequest::default()
        })
        .collect();
    eprintln!(
        "{REQUESTS} bodies of {POINTS_PER_REQUEST} points, {bytes} bytes ({} bytes a point)",
        bytes / (REQUESTS * POINTS_PER_REQUEST)
    );
    let mut group = c.benchmark_group("otlp_metrics");
    group.throughput(Throughput::Elements((REQUESTS * POINTS_PER_REQUEST) as u64));
    group.bench_function("prost_decode", |b| {
        b.iter(|| {
            for body in &bodies {
                let request =
                    ExportMetricsServiceRequest::decode(body.as_slice()).expect("decodes");
                std::hint::black_box(request);
            }
        });
    });
    group.bench_function("accept", |b| {
        b.iter(|| {
            for request in &requests {
                let accepted = connector.accept(&config, request).expect("accepted");
                assert_eq!(accepted.accepted as usize, POINTS_PER_REQUEST);
                std::hint::black_box(accepted);
            }
        });
    });
    instruments(&mut group, &connector, &config);
    let staged: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| connector.accept(&config, r).expect("accepted").staged)
        .collect();
    let bucket: Vec<Vec<u8>> = staged.iter().cycle().take(100).cloned().collect();
    group.throughput(Throughput::Elements((100 * POINTS_PER_REQUEST) as u64));
    group.bench_function("commit", |b| {
        b.iter(|| {
            let committed = connector
                .commit(&config, 0, &bucket, None)
                .expect("commits");
            std::hint::black_box(committed);
        });
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
