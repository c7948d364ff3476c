//! connectord's TOML file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use connector_core::Registry;
use connector_runner::{ConnectorSpec, DestinationSpec};
use serde::Deserialize;

/// The whole file. Unknown keys anywhere are errors, so typos fail at start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub runner: RunnerSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub connectors: Vec<ConnectorSpec>,
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    /// `[[discovery]]`: targets found by service discovery, each a managed connector.
    #[serde(default)]
    pub discovery: Vec<discovery::DiscoverySpec>,
    /// `[query]`: the backend that answers `/metrics/api/v1/`.
    #[serde(default)]
    pub query: Option<crate::query::QueryConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the API, `/metrics` and `/healthz` listen. Port 0 picks a free port (logged at start).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// API tokens. With none, the server only binds loopback unless
    /// `allow_unauthenticated` says otherwise.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Serve without tokens on a non-loopback address. Say so explicitly or not at all.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// A request head (request line and headers) must arrive within this long after
    /// the connection opens or the previous response ends; else 408 and close.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// At most this many connections are served at once; more wait in the kernel's
    /// accept queue, as with Prometheus's `--web.max-connections`.
    #[serde(default = "default_server_max_connections")]
    pub max_connections: usize,
    /// The largest request head; a longer request line gets 414, longer headers 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Directories under which connectors created over the API may name files (CA
    /// files, client certificates). None: file keys are refused over the API.
    /// Connectors declared in this file may name any path.
    #[serde(default)]
    pub api_file_roots: Vec<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tokens: Vec::new(),
            allow_unauthenticated: false,
            header_read_timeout_ms: default_header_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_server_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            api_file_roots: Vec::new(),
        }
    }
}

/// Bounds of `[server] header_read_timeout_ms`.
pub const HEADER_READ_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Bounds of `[server] idle_timeout_ms`.
pub const IDLE_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// Bounds of `[server] max_connections`.
pub const SERVER_MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=65_536;
/// Bounds of `[server] max_header_bytes`.
pub const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1_024..=1_048_576;
/// Bounds of `[runner] shutdown_grace_ms`.
pub const SHUTDOWN_GRACE_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=600_000;

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_server_max_connections() -> usize {
    512
}

fn default_max_header_bytes() -> usize {
    // Browsers and Grafana send well under 8 KiB; nginx's default buffers hold 32 KiB.
    32 * 1024
}

/// One API token: `[[server.tokens]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs and 403 messages; never the token itself.
    pub name: String,
    /// Where the token comes from, `$env:NAME`; resolved once at start.
    pub token_ref: connector_core::SecretRef,
    /// What it may do.
    pub scopes: Vec<crate::api::Scope>,
    /// The org whose connectors it sees and manages; without one it is an operator
    /// token, which sees every org.
    #[serde(default)]
    pub org_id: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (the embedded default) or `postgres` (several processes, one database).
    #[serde(default)]
    pub kind: StorageKind,
    /// The folder of the SQLite files, relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// For `postgres`: where the connection URL comes from, e.g. `$env:DATABASE_URL`.
    #[serde(default)]
    pub url_ref: Option<connector_core::SecretRef>,
    /// For `postgres`: the most connections one process opens (2 to 1000).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long rows are kept for connectors without their own `retention`
    /// (`"30d"`, `"12h"`); none keeps them forever.
    #[serde(default)]
    pub default_retention: Option<String>,
    /// How often rows past retention are pruned.
    #[serde(default = "default_prune_interval_ms")]
    pub prune_interval_ms: u64,
}

fn default_prune_interval_ms() -> u64 {
    60_000
}

/// Bounds of `[storage] prune_interval_ms`.
pub const PRUNE_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=86_400_000;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::default(),
            data_dir: default_data_dir(),
            url_ref: None,
            max_connections: default_max_connections(),
            default_retention: None,
            prune_interval_ms: default_prune_interval_ms(),
        }
    }
}

/// Bounds of `[storage] max_connections`.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 2..=1000;

fn default_max_connections() -> usize {
    16
}

/// Where state and rows live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// SQLite files under `data_dir`.
    #[default]
    Sqlite,
    /// One PostgreSQL database at `url_ref`.
    Postgres,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSection {
    /// `false` serves the API and `/metrics` but runs no ticks (maintenance, or an
    /// API-only process in front of a shared store).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A tick running longer is stopped and counted as `timeout`.
    #[serde(default = "default_tick_timeout_ms")]
    pub tick_timeout_ms: u64,
    /// How long a claim holds its bucket; renewed every third of it while a tick runs.
    /// A process that dies frees its bucket after this long.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// On SIGTERM, ticks in flight get this long to finish before they are cancelled.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

/// `[ingest]`: what push connectors (`/v1/ingest/...`) may take and hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// A request body (after gzip is undone) larger than this is refused with 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Staged bytes not yet committed past which requests get 503 and `Retry-After`.
    #[serde(default = "default_max_staged_bytes")]
    pub max_staged_bytes: u64,
    /// A closed bucket commits this long after it closes, so requests accepted just
    /// before the close are staged first.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

/// Bounds of the `[ingest]` settings.
pub const MAX_BODY_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(1 << 30);
pub const MAX_STAGED_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 40);
pub const GRACE_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=600_000;

fn default_max_body_bytes() -> u64 {
    16 << 20
}

fn default_max_staged_bytes() -> u64 {
    256 << 20
}

fn default_grace_ms() -> u64 {
    1000
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_body_bytes: default_max_body_bytes(),
            max_staged_bytes: default_max_staged_bytes(),
            grace_ms: default_grace_ms(),
        }
    }
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

fn default_lease_ms() -> u64 {
    30_000
}

impl Default for RunnerSection {
    fn default() -> Self {
        RunnerSection {
            enabled: true,
            tick_timeout_ms: default_tick_timeout_ms(),
            lease_ms: default_lease_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_tick_timeout_ms() -> u64 {
    // Long enough for a scrape at the largest timeout_ms with all its retries.
    300_000
}

/// Reads and checks the whole file: TOML syntax and keys, then every connector's spec
/// and its own `validate_config`. Errors name the connector and the key.
/// A TOML error for the operator. toml quotes the offending line; when that line
/// sets a `*_ref` key, the line may hold a secret pasted where a `$env:NAME`
/// reference belongs, so the error names the line and the key and quotes nothing.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let Some(span) = e.span() else {
        return anyhow::anyhow!("{}: {e}", path.display());
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let before = &text[line_start..start];
    let Some(key_end) = before.rfind("_ref") else {
        if !text[line_start..line_end].contains("_ref") {
            return anyhow::anyhow!("{}: {e}", path.display());
        }
        return anyhow::anyhow!(
            "{}: line {}: {} (the line is not shown: it sets a secret reference)",
            path.display(),
            text[..start].matches('\n').count() + 1,
            e.message()
        );
    };
    let key_start = before[..key_end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    anyhow::anyhow!(
        "{}: line {}: `{}`: {} (the line is not shown: it may hold a secret)",
        path.display(),
        text[..start].matches('\n').count() + 1,
        &before[key_start..key_end + "_ref".len()],
        e.message()
    )
}

pub fn load(path: &Path, registry: &Registry) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: FileConfig = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    if let Some(query) = &config.query {
        query
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    in_range(
        path,
        "runner.tick_timeout_ms",
        config.runner.tick_timeout_ms,
        1_000..=3_600_000,
    )?;
    in_range(
        path,
        "runner.lease_ms",
        config.runner.lease_ms,
        3_000..=3_600_000,
    )?;
    in_range(
        path,
        "ingest.max_body_bytes",
        config.ingest.max_body_bytes,
        MAX_BODY_BYTES_RANGE,
    )?;
    in_range(
        path,
        "ingest.max_staged_bytes",
        config.ingest.max_staged_bytes,
        MAX_STAGED_BYTES_RANGE,
    )?;
    in_range(
        path,
        "ingest.grace_ms",
        config.ingest.grace_ms,
        GRACE_MS_RANGE,
    )?;
    in_range(
        path,
        "storage.prune_interval_ms",
        config.storage.prune_interval_ms,
        PRUNE_INTERVAL_MS_RANGE,
    )?;
    if let Some(retention) = &config.storage.default_retention {
        connector_runner::parse_duration(retention)
            .map_err(|e| anyhow::anyhow!("{}: storage.default_retention: {e}", path.display()))?;
    }
    if config.server.tokens.is_empty()
        && !config.server.listen.ip().is_loopback()
        && !config.server.allow_unauthenticated
    {
        bail!(
            "{}: server.listen: {} is reachable from other machines but no [[server.tokens]] are configured; \
             add tokens, listen on 127.0.0.1, or set server.allow_unauthenticated = true",
            path.display(),
            config.server.listen
        );
    }
    let server = &config.server;
    in_range(
        path,
        "storage.max_connections",
        config.storage.max_connections,
        MAX_CONNECTIONS_RANGE,
    )?;
    in_range(
        path,
        "server.header_read_timeout_ms",
        server.header_read_timeout_ms,
        HEADER_READ_TIMEOUT_MS_RANGE,
    )?;
    in_range(
        path,
        "server.idle_timeout_ms",
        server.idle_timeout_ms,
        IDLE_TIMEOUT_MS_RANGE,
    )?;
    in_range(
        path,
        "server.max_connections",
        server.max_connections,
        SERVER_MAX_CONNECTIONS_RANGE,
    )?;
    in_range(
        path,
        "server.max_header_bytes",
        server.max_header_bytes,
        MAX_HEADER_BYTES_RANGE,
    )?;
    in_range(
        path,
        "runner.shutdown_grace_ms",
        config.runner.shutdown_grace_ms,
        SHUTDOWN_GRACE_MS_RANGE,
    )?;
    for (i, root) in server.api_file_roots.iter().enumerate() {
        if !root.is_absolute()
            || root
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            bail!(
                "{}: server.api_file_roots[{i}]: `{}` must be an absolute path without `..`",
                path.display(),
                root.display()
            );
        }
    }
    match (config.storage.kind, &config.storage.url_ref) {
        (StorageKind::Postgres, None) => bail!(
            "{}: storage.url_ref: kind = \"postgres\" needs url_ref = \"$env:DATABASE_URL\" (or another variable)",
            path.display()
        ),
        (StorageKind::Sqlite, Some(_)) => bail!(
            "{}: storage.url_ref: only kind = \"postgres\" uses a URL; SQLite lives in data_dir",
            path.display()
        ),
        _ => {}
    }
    let mut token_names = HashSet::new();
    for (i, token) in config.server.tokens.iter().enumerate() {
        if token.name.trim().is_empty() || !token_names.insert(token.name.as_str()) {
            bail!(
                "{}: server.tokens[{i}]: name: `{}` is empty or used twice",
                path.display(),
                token.name
            );
        }
        if token.scopes.is_empty() {
            bail!(
                "{}: server.tokens[{i}] `{}`: scopes: give at least one of connectors:read, connectors:write, metrics:read",
                path.display(),
                token.name
            );
        }
        if let Some(org_id) = &token.org_id
            && let Err(e) = connector_runner::check_org_id(org_id)
        {
            bail!(
                "{}: server.tokens[{i}] `{}`: org_id: {e}",
                path.display(),
                token.name
            );
        }
    }
    let mut names = HashSet::new();
    for (i, spec) in config.connectors.iter().enumerate() {
        if !names.insert(spec.name.as_str()) {
            bail!(
                "{}: connectors[{i}] `{}`: name: another connector in this file has the same name",
                path.display(),
                spec.name
            );
        }
        spec.validate(registry).map_err(|e| {
            anyhow::anyhow!("{}: connectors[{i}] `{}`: {e}", path.display(), spec.name)
        })?;
    }
    let mut destination_names = HashSet::new();
    for (i, spec) in config.destinations.iter().enumerate() {
        let at = || format!("{}: destinations[{i}] `{}`", path.display(), spec.name);
        if !destination_names.insert(spec.name.as_str()) {
            bail!(
                "{}: name: another destination in this file has the same name",
                at()
            );
        }
        spec.validate(registry)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        // A source declared in this file is checked now; one created over the API is
        // checked when the destination starts.
        if let Some(source) = config.connectors.iter().find(|c| c.name == spec.source)
            && let Some(connector) = registry.get(&source.connector_type)
        {
            spec.check_source_schema(registry, &connector.schema())
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        }
    }
    let mut discovery_names = HashSet::new();
    for (i, spec) in config.discovery.iter().enumerate() {
        let at = || format!("{}: discovery[{i}] `{}`", path.display(), spec.name);
        if !discovery_names.insert(spec.name.as_str()) {
            bail!(
                "{}: name: another discovery in this file has the same name",
                at()
            );
        }
        spec.validate(registry)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
    }
    Ok(config)
}

/// A numeric setting within its bounds, worded as every connector words its own
/// (`connector_core::check_range`), with the file in front.
fn in_range<T: PartialOrd + std::fmt::Display>(
    path: &Path,
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<()> {
    connector_core::check_range(key, value, range)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(connector_prometheus::PrometheusConnector::new())
            .unwrap();
        r
    }

    fn load_str(text: &str) -> Result<FileConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, &registry()).map_err(|e| {
            anyhow::anyhow!(e.to_string().replace(&path.display().to_string(), "FILE"))
        })
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "/tmp/x"
[[connectors]]
name = "node"
type = "prometheus"
target_database = "metrics"
target_table = "node"
schedule_ms = 15000
[connectors.config]
endpoint = "http://127.0.0.1:9100/metrics"
auth = { type = "bearer", token_ref = "$env:NODE_TOKEN" }
"#;

    #[test]
    fn a_good_file_loads_with_defaults() {
        let config = load_str(GOOD).unwrap();
        assert_eq!(config.connectors.len(), 1);
        assert_eq!(
            config.connectors[0].config["auth"]["token_ref"],
            "$env:NODE_TOKEN"
        );
        assert_eq!(config.runner.tick_timeout_ms, 300_000);
        let empty = load_str("").unwrap();
        assert_eq!(empty.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(empty.storage.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn storage_kinds() {
        let pg = GOOD.replace(
            "data_dir = \"/tmp/x\"",
            "kind = \"postgres\"\nurl_ref = \"$env:DATABASE_URL\"",
        );
        let config = load_str(&pg).unwrap();
        assert_eq!(config.storage.kind, StorageKind::Postgres);
        assert_eq!(config.storage.max_connections, 16);
        let err = load_str(&pg.replace("url_ref", "max_connections = 1\nurl_ref"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "FILE: storage.max_connections: 1 is out of range, expected 2 to 1000"
        );
        let err = load_str(&GOOD.replace("data_dir = \"/tmp/x\"", "kind = \"postgres\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("FILE: storage.url_ref: kind = \"postgres\" needs url_ref"),
            "{err}"
        );
        let err = load_str(&GOOD.replace("data_dir = \"/tmp/x\"", "kind = \"mysql\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variant `mysql`, expected `sqlite` or `postgres`"),
            "{err}"
        );
        let err = load_str(&GOOD.replace("data_dir = \"/tmp/x\"", "url_ref = \"$env:X\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("FILE: storage.url_ref: only kind = \"postgres\" uses a URL"),
            "{err}"
        );
    }

    #[test]
    fn tokens_and_exposure() {
        let open = GOOD.replace("127.0.0.1:0", "0.0.0.0:8080");
        let err = load_str(&open).unwrap_err().to_string();
        assert!(
            err.starts_with("FILE: server.listen: 0.0.0.0:8080 is reachable from other machines"),
            "{err}"
        );
        let allowed = open.replace("[storage]", "allow_unauthenticated = true\n[storage]");
        assert!(load_str(&allowed).is_ok());
        let with_token = open.replace(
            "[storage]",
            "[[server.tokens]]\nname = \"grafana\"\ntoken_ref = \"$env:GRAFANA_TOKEN\"\nscopes = [\"metrics:read\"]\n[storage]",
        );
        let config = load_str(&with_token).unwrap();
        assert_eq!(
            config.server.tokens[0].scopes,
            [crate::api::Scope::MetricsRead]
        );
        // A token pasted literally where a reference belongs: refused, never echoed.
        let pasted = with_token.replace("$env:GRAFANA_TOKEN", "glsa_Secr3tPastedToken_0123456789");
        let err = load_str(&pasted).unwrap_err().to_string();
        assert!(!err.contains("Secr3t"), "{err}");
        assert!(
            err.starts_with(
                "FILE: line 6: `token_ref`: invalid secret reference (33 characters, not shown)"
            ),
            "{err}"
        );
        let inline = GOOD.replace(
            "[storage]",
            "[storage]\nkind = \"postgres\"\nurl_ref = \"postgres://u:hunter2@db/x\"\n",
        );
        let err = load_str(&inline).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("`url_ref`: invalid secret reference"), "{err}");
        let err = load_str(&with_token.replace("metrics:read", "metrics:write"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `metrics:write`"), "{err}");
        let err = load_str(&with_token.replace("[\"metrics:read\"]", "[]"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.tokens[0] `grafana`: scopes: give at least one"),
            "{err}"
        );
        let org =
            |id: &str| with_token.replace("scopes = ", &format!("org_id = \"{id}\"\nscopes = "));
        let config = load_str(&org("acme")).unwrap();
        assert_eq!(config.server.tokens[0].org_id.as_deref(), Some("acme"));
        let err = load_str(&org("ACME")).unwrap_err().to_string();
        assert!(
            err.contains("server.tokens[0] `grafana`: org_id: `ACME` is not a valid org id"),
            "{err}"
        );
    }

    #[test]
    fn discoveries_are_checked_naming_the_discovery_and_the_field() {
        let discovery = |extra: &str| {
            format!(
                "{GOOD}\n[[discovery]]\nname = \"nodes\"\ntype = \"http_sd\"\nurl = \"http://127.0.0.1:1/sd\"\n{extra}\n\
                 [discovery.template]\ntype = \"prometheus\"\ntarget_database = \"metrics\"\ntarget_table = \"nodes\"\nschedule_ms = 15000\n"
            )
        };
        let config = load_str(&discovery("")).unwrap();
        assert_eq!(config.discovery[0].name, "nodes");
        let err = load_str(&discovery(
            "[[discovery.relabel_configs]]\nregex = \"(\"\ntarget_label = \"x\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "FILE: discovery[0] `nodes`: relabel_configs[0].regex: invalid regex `(`"
            ),
            "{err}"
        );
        let err = load_str(&discovery("files = [\"/x/*.json\"]"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "FILE: discovery[0] `nodes`: files: http_sd discoveries do not take `files`"
        );
        let err = load_str(&discovery("refresh = 5")).unwrap_err().to_string();
        assert!(err.contains("unknown field `refresh`"), "{err}");
    }

    #[test]
    fn errors_name_the_connector_and_the_key() {
        let err = load_str(&GOOD.replace("endpoint =", "endpiont ="))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "FILE: connectors[0] `node`: config: unknown field `endpiont`, expected one of `endpoint`, `auth`, `timeout_ms`, `body_size_limit_bytes`, `sample_limit`, `label_limit`, `label_name_length_limit`, `label_value_length_limit`, `tls`, `strict`, `labels`, `honor_labels`"
        );
        let err =
            load_str(&GOOD.replace("schedule_ms = 15000", "schedule_ms = 15000\nschedul = 1"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `schedul`"), "{err}");
        assert!(err.contains("line 12"), "{err}");
        let err = load_str(&GOOD.replace("[server]", "[sever]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sever`"), "{err}");
        let err = load_str(&GOOD.replace("type = \"prometheus\"", "type = \"prom\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "FILE: connectors[0] `node`: type: unknown connector type `prom`; known types: prometheus"
        );
        let twice = format!("{GOOD}{}", &GOOD[GOOD.find("[[connectors]]").unwrap()..]);
        let err = load_str(&twice).unwrap_err().to_string();
        assert_eq!(
            err,
            "FILE: connectors[1] `node`: name: another connector in this file has the same name"
        );
        let err = load_str(&GOOD.replace("\"$env:NODE_TOKEN\"", "\"plain\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "FILE: connectors[0] `node`: config: auth: token_ref: invalid secret reference"
            ),
            "{err}"
        );
    }
}
