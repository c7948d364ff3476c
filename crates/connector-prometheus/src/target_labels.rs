//! A target's labels on every sample, merged as Prometheus 2.42's `mutateSampleLabels`:
//! with `honor_labels = false` a scraped label that clashes with a target label is
//! kept as `exported_<name>` (prefixed again while that name is taken); with `true`
//! the scraped label wins. A scraped label with an empty value counts as absent.

use std::borrow::Cow;

use crate::config::PrometheusConfig;
use crate::exposition::Labels;

/// One sample's labels after the merge: borrowed from the body and the config,
/// copied only for a renamed clash or an escaped value.
pub(crate) type Merged<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Fills `out` with `sample`'s labels merged with `config.labels` (not empty).
pub(crate) fn merge<'a>(sample: &Labels<'a>, config: &'a PrometheusConfig, out: &mut Merged<'a>) {
    out.clear();
    let target = &config.labels;
    let mut clashes: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
    for (name, value) in sample.iter_decoded() {
        let clash = target.contains_key(name);
        if !clash || (config.honor_labels && !value.is_empty()) {
            out.push((Cow::Borrowed(name), value));
        } else if !value.is_empty() {
            clashes.push((Cow::Borrowed(name), value));
        }
    }
    let scraped_has = |name: &str| sample.iter_raw().any(|(n, _)| n == name);
    if !clashes.is_empty() {
        clashes.sort_by_key(|(name, _)| name.len());
        for i in 0..clashes.len() {
            let mut renamed = clashes[i].0.to_string();
            loop {
                renamed.insert_str(0, "exported_");
                let taken = scraped_has(&renamed)
                    || target.contains_key(&renamed)
                    || clashes[..i].iter().any(|(n, _)| *n == renamed);
                if !taken {
                    break;
                }
            }
            clashes[i].0 = Cow::Owned(renamed);
        }
        out.append(&mut clashes);
    }
    for (name, value) in target {
        let scraped_wins = config.honor_labels
            && sample
                .iter_decoded()
                .any(|(n, v)| n == name && !v.is_empty());
        if !scraped_wins {
            out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, Parser};

    fn merged(line: &str, labels: &[(&str, &str)], honor: bool) -> Vec<(String, String)> {
        let mut config =
            PrometheusConfig::from_json(&serde_json::json!({"endpoint": "http://h/m"})).unwrap();
        config.labels = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        config.honor_labels = honor;
        let text = format!("{line}\n");
        let sample = Parser::new(&text, Format::Prometheus)
            .next()
            .unwrap()
            .unwrap();
        let mut out = Merged::new();
        merge(&sample.labels, &config, &mut out);
        let mut pairs: Vec<_> = out
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.sort();
        pairs
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = p
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn clashes_are_exported_unless_honored() {
        let target = [("instance", "h:1"), ("job", "node")];
        assert_eq!(
            merged(r#"up{job="app",a="1"} 1"#, &target, false),
            pairs(&[
                ("a", "1"),
                ("exported_job", "app"),
                ("instance", "h:1"),
                ("job", "node")
            ])
        );
        assert_eq!(
            merged(r#"up{job="app",a="1"} 1"#, &target, true),
            pairs(&[("a", "1"), ("instance", "h:1"), ("job", "app")])
        );
        // `exported_job` is taken by the exposition: the clash goes one prefix further.
        assert_eq!(
            merged(r#"up{job="app",exported_job="x"} 1"#, &target, false),
            pairs(&[
                ("exported_exported_job", "app"),
                ("exported_job", "x"),
                ("instance", "h:1"),
                ("job", "node")
            ])
        );
        // An empty scraped value is no label: the target's is used either way.
        assert_eq!(
            merged(r#"up{job=""} 1"#, &target, true),
            pairs(&[("instance", "h:1"), ("job", "node")])
        );
        assert_eq!(
            merged(r#"up{a="\"q\""} 1"#, &[("job", "n")], false),
            pairs(&[("a", "\"q\""), ("job", "n")])
        );
    }
}
