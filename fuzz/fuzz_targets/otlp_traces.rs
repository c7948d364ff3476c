#![no_main]

//! The zero-copy OTLP reader against prost: on any body prost decodes, the reader
//! counts the same spans into the same aggregate; on any body, neither panics.

use std::sync::LazyLock;

use connector_spanmetrics::SpanMetricsConfig;

static CONFIG: LazyLock<SpanMetricsConfig> = LazyLock::new(|| {
    SpanMetricsConfig::from_json(&serde_json::json!({
        "dimensions": [{"name": "http.method"}, {"name": "peer", "default": "none"}],
        "aggregation_cardinality_limit": 50,
    }))
    .expect("the fuzz config is valid")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = connector_spanmetrics::wire_agrees_with_prost(&CONFIG, data) {
        panic!("{e}");
    }
});
