//! Running rules over a label set, rule by rule, as Prometheus 2.42's `relabel.Process`.

use md5::{Digest, Md5};

use crate::Labels;
use crate::config::{Action, Rule};

/// Prometheus's `labels.Builder.Set`: an empty value removes the label.
fn set(labels: &mut Labels, name: String, value: String) {
    if value.is_empty() {
        labels.remove(&name);
    } else {
        labels.insert(name, value);
    }
}

/// The last eight bytes of the MD5 as a big-endian integer, as Prometheus's `sum64`
/// (its shifts past 63 bits drop the first eight).
fn hash_mod(value: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(value.as_bytes());
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(low) % modulus
}

/// Applies `rules` in order; each sees the result of the one before. `false` means a
/// `keep`/`drop`-style rule dropped the set (its labels are then unspecified).
pub fn process(labels: &mut Labels, rules: &[Rule]) -> bool {
    rules.iter().all(|rule| apply(labels, rule))
}

fn apply(labels: &mut Labels, rule: &Rule) -> bool {
    let config = &rule.config;
    let value = config
        .source_labels
        .iter()
        .flatten()
        .map(|name| labels.get(name).map_or("", String::as_str))
        .collect::<Vec<_>>()
        .join(&config.separator);
    let target_value = || labels.get(&config.target_label).map_or("", String::as_str);
    match config.action {
        Action::Drop => return !rule.regex.is_match(&value),
        Action::Keep => return rule.regex.is_match(&value),
        Action::DropEqual => return target_value() != value,
        Action::KeepEqual => return target_value() == value,
        Action::Replace => {
            let Some(captures) = rule.regex.captures(&value) else {
                return true;
            };
            let mut target = String::new();
            captures.expand(&config.target_label, &mut target);
            if !crate::is_valid_label_name(&target) {
                labels.remove(&config.target_label);
                return true;
            }
            let mut replaced = String::new();
            captures.expand(&config.replacement, &mut replaced);
            if replaced.is_empty() {
                // Prometheus 2.42 removes the label as written, not as expanded.
                labels.remove(&config.target_label);
                return true;
            }
            labels.insert(target, replaced);
        }
        Action::Lowercase => set(labels, config.target_label.clone(), value.to_lowercase()),
        Action::Uppercase => set(labels, config.target_label.clone(), value.to_uppercase()),
        Action::HashMod => {
            let bucket = hash_mod(&value, config.modulus);
            labels.insert(config.target_label.clone(), bucket.to_string());
        }
        Action::LabelMap => {
            let before = labels.clone();
            for (name, label_value) in before {
                if let Some(captures) = rule.regex.captures(&name) {
                    let mut mapped = String::new();
                    captures.expand(&config.replacement, &mut mapped);
                    set(labels, mapped, label_value);
                }
            }
        }
        Action::LabelDrop => labels.retain(|name, _| !rule.regex.is_match(name)),
        Action::LabelKeep => labels.retain(|name, _| rule.regex.is_match(name)),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RelabelConfig;
    use crate::test_labels as labels;

    fn run(start: &[(&str, &str)], rules: serde_json::Value) -> Option<Labels> {
        let configs: Vec<RelabelConfig> = serde_json::from_value(rules).unwrap();
        let rules = crate::compile_all(&configs).unwrap();
        let mut set = labels(start);
        process(&mut set, &rules).then_some(set)
    }

    #[test]
    fn replace_expands_groups_and_removes_on_empty() {
        let got = run(
            &[("__address__", "10.0.0.1:9100"), ("env", "prod")],
            serde_json::json!([
                {"source_labels": ["__address__"], "regex": "(.*):(\\d+)", "target_label": "host", "replacement": "${1}"},
                {"source_labels": ["env"], "regex": "p(.*)", "target_label": "stage_$1", "replacement": "x$1y"},
                {"source_labels": ["missing"], "target_label": "env"}
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            labels(&[
                ("__address__", "10.0.0.1:9100"),
                ("host", "10.0.0.1"),
                // `$1y` names a group `1y` (none), as in Go: only `x` is left.
                ("stage_rod", "x")
            ])
        );
    }

    #[test]
    fn regex_is_anchored_and_no_match_changes_nothing() {
        let got = run(
            &[("a", "xab")],
            serde_json::json!([{"source_labels": ["a"], "regex": "ab", "target_label": "b"}]),
        )
        .unwrap();
        assert_eq!(got, labels(&[("a", "xab")]));
        assert!(
            run(
                &[("a", "xab")],
                serde_json::json!([{"source_labels": ["a"], "regex": "ab", "action": "keep"}])
            )
            .is_none()
        );
    }

    #[test]
    fn keep_drop_and_equal_forms() {
        let start = [("a", "1"), ("b", "1"), ("c", "2")];
        assert!(
            run(
                &start,
                serde_json::json!([{"source_labels": ["a", "c"], "regex": "1;2", "action": "keep"}])
            )
            .is_some()
        );
        assert!(run(&start, serde_json::json!([{"source_labels": ["a", "c"], "separator": "", "regex": "12", "action": "drop"}])).is_none());
        assert!(run(&start, serde_json::json!([{"source_labels": ["a"], "target_label": "b", "action": "keepequal"}])).is_some());
        assert!(run(&start, serde_json::json!([{"source_labels": ["a"], "target_label": "c", "action": "keepequal"}])).is_none());
        assert!(run(&start, serde_json::json!([{"source_labels": ["a"], "target_label": "b", "action": "dropequal"}])).is_none());
        // A missing source label is the empty string, which equals a missing target.
        assert!(run(&start, serde_json::json!([{"source_labels": ["x"], "target_label": "y", "action": "keepequal"}])).is_some());
    }

    #[test]
    fn hashmod_takes_the_low_64_bits_of_md5() {
        // md5("") = d41d8cd98f00b204 e9800998ecf8427e; 0xe9800998ecf8427e % 10 = 8.
        assert_eq!(hash_mod("", 10), 8);
        let got = run(
            &[("__address__", "127.0.0.1:9100")],
            serde_json::json!([{"source_labels": ["__address__"], "modulus": 1000, "target_label": "shard", "action": "hashmod"}]),
        )
        .unwrap();
        assert_eq!(got["shard"], "150");
    }

    #[test]
    fn label_forms() {
        let start = [
            ("__meta_x_team", "db"),
            ("__meta_x_zone", "a"),
            ("team", "web"),
        ];
        let got = run(
            &start,
            serde_json::json!([{"action": "labelmap", "regex": "__meta_x_(.+)"}]),
        )
        .unwrap();
        assert_eq!(got["team"], "db");
        assert_eq!(got["zone"], "a");
        let got = run(
            &start,
            serde_json::json!([{"action": "labeldrop", "regex": "__meta_.*"}]),
        )
        .unwrap();
        assert_eq!(got, labels(&[("team", "web")]));
        let got = run(
            &start,
            serde_json::json!([{"action": "labelkeep", "regex": "__meta_.*"}]),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        let got = run(
            &start,
            serde_json::json!([
                {"action": "uppercase", "source_labels": ["team"], "target_label": "up"},
                {"action": "lowercase", "source_labels": ["up"], "target_label": "down"},
                {"action": "lowercase", "source_labels": ["missing"], "target_label": "team"}
            ]),
        )
        .unwrap();
        assert_eq!(got["up"], "WEB");
        assert_eq!(got["down"], "web");
        assert!(!got.contains_key("team"));
    }
}
