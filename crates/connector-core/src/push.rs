//! Push sources: connectors that applications send data to, rather than connectors
//! that fetch it on a schedule.
//!
//! connectord serves `POST /v1/ingest/{connector name}/{path}` for each path a push
//! connector declares. The connector decodes and checks the request in
//! [`accept`](PushConnector::accept) and returns what to stage; connectord makes
//! that durable in the store before it sends the connector's response. The request's
//! bucket is the window (`schedule_ms`) in which connectord accepted it. Once the window
//! has closed (plus a grace), the runner calls [`commit`](PushConnector::commit) once
//! with everything staged for it, and in one transaction writes the rows, the
//! connector's new state and the ledger row, and removes what was staged.

use std::sync::Arc;

use crate::{Batch, ConfigFile, ConnectorError, Schema, ValidatedConfig};

/// How the runner drives a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drive {
    /// Ticks on its schedule, one per bucket ([`Connector`](crate::Connector)).
    Periodic,
    /// Receives requests; closed buckets are committed from what was staged
    /// ([`PushConnector`]).
    Push,
}

/// An HTTP request pushed to a connector, without any HTTP library's types.
#[derive(Debug, Clone, Default)]
pub struct IngestRequest {
    /// The path after `/v1/ingest/{connector name}/`, for example `v1/traces`.
    pub path: String,
    /// Headers, names lowercase. A `content-encoding` such as gzip has already been
    /// undone: `body` is the decoded body.
    pub headers: Vec<(String, String)>,
    /// The body, decoded.
    pub body: Vec<u8>,
    /// When connectord received the request, in milliseconds since the Unix epoch
    /// (0 when unknown). Connectors never read the clock themselves; one that serves
    /// what it kept only for a while (series expiring) compares with this.
    pub received_ms: i64,
}

impl IngestRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The response to an [`IngestRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Headers to send, `content-type` among them.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl IngestResponse {
    /// A response with `status`, a content type and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        IngestResponse {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// A plain-text response, for errors.
    pub fn text(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", message.into())
    }
}

/// What [`PushConnector::accept`] took from a request.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// What to stage for the request's bucket, in the connector's own encoding. Empty
    /// when nothing was accepted: then nothing is staged.
    pub staged: Vec<u8>,
    /// Items (spans, points) the request brought and the connector accepted.
    pub accepted: u64,
    /// Items the connector refused, each named in `response` (a partial success).
    pub refused: u64,
    /// The response to send once `staged` is durable.
    pub response: IngestResponse,
    /// Set when a request carries its own identity, so that the same request sent
    /// again is the same data (OTLP spans carry unique ids; a client retries a
    /// request whose response it did not get with the same bytes). A request whose
    /// key was staged within the last ten minutes gets this response again and is
    /// not staged a second time. `None` stages every request.
    pub idempotency_key: Option<[u8; 16]>,
}

/// What [`PushConnector::commit`] made of one bucket.
#[derive(Debug)]
pub struct Committed {
    /// The bucket's rows.
    pub batch: Batch,
    /// The connector's state after this bucket, kept with the rows and handed to the
    /// next commit and to [`serve`](PushConnector::serve).
    pub state: Vec<u8>,
    /// Series (label sets) the state holds, shown in `/metrics`; 0 when the
    /// connector keeps none.
    pub series: u64,
    /// Items the connector could not keep as they came since it was created: folded
    /// into an overflow series, or refused, because its series had reached their
    /// limit or (as the connector's docs say) they could not be kept beside what it
    /// holds; shown in `/metrics`.
    pub overflowed: u64,
}

/// A source that applications push to. Implement this for a receiver (OTLP, a
/// webhook); see the [module documentation](self) for how the runner drives it.
///
/// Everything here is CPU work on data already in memory: no I/O, no clock. The
/// runner calls `accept` and `commit` on blocking threads.
///
/// # Example
///
/// A connector that counts the lines pushed to it, per bucket and in total:
///
/// ```
/// use std::sync::{Arc, LazyLock};
/// use connector_core::{
///     config_from_json, Accepted, Batch, ColumnType, Committed, ConnectorError,
///     IngestRequest, IngestResponse, PushConnector, Schema,
/// };
///
/// struct Lines;
///
/// static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
///     Arc::new(Schema::new([("timestamp", ColumnType::Timestamp), ("lines", ColumnType::Integer)]))
/// });
///
/// impl PushConnector for Lines {
///     const TYPE_ID: &'static str = "lines";
///     const PATHS: &'static [&'static str] = &["lines"];
///     type Config = ();
///
///     fn schema(&self) -> Arc<Schema> {
///         SCHEMA.clone()
///     }
///
///     fn validate_config(&self, raw: &serde_json::Value) -> Result<(), ConnectorError> {
///         config_from_json(raw)
///     }
///
///     fn accept(&self, _: &(), request: &IngestRequest) -> Result<Accepted, IngestResponse> {
///         let text = std::str::from_utf8(&request.body)
///             .map_err(|e| IngestResponse::text(400, format!("body is not UTF-8: {e}")))?;
///         let lines = text.lines().count() as u64;
///         Ok(Accepted {
///             staged: lines.to_le_bytes().to_vec(),
///             accepted: lines,
///             refused: 0,
///             response: IngestResponse::text(200, "ok"),
///             idempotency_key: None,
///         })
///     }
///
///     fn commit(&self, _: &(), bucket_ms: i64, staged: &[Vec<u8>], state: Option<&[u8]>)
///         -> Result<Committed, ConnectorError>
///     {
///         let count = |b: &[u8]| -> Result<u64, ConnectorError> {
///             Ok(u64::from_le_bytes(b.try_into().map_err(|_| ConnectorError::permanent("staged data is not 8 bytes"))?))
///         };
///         let mut lines = 0;
///         for s in staged {
///             lines += count(s)?;
///         }
///         let total = state.map(count).transpose()?.unwrap_or(0) + lines;
///         let mut batch = Batch::new(self.schema());
///         batch.row().timestamp(bucket_ms).integer(lines as i64).finish()?;
///         Ok(Committed { batch, state: total.to_le_bytes().to_vec(), series: 0, overflowed: 0 })
///     }
///
///     fn serve(&self, _: &(), state: Option<&[u8]>, _: &IngestRequest) -> IngestResponse {
///         let total = state.and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes);
///         IngestResponse::text(200, format!("lines_total {total}\n"))
///     }
/// }
///
/// let request = IngestRequest { body: b"a\nb\n".to_vec(), ..Default::default() };
/// let accepted = Lines.accept(&(), &request).unwrap();
/// assert_eq!(accepted.accepted, 2);
/// let committed = Lines.commit(&(), 60_000, &[accepted.staged.clone(), accepted.staged], None).unwrap();
/// assert_eq!(committed.batch.get(0, 1), connector_core::Value::Integer(4));
/// let page = Lines.serve(&(), Some(&committed.state), &IngestRequest::default());
/// assert_eq!(page.body, b"lines_total 4\n");
/// ```
pub trait PushConnector: Send + Sync + 'static {
    /// The connector's type id, as operators write it in `type`.
    const TYPE_ID: &'static str;

    /// The paths served under `/v1/ingest/{connector name}/`, without a leading slash.
    const PATHS: &'static [&'static str];

    /// The validated, typed config. The runner keeps one per connector and spec and
    /// hands that same value to `accept`, `commit` and `serve`, so a config may carry
    /// what `commit` learns for later requests (behind a lock: `accept` runs on many
    /// threads). Only as a hint: another process may commit the next bucket, and a
    /// restart starts from the validated config again.
    type Config: Send + Sync + 'static;

    /// The columns of the rows [`commit`](PushConnector::commit) returns.
    fn schema(&self) -> Arc<Schema>;

    /// Checks a raw JSON config; pure, as [`Connector::validate_config`](crate::Connector::validate_config).
    fn validate_config(&self, raw: &serde_json::Value) -> Result<Self::Config, ConnectorError>;

    /// Decodes and checks one request. `Ok` is acknowledged with its response once its
    /// `staged` data is durable; `Err` is sent as it is (a 4xx) and nothing is staged.
    fn accept(
        &self,
        config: &Self::Config,
        request: &IngestRequest,
    ) -> Result<Accepted, IngestResponse>;

    /// Turns what was staged for the bucket starting at `bucket_ms` into rows, given
    /// the state the previous commit left (`None` for the first). An error leaves
    /// everything staged, to be tried again.
    fn commit(
        &self,
        config: &Self::Config,
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError>;

    /// Answers a read of the connector's committed state (connectord serves it at
    /// `GET /v1/connectors/{id}/metrics`), for example as a scrape page.
    fn serve(
        &self,
        config: &Self::Config,
        state: Option<&[u8]>,
        request: &IngestRequest,
    ) -> IngestResponse;

    /// The files a config names, as [`Connector::config_files`](crate::Connector::config_files).
    fn config_files(&self, config: &Self::Config) -> Vec<ConfigFile> {
        let _ = config;
        Vec::new()
    }
}

/// A [`PushConnector`] with its config type erased: what the runner and connectord
/// call. Reached through [`DynConnector::push`](crate::DynConnector::push).
pub trait DynPush: Send + Sync {
    /// The paths served under `/v1/ingest/{connector name}/`.
    fn paths(&self) -> &'static [&'static str];

    /// [`PushConnector::accept`] with a config this type validated.
    fn accept(
        &self,
        config: &ValidatedConfig,
        request: &IngestRequest,
    ) -> Result<Accepted, IngestResponse>;

    /// [`PushConnector::commit`] with a config this type validated.
    fn commit(
        &self,
        config: &ValidatedConfig,
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError>;

    /// [`PushConnector::serve`] with a config this type validated.
    fn serve(
        &self,
        config: &ValidatedConfig,
        state: Option<&[u8]>,
        request: &IngestRequest,
    ) -> IngestResponse;
}

/// Wraps a push connector, as the registry wraps every connector.
pub(crate) struct ErasedPush<P>(pub(crate) P);

impl<P: PushConnector> ErasedPush<P> {
    fn typed<'a>(&self, config: &'a ValidatedConfig) -> Result<&'a P::Config, ConnectorError> {
        config.typed::<P::Config>("connector", P::TYPE_ID)
    }
}

impl<P: PushConnector> DynPush for ErasedPush<P> {
    fn paths(&self) -> &'static [&'static str] {
        P::PATHS
    }

    fn accept(
        &self,
        config: &ValidatedConfig,
        request: &IngestRequest,
    ) -> Result<Accepted, IngestResponse> {
        let typed = self
            .typed(config)
            .map_err(|e| IngestResponse::text(500, e.to_string()))?;
        self.0.accept(typed, request)
    }

    fn commit(
        &self,
        config: &ValidatedConfig,
        bucket_ms: i64,
        staged: &[Vec<u8>],
        state: Option<&[u8]>,
    ) -> Result<Committed, ConnectorError> {
        self.0.commit(self.typed(config)?, bucket_ms, staged, state)
    }

    fn serve(
        &self,
        config: &ValidatedConfig,
        state: Option<&[u8]>,
        request: &IngestRequest,
    ) -> IngestResponse {
        match self.typed(config) {
            Ok(typed) => self.0.serve(typed, state, request),
            Err(e) => IngestResponse::text(500, e.to_string()),
        }
    }
}
