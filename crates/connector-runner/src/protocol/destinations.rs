//! How both stores keep destinations and their delivery history: the spec as JSON
//! text beside the columns that are queried, read back failing (never defaulting) on
//! a value that does not parse.

use super::{corrupt_row, to_i64};
use crate::destination::{
    DeadLetter, DeliveryOutcome, DeliveryRecord, DestinationRecord, DestinationSpec,
};
use crate::spec::{ConnectorState, Origin};
use crate::store::{StoreError, StoreErrorKind};

/// [`StoreErrorKind::NotFound`] for a destination id.
pub fn destination_not_found(id: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::NotFound,
        format!("no destination with id {id}"),
    )
}

/// [`StoreErrorKind::Conflict`] for a destination name already taken.
pub fn destination_name_taken(name: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Conflict,
        format!("a destination named `{name}` already exists"),
    )
}

/// [`StoreErrorKind::AlreadyCommitted`]: the delivery ledger already has the bucket.
pub fn already_delivered(bucket: i64) -> StoreError {
    StoreError::new(
        StoreErrorKind::AlreadyCommitted,
        format!("bucket {bucket} was already delivered"),
    )
}

/// A `destinations` row as stored.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct DestinationRow {
    pub id: String,
    /// The whole spec, as JSON text.
    pub spec: String,
    pub origin: String,
    pub state: String,
    pub disabled_reason: Option<String>,
    pub last_error: Option<String>,
    pub start_ms: i64,
    pub delivered_through_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The newest delivery attempt, as JSON text.
    pub last_delivery: Option<String>,
}

impl DestinationRow {
    /// The spec as stored: JSON text.
    pub fn spec_text(spec: &DestinationSpec) -> String {
        // Built by hand rather than serialized: this cannot fail.
        serde_json::json!({
            "name": spec.name,
            "type": spec.destination_type,
            "source": spec.source,
            "start": match spec.start {
                crate::destination::Start::Earliest => "earliest",
                crate::destination::Start::Latest => "latest",
            },
            "on_permanent": match spec.on_permanent {
                crate::destination::OnPermanent::Halt => "halt",
                crate::destination::OnPermanent::DeadLetter => "dead_letter",
            },
            "config": spec.config,
        })
        .to_string()
    }

    /// The record, or an error naming the destination and the column that does not parse.
    pub fn into_record(self) -> Result<DestinationRecord, StoreError> {
        let corrupt = |column: &str, value: &str, expected: &str| {
            corrupt_row("destination", &self.id, column, value, expected)
        };
        let spec: DestinationSpec = serde_json::from_str(&self.spec)
            .map_err(|e| corrupt("spec", &self.spec, "a destination spec").with_cause(e))?;
        let origin = Origin::parse(&self.origin)
            .ok_or_else(|| corrupt("origin", &self.origin, "`file` or `api`"))?;
        let state = ConnectorState::parse(&self.state)
            .ok_or_else(|| corrupt("state", &self.state, "`enabled`, `paused` or `disabled`"))?;
        let last_delivery =
            match &self.last_delivery {
                None => None,
                Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                    corrupt("last_delivery", text, "a delivery record").with_cause(e)
                })?),
            };
        Ok(DestinationRecord {
            id: self.id,
            spec,
            origin,
            state,
            disabled_reason: self.disabled_reason,
            last_error: self.last_error,
            start_ms: self.start_ms,
            delivered_through_ms: self.delivered_through_ms,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            last_delivery,
        })
    }
}

/// A `deliveries` (history) row as stored.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct DeliveryRow {
    pub destination_id: String,
    pub scheduled_for_ms: i64,
    pub started_at_ms: i64,
    pub outcome: String,
    pub rows: i64,
    pub skipped: i64,
    pub bytes: i64,
    pub requests: i64,
    pub retries: i64,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub runner_id: String,
}

impl DeliveryRow {
    /// The values to store for `record`.
    pub fn new(record: &DeliveryRecord) -> Self {
        DeliveryRow {
            destination_id: record.destination_id.clone(),
            scheduled_for_ms: record.scheduled_for_ms,
            started_at_ms: record.started_at_ms,
            outcome: record.outcome.as_str().to_owned(),
            rows: to_i64(record.rows),
            skipped: to_i64(record.skipped),
            bytes: to_i64(record.bytes),
            requests: to_i64(record.requests),
            retries: to_i64(record.retries),
            duration_ms: to_i64(record.duration_ms),
            error: record.error.clone(),
            runner_id: record.runner_id.clone(),
        }
    }

    /// The record, or an error naming the destination and the column that does not parse.
    pub fn into_record(self) -> Result<DeliveryRecord, StoreError> {
        let id = self.destination_id.clone();
        let outcome = DeliveryOutcome::parse(&self.outcome).ok_or_else(|| {
            corrupt_row(
                "destination",
                &id,
                "delivery outcome",
                &self.outcome,
                "a known outcome",
            )
        })?;
        let count = |column: &str, v: i64| {
            u64::try_from(v)
                .map_err(|_| corrupt_row("destination", &id, column, &v.to_string(), "a count"))
        };
        Ok(DeliveryRecord {
            rows: count("delivery rows", self.rows)?,
            skipped: count("delivery skipped", self.skipped)?,
            bytes: count("delivery bytes", self.bytes)?,
            requests: count("delivery requests", self.requests)?,
            retries: count("delivery retries", self.retries)?,
            duration_ms: count("delivery duration_ms", self.duration_ms)?,
            destination_id: self.destination_id,
            scheduled_for_ms: self.scheduled_for_ms,
            started_at_ms: self.started_at_ms,
            outcome,
            error: self.error,
            runner_id: self.runner_id,
        })
    }
}

/// A `dead_letters` row as stored.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct DeadLetterRow {
    pub destination_id: String,
    pub scheduled_for_ms: i64,
    pub rows: i64,
    pub error: String,
    pub recorded_at_ms: i64,
}

impl DeadLetterRow {
    /// The dead letter, or an error naming the destination and the bucket.
    pub fn into_record(self) -> Result<DeadLetter, StoreError> {
        let rows = u64::try_from(self.rows).map_err(|_| {
            corrupt_row(
                "destination",
                &self.destination_id,
                &format!("dead letter rows of bucket {}", self.scheduled_for_ms),
                &self.rows.to_string(),
                "a count",
            )
        })?;
        Ok(DeadLetter {
            destination_id: self.destination_id,
            scheduled_for_ms: self.scheduled_for_ms,
            rows,
            error: self.error,
            recorded_at_ms: self.recorded_at_ms,
        })
    }
}
