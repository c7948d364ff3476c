//! Taking pushed requests in: find the connector, let it decode the request, stage
//! what it accepted with group commit, and only then hand back its response.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connector_core::{Accepted, IngestRequest, IngestResponse, Registry, ValidatedConfig};
use tokio::sync::{mpsc, oneshot, watch};

use super::{PushStore, StageItem};
use crate::push::configs::PushConfigs;
use crate::runner::wall_ms;
use crate::spec::{ConnectorRecord, ConnectorState};
use crate::store::StoreError;
use crate::telemetry::Telemetry;

/// Bounds on what push sources may hold staged.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Staged bytes not yet committed, over all push connectors, past which ingest
    /// answers 503 with `Retry-After` rather than grow without limit.
    pub max_staged_bytes: u64,
    /// How long after a bucket closes its commit waits, so a request accepted just
    /// before the close is staged first.
    pub grace: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_staged_bytes: 256 << 20,
            grace: Duration::from_secs(1),
        }
    }
}

/// Why a pushed request was not handed to its connector, or not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// No connector has this name.
    #[error("connector `{0}` not found")]
    NotFound(String),
    /// The connector is a periodic source, or does not serve the path.
    #[error("connector `{name}` does not receive pushes at `{path}`{served}")]
    NotServed {
        /// The connector.
        name: String,
        /// The path asked for.
        path: String,
        /// The paths it serves, worded for the message.
        served: String,
    },
    /// The connector is paused or disabled.
    #[error("connector `{name}` is {state}: it accepts nothing until it is resumed")]
    NotEnabled {
        /// The connector.
        name: String,
        /// `paused` or `disabled`.
        state: &'static str,
    },
    /// Staged data passed its bound: try again later.
    #[error(
        "{staged} bytes are staged and not yet committed, the bound is {bound}: try again in {retry_after_s} s"
    )]
    Backpressure {
        /// Bytes staged now.
        staged: u64,
        /// [`IngestLimits::max_staged_bytes`].
        bound: u64,
        /// When to try again.
        retry_after_s: u64,
    },
    /// The store could not make the data durable: nothing was acknowledged.
    #[error("the store could not stage the request, nothing was kept: {0:#}")]
    Store(StoreError),
    /// connectord is stopping.
    #[error("connectord is stopping")]
    Stopping,
}

impl IngestError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            IngestError::NotFound(_) | IngestError::NotServed { .. } => 404,
            IngestError::NotEnabled { .. } => 409,
            IngestError::Backpressure { .. } | IngestError::Store(_) | IngestError::Stopping => 503,
        }
    }

    /// Seconds for a `Retry-After` header, for errors worth retrying.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            IngestError::Backpressure { retry_after_s, .. } => Some(*retry_after_s),
            IngestError::Store(_) | IngestError::Stopping => Some(1),
            _ => None,
        }
    }
}

pub(crate) struct Pending {
    database: String,
    schedule_ms: u64,
    item: StageItem,
    done: oneshot::Sender<Result<Option<i64>, String>>,
}

/// Stages pushed requests for the push connectors of a runner. Cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    registry: Arc<Registry>,
    connectors: watch::Receiver<Option<Arc<HashMap<String, ConnectorRecord>>>>,
    configs: Arc<PushConfigs>,
    queue: mpsc::Sender<Pending>,
    pub(crate) staged_bytes: Arc<AtomicU64>,
    limits: IngestLimits,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Requests waiting for one group commit: the first wakes the stager and whatever
/// arrived meanwhile shares its transaction, up to these bounds.
const GROUP_ITEMS: usize = 4096;
const GROUP_BYTES: usize = 64 << 20;

impl Ingestor {
    pub(crate) fn new(
        registry: Arc<Registry>,
        connectors: watch::Receiver<Option<Arc<HashMap<String, ConnectorRecord>>>>,
        configs: Arc<PushConfigs>,
        telemetry: Arc<Telemetry>,
        limits: IngestLimits,
    ) -> (Self, mpsc::Receiver<Pending>) {
        let (queue, rx) = mpsc::channel(GROUP_ITEMS);
        (
            Ingestor {
                registry,
                connectors,
                configs,
                queue,
                staged_bytes: Arc::default(),
                limits,
                telemetry,
            },
            rx,
        )
    }

    /// The limits this ingestor enforces.
    pub fn limits(&self) -> IngestLimits {
        self.limits
    }

    /// The enabled push connector called `name`, with its validated config; one of
    /// an org other than `org` (when given) is not found.
    fn connector(
        &self,
        name: &str,
        org: Option<&str>,
    ) -> Result<(ConnectorRecord, ValidatedConfig), IngestError> {
        let listing = self.connectors.borrow().clone();
        let record = listing
            .as_ref()
            .and_then(|all| all.get(name))
            .filter(|record| org.is_none_or(|org| record.spec.org_id == org))
            .cloned()
            .ok_or_else(|| IngestError::NotFound(name.to_owned()))?;
        let config =
            self.configs
                .get(&self.registry, &record)
                .map_err(|_| IngestError::NotEnabled {
                    name: name.to_owned(),
                    state: "disabled",
                })?;
        Ok((record, config))
    }

    /// Hands `request` to the push connector called `name` and, for what it accepts,
    /// returns its response only once the accepted data is staged durably. With
    /// `org` (the caller's org), a connector of another org is not found.
    pub async fn ingest(
        &self,
        name: &str,
        org: Option<&str>,
        request: IngestRequest,
    ) -> Result<IngestResponse, IngestError> {
        let (record, config) = self.connector(name, org)?;
        let push = self
            .registry
            .get(&record.spec.connector_type)
            .and_then(|c| c.push().map(|p| (Arc::clone(c), p.paths())));
        let Some((connector, _)) = push.filter(|(_, paths)| paths.contains(&request.path.as_str()))
        else {
            let served = push_paths(&self.registry, &record.spec.connector_type);
            return Err(IngestError::NotServed {
                name: name.to_owned(),
                path: request.path,
                served,
            });
        };
        match record.state {
            ConnectorState::Enabled => {}
            ConnectorState::Paused => {
                return Err(IngestError::NotEnabled {
                    name: name.to_owned(),
                    state: "paused",
                });
            }
            ConnectorState::Disabled => {
                return Err(IngestError::NotEnabled {
                    name: name.to_owned(),
                    state: "disabled",
                });
            }
        }
        let staged = self.staged_bytes.load(Ordering::Relaxed);
        if staged >= self.limits.max_staged_bytes {
            let retry_after_s =
                (record.spec.schedule_ms / 1000).clamp(1, 60) + self.limits.grace.as_secs().max(1);
            self.telemetry.record_ingest(&record.id, 503, 0, 0);
            return Err(IngestError::Backpressure {
                staged,
                bound: self.limits.max_staged_bytes,
                retry_after_s,
            });
        }
        // Decoding a large body is CPU work: keep it off the async workers.
        let decode = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                connector
                    .push()
                    .map(|p| p.accept(&config, &request))
                    .unwrap_or_else(|| Err(IngestResponse::text(500, "not a push connector")))
            })
        };
        let accepted: Accepted = match decode.await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(refusal)) => {
                self.telemetry
                    .record_ingest(&record.id, refusal.status, 0, 0);
                return Ok(refusal);
            }
            Err(join) => {
                self.telemetry.record_ingest(&record.id, 500, 0, 0);
                return Ok(IngestResponse::text(
                    500,
                    format!("the connector failed to decode the request: {join}"),
                ));
            }
        };
        if !accepted.staged.is_empty() {
            let now = wall_ms();
            let bucket_ms = crate::schedule::bucket_start(now, record.spec.schedule_ms);
            let bytes = accepted.staged.len() as u64;
            let (done, wait) = oneshot::channel();
            let pending = Pending {
                database: record.spec.target_database.clone(),
                schedule_ms: record.spec.schedule_ms,
                item: StageItem {
                    connector_id: record.id.clone(),
                    bucket_ms,
                    open_bucket_ms: bucket_ms,
                    body: accepted.staged,
                    key: accepted.idempotency_key,
                },
                done,
            };
            self.queue
                .send(pending)
                .await
                .map_err(|_| IngestError::Stopping)?;
            match wait.await {
                Ok(Ok(Some(_bucket))) => {
                    self.staged_bytes.fetch_add(bytes, Ordering::Relaxed);
                    self.telemetry.add_staged_bytes(&record.id, bytes);
                }
                Ok(Ok(None)) => {
                    // Sent again (a retry whose first response was lost): staged
                    // once already, so it is acknowledged without counting twice.
                    self.telemetry
                        .record_ingest(&record.id, accepted.response.status, 0, 0);
                    self.telemetry
                        .record_duplicate(&record.id, accepted.accepted);
                    return Ok(accepted.response);
                }
                Ok(Err(message)) => {
                    self.telemetry.record_ingest(&record.id, 503, 0, 0);
                    return Err(IngestError::Store(StoreError::new(
                        crate::StoreErrorKind::Backend,
                        message,
                    )));
                }
                Err(_) => return Err(IngestError::Stopping),
            }
        }
        self.telemetry.record_ingest(
            &record.id,
            accepted.response.status,
            accepted.accepted,
            accepted.refused,
        );
        Ok(accepted.response)
    }
}

fn push_paths(registry: &Registry, connector_type: &str) -> String {
    match registry.get(connector_type).and_then(|c| c.push()) {
        Some(push) => format!(
            "; it serves {}",
            push.paths()
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("; type `{connector_type}` is a periodic source"),
    }
}

/// Stages queued requests, as many per transaction as are waiting: while one
/// transaction syncs, the next group gathers, so concurrent requests share a sync.
pub(crate) async fn stage_loop(store: Arc<dyn PushStore>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.item.body.len();
        let mut group = vec![first];
        while group.len() < GROUP_ITEMS && bytes < GROUP_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.item.body.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let mut by_database: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for pending in group {
            by_database
                .entry(pending.database.clone())
                .or_default()
                .push(pending);
        }
        for (database, pendings) in by_database {
            let now = wall_ms();
            let (items, waiting): (Vec<StageItem>, Vec<_>) = pendings
                .into_iter()
                .map(|mut p| {
                    p.item.open_bucket_ms =
                        crate::schedule::bucket_start(now, p.schedule_ms).max(p.item.bucket_ms);
                    (p.item, p.done)
                })
                .unzip();
            match store.stage(&database, items).await {
                Ok(buckets) => {
                    for (done, bucket) in waiting.into_iter().zip(buckets) {
                        let _ = done.send(Ok(bucket));
                    }
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::error!(database, error = message, "cannot stage pushed requests");
                    for done in waiting {
                        let _ = done.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}
