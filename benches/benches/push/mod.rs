//! What the push-connector benches share: a connector's `accept` beside its floor,
//! prost decoding the same bodies into `opentelemetry-proto`'s types and nothing
//! else (what any Rust OTLP receiver pays before it looks at an item), and `commit`
//! of a bucket of staged requests.

use connector_core::{IngestRequest, PushConnector};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Throughput};

/// `prost_decode{suffix}` (decoding each body as an `M`) and `accept{suffix}` over
/// `requests` of `items_each` items each, every one of which `accept` must take.
pub fn decode_and_accept<C: PushConnector, M: prost::Message + Default>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    suffix: &str,
    connector: &C,
    config: &C::Config,
    requests: &[IngestRequest],
    items_each: usize,
) {
    group.throughput(Throughput::Elements((requests.len() * items_each) as u64));
    group.bench_function(format!("prost_decode{suffix}"), |b| {
        b.iter(|| {
            for request in requests {
                let decoded = M::decode(request.body.as_slice()).expect("decodes");
                std::hint::black_box(decoded);
            }
        });
    });
    group.bench_function(format!("accept{suffix}"), |b| {
        b.iter(|| {
            for request in requests {
                let accepted = connector.accept(config, request).expect("accepted");
                assert_eq!(accepted.accepted as usize, items_each);
                std::hint::black_box(accepted);
            }
        });
    });
}

/// `commit`: a bucket of 100 requests staged from `requests` (in turn), committed
/// with no prior state.
pub fn commit_bucket<C: PushConnector>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    connector: &C,
    config: &C::Config,
    requests: &[IngestRequest],
    items_each: usize,
) {
    let staged: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| connector.accept(config, r).expect("accepted").staged)
        .collect();
    let bucket: Vec<Vec<u8>> = staged.iter().cycle().take(100).cloned().collect();
    group.throughput(Throughput::Elements((100 * items_each) as u64));
    group.bench_function("commit", |b| {
        b.iter(|| {
            let committed = connector.commit(config, 0, &bucket, None).expect("commits");
            std::hint::black_box(committed);
        });
    });
}
