//! Runs a connector (or a destination) without a daemon: validate, then one tick
//! (or one delivery), in a plain `#[tokio::test]` (or any async runtime).
//!
//! ```
//! # use std::sync::Arc;
//! # use connector_core::*;
//! # struct Hello;
//! # #[async_trait]
//! # impl Connector for Hello {
//! #     const TYPE_ID: &'static str = "hello";
//! #     type Config = ();
//! #     fn schema(&self) -> Arc<Schema> { Arc::new(Schema::new([("t", ColumnType::Timestamp)])) }
//! #     fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> { config_from_json(raw) }
//! #     async fn tick(&self, ctx: &TickContext, _: &()) -> Result<Batch, ConnectorError> {
//! #         let mut b = Batch::new(self.schema()); b.row().timestamp(ctx.scheduled_for_ms()).finish()?; Ok(b)
//! #     }
//! # }
//! use connector_core::testing::Harness;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let batch = Harness::new(Hello)
//!     .scheduled_for_ms(1_000)
//!     .run(&serde_json::Value::Null)
//!     .await
//!     .unwrap();
//! assert_eq!(batch.get(0, 0), Value::Timestamp(1_000));
//! # }
//! ```

use std::sync::Arc;

use crate::{
    Batch, Connector, ConnectorError, Delivered, Destination, MapSecrets, SecretSource, TickContext,
};

/// Runs one connector: [`Connector::validate_config`] then one [`Connector::tick`].
#[derive(Debug)]
pub struct Harness<C> {
    connector: C,
    connector_id: String,
    scheduled_for_ms: i64,
    secrets: MapSecrets,
}

impl<C: Connector> Harness<C> {
    /// A harness with connector id `test`, bucket start 0 and no secrets.
    pub fn new(connector: C) -> Self {
        Harness {
            connector,
            connector_id: "test".to_owned(),
            scheduled_for_ms: 0,
            secrets: MapSecrets::new(),
        }
    }

    /// Sets the bucket start the tick runs for.
    pub fn scheduled_for_ms(mut self, unix_ms: i64) -> Self {
        self.scheduled_for_ms = unix_ms;
        self
    }

    /// Makes `$env:NAME` resolve to `value` without touching the process environment.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets = self.secrets.with(name, value);
        self
    }

    /// The connector under test.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// Validates `raw` and runs one tick. Also checks that the batch follows the
    /// connector's own schema, which a daemon's sink relies on.
    pub async fn run(&self, raw: &serde_json::Value) -> Result<Batch, ConnectorError> {
        self.run_recorded(raw).await.result
    }

    /// Like [`run`](Harness::run), and also returns what the tick recorded for the
    /// daemon's metrics: bytes read from the source and retried requests.
    pub async fn run_recorded(&self, raw: &serde_json::Value) -> Recorded {
        let secrets: Arc<dyn SecretSource> = Arc::new(self.secrets.clone());
        let ctx = TickContext::new(self.connector_id.clone(), self.scheduled_for_ms)
            .with_secrets(secrets);
        let result = match self.connector.validate_config(raw) {
            Ok(config) => self.connector.tick(&ctx, &config).await,
            Err(e) => Err(e),
        };
        let result = result.and_then(|batch| {
            if **batch.schema() == *self.connector.schema() {
                Ok(batch)
            } else {
                Err(ConnectorError::permanent(format!(
                    "connector `{}` returned a batch whose schema differs from its `schema()`",
                    C::TYPE_ID
                )))
            }
        });
        Recorded {
            result,
            source_bytes: ctx.source_bytes(),
            retries: ctx.retries(),
        }
    }
}

/// One tick run by [`Harness::run_recorded`].
#[derive(Debug)]
pub struct Recorded {
    /// The rows, or the error the runner would see.
    pub result: Result<Batch, ConnectorError>,
    /// Bytes the connector recorded as read from its source
    /// ([`TickContext::record_source_bytes`]).
    pub source_bytes: u64,
    /// Requests the connector recorded as retried ([`TickContext::record_retry`]).
    pub retries: u64,
}

/// Runs one destination without a daemon: [`Destination::validate_config`], then
/// [`Destination::check_schema`] with the rows' schema, then one
/// [`Destination::deliver`].
#[derive(Debug)]
pub struct DeliveryHarness<D> {
    destination: D,
    scheduled_for_ms: i64,
    secrets: MapSecrets,
}

impl<D: Destination> DeliveryHarness<D> {
    /// A harness with bucket start 0 and no secrets.
    pub fn new(destination: D) -> Self {
        DeliveryHarness {
            destination,
            scheduled_for_ms: 0,
            secrets: MapSecrets::new(),
        }
    }

    /// Sets the bucket the rows belong to.
    pub fn scheduled_for_ms(mut self, unix_ms: i64) -> Self {
        self.scheduled_for_ms = unix_ms;
        self
    }

    /// Makes `$env:NAME` resolve to `value` without touching the process environment.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets = self.secrets.with(name, value);
        self
    }

    /// Validates `raw`, checks the rows' schema and delivers `rows` once, returning
    /// also what the delivery recorded for the daemon's metrics and its error as
    /// connectord would show it (secrets redacted).
    pub async fn deliver(&self, raw: &serde_json::Value, rows: &Batch) -> DeliveryRecorded {
        let secrets: Arc<dyn SecretSource> = Arc::new(self.secrets.clone());
        let ctx = TickContext::new("test", self.scheduled_for_ms).with_secrets(secrets);
        let result = match self.destination.validate_config(raw) {
            Ok(config) => match self.destination.check_schema(rows.schema()) {
                Ok(()) => self.destination.deliver(&ctx, &config, rows).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let shown_error = result.as_ref().err().map(|e| ctx.redact(&format!("{e:#}")));
        DeliveryRecorded {
            result,
            shown_error,
            sent_bytes: ctx.sent_bytes(),
            retries: ctx.retries(),
        }
    }
}

/// One delivery run by [`DeliveryHarness::deliver`].
#[derive(Debug)]
pub struct DeliveryRecorded {
    /// What was sent, or the error the runner would see.
    pub result: Result<Delivered, ConnectorError>,
    /// The error's whole chain with the secrets the delivery resolved redacted, as
    /// connectord logs and stores it.
    pub shown_error: Option<String>,
    /// Request bytes recorded on the wire, retries included
    /// ([`TickContext::record_sent_bytes`]).
    pub sent_bytes: u64,
    /// Requests recorded as retried.
    pub retries: u64,
}
