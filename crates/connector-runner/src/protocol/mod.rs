//! The decisions every store makes the same way, written once: who may claim a
//! bucket, when a commit is refused, how stored rows map back to records (failing,
//! never defaulting, on a value that does not parse), which migrations to run, and
//! which names a store keeps for itself. Stores keep only their SQL and binding.

mod destinations;
mod discoveries;

use std::time::{SystemTime, UNIX_EPOCH};

pub use destinations::{
    DeadLetterRow, DeliveryRow, DestinationRow, already_delivered, destination_name_taken,
    destination_not_found,
};
pub use discoveries::{DiscoveryRow, discovery_name_taken, discovery_not_found};

use crate::spec::{ConnectorRecord, ConnectorSpec, ConnectorState, Origin};
use crate::store::{Lease, StoreError, StoreErrorKind, TickOutcome, TickRecord};

/// Tick history kept per connector; older ticks are trimmed as new ones are recorded.
pub const TICKS_KEPT: i64 = 1000;

/// Dead letters kept per destination, newest buckets first; older ones are trimmed
/// as new ones are recorded. The delivery ledger, not this list, keeps a
/// dead-lettered bucket from being delivered again, so trimming loses no progress.
pub const DEAD_LETTERS_KEPT: i64 = 1000;

/// Finished or abandoned leases older than this (bucket time) are deleted.
pub const LEASES_KEPT_MS: i64 = 3_600_000;

/// A bucket's lease as a store reads it, locked, inside its claim transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The runner that holds (or last held) it.
    pub runner_id: String,
    /// Its expiry is still ahead on the store's clock.
    pub live: bool,
    /// The bucket committed (or was given up) and is never claimed again.
    pub done: bool,
}

/// Whether `runner_id` may claim a bucket whose lease is `current` (`None`: nobody
/// ever claimed it). A runner may re-claim its own live lease; nobody claims a done
/// bucket or another runner's live lease.
pub fn may_claim(current: Option<&LeaseRow>, runner_id: &str) -> bool {
    let held_by_another = |row: &LeaseRow| row.live && row.runner_id != runner_id;
    current.is_none_or(|row| !row.done && !held_by_another(row))
}

impl StoreError {
    /// [`StoreErrorKind::AlreadyCommitted`]: the ledger already has the bucket.
    pub fn already_committed(lease: &Lease) -> Self {
        Self::new(
            StoreErrorKind::AlreadyCommitted,
            format!("bucket {} was already committed", lease.scheduled_for_ms),
        )
    }
}

/// The fencing check of a commit: `current` is the bucket's token as read inside the
/// commit's transaction, after its ledger row went in. A lease whose token is no
/// longer the bucket's is [`StoreErrorKind::Fenced`] and the commit must roll back.
pub fn check_fencing(lease: &Lease, current: Option<i64>) -> Result<(), StoreError> {
    if current == Some(lease.token) {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::Fenced,
        format!(
            "lease token {} is stale (current {}): another runner took bucket {}",
            lease.token,
            current.map_or_else(|| "none".to_owned(), |t| t.to_string()),
            lease.scheduled_for_ms
        ),
    ))
}

/// The time check of a commit: `now_ms` is the store's clock as read inside the
/// commit's transaction. A lease whose end (`expires_at_ms`, which the runner passes
/// less its safety margin) has come is [`StoreErrorKind::Fenced`]: another runner may
/// claim the bucket from now on, so the commit must roll back.
pub fn check_lease_time(lease: &Lease, now_ms: i64) -> Result<(), StoreError> {
    if now_ms < lease.expires_at_ms {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::Fenced,
        format!(
            "the lease on bucket {} ran out {} ms before the commit (the runner's safety margin included)",
            lease.scheduled_for_ms,
            now_ms - lease.expires_at_ms
        ),
    ))
}

/// A store's wall clock, Unix ms, for the bookkeeping columns it stamps itself.
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A count or size as the signed 64-bit integer both databases store.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Quotes an identifier the way SQLite and PostgreSQL both read it.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The values of a spec as both stores write them, bound after the connector id.
#[derive(Debug, Clone)]
pub struct SpecValues {
    /// `name`.
    pub name: String,
    /// `type`.
    pub connector_type: String,
    /// `target_database`.
    pub target_database: String,
    /// `target_table`.
    pub target_table: String,
    /// `schedule_ms`.
    pub schedule_ms: i64,
    /// `config`, as JSON text.
    pub config: String,
    /// `origin`.
    pub origin: &'static str,
    /// `updated_at_ms` (and `created_at_ms` on insert).
    pub now_ms: i64,
    /// `retention`, as written.
    pub retention: Option<String>,
    /// `org_id`.
    pub org_id: String,
}

impl SpecValues {
    /// The values to write for `spec`, declared by `origin`, now.
    pub fn new(spec: &ConnectorSpec, origin: Origin) -> Self {
        SpecValues {
            name: spec.name.clone(),
            connector_type: spec.connector_type.clone(),
            target_database: spec.target_database.clone(),
            target_table: spec.target_table.clone(),
            schedule_ms: to_i64(spec.schedule_ms),
            config: spec.config.to_string(),
            origin: origin.as_str(),
            now_ms: wall_clock_ms(),
            retention: spec.retention.clone(),
            org_id: spec.org_id.clone(),
        }
    }
}

/// A `connectors` row as stored: text where the record has enums and JSON.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct ConnectorRow {
    pub id: String,
    pub name: String,
    pub connector_type: String,
    pub target_database: String,
    pub target_table: String,
    pub schedule_ms: i64,
    pub config: String,
    pub origin: String,
    pub state: String,
    pub disabled_reason: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The newest tick, as JSON text.
    pub last_tick: Option<String>,
    /// `retention`, as written.
    pub retention: Option<String>,
    /// `org_id`.
    pub org_id: String,
}

/// A stored value that does not parse: an error naming the connector and the column,
/// never a silent default.
fn corrupt(id: &str, column: &str, value: &str, expected: &str) -> StoreError {
    corrupt_row("connector", id, column, value, expected)
}

fn corrupt_row(what: &str, id: &str, column: &str, value: &str, expected: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Backend,
        format!(
            "{what} {id}: stored {column} `{value}` is not {expected}; the state database was changed by hand or by a newer connectord"
        ),
    )
}

impl ConnectorRow {
    /// The record, or an error naming the connector and the column that does not parse.
    pub fn into_record(self) -> Result<ConnectorRecord, StoreError> {
        let config = serde_json::from_str(&self.config)
            .map_err(|e| corrupt(&self.id, "config", &self.config, "JSON").with_cause(e))?;
        let origin = Origin::parse(&self.origin).ok_or_else(|| {
            corrupt(
                &self.id,
                "origin",
                &self.origin,
                "`file`, `api` or `discovery`",
            )
        })?;
        let state = ConnectorState::parse(&self.state).ok_or_else(|| {
            corrupt(
                &self.id,
                "state",
                &self.state,
                "`enabled`, `paused` or `disabled`",
            )
        })?;
        let last_tick = match &self.last_tick {
            None => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                corrupt(&self.id, "last_tick", text, "a tick record").with_cause(e)
            })?),
        };
        let schedule_ms = u64::try_from(self.schedule_ms).map_err(|_| {
            corrupt(
                &self.id,
                "schedule_ms",
                &self.schedule_ms.to_string(),
                "a positive number",
            )
        })?;
        Ok(ConnectorRecord {
            id: self.id,
            spec: ConnectorSpec {
                name: self.name,
                connector_type: self.connector_type,
                target_database: self.target_database,
                target_table: self.target_table,
                schedule_ms,
                config,
                retention: self.retention,
                org_id: self.org_id,
            },
            origin,
            state,
            disabled_reason: self.disabled_reason,
            last_error: self.last_error,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            last_tick,
        })
    }
}

/// A `ticks` row as stored.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // one field per column, named as the column
pub struct TickRow {
    pub connector_id: String,
    pub scheduled_for_ms: i64,
    pub started_at_ms: i64,
    pub outcome: String,
    pub rows: i64,
    pub source_bytes: i64,
    pub sink_bytes: i64,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub runner_id: String,
}

impl TickRow {
    /// The record, or an error naming the connector and the column that does not parse.
    pub fn into_record(self) -> Result<TickRecord, StoreError> {
        let id = self.connector_id.clone();
        let outcome = TickOutcome::parse(&self.outcome)
            .ok_or_else(|| corrupt(&id, "tick outcome", &self.outcome, "a known outcome"))?;
        let count = |column: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(&id, column, &v.to_string(), "a count"))
        };
        Ok(TickRecord {
            rows: count("tick rows", self.rows)?,
            source_bytes: count("tick source_bytes", self.source_bytes)?,
            sink_bytes: count("tick sink_bytes", self.sink_bytes)?,
            duration_ms: count("tick duration_ms", self.duration_ms)?,
            connector_id: self.connector_id,
            scheduled_for_ms: self.scheduled_for_ms,
            started_at_ms: self.started_at_ms,
            outcome,
            error: self.error,
            runner_id: self.runner_id,
        })
    }
}

/// One numbered schema change of a state store.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, ...: applied in order, each once, recorded in the store's
    /// schema-version table.
    pub version: i64,
    /// What it changes, for the log.
    pub description: &'static str,
    /// The statements, in the store's dialect.
    pub sql: &'static str,
}

/// The migrations a store at schema version `current` still needs, in order. A
/// store newer than every migration this build knows is refused: an older
/// connectord must not write a schema it does not understand.
pub fn pending<'m>(
    store: &str,
    current: i64,
    migrations: &'m [Migration],
) -> Result<&'m [Migration], StoreError> {
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            format!(
                "{store} is at schema version {current}, newer than this connectord knows (version {latest}); run the newer connectord that migrated it"
            ),
        ));
    }
    let done = migrations
        .iter()
        .take_while(|m| m.version <= current)
        .count();
    Ok(&migrations[done..])
}

/// Refuses a target name a store keeps for itself: `names` exactly, or anything
/// starting with one of `prefixes` (both compared without case).
pub fn refuse_reserved(
    field: &str,
    value: &str,
    prefixes: &[&str],
    names: &[&str],
    why: &str,
) -> Result<(), StoreError> {
    let lower = value.to_ascii_lowercase();
    let hit = names.iter().any(|n| lower == *n) || prefixes.iter().any(|p| lower.starts_with(p));
    if hit {
        return Err(StoreError::new(
            StoreErrorKind::Invalid,
            format!("{field}: `{value}` is reserved by {why}; pick another name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(runner: &str, live: bool, done: bool) -> LeaseRow {
        LeaseRow {
            runner_id: runner.into(),
            live,
            done,
        }
    }

    #[test]
    fn claim_decisions() {
        assert!(may_claim(None, "a"));
        assert!(may_claim(Some(&row("a", true, false)), "a"));
        assert!(!may_claim(Some(&row("b", true, false)), "a"));
        assert!(may_claim(Some(&row("b", false, false)), "a"));
        assert!(!may_claim(Some(&row("a", false, true)), "a"));
    }

    #[test]
    fn migrations_forward_and_refusing_the_future() {
        let all = [
            Migration {
                version: 1,
                description: "one",
                sql: "",
            },
            Migration {
                version: 2,
                description: "two",
                sql: "",
            },
        ];
        assert_eq!(pending("db", 0, &all).unwrap().len(), 2);
        assert_eq!(pending("db", 1, &all).unwrap()[0].version, 2);
        assert!(pending("db", 2, &all).unwrap().is_empty());
        let err = pending("the state database", 3, &all).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Invalid);
        assert_eq!(
            err.to_string(),
            "the state database is at schema version 3, newer than this connectord knows (version 2); run the newer connectord that migrated it"
        );
    }

    #[test]
    fn stored_values_that_do_not_parse_name_the_connector_and_column() {
        let good = ConnectorRow {
            id: "c-1".into(),
            name: "n".into(),
            connector_type: "t".into(),
            target_database: "d".into(),
            target_table: "t".into(),
            schedule_ms: 1000,
            config: "{}".into(),
            origin: "api".into(),
            state: "paused".into(),
            disabled_reason: None,
            last_error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_tick: None,
            retention: None,
            org_id: "default".into(),
        };
        let record = good.clone().into_record().unwrap();
        assert_eq!(
            (record.origin, record.state),
            (Origin::Api, ConnectorState::Paused)
        );
        let err = ConnectorRow {
            origin: "cloud".into(),
            ..good.clone()
        }
        .into_record()
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "connector c-1: stored origin `cloud` is not `file`, `api` or `discovery`"
            ),
            "{err}"
        );
        let err = ConnectorRow {
            state: "on".into(),
            ..good.clone()
        }
        .into_record()
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("connector c-1: stored state `on`"),
            "{err}"
        );
        let err = ConnectorRow {
            config: "{".into(),
            ..good
        }
        .into_record()
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("connector c-1: stored config `{` is not JSON"),
            "{err:#}"
        );
    }

    #[test]
    fn reserved_names() {
        assert!(refuse_reserved("target_table", "samples", &["sqlite_"], &[], "SQLite").is_ok());
        let err = refuse_reserved("target_table", "SQLite_master", &["sqlite_"], &[], "SQLite")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "target_table: `SQLite_master` is reserved by SQLite; pick another name"
        );
    }
}
