//! The connector itself: one HTTP scrape per tick, parsed into one row per sample.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use connector_core::{Batch, Connector, ConnectorError, Schema, TickContext, async_trait};
use connector_http::http::header::ACCEPT;
use connector_http::{HttpClient, Response};

use crate::config::PrometheusConfig;
use crate::exposition::{Format, ParseError, Parser, Sample};
use crate::target_labels::{Merged, merge};

/// What the scrape asks for, in Prometheus's order of preference: OpenMetrics 1.0,
/// then the 0.0.1 draft, then text 0.0.4, then anything.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0;q=0.75,\
application/openmetrics-text;version=0.0.1;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The Prometheus connector, `type = "prometheus"`.
///
/// Each tick GETs `endpoint` (retrying 429, 5xx, timeouts and connection errors up to
/// three times with exponential backoff), decodes gzip, picks the parser by the
/// response's content type, and emits one row per sample: `timestamp` (the bucket's
/// `scheduled_for`), `name`, `value` (null for NaN and ±Inf) and `labels` (a JSON
/// object). A body that does not parse commits nothing.
#[derive(Clone)]
pub struct PrometheusConnector {
    client: HttpClient,
}

impl std::fmt::Debug for PrometheusConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusConnector")
            .finish_non_exhaustive()
    }
}

impl PrometheusConnector {
    /// A connector whose HTTPS scrapes trust the web PKI roots unless a config names
    /// a CA file.
    pub fn new() -> Self {
        PrometheusConnector {
            client: HttpClient::new(),
        }
    }
}

impl Default for PrometheusConnector {
    fn default() -> Self {
        Self::new()
    }
}

/// One GET with Prometheus's headers; retries, limits, TLS and auth are the toolkit's.
async fn fetch(
    client: &HttpClient,
    ctx: &TickContext,
    config: &PrometheusConfig,
) -> Result<Response, ConnectorError> {
    let timeout = format!(
        "{:.3}",
        Duration::from_millis(config.timeout_ms).as_secs_f64()
    );
    let response = client
        .get(&config.endpoint)
        .action("scrape")
        .header(ACCEPT, ACCEPT_HEADER)
        .header(connector_http::http::header::ACCEPT_ENCODING, "gzip")
        .header(
            connector_http::http::HeaderName::from_static("x-prometheus-scrape-timeout-seconds"),
            timeout,
        )
        .auth(&config.auth)
        .tls(config.tls.as_ref())
        .timeout_ms(config.timeout_ms)
        .body_limit(config.body_size_limit_bytes)
        .limit_key("body_size_limit_bytes")
        .send(ctx)
        .await?;
    Ok(response)
}

/// Rows handed over to the store at a time while the body is parsed, so the store
/// writes them while the parse goes on (`TickContext::hand_over`).
const PART_ROWS: usize = 1024;

fn to_batch(
    fetched: &Response,
    ctx: &TickContext,
    config: &PrometheusConfig,
) -> Result<Batch, ConnectorError> {
    let parse_failed = |e: ParseError| {
        ConnectorError::permanent(format!("parse body of {}: {e}", config.endpoint))
    };
    let body = fetched.body();
    let text = std::str::from_utf8(body)
        .map_err(|e| parse_failed(ParseError::from_utf8_error(body, &e)))?;
    let format = fetched
        .content_type()
        .and_then(Format::from_content_type)
        .unwrap_or_else(|| Format::detect(text));
    // A rough guess of the sample count saves most reallocations of the columns.
    let mut batch = Batch::with_capacity(metric_rows::schema(), text.len() / 64);
    let scheduled_for = ctx.scheduled_for_ms();
    let mut merged = Merged::new();
    let mut names = Vec::with_capacity(16);
    let mut handed_over = 0;
    let mut parser = Parser::new(text, format).strict(config.strict);
    while let Some(next) = parser.next_with_labels() {
        let (sample, labels) = next.map_err(parse_failed)?;
        if config
            .sample_limit
            .is_some_and(|limit| (handed_over + batch.len()) as u64 >= limit)
        {
            return Err(ConnectorError::permanent(format!(
                "scrape {}: more than sample_limit ({}) samples",
                config.endpoint,
                config.sample_limit.unwrap_or_default()
            )));
        }
        if sample.labels.len() as u64 > config.label_limit {
            return Err(label_failure(
                &sample,
                config,
                format!(
                    "{} labels, more than label_limit ({})",
                    sample.labels.len(),
                    config.label_limit
                ),
            ));
        }
        let mut failure = None;
        names.clear();
        let checked = CheckedLabels {
            labels,
            config,
            names: &mut names,
            bits: 0,
            failure: &mut failure,
        };
        let row = batch.row().timestamp(scheduled_for).string(sample.name);
        let row = if sample.value.is_finite() {
            row.real(sample.value)
        } else {
            row.null()
        };
        if config.labels.is_empty() {
            row.map(checked).finish()?;
        } else {
            checked.for_each(drop);
            merge(&sample.labels, config, &mut merged);
            row.map(merged.iter().map(|(k, v)| (k, v))).finish()?;
        }
        if let Some(what) = failure {
            return Err(label_failure(&sample, config, what));
        }
        if batch.len() == PART_ROWS {
            // Where nobody takes parts, the rows stay and the batch grows on.
            ctx.hand_over(&mut batch);
            handed_over += PART_ROWS - batch.len();
        }
    }
    Ok(batch)
}

fn label_failure(sample: &Sample<'_>, config: &PrometheusConfig, what: String) -> ConnectorError {
    ConnectorError::permanent(format!(
        "scrape {}: sample `{}`: {what}",
        config.endpoint, sample.name
    ))
}

/// A sample's labels, checked against Prometheus's per-sample limits as they are
/// written, and against a repeated label name (`label name "a" is not unique:
/// invalid sample`): a hostile target cannot store 100,000 labels on a series, and a
/// sample is never stored with two values for one label.
///
/// The checks ride on the walk that writes the labels: a second walk of its own was
/// a fifth of a label-heavy tick in `perf` (when labels were parsed again for each
/// walk). The first failure ends the walk and is left in `failure`;
/// the caller then fails the tick, so the half-written row is never committed.
struct CheckedLabels<'s, 'a, I> {
    labels: I,
    config: &'s PrometheusConfig,
    /// Scratch space kept across samples (cleared by the caller for each): the names
    /// seen so far in this sample.
    names: &'s mut Vec<&'a str>,
    /// A bit per name in `names`, picked by its length and its first and last
    /// bytes: a name whose bit is clear is new without a look at the others. The
    /// search through every earlier name was a fifth of this walk (`perf annotate`,
    /// label-heavy `http_to_batch`); a shortcut for names in ascending order still
    /// paid a `memcmp` a label.
    bits: u64,
    failure: &'s mut Option<String>,
}

impl<'a, I> CheckedLabels<'_, 'a, I> {
    fn seen(&mut self, name: &'a str) -> bool {
        let b = name.as_bytes();
        let (first, last) = (b.first().copied(), b.last().copied());
        let mix = b.len() as u64
            | u64::from(first.unwrap_or(0)) << 16
            | u64::from(last.unwrap_or(0)) << 24;
        // Fibonacci hashing: the top six bits of the product pick one of 64.
        let bit = 1 << (mix.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58);
        let maybe_seen = self.bits & bit != 0;
        self.bits |= bit;
        if !maybe_seen {
            return false;
        }
        self.names.contains(&name)
    }
}

impl<'a, I: Iterator<Item = (&'a str, Cow<'a, str>)>> Iterator for CheckedLabels<'_, 'a, I> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failure.is_some() {
            return None;
        }
        let (name, value) = self.labels.next()?;
        let config = self.config;
        let failure = if name.len() as u64 > config.label_name_length_limit {
            Some(format!(
                "a label name of {} bytes, longer than label_name_length_limit ({})",
                name.len(),
                config.label_name_length_limit
            ))
        } else if value.len() as u64 > config.label_value_length_limit {
            Some(format!(
                "label `{name}` has a value of {} bytes, longer than label_value_length_limit ({})",
                value.len(),
                config.label_value_length_limit
            ))
        } else if self.seen(name) {
            Some(format!(
                "label name \"{name}\" is not unique: invalid sample (Prometheus refuses it too)"
            ))
        } else {
            None
        };
        if failure.is_some() {
            *self.failure = failure;
            return None;
        }
        self.names.push(name);
        Some((name, value))
    }
}

#[async_trait]
impl Connector for PrometheusConnector {
    const TYPE_ID: &'static str = "prometheus";
    type Config = PrometheusConfig;

    fn schema(&self) -> Arc<Schema> {
        // The metric-row schema destinations read: producer and readers agree by
        // construction.
        metric_rows::schema()
    }

    fn validate_config(&self, raw: &serde_json::Value) -> Result<PrometheusConfig, ConnectorError> {
        PrometheusConfig::from_json(raw)
    }

    async fn tick(
        &self,
        ctx: &TickContext,
        config: &PrometheusConfig,
    ) -> Result<Batch, ConnectorError> {
        let fetched = fetch(&self.client, ctx, config).await?;
        to_batch(&fetched, ctx, config)
    }

    fn config_files(&self, config: &PrometheusConfig) -> Vec<connector_core::ConfigFile> {
        config
            .tls
            .as_ref()
            .map(|tls| tls.files("tls"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first repeated name, as the walk finds it, in orders of a few names, and
    /// among enough names that some share a bit without being the same.
    #[test]
    fn a_repeated_label_name_is_found_in_any_order() {
        let config =
            PrometheusConfig::from_json(&serde_json::json!({"endpoint": "http://h/"})).unwrap();
        let many: Vec<String> = (0..200).map(|i| format!("l{i}")).collect();
        let mut repeated: Vec<&str> = many.iter().map(String::as_str).collect();
        repeated.push("l77");
        let orders: [&[&str]; 10] = [
            &repeated,
            &repeated[..200],
            &["a", "b", "c"],
            &["c", "b", "a"],
            &["a", "a"],
            &["a", "b", "a"],
            &["b", "a", "b"],
            &["a", "c", "b", "c"],
            &["ab", "a", "abc", "ab"],
            &["x", "y", "z", "w", "y"],
        ];
        for names in orders {
            let first_repeat = (0..names.len()).find(|&i| names[..i].contains(&names[i]));
            let mut failure = None;
            let mut seen = Vec::new();
            let checked = CheckedLabels {
                labels: names.iter().map(|&n| (n, Cow::Borrowed("v"))),
                config: &config,
                names: &mut seen,
                bits: 0,
                failure: &mut failure,
            };
            let walked = checked.count();
            assert_eq!(walked, first_repeat.unwrap_or(names.len()), "{names:?}");
            assert_eq!(
                failure.is_some(),
                first_repeat.is_some(),
                "{names:?}: {failure:?}"
            );
        }
    }
}
