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
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

mod push;

const POINTS_PER_REQUEST: usize = 510;
const REQUESTS: usize = 16;

fn decode(c: &mut Criterion) {
    let config = OtlpMetrics
        .validate_config(&serde_json::Value::Null)
        .expect("config");
    let requests: Vec<IngestRequest> = (0..REQUESTS as u64)
        .map(|seed| {
            let body = benches::otlp_metrics(POINTS_PER_REQUEST, seed).0;
            benches::protobuf_ingest("v1/metrics", body)
        })
        .collect();
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    eprintln!(
        "{REQUESTS} bodies of {POINTS_PER_REQUEST} points, {bytes} bytes ({} bytes a point)",
        bytes / (REQUESTS * POINTS_PER_REQUEST)
    );
    let mut group = c.benchmark_group("otlp_metrics");
    push::decode_and_accept::<_, ExportMetricsServiceRequest>(
        &mut group,
        "",
        &OtlpMetrics,
        &config,
        &requests,
        POINTS_PER_REQUEST,
    );
    // An SDK exporting many instruments: what a request pays per metric shows.
    const INSTRUMENTS: usize = 200;
    let many: Vec<IngestRequest> = (0..REQUESTS as u64)
        .map(|seed| {
            let body = benches::otlp_metrics_instruments(INSTRUMENTS, seed);
            benches::protobuf_ingest("v1/metrics", body)
        })
        .collect();
    push::decode_and_accept::<_, ExportMetricsServiceRequest>(
        &mut group,
        "_instruments",
        &OtlpMetrics,
        &config,
        &many,
        INSTRUMENTS * 2,
    );
    push::commit_bucket(
        &mut group,
        &OtlpMetrics,
        &config,
        &requests,
        POINTS_PER_REQUEST,
    );
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
