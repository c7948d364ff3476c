//! OpenTelemetry metric and attribute names as Prometheus names, as the OpenTelemetry
//! specification's "Prometheus and OpenMetrics compatibility" section and the
//! OpenTelemetry Python Prometheus exporter (`opentelemetry-exporter-prometheus`
//! 0.66b2 with `prometheus_client` 0.26) write them:
//!
//! - every run of characters outside `[a-zA-Z0-9:]` (metric names) or `[a-zA-Z0-9]`
//!   (label names) becomes one `_`, and a leading digit becomes `_`;
//! - the unit, mapped to words (`ms` → `milliseconds`, `By` → `bytes`, `m/s` →
//!   `meters_per_second`, `{requests}` dropped), is appended unless the name already
//!   ends with it;
//! - monotonic sums end in `_total`; gauges whose unit is `1` end in `_ratio`, as the
//!   specification says (the Python exporter leaves them bare).

/// What kind of Prometheus family a metric becomes, which decides its suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// A monotonic sum: samples end in `_total`.
    Counter,
    /// A gauge, or a non-monotonic sum.
    Gauge,
    /// An explicit-bucket histogram: `_bucket`, `_sum`, `_count`.
    Histogram,
    /// A summary: quantiles, `_sum`, `_count`.
    Summary,
}

/// Turns each run of characters `keep` refuses into one `_`; with `digit_first`
/// refused, a leading digit too.
fn sanitize(name: &str, keep: impl Fn(char) -> bool, digit_first: bool) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    if !digit_first && chars.peek().is_some_and(char::is_ascii_digit) {
        chars.next();
        out.push('_');
    }
    let mut in_run = false;
    for c in chars {
        if keep(c) {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// A metric name in Prometheus's alphabet, before any suffix.
pub fn metric_name(name: &str) -> String {
    sanitize(name, name_char, false)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// An attribute key as a label name.
pub fn label_name(key: &str) -> String {
    sanitize(key, |c| c.is_ascii_alphanumeric(), false)
}

/// Units with a word of their own.
const UNIT_WORDS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

/// The denominators of `x/y` units.
const PER_UNIT_WORDS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn word<'a>(table: &'a [(&str, &str)], unit: &str) -> Option<&'a str> {
    table.iter().find(|(u, _)| *u == unit).map(|(_, w)| *w)
}

/// Drops `{...}` annotations: from the first `{` to the last `}`, as the reference's
/// greedy pattern does.
fn without_annotations(unit: &str) -> String {
    match (unit.find('{'), unit.rfind('}')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &unit[..open], &unit[close + 1..])
        }
        _ => unit.to_owned(),
    }
}

/// Units may start with a digit (`1`, `10ms`).
fn unit_sanitize(unit: &str) -> String {
    sanitize(unit, name_char, true)
}

/// A UCUM unit as the word a metric name ends with; empty when it adds none.
pub fn unit_word(unit: &str) -> String {
    let unit = without_annotations(unit);
    if let Some(w) = word(UNIT_WORDS, &unit) {
        return w.to_owned();
    }
    if let Some((top, bottom)) = unit.split_once('/') {
        let bottom = unit_sanitize(bottom);
        if !bottom.is_empty() {
            let top = unit_sanitize(top);
            let top = word(UNIT_WORDS, &top).map_or(top.clone(), str::to_owned);
            let bottom = word(PER_UNIT_WORDS, &bottom).map_or(bottom.clone(), str::to_owned);
            return if top.is_empty() {
                format!("per_{bottom}")
            } else {
                format!("{top}_per_{bottom}")
            };
        }
    }
    unit_sanitize(&unit).trim_matches('_').to_owned()
}

/// The word a family of `kind` with `unit` ends with (also its OpenMetrics `# UNIT`):
/// [`unit_word`], and `ratio` for gauges of unit `1`.
pub fn unit_suffix(unit: &str, kind: FamilyKind) -> String {
    if kind == FamilyKind::Gauge && without_annotations(unit) == "1" {
        return "ratio".to_owned();
    }
    unit_word(unit)
}

/// The family name of a metric: its sanitised name with the unit's word, without
/// `_total` (a counter's samples add it; see [`sample_suffix`]).
pub fn family_name(name: &str, unit: &str, kind: FamilyKind) -> String {
    let mut family = metric_name(name);
    if kind == FamilyKind::Counter
        && let Some(stripped) = family.strip_suffix("_total")
    {
        family.truncate(stripped.len());
    }
    let word = unit_suffix(unit, kind);
    if !word.is_empty() && !family.ends_with(&format!("_{word}")) {
        family.push('_');
        family.push_str(&word);
    }
    family
}

/// What a counter's samples add to its family name.
pub fn sample_suffix(kind: FamilyKind) -> &'static str {
    match kind {
        FamilyKind::Counter => "_total",
        FamilyKind::Gauge | FamilyKind::Histogram | FamilyKind::Summary => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_reference_exporter() {
        assert_eq!(metric_name("http.server.duration"), "http_server_duration");
        assert_eq!(metric_name("1st..try"), "_st_try");
        assert_eq!(metric_name("a:b"), "a:b");
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("a:b__c"), "a_b_c");
        assert_eq!(label_name("9lives"), "_lives");
    }

    #[test]
    fn units_become_words() {
        assert_eq!(unit_word("ms"), "milliseconds");
        assert_eq!(unit_word("By"), "bytes");
        assert_eq!(unit_word("{request}"), "");
        assert_eq!(unit_word("m/s"), "meters_per_second");
        // The reference maps a whole unit only: `By/` is not `By`.
        assert_eq!(unit_word("By/{packet}"), "By");
        assert_eq!(unit_word("{packets}/s"), "per_second");
        assert_eq!(unit_word("1"), "");
        assert_eq!(unit_word("widgets!"), "widgets");
    }

    #[test]
    fn families_take_the_unit_once_and_counters_lose_total() {
        use FamilyKind::*;
        assert_eq!(family_name("requests", "{request}", Counter), "requests");
        assert_eq!(family_name("requests_total", "", Counter), "requests");
        assert_eq!(family_name("sent", "By", Counter), "sent_bytes");
        assert_eq!(family_name("sent_bytes", "By", Counter), "sent_bytes");
        assert_eq!(
            family_name("http.duration", "ms", Histogram),
            "http_duration_milliseconds"
        );
        assert_eq!(
            family_name("cpu.utilization", "1", Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(family_name("errors", "1", Counter), "errors");
        assert_eq!(sample_suffix(Counter), "_total");
    }
}
