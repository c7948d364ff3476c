//! How stored discovery rows map back to records, written once for both stores.

use crate::discovery::DiscoveryRecord;
use crate::spec::Origin;
use crate::store::{StoreError, StoreErrorKind};

use super::corrupt_row;

/// A `discoveries` row as stored: JSON as text.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct DiscoveryRow {
    pub id: String,
    pub name: String,
    pub spec: String,
    pub origin: String,
    pub status: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl DiscoveryRow {
    /// The record, or an error naming the discovery and the column that does not parse.
    pub fn into_record(self) -> Result<DiscoveryRecord, StoreError> {
        let corrupt = |column: &str, value: &str, expected: &str| {
            corrupt_row("discovery", &self.id, column, value, expected)
        };
        let spec = serde_json::from_str(&self.spec)
            .map_err(|e| corrupt("spec", &self.spec, "JSON").with_cause(e))?;
        let origin = match Origin::parse(&self.origin) {
            Some(o @ (Origin::File | Origin::Api)) => o,
            _ => return Err(corrupt("origin", &self.origin, "`file` or `api`")),
        };
        let status = match &self.status {
            None => None,
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| corrupt("status", text, "JSON").with_cause(e))?,
            ),
        };
        Ok(DiscoveryRecord {
            id: self.id,
            name: self.name,
            spec,
            origin,
            status,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// [`StoreErrorKind::NotFound`] for a discovery id.
pub fn discovery_not_found(id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        format!("no discovery with id {id}"),
    )
}

/// [`StoreErrorKind::Conflict`] for a discovery name already taken.
pub fn discovery_name_taken(name: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Conflict,
        format!("a discovery named `{name}` already exists"),
    )
}
