//! The author-facing API of the connector framework.
//!
//! A connector brings one kind of source into the platform. Its author implements
//! [`Connector`]: a pure [`validate_config`](Connector::validate_config) that turns
//! the raw JSON config into a typed one (so operator typos fail when the connector is
//! created), and a [`tick`](Connector::tick) that does one unit of work for one
//! scheduled bucket and returns a [`Batch`] of rows, or a [`ConnectorError`] whose
//! [`ErrorKind`] tells the runner what to do next.
//!
//! Rows also go out: a [`Destination`] follows one source connector and sends the
//! rows of each of its committed buckets to another system.
//!
//! The daemon never sees concrete connector types: it looks them up by type id in a
//! [`Registry`]. Authors test without a daemon through the `testing` feature.
#![warn(missing_docs)]

mod batch;
mod destination;
mod error;
mod json_string;
pub mod push;
mod redact;
mod registry;
mod schema;
mod secret;
mod stop;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use async_trait::async_trait;
pub use batch::{Batch, BatchError, Row, RowWriter, Value};
pub use destination::{Delivered, Destination, DynDestination};
pub use error::{ConnectorError, ErrorChain, ErrorKind};
pub use push::{Accepted, Committed, Drive, DynPush, IngestRequest, IngestResponse, PushConnector};
pub use redact::{REDACTED, redact};
pub use registry::{DynConnector, Registry, RegistryError, ValidatedConfig};
pub use schema::{Column, ColumnType, Schema};
pub use secret::{
    EnvSecrets, MapSecrets, Secret, SecretError, SecretRef, SecretRefError, SecretSource,
};
pub use stop::Stopping;

/// What a tick knows about the run it belongs to, and what it reports back besides
/// its rows. Clones share the reported figures, so the runner keeps a clone to read them.
#[derive(Debug, Clone)]
pub struct TickContext {
    connector_id: String,
    scheduled_for_ms: i64,
    secrets: Arc<dyn SecretSource>,
    source_bytes: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    sent_bytes: Arc<AtomicU64>,
    resolved: Arc<Mutex<Vec<Secret>>>,
    stop: Arc<stop::StopSignal>,
    parts: Option<PartTaker>,
}

/// Where [`TickContext::hand_over`] sends rows: set by a runner that commits rows
/// as they come.
#[derive(Clone)]
struct PartTaker(Arc<dyn Fn(Batch) + Send + Sync>);

impl std::fmt::Debug for PartTaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartTaker")
    }
}

impl TickContext {
    /// A context for the bucket starting at `scheduled_for_ms` (Unix milliseconds),
    /// resolving secrets from the process environment.
    pub fn new(connector_id: impl Into<String>, scheduled_for_ms: i64) -> Self {
        TickContext {
            connector_id: connector_id.into(),
            scheduled_for_ms,
            secrets: Arc::new(EnvSecrets),
            source_bytes: Arc::new(AtomicU64::new(0)),
            retries: Arc::new(AtomicU64::new(0)),
            sent_bytes: Arc::new(AtomicU64::new(0)),
            resolved: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(stop::StopSignal::default()),
            parts: None,
        }
    }

    /// For runners: rows a connector hands over with [`TickContext::hand_over`] go to
    /// `take` as they come, to be written while the tick goes on. The runner then
    /// commits them with the batch the tick returns, in one transaction, or none of
    /// them if the tick fails.
    pub fn with_part_taker(mut self, take: impl Fn(Batch) + Send + Sync + 'static) -> Self {
        self.parts = Some(PartTaker(Arc::new(take)));
        self
    }

    /// Hands the rows of `batch` over before the tick ends, leaving `batch` empty,
    /// so the runner can write them while the connector builds the rest: a connector
    /// that emits many rows calls it every few thousand rows. The rows are committed
    /// with the batch `tick` returns, in one transaction, or not at all when the tick
    /// fails: handing over never commits anything by itself. Where nobody takes parts
    /// (tests, `connectord parse`, stores that commit a batch whole), the rows stay in
    /// `batch`.
    ///
    /// Hand rows over only while building them from what is already in memory, not
    /// before more network waits: from the first part to the end of the tick the
    /// store may hold its write lock on the target, and other commits to it wait.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use connector_core::{Batch, ColumnType, Schema, TickContext};
    ///
    /// let schema = Arc::new(Schema::new([("n", ColumnType::Integer)]));
    /// let mut batch = Batch::new(Arc::clone(&schema));
    /// batch.row().integer(1).finish().unwrap();
    ///
    /// // Nobody takes parts: the rows stay.
    /// TickContext::new("c", 0).hand_over(&mut batch);
    /// assert_eq!(batch.len(), 1);
    ///
    /// let taken = Arc::new(Mutex::new(0));
    /// let counter = Arc::clone(&taken);
    /// let ctx = TickContext::new("c", 0)
    ///     .with_part_taker(move |part| *counter.lock().unwrap() += part.len());
    /// ctx.hand_over(&mut batch);
    /// assert_eq!((batch.len(), *taken.lock().unwrap()), (0, 1));
    /// ```
    pub fn hand_over(&self, batch: &mut Batch) {
        if let Some(PartTaker(take)) = &self.parts
            && !batch.is_empty()
        {
            take(batch.take());
        }
    }

    /// Resolves secrets from `secrets` instead of the environment.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = secrets;
        self
    }

    /// The id of the connector being ticked (or of the destination delivering).
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// The start of the bucket this tick is for, in Unix milliseconds. Rows that
    /// carry a time should carry this one, so a bucket's rows are the same whenever
    /// the tick actually ran.
    pub fn scheduled_for_ms(&self) -> i64 {
        self.scheduled_for_ms
    }

    /// Resolves a secret reference. Call it in `tick`, never in `validate_config`,
    /// and keep the value only as long as the request that needs it.
    /// The value is remembered for [`TickContext::redact`], so it cannot leave the
    /// process in an error message.
    pub fn resolve(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        let value = self.secrets.resolve(secret)?;
        let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if !resolved.iter().any(|s| s.expose() == value.expose()) {
            resolved.push(Secret::new(value.expose()));
        }
        Ok(value)
    }

    /// `text` with every secret this tick resolved, and every piece of one, replaced
    /// by [`REDACTED`]. The runner passes every error through it before the error is
    /// logged, stored or shown.
    pub fn redact(&self, text: &str) -> String {
        redact(
            text,
            &self.resolved.lock().unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Asks the tick to wind down: connectord is stopping. Called by the runner.
    pub fn request_stop(&self) {
        self.stop.request();
    }

    /// Whether connectord is stopping. A connector checks it before starting more
    /// work (another request, a retry) and returns what it has or an error.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_requested()
    }

    /// Completes when connectord starts stopping; race a backoff sleep against it.
    pub fn stopping(&self) -> Stopping<'_> {
        Stopping { signal: &self.stop }
    }

    /// Counts `bytes` read from the source (as they came over the wire, before any
    /// decompression), for the daemon's metrics. Call it for failed attempts too.
    pub fn record_source_bytes(&self, bytes: u64) {
        self.source_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The bytes recorded so far by this tick and its clones.
    pub fn source_bytes(&self) -> u64 {
        self.source_bytes.load(Ordering::Relaxed)
    }

    /// Counts `bytes` sent to a receiver (request bodies as they went on the wire,
    /// after compression), for the daemon's egress metrics. Call it for failed and
    /// retried attempts too.
    pub fn record_sent_bytes(&self, bytes: u64) {
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The bytes sent so far by this context and its clones.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// Counts one retried request (an attempt that failed and is tried again), for
    /// the daemon's metrics.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The retries recorded so far by this tick and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Deserializes a connector's config type from its raw JSON, turning a serde error into
/// a [`ErrorKind::Config`] error whose message is serde's text verbatim (for example
/// ``unknown field `endpiont`, expected one of `endpoint`, `auth` ``).
///
/// Put `#[serde(deny_unknown_fields)]` on the config type so typos fail here.
pub fn config_from_json<T: serde::de::DeserializeOwned>(
    raw: &serde_json::Value,
) -> Result<T, ConnectorError> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        // The key path, when the error is below the top level: an operator needs to
        // know that `auth.token_ref` is wrong, not only that a reference is.
        let mut path: Vec<String> = e.path().iter().map(ToString::to_string).collect();
        let message = e.into_inner().to_string();
        // serde's own text already names an unknown key.
        if message.starts_with("unknown field") {
            path.pop();
        }
        ConnectorError::config(if path.is_empty() {
            message
        } else {
            format!("{}: {message}", path.join("."))
        })
    })
}

/// A duration as Prometheus writes one: units `ms`, `s`, `m`, `h`, `d`, `w`, `y`,
/// largest first and each once (`"1h30m"`, `"15d"`); `y` is 365 days. Retention and
/// expiry settings take this form.
///
/// ```
/// assert_eq!(connector_core::parse_duration("1h30m").unwrap().as_secs(), 5400);
/// assert!(connector_core::parse_duration("90").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bad = || format!("`{text}` is not a duration like \"15d\", \"12h\" or \"1h30m\"");
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        // "ms" before "m": the longest unit that matches, in the allowed order.
        let (i, (unit, ms)) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .find(|(_, (u, _))| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        next_unit = i + 1;
        total = value
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_millis(total))
}

/// Checks that a numeric config value lies within its bounds, with the bound in the
/// error as operators need it: `timeout_ms: 0 is out of range, expected 100 to 60000`.
///
/// ```
/// let err = connector_core::check_range("timeout_ms", 0u64, 100..=60_000).unwrap_err();
/// assert_eq!(err.to_string(), "timeout_ms: 0 is out of range, expected 100 to 60000");
/// assert_eq!(err.kind(), connector_core::ErrorKind::Config);
/// ```
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConnectorError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConnectorError::config(format!(
        "{key}: {value} is out of range, expected {} to {}",
        range.start(),
        range.end()
    )))
}

/// A source of rows. Implement this to bring a new kind of source into the platform.
///
/// The runner calls [`validate_config`](Connector::validate_config) once when the
/// connector is created or updated, keeps the typed config, and calls
/// [`tick`](Connector::tick) once per scheduled bucket. A tick is all or nothing:
/// the rows of a failed tick are never committed.
///
/// # Example
///
/// A complete connector that emits one row per tick with a counter it reads from
/// its config, and a secret it checks at tick time:
///
/// ```
/// use std::sync::{Arc, LazyLock};
/// use connector_core::{
///     async_trait, config_from_json, Batch, ColumnType, Connector, ConnectorError,
///     Schema, SecretRef, TickContext, Value,
/// };
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct CounterConfig {
///     start: i64,
///     token_ref: SecretRef,
/// }
///
/// struct Counter;
///
/// static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
///     Arc::new(Schema::new([("timestamp", ColumnType::Timestamp), ("value", ColumnType::Real)]))
/// });
///
/// #[async_trait]
/// impl Connector for Counter {
///     const TYPE_ID: &'static str = "counter";
///     type Config = CounterConfig;
///
///     fn schema(&self) -> Arc<Schema> {
///         SCHEMA.clone()
///     }
///
///     fn validate_config(&self, raw: &serde_json::Value) -> Result<CounterConfig, ConnectorError> {
///         let config: CounterConfig = config_from_json(raw)?;
///         if config.start < 0 {
///             return Err(ConnectorError::config(format!("start: {} is negative", config.start)));
///         }
///         Ok(config)
///     }
///
///     async fn tick(&self, ctx: &TickContext, config: &CounterConfig) -> Result<Batch, ConnectorError> {
///         let _token = ctx
///             .resolve(&config.token_ref)
///             .map_err(|e| ConnectorError::from(e).context("token resolve"))?;
///         let mut batch = Batch::new(self.schema());
///         batch.row().timestamp(ctx.scheduled_for_ms()).real(config.start as f64).finish()?;
///         Ok(batch)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let connector = Counter;
/// let config = connector
///     .validate_config(&serde_json::json!({"start": 7, "token_ref": "$env:COUNTER_TOKEN"}))
///     .unwrap();
/// let secrets = connector_core::MapSecrets::new().with("COUNTER_TOKEN", "t");
/// let ctx = TickContext::new("c-1", 60_000).with_secrets(Arc::new(secrets));
/// let batch = connector.tick(&ctx, &config).await.unwrap();
/// assert_eq!(batch.get(0, 0), Value::Timestamp(60_000));
/// assert_eq!(batch.get(0, 1), Value::Real(7.0));
///
/// // A typo fails at validation, with serde's own words.
/// let err = connector
///     .validate_config(&serde_json::json!({"strat": 7, "token_ref": "$env:X"}))
///     .err()
///     .unwrap();
/// assert!(err.to_string().starts_with("unknown field `strat`"));
///
/// // A missing secret disables the connector with a reason naming the variable.
/// let ctx = TickContext::new("c-1", 60_000).with_secrets(Arc::new(connector_core::MapSecrets::new()));
/// let err = connector.tick(&ctx, &config).await.unwrap_err();
/// assert_eq!(err.kind(), connector_core::ErrorKind::Config);
/// assert_eq!(format!("{err:#}"), "token resolve: environment variable `COUNTER_TOKEN` is not set");
/// # }
/// ```
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The connector's type id, as operators write it in `type` (`"prometheus"`).
    const TYPE_ID: &'static str;

    /// The validated, typed config. Keep secrets in it as [`SecretRef`]s.
    type Config: Send + Sync + 'static;

    /// The columns of the rows [`tick`](Connector::tick) returns.
    fn schema(&self) -> Arc<Schema>;

    /// Checks a raw JSON config and turns it into [`Self::Config`].
    ///
    /// Must be pure: no I/O, no clock, no environment. Errors are
    /// [`ErrorKind::Config`] and name the offending key.
    fn validate_config(&self, raw: &serde_json::Value) -> Result<Self::Config, ConnectorError>;

    /// Does one unit of work for the bucket starting at
    /// [`ctx.scheduled_for_ms()`](TickContext::scheduled_for_ms).
    async fn tick(&self, ctx: &TickContext, config: &Self::Config)
    -> Result<Batch, ConnectorError>;

    /// The files a config names (a CA file, a client certificate), each with its key
    /// as the operator writes it (`tls.ca_file`). connectord refuses connectors
    /// created over its API whose files lie outside the directories the operator
    /// allows. None by default.
    fn config_files(&self, config: &Self::Config) -> Vec<ConfigFile> {
        let _ = config;
        Vec::new()
    }
}

/// A file named by a connector's config: see [`Connector::config_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The config key, dotted (`tls.ca_file`).
    pub key: String,
    /// The path as written.
    pub path: std::path::PathBuf,
}

/// The README's connector example, compiled as a doc-test so it stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
