//! The public types the parser hands out: formats, metric types, samples, labels, entries.

use std::borrow::Cow;
use std::fmt;

use super::*;

/// Which text format to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header names, or `None` when it names neither.
    ///
    /// ```
    /// use connector_prometheus::exposition::Format;
    /// assert_eq!(
    ///     Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ///     Some(Format::OpenMetrics)
    /// );
    /// assert_eq!(Format::from_content_type("text/plain; version=0.0.4"), Some(Format::Prometheus));
    /// assert_eq!(Format::from_content_type("text/html"), None);
    /// ```
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Some(Format::OpenMetrics)
        } else if media_type.eq_ignore_ascii_case("text/plain") {
            Some(Format::Prometheus)
        } else {
            None
        }
    }

    /// Guesses the format of a body whose content type is unknown.
    ///
    /// OpenMetrics when the text uses syntax only OpenMetrics has (a `# UNIT` line, a
    /// type only OpenMetrics defines, an exemplar) or when its last line is `# EOF`
    /// and no `untyped` type appears; Prometheus text otherwise. A Prometheus body
    /// that merely ends with a stray `# EOF` comment parses the same either way.
    pub fn detect(text: &str) -> Format {
        // Everything detection looks at starts at a `#`: an exemplar (` # {`) or a
        // `# ` line. `#` is rare in sample lines, so one memchr pass over it beats
        // walking every line (10x) and beats memmem for ` # {` and `\n# `, whose
        // first bytes are on every line (measured on a 46 MB kube-state-metrics-like
        // file with `perf`: detection was 40 % of `connectord parse`, now under 5 %).
        let bytes = text.as_bytes();
        let mut untyped = false;
        for hash in memchr::memchr_iter(b'#', bytes) {
            let after = &bytes[hash + 1..];
            if hash > 0 && bytes[hash - 1] == b' ' && after.starts_with(b" {") {
                return Format::OpenMetrics;
            }
            if (hash > 0 && bytes[hash - 1] != b'\n') || !after.starts_with(b" ") {
                continue;
            }
            let end = memchr::memchr(b'\n', after).map_or(bytes.len(), |e| hash + 1 + e);
            let meta = &text[hash + 2..end];
            if meta.starts_with("UNIT ") {
                return Format::OpenMetrics;
            }
            if let Some(rest) = meta.strip_prefix("TYPE ") {
                match rest.split_ascii_whitespace().nth(1) {
                    Some("gaugehistogram" | "stateset" | "info" | "unknown") => {
                        return Format::OpenMetrics;
                    }
                    Some("untyped") => untyped = true,
                    _ => {}
                }
            }
        }
        let trimmed = text.trim_end();
        let last_line = trimmed[trimmed.rfind('\n').map_or(0, |i| i + 1)..].trim_end();
        if last_line == "# EOF" && !untyped {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Prometheus => "prometheus",
            Format::OpenMetrics => "openmetrics",
        }
    }
}

/// A metric family type from a `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `gaugehistogram` (OpenMetrics)
    GaugeHistogram,
    /// `stateset` (OpenMetrics)
    StateSet,
    /// `info` (OpenMetrics)
    Info,
    /// `summary`
    Summary,
    /// `unknown` (OpenMetrics)
    Unknown,
    /// `untyped` (Prometheus text)
    Untyped,
}

impl MetricType {
    pub(super) fn parse(word: &[u8], format: Format) -> Option<MetricType> {
        let t = match word {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" if format == Format::Prometheus => MetricType::Untyped,
            b"gaugehistogram" if format == Format::OpenMetrics => MetricType::GaugeHistogram,
            b"stateset" if format == Format::OpenMetrics => MetricType::StateSet,
            b"info" if format == Format::OpenMetrics => MetricType::Info,
            b"unknown" if format == Format::OpenMetrics => MetricType::Unknown,
            _ => return None,
        };
        Some(t)
    }
}

/// The labels of a sample or exemplar, checked but not yet decoded.
///
/// Iterating borrows names and values from the input; [`Labels::iter_decoded`]
/// copies only the values that contain escapes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Labels<'a> {
    /// The text between `{` and `}`.
    pub(super) inner: &'a str,
    pub(super) len: u32,
    pub(super) escaped: bool,
    /// No blanks anywhere between the braces (outside values): `a="1",b="2"`.
    pub(super) compact: bool,
}

impl<'a> Labels<'a> {
    /// The number of labels.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when there are no labels (`{}` or none written).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when some value contains a backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// `(name, value)` pairs in written order, values still escaped as written.
    pub fn iter_raw(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        TrustedLabels {
            rest: self.inner,
            compact: self.compact,
        }
    }

    /// `(name, value)` pairs in written order with values decoded.
    pub fn iter_decoded(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        let escaped = self.escaped;
        self.iter_raw()
            .map(move |(name, value)| (name, decode_value(value, escaped)))
    }

    /// The decoded value of the first label called `name`.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter_decoded()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The label text as written between the braces.
    pub fn as_written(&self) -> &'a str {
        self.inner
    }
}

/// A raw label value decoded: borrowed as written unless its label set has escapes.
pub(super) fn decode_value(value: &str, escaped: bool) -> Cow<'_, str> {
    if escaped {
        syntax::unescape(value, true)
    } else {
        Cow::Borrowed(value)
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter_decoded()).finish()
    }
}

/// An OpenMetrics exemplar attached to a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar<'a> {
    /// The exemplar's labels (`trace_id` and the like).
    pub labels: Labels<'a>,
    /// The exemplar's value.
    pub value: f64,
    /// Its timestamp in Unix milliseconds, if written.
    pub timestamp_ms: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name as written (`http_requests_total`, `x_bucket`).
    pub name: &'a str,
    /// The labels.
    pub labels: Labels<'a>,
    /// The value; NaN and ±Inf are kept as such.
    pub value: f64,
    /// The sample's timestamp in Unix milliseconds, if written. Prometheus text writes
    /// integer milliseconds; OpenMetrics writes seconds, scaled here by 1000.
    pub timestamp_ms: Option<f64>,
    /// The exemplar, if written (OpenMetrics only).
    pub exemplar: Option<Exemplar<'a>>,
}

/// One meaningful line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// A sample.
    Sample(Sample<'a>),
    /// `# HELP name text`, the text unescaped.
    Help {
        /// The family name.
        name: &'a str,
        /// The help text.
        text: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        /// The family name.
        name: &'a str,
        /// The family type.
        metric_type: MetricType,
    },
    /// `# UNIT name unit` (OpenMetrics).
    Unit {
        /// The family name.
        name: &'a str,
        /// The unit, possibly empty.
        unit: &'a str,
    },
}
