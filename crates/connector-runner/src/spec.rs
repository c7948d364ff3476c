use std::fmt;
use std::time::Duration;

use connector_core::{Registry, ValidatedConfig, parse_duration};
use serde::{Deserialize, Serialize};

/// Bounds of `schedule_ms`, inclusive: from 100 ms to one day.
pub const SCHEDULE_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=86_400_000;

/// Longest connector name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Longest database or table name accepted (PostgreSQL's identifier limit).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// What an operator declares about a connector, in TOML or over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// Unique, human-chosen name.
    pub name: String,
    /// The connector type id (`prometheus`).
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Where rows land: a SQLite file or a PostgreSQL schema.
    pub target_database: String,
    /// The table in `target_database`.
    pub target_table: String,
    /// The bucket length in milliseconds.
    pub schedule_ms: u64,
    /// The connector's own config, checked by its `validate_config`.
    #[serde(default)]
    pub config: serde_json::Value,
    /// How long its rows are kept (`"15d"`, `"12h"`, `"90m"`): older buckets are
    /// pruned with their ledger rows. None: `[storage] default_retention`, or forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The org that owns it (`"default"` unless given): an org's API tokens see
    /// and manage only their org's connectors, and its series carry `org_id`.
    #[serde(default = "default_org")]
    pub org_id: String,
}

/// The org of a connector declared without one.
pub const DEFAULT_ORG: &str = "default";

/// Longest org id accepted.
pub const MAX_ORG_LEN: usize = 64;

fn default_org() -> String {
    DEFAULT_ORG.to_owned()
}

/// Checks an org id: 1 to [`MAX_ORG_LEN`] of `[a-z0-9_-]`, so it can be a label
/// value, a path segment and a tenant name without escaping.
pub fn check_org_id(org_id: &str) -> Result<(), String> {
    let ok = !org_id.is_empty()
        && org_id.len() <= MAX_ORG_LEN
        && org_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{org_id}` is not a valid org id: use 1 to {MAX_ORG_LEN} of `a-z`, `0-9`, `_` and `-`"
        ))
    }
}

/// A field of a [`ConnectorSpec`] that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field (`schedule_ms`, `config`, ...).
    pub field: &'static str,
    /// What is wrong with it; for `config`, the connector's own message verbatim.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        SpecError {
            field,
            message: message.into(),
        }
    }
}

impl ConnectorSpec {
    /// Checks every field and the connector's own config. Pure: no I/O.
    pub fn validate(&self, registry: &Registry) -> Result<ValidatedConfig, SpecError> {
        check_name("name", &self.name)?;
        check_org_id(&self.org_id).map_err(|e| SpecError::new("org_id", e))?;
        check_identifier("target_database", &self.target_database)?;
        check_identifier("target_table", &self.target_table)?;
        if !SCHEDULE_MS_RANGE.contains(&self.schedule_ms) {
            return Err(SpecError::new(
                "schedule_ms",
                format!(
                    "{} is out of range, expected {} to {}",
                    self.schedule_ms,
                    SCHEDULE_MS_RANGE.start(),
                    SCHEDULE_MS_RANGE.end()
                ),
            ));
        }
        if let Some(retention) = &self.retention {
            let kept = parse_duration(retention).map_err(|e| SpecError::new("retention", e))?;
            let floor = Duration::from_millis(self.schedule_ms.saturating_mul(2));
            if kept < floor {
                return Err(SpecError::new(
                    "retention",
                    format!(
                        "`{retention}` is shorter than two schedules ({} ms): a bucket could be pruned while it is committed",
                        floor.as_millis()
                    ),
                ));
            }
        }
        if registry.get(&self.connector_type).is_none() {
            let known: Vec<_> = registry.connector_types().collect();
            return Err(SpecError::new(
                "type",
                format!(
                    "unknown connector type `{}`; known types: {}",
                    self.connector_type,
                    known.join(", ")
                ),
            ));
        }
        registry
            .validate(&self.connector_type, &self.config)
            .map_err(|e| SpecError::new("config", format!("{e:#}")))
    }
}

/// A connector's or destination's name (or a reference to one).
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(SpecError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

/// Database and table names become file names and SQL identifiers, so they are kept
/// to a set that is safe for both without quoting tricks.
fn check_identifier(field: &'static str, name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER_LEN;
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!(
                "`{name}` is not a valid name: use up to {MAX_IDENTIFIER_LEN} ASCII letters, digits and `_`, starting with a letter"
            ),
        ))
    }
}

/// Where a connector was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// In connectord's TOML file; created or updated at every start.
    File,
    /// Over the REST API.
    Api,
    /// Made by a service discovery for one of its targets; kept in step with the
    /// discovered targets, never changed or deleted by hand.
    Discovery,
}

impl Origin {
    /// The lowercase name stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Api => "api",
            Origin::Discovery => "discovery",
        }
    }

    /// Parses [`Origin::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "file" => Some(Origin::File),
            "api" => Some(Origin::Api),
            "discovery" => Some(Origin::Discovery),
            _ => None,
        }
    }
}

/// Whether a connector ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorState {
    /// Ticks on schedule.
    Enabled,
    /// Paused by an operator.
    Paused,
    /// Disabled by a `Config` error until an operator resumes it.
    Disabled,
}

impl ConnectorState {
    /// The lowercase name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorState::Enabled => "enabled",
            ConnectorState::Paused => "paused",
            ConnectorState::Disabled => "disabled",
        }
    }

    /// Parses [`ConnectorState::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(ConnectorState::Enabled),
            "paused" => Some(ConnectorState::Paused),
            "disabled" => Some(ConnectorState::Disabled),
            _ => None,
        }
    }
}

impl fmt::Display for ConnectorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connector as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorRecord {
    /// A UUID assigned at creation.
    pub id: String,
    /// What was declared.
    pub spec: ConnectorSpec,
    /// Where it was declared.
    pub origin: Origin,
    /// Whether it ticks.
    pub state: ConnectorState,
    /// Why it is disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The error of the last failed tick, cleared by a successful one.
    pub last_error: Option<String>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change of the spec, Unix ms.
    pub updated_at_ms: i64,
    /// The newest tick of its history, kept beside the record so a list of every
    /// connector is one query.
    pub last_tick: Option<crate::TickRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ConnectorSpec {
        ConnectorSpec {
            name: "node".into(),
            connector_type: "none".into(),
            target_database: "metrics".into(),
            target_table: "node_1".into(),
            schedule_ms: 1000,
            config: serde_json::json!({}),
            retention: None,
            org_id: crate::DEFAULT_ORG.into(),
        }
    }

    #[test]
    fn fields_are_checked_and_named() {
        let registry = Registry::new();
        let err = |f: fn(&mut ConnectorSpec)| {
            let mut s = spec();
            f(&mut s);
            s.validate(&registry).unwrap_err().to_string()
        };
        assert_eq!(
            err(|s| s.target_table = "a-b".into()),
            "target_table: `a-b` is not a valid name: use up to 63 ASCII letters, digits and `_`, starting with a letter"
        );
        assert!(
            err(|s| s.target_database = "../etc".into()).starts_with("target_database: `../etc`")
        );
        assert!(err(|s| s.target_database = "_x".into()).starts_with("target_database: `_x`"));
        assert_eq!(
            err(|s| s.schedule_ms = 99),
            "schedule_ms: 99 is out of range, expected 100 to 86400000"
        );
        assert!(err(|s| s.name = " ".into()).starts_with("name: must be"));
        assert_eq!(
            err(|s| s.org_id = "Acme Corp".into()),
            "org_id: `Acme Corp` is not a valid org id: use 1 to 64 of `a-z`, `0-9`, `_` and `-`"
        );
        assert!(err(|s| s.org_id = String::new()).starts_with("org_id: ``"));
        assert!(err(|s| s.org_id = "a".repeat(65)).starts_with("org_id: `aaaa"));
        // Valid ids get past the org check to the next one.
        for good in ["acme", "a", "team_7-eu", &"z".repeat(64)] {
            let owned = good.to_owned();
            let mut s = spec();
            s.org_id = owned;
            assert!(
                s.validate(&registry)
                    .unwrap_err()
                    .to_string()
                    .starts_with("type:")
            );
        }
        assert_eq!(
            err(|_| {}),
            "type: unknown connector type `none`; known types: "
        );
    }

    #[test]
    fn durations_as_prometheus_writes_them() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("15d"), Ok(15 * 86_400_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("90s"), Ok(90_000));
        assert_eq!(ms("1m500ms"), Ok(60_500));
        assert_eq!(ms("2w"), Ok(14 * 86_400_000));
        for bad in ["", "15", "d", "1x", "30m1h", "1h1h", "0s", "-1d"] {
            assert!(ms(bad).is_err(), "{bad}");
        }
        let registry = Registry::new();
        let mut s = spec();
        s.retention = Some("1s".into());
        assert_eq!(
            s.validate(&registry).unwrap_err().to_string(),
            "retention: `1s` is shorter than two schedules (2000 ms): a bucket could be pruned while it is committed"
        );
        s.retention = Some("15 days".into());
        assert!(
            s.validate(&registry)
                .unwrap_err()
                .to_string()
                .starts_with("retention: `15 days` is not a duration")
        );
    }

    #[test]
    fn spec_rejects_unknown_keys() {
        let err = serde_json::from_value::<ConnectorSpec>(serde_json::json!({
            "name": "n", "type": "t", "target_database": "d", "target_table": "t",
            "schedule_ms": 1000, "config": {}, "schedule": 5
        }))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `schedule`"),
            "{err}"
        );
    }
}
