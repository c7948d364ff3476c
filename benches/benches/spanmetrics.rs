//! `spanmetrics` decode + aggregate, in spans per second on one core, against its
//! floor: prost decoding the same OTLP bodies into `opentelemetry-proto`'s types and
//! nothing else (what any Rust OTLP receiver pays before it looks at a span).
//!
//! - `prost_decode`: the floor.
//! - `accept`: what connectord runs per request before staging: decode, label and
//!   aggregate every span, encode the request's aggregate and the OTLP response.
//! - `commit`: a bucket of 100 staged requests added to running totals and written
//!   as metric rows.

use connector_core::{IngestRequest, PushConnector};
use connector_spanmetrics::SpanMetrics;
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

mod push;

const SPANS_PER_REQUEST: usize = 512;
const REQUESTS: usize = 16;

fn bodies() -> Vec<Vec<u8>> {
    (0..REQUESTS as u64)
        .map(|seed| benches::otlp_traces(SPANS_PER_REQUEST, seed))
        .collect()
}

fn decode(c: &mut Criterion) {
    let bodies = bodies();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let connector = SpanMetrics;
    let config = connector
        .validate_config(&serde_json::json!({"dimensions": [{"name": "http.status_code"}]}))
        .expect("config");
    let requests: Vec<IngestRequest> = bodies
        .iter()
        .map(|body| benches::protobuf_ingest("v1/traces", body.clone()))
        .collect();
    eprintln!(
        "{REQUESTS} bodies of {SPANS_PER_REQUEST} spans, {bytes} bytes ({} bytes a span)",
        bytes / (REQUESTS * SPANS_PER_REQUEST)
    );
    let mut group = c.benchmark_group("spanmetrics");
    push::decode_and_accept::<_, ExportTraceServiceRequest>(
        &mut group,
        "",
        &connector,
        &config,
        &requests,
        SPANS_PER_REQUEST,
    );
    push::commit_bucket(
        &mut group,
        &connector,
        &config,
        &requests,
        SPANS_PER_REQUEST,
    );
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
