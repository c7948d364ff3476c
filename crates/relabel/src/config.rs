//! One relabeling rule as written, and its check into a runnable [`Rule`].

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

use crate::is_valid_label_name;
use crate::regex_compat::go_to_rust;

/// What a rule does (Prometheus's `action`, matched case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Set `target_label` to the expanded `replacement` when `regex` matches.
    #[default]
    Replace,
    /// Drop the set unless `regex` matches the joined source labels.
    Keep,
    /// Drop the set when `regex` matches the joined source labels.
    Drop,
    /// Drop the set unless the joined source labels equal `target_label`'s value.
    KeepEqual,
    /// Drop the set when the joined source labels equal `target_label`'s value.
    DropEqual,
    /// Set `target_label` to the MD5 of the joined source labels modulo `modulus`.
    HashMod,
    /// Copy every label whose name matches `regex` to the name `replacement` gives.
    LabelMap,
    /// Remove every label whose name matches `regex`.
    LabelDrop,
    /// Remove every label whose name does not match `regex`.
    LabelKeep,
    /// Set `target_label` to the joined source labels in lower case.
    Lowercase,
    /// Set `target_label` to the joined source labels in upper case.
    Uppercase,
}

impl Action {
    const ALL: [(&'static str, Action); 11] = [
        ("replace", Action::Replace),
        ("keep", Action::Keep),
        ("drop", Action::Drop),
        ("keepequal", Action::KeepEqual),
        ("dropequal", Action::DropEqual),
        ("hashmod", Action::HashMod),
        ("labelmap", Action::LabelMap),
        ("labeldrop", Action::LabelDrop),
        ("labelkeep", Action::LabelKeep),
        ("lowercase", Action::Lowercase),
        ("uppercase", Action::Uppercase),
    ];

    /// The name as Prometheus writes it.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("replace", |(n, _)| n)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let lower = name.to_lowercase();
        Action::ALL
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown relabel action `{name}`, expected one of {}",
                    Action::ALL.map(|(n, _)| n).join(", ")
                ))
            })
    }
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

fn default_separator() -> String {
    DEFAULT_SEPARATOR.to_owned()
}

fn default_regex() -> String {
    DEFAULT_REGEX.to_owned()
}

fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_owned()
}

/// One entry of `relabel_configs`, with Prometheus's keys and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined by `separator` into the value the rule tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    /// Joins the source labels' values (default `;`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// RE2 syntax, anchored at both ends (default `(.*)`).
    #[serde(default = "default_regex")]
    pub regex: String,
    /// For `hashmod`.
    #[serde(default)]
    pub modulus: u64,
    /// The label a rule writes (or compares, for `keepequal`/`dropequal`).
    #[serde(default)]
    pub target_label: String,
    /// What `replace` and `labelmap` write, with `$1` / `${name}` references (default `$1`).
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// What the rule does (default `replace`).
    #[serde(default)]
    pub action: Action,
}

/// A rule that failed its check, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RelabelError {
    /// `regex`, `target_label`, `modulus`, ...
    pub field: &'static str,
    /// What is wrong, in Prometheus's words where it has them.
    pub message: String,
}

fn error(field: &'static str, message: impl Into<String>) -> RelabelError {
    RelabelError {
        field,
        message: message.into(),
    }
}

/// A checked rule, its regex compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) config: RelabelConfig,
    pub(crate) regex: Regex,
}

impl Rule {
    /// The rule as written.
    pub fn config(&self) -> &RelabelConfig {
        &self.config
    }
}

/// Prometheus's check for a `target_label` holding `$` references.
fn is_valid_target_template(target: &str) -> bool {
    #[allow(clippy::unwrap_used)] // a constant pattern, covered by the tests
    static TEMPLATE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").unwrap()
    });
    TEMPLATE.is_match(target)
}

impl RelabelConfig {
    /// Checks the rule as Prometheus does when it loads a configuration, and compiles
    /// its regex (anchored: `^(?:regex)$`).
    pub fn compile(&self) -> Result<Rule, RelabelError> {
        use Action::*;
        let regex = Regex::new(&format!("^(?:{})$", go_to_rust(&self.regex)))
            .map_err(|e| error("regex", format!("invalid regex `{}`: {e}", self.regex)))?;
        let action = self.action.as_str();
        if self.modulus == 0 && self.action == HashMod {
            return Err(error(
                "modulus",
                "relabel configuration for hashmod requires non-zero modulus",
            ));
        }
        let needs_target = matches!(
            self.action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(error(
                "target_label",
                format!("relabel configuration for {action} action requires 'target_label' value"),
            ));
        }
        let templated = self.action == Replace && self.target_label.contains('$');
        let target_ok = if templated {
            is_valid_target_template(&self.target_label)
        } else {
            is_valid_label_name(&self.target_label)
        };
        if needs_target && !target_ok {
            return Err(error(
                "target_label",
                format!(
                    "`{}` is invalid 'target_label' for {action} action",
                    self.target_label
                ),
            ));
        }
        if matches!(self.action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && self.replacement != DEFAULT_REPLACEMENT
        {
            return Err(error(
                "replacement",
                format!("'replacement' can not be set for {action} action"),
            ));
        }
        if matches!(self.action, KeepEqual | DropEqual) && self.regex != DEFAULT_REGEX {
            return Err(error(
                "regex",
                format!("'regex' can not be set for {action} action"),
            ));
        }
        if self.action == LabelMap
            && !self.replacement.contains('$')
            && !is_valid_label_name(&self.replacement)
        {
            return Err(error(
                "replacement",
                format!(
                    "`{}` is invalid 'replacement' for {action} action",
                    self.replacement
                ),
            ));
        }
        if matches!(self.action, LabelDrop | LabelKeep)
            && (self.source_labels.is_some()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(error(
                "action",
                format!("{action} action requires only 'regex', and no other fields"),
            ));
        }
        if let Some(bad) = self
            .source_labels
            .iter()
            .flatten()
            .find(|l| !is_valid_label_name(l))
        {
            return Err(error(
                "source_labels",
                format!("`{bad}` is not a valid label name"),
            ));
        }
        Ok(Rule {
            config: self.clone(),
            regex,
        })
    }
}

/// Compiles a list of rules; an error names the rule's index and field
/// (`relabel_configs[2].regex: ...`).
pub fn compile_all(configs: &[RelabelConfig]) -> Result<Vec<Rule>, (usize, RelabelError)> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| c.compile().map_err(|e| (i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<Rule, String> {
        let config: RelabelConfig = serde_json::from_value(json).map_err(|e| e.to_string())?;
        config.compile().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_prometheus_defaults() {
        let r = rule(serde_json::json!({"target_label": "x"})).unwrap();
        assert_eq!(r.config.action, Action::Replace);
        assert_eq!(r.config.regex, "(.*)");
        assert_eq!(r.config.separator, ";");
        assert_eq!(r.config.replacement, "$1");
        assert_eq!(
            rule(serde_json::json!({"action": "KeepEqual", "target_label": "x"}))
                .unwrap()
                .config
                .action,
            Action::KeepEqual
        );
    }

    #[test]
    fn checks_name_the_field() {
        let cases = [
            (
                serde_json::json!({"regex": "(", "target_label": "x"}),
                "regex: invalid regex `(`",
            ),
            (
                serde_json::json!({"action": "hashmod", "target_label": "x"}),
                "modulus: relabel configuration for hashmod requires non-zero modulus",
            ),
            (
                serde_json::json!({}),
                "target_label: relabel configuration for replace action requires 'target_label' value",
            ),
            (
                serde_json::json!({"target_label": "1x"}),
                "target_label: `1x` is invalid 'target_label' for replace action",
            ),
            (
                serde_json::json!({"target_label": "$1-x"}),
                "target_label: `$1-x` is invalid 'target_label' for replace action",
            ),
            (
                serde_json::json!({"action": "lowercase", "target_label": "x", "replacement": "y"}),
                "replacement: 'replacement' can not be set for lowercase action",
            ),
            (
                serde_json::json!({"action": "keepequal", "target_label": "x", "regex": "a"}),
                "regex: 'regex' can not be set for keepequal action",
            ),
            (
                serde_json::json!({"action": "labelmap", "replacement": "a-b"}),
                "replacement: `a-b` is invalid 'replacement' for labelmap action",
            ),
            (
                serde_json::json!({"action": "labeldrop", "regex": "a", "target_label": "b"}),
                "action: labeldrop action requires only 'regex', and no other fields",
            ),
            (
                serde_json::json!({"source_labels": ["a-b"], "target_label": "b"}),
                "source_labels: `a-b` is not a valid label name",
            ),
        ];
        for (json, want) in cases {
            let got = rule(json.clone()).unwrap_err();
            assert!(got.starts_with(want), "{json}: {got}");
        }
        assert!(
            rule(serde_json::json!({"action": "move", "target_label": "x"}))
                .unwrap_err()
                .starts_with("unknown relabel action `move`, expected one of replace, keep")
        );
        assert!(rule(serde_json::json!({"target_label": "${1}_x"})).is_ok());
        assert!(rule(serde_json::json!({"target_labels": "x"})).is_err());
    }
}
