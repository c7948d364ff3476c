#![no_main]

//! Any body pushed to `otlp_metrics`: accepting it never panics; what it staged
//! commits (twice, as a second bucket would, so delta points add up), and the page
//! rendered from that state is read back by the strict parser in both formats with
//! the committed series on it.

use connector_core::{IngestRequest, PushConnector as _};
use connector_otlp_metrics::{OtlpMetrics, OtlpMetricsConfig};
use connector_prometheus::exposition::{Format, Parser};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A config per input: commits teach a config the series they kept, and one input
    // must not change how the next is taken.
    let config = OtlpMetricsConfig::from_json(
        &serde_json::json!({"max_series": 50, "max_points_per_request": 200}),
    )
    .expect("the fuzz config is valid");
    let request = IngestRequest {
        headers: vec![("content-type".into(), "application/x-protobuf".into())],
        body: data.to_vec(),
        ..IngestRequest::default()
    };
    let Ok(accepted) = OtlpMetrics.accept(&config, &request) else {
        return;
    };
    let staged = [accepted.staged];
    let first = OtlpMetrics
        .commit(&config, 1_000, &staged, None)
        .expect("what accept staged commits");
    let second = OtlpMetrics
        .commit(&config, 2_000, &staged, Some(&first.state))
        .expect("what accept staged commits again");
    assert!(second.series <= 50, "{} series past max_series", second.series);
    for (accept, format) in [
        ("text/plain", Format::Prometheus),
        ("application/openmetrics-text; version=1.0.0", Format::OpenMetrics),
    ] {
        let page = OtlpMetrics.serve(
            &config,
            Some(&second.state),
            &IngestRequest {
                headers: vec![("accept".into(), accept.into())],
                ..IngestRequest::default()
            },
        );
        assert_eq!(page.status, 200);
        let text = String::from_utf8(page.body).expect("the page is UTF-8");
        let samples = Parser::new(&text, format)
            .strict(true)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(second.series == 0 || !samples.is_empty(), "{text}");
    }
});
