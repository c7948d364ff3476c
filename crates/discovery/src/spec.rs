//! A discovery as operators declare it (TOML `[[discovery]]`, `/v1/discoveries`), and
//! its check into something that can run.

use std::collections::BTreeMap;

use connector_core::{Drive, Registry, check_range};
use connector_http::{Auth, TlsConfig};
use connector_runner::ConnectorSpec;
use relabel::{RelabelConfig, Rule, ScrapeDefaults};
use serde::{Deserialize, Serialize};

/// The longest discovery name: it prefixes every managed connector's name.
pub const MAX_NAME_LEN: usize = 64;

/// Bounds of `refresh_ms`.
pub const REFRESH_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=86_400_000;

/// `target_limit` when the spec leaves it out: more kept targets than this fail
/// the refresh (the connectors stay as they were), so a runaway SD list cannot make
/// a million connectors.
pub const DEFAULT_TARGET_LIMIT: u64 = 10_000;

/// Bounds of `target_limit`.
pub const TARGET_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;

/// Bounds of an http_sd's `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

/// How targets are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SdType {
    /// Prometheus's HTTP SD: a JSON list of target groups from a URL.
    #[serde(rename = "http_sd")]
    Http,
    /// Prometheus's file SD: target groups in JSON or YAML files.
    #[serde(rename = "file_sd")]
    File,
}

impl SdType {
    /// `refresh_ms` when the spec leaves it out (Prometheus's defaults: 60 s for
    /// HTTP, 5 min for files, which are also watched).
    pub fn default_refresh_ms(self) -> u64 {
        match self {
            SdType::Http => 60_000,
            SdType::File => 300_000,
        }
    }

    /// The name written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            SdType::Http => "http_sd",
            SdType::File => "file_sd",
        }
    }
}

/// What each discovered target's connector is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTemplate {
    /// A connector type whose config takes `endpoint` and `labels` (`prometheus`).
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Where rows land; every target of the discovery shares it.
    pub target_database: String,
    /// The table; targets are told apart by their `job` and `instance` labels.
    pub target_table: String,
    /// The bucket length of every target.
    pub schedule_ms: u64,
    /// `__scheme__` unless discovery or relabeling sets it: `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// `__metrics_path__` unless discovery or relabeling sets it.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// Query parameters, as `__param_<name>` labels (relabeling may change them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The connector's config without `endpoint` and `labels`, which come from the target.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// The org of every target's connector (and so of the discovery).
    #[serde(default = "default_org")]
    pub org_id: String,
}

fn default_org() -> String {
    connector_runner::DEFAULT_ORG.to_owned()
}

fn default_scheme() -> String {
    "http".to_owned()
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A discovery: where targets come from, how they are relabeled, what they become.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// Unique; the `job` label of its targets unless relabeled, and the prefix of
    /// its connectors' names (`<name>/<instance>/<hash>`).
    pub name: String,
    /// `http_sd` or `file_sd`.
    #[serde(rename = "type")]
    pub sd_type: SdType,
    /// http_sd: the URL serving the target groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http_sd: how to authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// http_sd: TLS settings for an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// http_sd: per-request timeout (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// file_sd: files of target groups (`.json`, `.yml`, `.yaml`), `*` allowed in
    /// the last path element.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// How often targets are read again (default 60000 for http_sd, 300000 for file_sd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
    /// The most targets relabeling may keep (Prometheus's `target_limit`; default
    /// 10000). A refresh with more fails and changes no connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_limit: Option<u64>,
    /// Prometheus relabeling, applied to every discovered target in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<RelabelConfig>,
    /// What each kept target becomes.
    pub template: TargetTemplate,
}

/// A spec field that failed its check, named as in the spec (`relabel_configs[1].regex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// A checked discovery, ready to run.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The spec as declared.
    pub spec: DiscoverySpec,
    /// Its relabel rules, compiled.
    pub rules: Vec<Rule>,
    /// What every target starts with before relabeling.
    pub defaults: ScrapeDefaults,
    /// `refresh_ms` with its default.
    pub refresh_ms: u64,
    /// `target_limit` with its default.
    pub target_limit: u64,
}

/// Prometheus's file_sd pattern rule: `*` only in the last element, a known extension.
fn check_file_pattern(i: usize, pattern: &str) -> Result<(), SpecError> {
    let field = format!("files[{i}]");
    let (dir, last) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if dir.contains('*') {
        return Err(error(
            field,
            format!("`{pattern}`: `*` is allowed in the last path element only"),
        ));
    }
    let lower = last.to_ascii_lowercase();
    if ![".json", ".yml", ".yaml"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        return Err(error(
            field,
            format!("`{pattern}` must end in .json, .yml or .yaml"),
        ));
    }
    Ok(())
}

impl DiscoverySpec {
    /// Reads a spec from JSON (the API's body, or the stored spec), naming the key
    /// path of a type error (`template: schedule_ms: ...`).
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, SpecError> {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(raw, &mut track);
        DiscoverySpec::deserialize(de).map_err(|e| {
            let path = track.path().to_string();
            let field = if path == "." {
                "discovery".to_owned()
            } else {
                path
            };
            error(field, e.to_string())
        })
    }

    /// Checks every field, the relabel rules and the template (against the connector
    /// type's own `validate_config`, with a sample endpoint and labels). Pure.
    pub fn validate(&self, registry: &Registry) -> Result<Discovery, SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return Err(error(
                "name",
                format!(
                    "`{}`: use 1 to {MAX_NAME_LEN} ASCII letters, digits, `_`, `-` and `.`",
                    self.name
                ),
            ));
        }
        let refresh_ms = self
            .refresh_ms
            .unwrap_or_else(|| self.sd_type.default_refresh_ms());
        check_range("refresh_ms", refresh_ms, REFRESH_MS_RANGE)
            .map_err(|e| error("refresh_ms", strip_key(&e.to_string())))?;
        let target_limit = self.target_limit.unwrap_or(DEFAULT_TARGET_LIMIT);
        check_range("target_limit", target_limit, TARGET_LIMIT_RANGE)
            .map_err(|e| error("target_limit", strip_key(&e.to_string())))?;
        self.check_source()?;
        let rules = relabel::compile_all(&self.relabel_configs)
            .map_err(|(i, e)| error(format!("relabel_configs[{i}].{}", e.field), e.message))?;
        self.check_template(registry)?;
        let mut defaults = ScrapeDefaults::new(&self.name);
        defaults.scheme.clone_from(&self.template.scheme);
        defaults
            .metrics_path
            .clone_from(&self.template.metrics_path);
        defaults.params.clone_from(&self.template.params);
        Ok(Discovery {
            spec: self.clone(),
            rules,
            defaults,
            refresh_ms,
            target_limit,
        })
    }

    fn check_source(&self) -> Result<(), SpecError> {
        let only = |field: &str, present: bool| {
            if present {
                Err(error(
                    field.to_owned(),
                    format!(
                        "{} discoveries do not take `{field}`",
                        self.sd_type.as_str()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match self.sd_type {
            SdType::Http => {
                only("files", !self.files.is_empty())?;
                let url = self.url.as_deref().ok_or_else(|| {
                    error("url", "http_sd needs the URL serving the target groups")
                })?;
                connector_http::check_endpoint("url", url)
                    .map_err(|e| error("url", strip_key(&e.to_string())))?;
                if let Some(tls) = &self.tls {
                    tls.validate("tls")
                        .map_err(|e| error("tls", strip_key(&format!("{e:#}"))))?;
                }
                if let Some(timeout) = self.timeout_ms {
                    check_range("timeout_ms", timeout, TIMEOUT_MS_RANGE)
                        .map_err(|e| error("timeout_ms", strip_key(&e.to_string())))?;
                }
            }
            SdType::File => {
                only("url", self.url.is_some())?;
                only("auth", self.auth.is_some())?;
                only("tls", self.tls.is_some())?;
                only("timeout_ms", self.timeout_ms.is_some())?;
                if self.files.is_empty() {
                    return Err(error("files", "file_sd needs at least one file or pattern"));
                }
                for (i, pattern) in self.files.iter().enumerate() {
                    check_file_pattern(i, pattern)?;
                }
            }
        }
        Ok(())
    }

    fn check_template(&self, registry: &Registry) -> Result<(), SpecError> {
        let template = &self.template;
        connector_runner::check_org_id(&template.org_id)
            .map_err(|e| error("template.org_id", e))?;
        if !matches!(template.scheme.as_str(), "http" | "https") {
            return Err(error(
                "template.scheme",
                format!("`{}` is not http or https", template.scheme),
            ));
        }
        let Some(config) = template.config.as_object() else {
            return Err(error(
                "template.config",
                "must be an object (the connector's config without endpoint)",
            ));
        };
        for key in ["endpoint", "labels"] {
            if config.contains_key(key) {
                return Err(error(
                    format!("template.config.{key}"),
                    "comes from each discovered target; leave it out of the template",
                ));
            }
        }
        match registry.get(&template.connector_type) {
            Some(c) if c.drive() == Drive::Push => {
                return Err(error(
                    "template.type",
                    format!(
                        "`{}` is a push connector; discovered targets are scraped",
                        template.connector_type
                    ),
                ));
            }
            _ => {}
        }
        let sample = ConnectorSpec {
            name: format!("{}/sample", self.name),
            connector_type: template.connector_type.clone(),
            target_database: template.target_database.clone(),
            target_table: template.target_table.clone(),
            schedule_ms: template.schedule_ms,
            config: with_target(
                &template.config,
                "http://127.0.0.1:9100/metrics",
                &[("job", &self.name), ("instance", "127.0.0.1:9100")],
            ),
            retention: None,
            org_id: template.org_id.clone(),
        };
        sample
            .validate(registry)
            .map(|_| ())
            .map_err(|e| error(format!("template.{}", e.field), e.message))
    }
}

impl DiscoverySpec {
    /// The files the template's connector config names (`template.config.tls.ca_file`),
    /// so the API can hold them to the operator's allowed directories.
    pub fn template_files(&self, registry: &Registry) -> Vec<connector_core::ConfigFile> {
        let config = with_target(&self.template.config, "http://127.0.0.1:9100/metrics", &[]);
        registry
            .validate(&self.template.connector_type, &config)
            .map(|validated| registry.config_files(&validated))
            .unwrap_or_default()
            .into_iter()
            .map(|mut f| {
                f.key = format!("template.config.{}", f.key);
                f
            })
            .collect()
    }
}

/// The template's config with a target's `endpoint` and `labels` in.
pub(crate) fn with_target(
    config: &serde_json::Value,
    endpoint: &str,
    labels: &[(&str, &str)],
) -> serde_json::Value {
    let mut config = config.as_object().cloned().unwrap_or_default();
    config.insert("endpoint".to_owned(), endpoint.into());
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    if !labels.is_empty() {
        config.insert("labels".to_owned(), labels.into());
    }
    config.into()
}

/// `check_range` and the HTTP toolkit name the key themselves; the spec error names
/// it again as its field, so the repeat is taken off.
fn strip_key(message: &str) -> String {
    message
        .split_once(": ")
        .map_or(message, |(_, rest)| rest)
        .to_owned()
}
