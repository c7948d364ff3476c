//! Prometheus's `relabel_configs` and scrape-target label rules, as Prometheus 2.42
//! applies them, so a configuration copied from a Prometheus file means the same here.
//!
//! - [`RelabelConfig`] is one rule as written (serde, Prometheus's keys and defaults);
//!   [`RelabelConfig::compile`] checks it the way Prometheus does at load time and
//!   gives a [`Rule`], naming the field of the first problem.
//! - [`process`] runs rules over a label set in order; `false` means the set was dropped.
//! - [`populate_target`] is Prometheus's `PopulateLabels`: scrape defaults, relabeling,
//!   the default port, `__meta_*` removed, `instance` defaulted; [`ScrapeTarget::url`]
//!   builds the scrape URL from `__scheme__`, `__address__`, `__metrics_path__` and
//!   `__param_*`.
//!
//! Regexes are Go RE2 syntax run by the `regex` crate, fully anchored. Where the two
//! differ in meaning (`\d`, `\w`, `\s` are ASCII-only in Go), the pattern is rewritten
//! so it matches what Go matches; see [`regex_compat`].

mod config;
mod process;
pub mod regex_compat;
mod target;

use std::collections::BTreeMap;

pub use config::{Action, RelabelConfig, RelabelError, Rule, compile_all};
pub use process::process;
pub use target::{ScrapeDefaults, ScrapeTarget, TargetOutcome, populate_target};

/// A label set: names to values, sorted by name as Prometheus sorts them. An empty
/// value means the label is absent, as in Prometheus.
pub type Labels = BTreeMap<String, String>;

/// Prometheus's (pre-UTF-8) label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A label set from pairs, for the tests of every module.
#[cfg(test)]
pub(crate) fn test_labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
