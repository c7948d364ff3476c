//! Properties of the parser over generated inputs: rendering samples as text and
//! parsing them back gives the same samples, in both formats; and no input, however
//! broken, makes the parser panic.

use connector_prometheus::exposition::{Format, Parser, parse};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Expected {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn metric_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,12}"
}

fn label_value() -> impl Strategy<Value = String> {
    // Any text at all, quotes, backslashes, newlines and `#` included.
    prop_oneof![any::<String>(), "[\"\\\\\n#{},= a-z]{0,10}"]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
    ]
}

fn sample() -> impl Strategy<Value = Expected> {
    (
        metric_name(),
        prop::collection::vec((label_name(), label_value()), 0..6),
        value(),
        prop::option::of(-1_000_000_000_000_000i64..1_000_000_000_000_000),
    )
        .prop_map(|(name, labels, value, timestamp_ms)| Expected {
            name,
            labels,
            value,
            timestamp_ms,
        })
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // `{:?}` is the shortest text that reads back to the same f64.
        format!("{v:?}")
    }
}

fn render(samples: &[Expected], format: Format) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            let labels: Vec<_> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            out.push('{');
            out.push_str(&labels.join(","));
            out.push('}');
        }
        out.push(' ');
        out.push_str(&number(s.value));
        if let Some(ts) = s.timestamp_ms {
            match format {
                Format::Prometheus => out.push_str(&format!(" {ts}")),
                // Whole seconds keep the round trip exact.
                Format::OpenMetrics => out.push_str(&format!(" {}", ts / 1000)),
            }
        }
        out.push('\n');
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn check_round_trip(samples: &[Expected], format: Format) -> Result<(), TestCaseError> {
    let text = render(samples, format);
    let parsed = parse(&text, format).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    prop_assert_eq!(parsed.len(), samples.len());
    for (got, want) in parsed.iter().zip(samples) {
        prop_assert_eq!(got.name, want.name.as_str());
        let labels: Vec<(String, String)> = got
            .labels
            .iter_decoded()
            .map(|(k, v)| (k.to_owned(), v.into_owned()))
            .collect();
        prop_assert_eq!(&labels, &want.labels);
        prop_assert!(
            got.value.to_bits() == want.value.to_bits()
                || (got.value.is_nan() && want.value.is_nan()),
            "value {} != {}",
            got.value,
            want.value
        );
        let want_ts = want.timestamp_ms.map(|ts| match format {
            Format::Prometheus => ts as f64,
            Format::OpenMetrics => (ts / 1000) as f64 * 1000.0,
        });
        prop_assert_eq!(got.timestamp_ms, want_ts);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prometheus_text_round_trips(samples in prop::collection::vec(sample(), 0..20)) {
        check_round_trip(&samples, Format::Prometheus)?;
    }

    #[test]
    fn openmetrics_text_round_trips(samples in prop::collection::vec(sample(), 0..20)) {
        check_round_trip(&samples, Format::OpenMetrics)?;
    }

    #[test]
    fn arbitrary_input_never_panics(text in any::<String>()) {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut parser = Parser::new(&text, format);
            while let Some(entry) = parser.next_entry() {
                if let Ok(connector_prometheus::exposition::Entry::Sample(s)) = entry {
                    prop_assert!(s.labels.iter_decoded().count() == s.labels.len());
                }
            }
        }
    }

    #[test]
    fn mutated_valid_input_never_panics(
        samples in prop::collection::vec(sample(), 1..5),
        cut in any::<prop::sample::Index>(),
        insert in any::<char>(),
    ) {
        let text = render(&samples, Format::Prometheus);
        let mut chars: Vec<char> = text.chars().collect();
        let at = cut.index(chars.len());
        chars.insert(at, insert);
        let mutated: String = chars.into_iter().collect();
        for format in [Format::Prometheus, Format::OpenMetrics] {
            for sample in Parser::new(&mutated, format).flatten() {
                prop_assert!(sample.labels.iter_raw().count() == sample.labels.len());
            }
        }
    }
}
