//! Destinations: the other direction. A destination follows one source connector and
//! sends the rows of each of its committed buckets to another system.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Batch, ConfigFile, ConnectorError, Schema, TickContext};

/// What one [`Destination::deliver`] call sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Rows the receiver accepted.
    pub rows: u64,
    /// Request body bytes of the requests the receiver accepted (retried attempts
    /// are counted on the context with [`TickContext::record_sent_bytes`]).
    pub bytes: u64,
    /// Requests the receiver accepted.
    pub requests: u64,
    /// Rows left out, by reason (`null_value`), with stable snake_case reasons.
    pub skipped: Vec<(&'static str, u64)>,
}

impl Delivered {
    /// Adds what another call sent, so a bucket read in chunks reports one total.
    pub fn add(&mut self, other: &Delivered) {
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.requests += other.requests;
        for &(reason, count) in &other.skipped {
            match self.skipped.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, total)) => *total += count,
                None => self.skipped.push((reason, count)),
            }
        }
    }

    /// Rows left out, all reasons together.
    pub fn skipped_rows(&self) -> u64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// A place rows go. Implement this to send a source connector's committed rows to
/// another system.
///
/// The runner calls [`validate_config`](Destination::validate_config) when the
/// destination is created or updated, and [`check_schema`](Destination::check_schema)
/// with its source's row schema. Then, for each committed bucket of the source, oldest
/// first, it reads the bucket's rows back in chunks and calls
/// [`deliver`](Destination::deliver) once per chunk, with
/// [`TickContext::scheduled_for_ms`] the bucket. The bucket counts as delivered only
/// when every chunk was; a bucket is delivered at least once, so a destination should
/// send what its receiver can take twice without harm (the same sample at the same
/// timestamp).
///
/// Error kinds: `Transient` retries the same bucket with backoff (the runner never
/// skips ahead), `Permanent` follows the destination's `on_permanent` policy (halt,
/// or record a dead letter and go on), and `Config` disables the destination until
/// an operator resumes it.
///
/// # Example
///
/// A destination that counts the rows it is given and refuses empty buckets:
///
/// ```
/// use std::sync::Arc;
/// use connector_core::{
///     async_trait, config_from_json, Batch, ColumnType, ConnectorError, Delivered,
///     Destination, Schema, TickContext,
/// };
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct CountConfig {
///     at_most: u64,
/// }
///
/// struct Count;
///
/// #[async_trait]
/// impl Destination for Count {
///     const TYPE_ID: &'static str = "count";
///     type Config = CountConfig;
///
///     fn validate_config(&self, raw: &serde_json::Value) -> Result<CountConfig, ConnectorError> {
///         config_from_json(raw)
///     }
///
///     async fn deliver(
///         &self,
///         _ctx: &TickContext,
///         config: &CountConfig,
///         rows: &Batch,
///     ) -> Result<Delivered, ConnectorError> {
///         if rows.len() as u64 > config.at_most {
///             return Err(ConnectorError::permanent(format!("{} rows is more than at_most", rows.len())));
///         }
///         Ok(Delivered { rows: rows.len() as u64, requests: 1, ..Delivered::default() })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let schema = Arc::new(Schema::new([("timestamp", ColumnType::Timestamp)]));
/// let mut rows = Batch::new(schema);
/// rows.row().timestamp(1_000).finish().unwrap();
/// let config = Count.validate_config(&serde_json::json!({"at_most": 10})).unwrap();
/// let sent = Count.deliver(&TickContext::new("d-1", 1_000), &config, &rows).await.unwrap();
/// assert_eq!(sent.rows, 1);
/// # }
/// ```
#[async_trait]
pub trait Destination: Send + Sync + 'static {
    /// The destination's type id, as operators write it in `type` (`"influx"`).
    const TYPE_ID: &'static str;

    /// The validated, typed config. Keep secrets in it as [`SecretRef`](crate::SecretRef)s.
    type Config: Send + Sync + 'static;

    /// Checks a raw JSON config and turns it into [`Self::Config`]. Pure, like
    /// [`Connector::validate_config`](crate::Connector::validate_config).
    fn validate_config(&self, raw: &serde_json::Value) -> Result<Self::Config, ConnectorError>;

    /// Whether this destination can send rows of `schema` (its source's row schema).
    /// Called when the destination is created, so a destination following a source
    /// of the wrong shape fails then, not at its first delivery. Any schema by default.
    fn check_schema(&self, schema: &Schema) -> Result<(), ConnectorError> {
        let _ = schema;
        Ok(())
    }

    /// Sends `rows`, all or part of one committed bucket, and says what was sent.
    async fn deliver(
        &self,
        ctx: &TickContext,
        config: &Self::Config,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError>;

    /// The files a config names, as [`Connector::config_files`](crate::Connector::config_files).
    fn config_files(&self, config: &Self::Config) -> Vec<ConfigFile> {
        let _ = config;
        Vec::new()
    }
}

/// A [`Destination`] with its config type erased, so destinations of different types
/// can live in one [`Registry`](crate::Registry).
#[async_trait]
pub trait DynDestination: Send + Sync {
    /// The destination's type id.
    fn destination_type(&self) -> &'static str;

    /// Validates a raw JSON config.
    fn validate(&self, raw: &serde_json::Value) -> Result<crate::ValidatedConfig, ConnectorError>;

    /// [`Destination::check_schema`].
    fn check_schema(&self, schema: &Schema) -> Result<(), ConnectorError>;

    /// Delivers with a config this destination type validated; a config of another
    /// type is a [`Config`](crate::ErrorKind::Config) error.
    async fn deliver(
        &self,
        ctx: &TickContext,
        config: &crate::ValidatedConfig,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError>;

    /// The files a validated config names.
    fn config_files(&self, config: &crate::ValidatedConfig) -> Vec<ConfigFile>;
}

/// Wraps a destination, as the registry wraps connectors, so trait methods never clash.
pub(crate) struct ErasedDestination<D>(pub(crate) D);

#[async_trait]
impl<D: Destination> DynDestination for ErasedDestination<D> {
    fn destination_type(&self) -> &'static str {
        D::TYPE_ID
    }

    fn validate(&self, raw: &serde_json::Value) -> Result<crate::ValidatedConfig, ConnectorError> {
        let config = self.0.validate_config(raw)?;
        Ok(crate::ValidatedConfig::new(D::TYPE_ID, Arc::new(config)))
    }

    fn check_schema(&self, schema: &Schema) -> Result<(), ConnectorError> {
        self.0.check_schema(schema)
    }

    async fn deliver(
        &self,
        ctx: &TickContext,
        config: &crate::ValidatedConfig,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError> {
        let typed = config.typed::<D::Config>("destination", D::TYPE_ID)?;
        self.0.deliver(ctx, typed, rows).await
    }

    fn config_files(&self, config: &crate::ValidatedConfig) -> Vec<ConfigFile> {
        config
            .typed::<D::Config>("destination", D::TYPE_ID)
            .map(|typed| self.0.config_files(typed))
            .unwrap_or_default()
    }
}
