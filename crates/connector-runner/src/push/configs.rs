//! One validated config per push connector and spec, shared by the ingest path and
//! the committer: a connector may keep in its config what its `accept` learns from
//! its `commit` (the series it holds, say), which only works when both see the same
//! config. Also spares validating the spec again for every request and every bucket.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use connector_core::{Registry, ValidatedConfig};

use crate::spec::{ConnectorRecord, SpecError};

/// Validated configs by connector id, each with the spec it was validated from.
#[derive(Default)]
pub(crate) struct PushConfigs(Mutex<HashMap<String, (ConnectorRecord, ValidatedConfig)>>);

impl PushConfigs {
    /// The config of `record`'s current spec: the one already made when the spec is
    /// unchanged, else a new one that replaces it.
    pub(crate) fn get(
        &self,
        registry: &Registry,
        record: &ConnectorRecord,
    ) -> Result<ValidatedConfig, SpecError> {
        let mut configs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, config)) = configs.get(&record.id)
            && cached.spec == record.spec
        {
            return Ok(config.clone());
        }
        let config = record.spec.validate(registry)?;
        configs.insert(record.id.clone(), (record.clone(), config.clone()));
        Ok(config)
    }
}
