use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::destination::{Delivered, Destination, DynDestination, ErasedDestination};
use crate::push::{DynPush, ErasedPush};
use crate::{
    Batch, ConfigFile, Connector, ConnectorError, Drive, PushConnector, Schema, TickContext,
};

/// A config that a connector type has validated, with its concrete type erased.
///
/// Only the connector or destination type that produced it can use it.
#[derive(Clone)]
pub struct ValidatedConfig {
    connector_type: &'static str,
    inner: Arc<dyn Any + Send + Sync>,
}

impl ValidatedConfig {
    pub(crate) fn new(connector_type: &'static str, inner: Arc<dyn Any + Send + Sync>) -> Self {
        ValidatedConfig {
            connector_type,
            inner,
        }
    }

    /// The type id of the connector (or destination) that validated this config.
    pub fn connector_type(&self) -> &'static str {
        self.connector_type
    }

    /// The typed config, when `wanted` (a `kind` type: connector or destination) is
    /// the type that validated it.
    pub(crate) fn typed<T: 'static>(
        &self,
        kind: &str,
        wanted: &'static str,
    ) -> Result<&T, ConnectorError> {
        self.inner.downcast_ref::<T>().ok_or_else(|| {
            ConnectorError::config(format!(
                "config was validated by {kind} type `{}`, not `{wanted}`",
                self.connector_type
            ))
        })
    }
}

impl fmt::Debug for ValidatedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The typed config may hold things that should not be printed; show only whose it is.
        f.debug_struct("ValidatedConfig")
            .field("connector_type", &self.connector_type)
            .finish_non_exhaustive()
    }
}

/// A [`Connector`] with its config type erased, so connectors of different types can
/// live in one [`Registry`], which wraps each registered connector in one.
#[async_trait]
pub trait DynConnector: Send + Sync {
    /// The connector's type id.
    fn connector_type(&self) -> &'static str;

    /// The columns of the rows the connector emits.
    fn schema(&self) -> Arc<Schema>;

    /// Validates a raw JSON config.
    fn validate(&self, raw: &serde_json::Value) -> Result<ValidatedConfig, ConnectorError>;

    /// Ticks with a config this connector type validated; a config of another type is a
    /// [`Config`](crate::ErrorKind::Config) error.
    async fn tick(
        &self,
        ctx: &TickContext,
        config: &ValidatedConfig,
    ) -> Result<Batch, ConnectorError>;
    /// The files a validated config names ([`Connector::config_files`]).
    fn config_files(&self, config: &ValidatedConfig) -> Vec<ConfigFile>;

    /// How the runner drives this connector type.
    fn drive(&self) -> Drive {
        Drive::Periodic
    }

    /// The push side of a [`PushConnector`]; `None` for periodic connectors.
    fn push(&self) -> Option<&dyn DynPush> {
        None
    }
}

/// Wraps a connector rather than implementing [`DynConnector`] for every `Connector`,
/// so the two traits' methods never clash when both are in scope.
struct Erased<C>(C);

#[async_trait]
impl<C: Connector> DynConnector for Erased<C> {
    fn connector_type(&self) -> &'static str {
        C::TYPE_ID
    }

    fn schema(&self) -> Arc<Schema> {
        self.0.schema()
    }

    fn validate(&self, raw: &serde_json::Value) -> Result<ValidatedConfig, ConnectorError> {
        let config = self.0.validate_config(raw)?;
        Ok(ValidatedConfig::new(C::TYPE_ID, Arc::new(config)))
    }

    async fn tick(
        &self,
        ctx: &TickContext,
        config: &ValidatedConfig,
    ) -> Result<Batch, ConnectorError> {
        let typed = config.typed::<C::Config>("connector", C::TYPE_ID)?;
        self.0.tick(ctx, typed).await
    }

    fn config_files(&self, config: &ValidatedConfig) -> Vec<ConfigFile> {
        config
            .typed::<C::Config>("connector", C::TYPE_ID)
            .map(|typed| self.0.config_files(typed))
            .unwrap_or_default()
    }
}

#[async_trait]
impl<P: PushConnector> DynConnector for ErasedPush<P> {
    fn connector_type(&self) -> &'static str {
        P::TYPE_ID
    }

    fn schema(&self) -> Arc<Schema> {
        self.0.schema()
    }

    fn validate(&self, raw: &serde_json::Value) -> Result<ValidatedConfig, ConnectorError> {
        let config = self.0.validate_config(raw)?;
        Ok(ValidatedConfig::new(P::TYPE_ID, Arc::new(config)))
    }

    async fn tick(&self, _: &TickContext, _: &ValidatedConfig) -> Result<Batch, ConnectorError> {
        Err(ConnectorError::config(format!(
            "connector type `{}` is a push source: it receives requests and has no tick",
            P::TYPE_ID
        )))
    }

    fn config_files(&self, config: &ValidatedConfig) -> Vec<ConfigFile> {
        config
            .typed::<P::Config>("connector", P::TYPE_ID)
            .map(|typed| self.0.config_files(typed))
            .unwrap_or_default()
    }

    fn drive(&self) -> Drive {
        Drive::Push
    }

    fn push(&self) -> Option<&dyn DynPush> {
        Some(self)
    }
}

/// Why a connector could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another connector already has this type id.
    #[error("connector type `{0}` is already registered")]
    Duplicate(&'static str),
    /// Another destination already has this type id.
    #[error("destination type `{0}` is already registered")]
    DuplicateDestination(&'static str),
}

/// Connector and destination types by type id.
///
/// ```
/// # use std::sync::Arc;
/// # use connector_core::*;
/// # struct Noop;
/// # #[async_trait]
/// # impl Connector for Noop {
/// #     const TYPE_ID: &'static str = "noop";
/// #     type Config = ();
/// #     fn schema(&self) -> Arc<Schema> { Arc::new(Schema::new::<&str>([])) }
/// #     fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> { config_from_json(raw) }
/// #     async fn tick(&self, _: &TickContext, _: &()) -> Result<Batch, ConnectorError> { Ok(Batch::new(self.schema())) }
/// # }
/// let mut registry = Registry::new();
/// registry.register(Noop)?;
/// assert!(registry.validate("noop", &serde_json::Value::Null).is_ok());
/// let err = registry.validate("nope", &serde_json::Value::Null).unwrap_err();
/// assert_eq!(err.to_string(), "unknown connector type `nope`; known types: noop");
/// # Ok::<(), RegistryError>(())
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    connectors: BTreeMap<&'static str, Arc<dyn DynConnector>>,
    destinations: BTreeMap<&'static str, Arc<dyn DynDestination>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connector type; a second connector with the same type id is refused.
    pub fn register<C: Connector>(&mut self, connector: C) -> Result<(), RegistryError> {
        if self.connectors.contains_key(C::TYPE_ID) {
            return Err(RegistryError::Duplicate(C::TYPE_ID));
        }
        self.connectors
            .insert(C::TYPE_ID, Arc::new(Erased(connector)));
        Ok(())
    }

    /// Adds a push connector type. Push and periodic connectors share one name space.
    pub fn register_push<P: PushConnector>(&mut self, connector: P) -> Result<(), RegistryError> {
        if self.connectors.contains_key(P::TYPE_ID) {
            return Err(RegistryError::Duplicate(P::TYPE_ID));
        }
        self.connectors
            .insert(P::TYPE_ID, Arc::new(ErasedPush(connector)));
        Ok(())
    }

    /// The connector registered under `connector_type`.
    pub fn get(&self, connector_type: &str) -> Option<&Arc<dyn DynConnector>> {
        self.connectors.get(connector_type)
    }

    /// The registered type ids, sorted.
    pub fn connector_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.connectors.keys().copied()
    }

    /// Validates `raw` as a config of `connector_type`. An unknown type is a
    /// [`Config`](crate::ErrorKind::Config) error that lists the known types.
    pub fn validate(
        &self,
        connector_type: &str,
        raw: &serde_json::Value,
    ) -> Result<ValidatedConfig, ConnectorError> {
        self.lookup(connector_type)?.validate(raw)
    }

    /// Ticks the connector type that validated `config`.
    pub async fn tick(
        &self,
        ctx: &TickContext,
        config: &ValidatedConfig,
    ) -> Result<Batch, ConnectorError> {
        self.lookup(config.connector_type)?.tick(ctx, config).await
    }

    /// The files a validated config names, for any registered type.
    pub fn config_files(&self, config: &ValidatedConfig) -> Vec<ConfigFile> {
        self.get(config.connector_type)
            .map(|c| c.config_files(config))
            .unwrap_or_default()
    }

    /// Adds a destination type; a second destination with the same type id is refused.
    /// Connector and destination type ids are separate name spaces.
    pub fn register_destination<D: Destination>(
        &mut self,
        destination: D,
    ) -> Result<(), RegistryError> {
        if self.destinations.contains_key(D::TYPE_ID) {
            return Err(RegistryError::DuplicateDestination(D::TYPE_ID));
        }
        self.destinations
            .insert(D::TYPE_ID, Arc::new(ErasedDestination(destination)));
        Ok(())
    }

    /// The destination registered under `destination_type`.
    pub fn destination(&self, destination_type: &str) -> Option<&Arc<dyn DynDestination>> {
        self.destinations.get(destination_type)
    }

    /// The registered destination type ids, sorted.
    pub fn destination_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.destinations.keys().copied()
    }

    /// Validates `raw` as a config of `destination_type`. An unknown type is a
    /// [`Config`](crate::ErrorKind::Config) error that lists the known types.
    pub fn validate_destination(
        &self,
        destination_type: &str,
        raw: &serde_json::Value,
    ) -> Result<ValidatedConfig, ConnectorError> {
        self.lookup_destination(destination_type)?.validate(raw)
    }

    /// Delivers `rows` with the destination type that validated `config`.
    pub async fn deliver(
        &self,
        ctx: &TickContext,
        config: &ValidatedConfig,
        rows: &Batch,
    ) -> Result<Delivered, ConnectorError> {
        self.lookup_destination(config.connector_type)?
            .deliver(ctx, config, rows)
            .await
    }

    fn lookup_destination(
        &self,
        destination_type: &str,
    ) -> Result<&Arc<dyn DynDestination>, ConnectorError> {
        self.destination(destination_type)
            .ok_or_else(|| unknown_type("destination", destination_type, self.destination_types()))
    }

    fn lookup(&self, connector_type: &str) -> Result<&Arc<dyn DynConnector>, ConnectorError> {
        self.get(connector_type)
            .ok_or_else(|| unknown_type("connector", connector_type, self.connector_types()))
    }
}

fn unknown_type<'a>(
    what: &str,
    asked: &str,
    known: impl Iterator<Item = &'a str>,
) -> ConnectorError {
    let known: Vec<_> = known.collect();
    ConnectorError::config(format!(
        "unknown {what} type `{asked}`; known types: {}",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("connectors", &self.connectors.keys())
            .field("destinations", &self.destinations.keys())
            .finish()
    }
}
