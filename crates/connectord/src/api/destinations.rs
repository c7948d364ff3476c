//! Destination routes: create, list, show (with status, lag and last delivery),
//! update, delete, pause, resume, delivery history, dead letters and destination types.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use connector_runner::{
    ConnectorRecord, ConnectorState, DeadLetter, DeliveryRecord, DestinationRecord,
    DestinationSpec, Origin, source_target,
};
use serde_json::{Value, json};

use super::connectors::{check_file_root, check_id, now_ms, refresh};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, Caller, history_limit, no_query};

pub(super) async fn types(State(state): State<ApiState>) -> Json<Value> {
    let types: Vec<Value> = state
        .registry
        .destination_types()
        .map(|t| json!({ "type": t }))
        .collect();
    Json(json!({ "types": types }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no destination with id `{id}`"),
    )
}

/// A delivery attempt as the API shows it.
#[derive(serde::Serialize)]
struct DeliveryView<'a> {
    bucket: i64,
    started_at: i64,
    outcome: &'static str,
    rows: u64,
    skipped: u64,
    bytes: u64,
    requests: u64,
    retries: u64,
    duration_ms: u64,
    error: Option<&'a str>,
}

impl<'a> DeliveryView<'a> {
    fn of(d: &'a DeliveryRecord) -> Self {
        DeliveryView {
            bucket: d.scheduled_for_ms,
            started_at: d.started_at_ms,
            outcome: d.outcome.as_str(),
            rows: d.rows,
            skipped: d.skipped,
            bytes: d.bytes,
            requests: d.requests,
            retries: d.retries,
            duration_ms: d.duration_ms,
            error: d.error.as_deref(),
        }
    }
}

/// A destination as the API shows it.
#[derive(serde::Serialize)]
struct DestinationView<'a> {
    id: &'a str,
    #[serde(flatten)]
    spec: &'a DestinationSpec,
    origin: Origin,
    state: ConnectorState,
    disabled_reason: Option<&'a str>,
    last_error: Option<&'a str>,
    /// Buckets before this one (Unix ms) are not delivered; null for every bucket.
    starts_at: Option<i64>,
    delivered_through: Option<i64>,
    /// Age of the oldest committed bucket not yet delivered, in seconds; null while
    /// nothing waits or the source has not committed.
    lag_seconds: Option<f64>,
    created_at: i64,
    updated_at: i64,
    last_delivery: Option<DeliveryView<'a>>,
}

impl<'a> DestinationView<'a> {
    fn of(record: &'a DestinationRecord, lag_seconds: Option<f64>) -> Self {
        DestinationView {
            id: &record.id,
            spec: &record.spec,
            origin: record.origin,
            state: record.state,
            disabled_reason: record.disabled_reason.as_deref(),
            last_error: record.last_error.as_deref(),
            starts_at: (record.start_ms != i64::MIN).then_some(record.start_ms),
            delivered_through: record.delivered_through_ms,
            lag_seconds,
            created_at: record.created_at_ms,
            updated_at: record.updated_at_ms,
            last_delivery: record.last_delivery.as_ref().map(DeliveryView::of),
        }
    }
}

/// Every connector by name, read once per request: the routes that show lag, check
/// visibility or validate a source look them up here.
struct Connectors(HashMap<String, ConnectorRecord>);

impl Connectors {
    async fn read(state: &ApiState) -> Result<Connectors, ApiError> {
        let listed = state.store.list_connectors().await?;
        Ok(Connectors(
            listed
                .into_iter()
                .map(|c| (c.spec.name.clone(), c))
                .collect(),
        ))
    }

    /// The connector named `name` if `caller` sees it.
    fn seen_by(&self, caller: &Caller, name: &str) -> Option<&ConnectorRecord> {
        self.0.get(name).filter(|c| caller.sees(&c.spec.org_id))
    }

    /// Whether `caller` sees a destination: it belongs to its source connector's org,
    /// so an org token sees those whose source is one of its org's connectors.
    fn show(&self, caller: &Caller, record: &DestinationRecord) -> bool {
        caller.org.is_none() || self.seen_by(caller, &record.spec.source).is_some()
    }

    /// The age of the oldest bucket the destination has yet to deliver, from the
    /// store.
    async fn lag_seconds(&self, state: &ApiState, record: &DestinationRecord) -> Option<f64> {
        let source = self.0.get(&record.spec.source)?;
        let from = record.search_from_ms();
        let bucket = state
            .deliveries
            .next_bucket(&record.id, &source_target(source), from)
            .await
            .ok()??;
        #[allow(clippy::cast_precision_loss)]
        Some((now_ms() - bucket.scheduled_for_ms).max(0) as f64 / 1000.0)
    }
}

/// The destination `id` if the caller may see it; 404 alike otherwise. Reads the
/// connectors only for an org token, which needs them to see.
async fn find(state: &ApiState, caller: &Caller, id: &str) -> Result<DestinationRecord, ApiError> {
    let connectors = match caller.org {
        Some(_) => Some(Connectors::read(state).await?),
        None => None,
    };
    find_among(state, caller, id, connectors.as_ref()).await
}

/// [`find`] with the connectors already read, for the routes that need them anyway.
async fn find_among(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    connectors: Option<&Connectors>,
) -> Result<DestinationRecord, ApiError> {
    check_id(id).map_err(|_| not_found(id))?;
    let record = state
        .deliveries
        .get_destination(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if connectors.is_some_and(|c| !c.show(caller, &record)) {
        return Err(not_found(id));
    }
    Ok(record)
}

/// Checks a spec: its fields, its config, its source (which must exist and write
/// rows this destination can send) and, over the API, the files it names.
fn validate(
    state: &ApiState,
    caller: &Caller,
    connectors: &Connectors,
    spec: &DestinationSpec,
) -> Result<(), ApiError> {
    let config = spec
        .validate(&state.registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let source = connectors.seen_by(caller, &spec.source).ok_or_else(|| {
        ApiError::bad_request(format!(
            "source: no connector named `{}`; create the source connector first",
            spec.source
        ))
    })?;
    if let Some(connector) = state.registry.get(&source.spec.connector_type) {
        spec.check_source_schema(&state.registry, &connector.schema())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(destination) = state.registry.destination(&spec.destination_type) {
        for file in destination.config_files(&config) {
            check_file_root(&state.file_roots, &file, "config.")?;
        }
    }
    Ok(())
}

fn refuse_file_destination(record: &DestinationRecord, what: &str) -> Result<(), ApiError> {
    if record.origin == Origin::File {
        return Err(ApiError::conflict(format!(
            "destination `{}` is declared in connectord's config file; {what} it there and restart",
            record.spec.name
        )));
    }
    Ok(())
}

pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(query): ApiQuery,
) -> Result<Response, ApiError> {
    no_query(&query)?;
    let records = state.deliveries.list_destinations().await?;
    let connectors = Connectors::read(&state).await?;
    let mut views = Vec::with_capacity(records.len());
    for record in records.iter().filter(|r| connectors.show(&caller, r)) {
        let lag = connectors.lag_seconds(&state, record).await;
        views.push(DestinationView::of(record, lag));
    }
    Ok(Json(json!({ "destinations": views })).into_response())
}

pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(spec): ApiJson<DestinationSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate(&state, &caller, &Connectors::read(&state).await?, &spec)?;
    let start_ms = crate::run::start_ms(spec.start, &*state.store)
        .await
        .map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "cannot read the store's clock");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the state store failed; see the logs",
            )
        })?;
    let record = state
        .deliveries
        .create_destination(&spec, Origin::Api, start_ms)
        .await?;
    tracing::info!(destination_id = %record.id, destination = %spec.name, source = %spec.source, "destination created over the API");
    refresh(&state);
    Ok((StatusCode::CREATED, Json(json!({ "id": record.id }))))
}

pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let connectors = Connectors::read(&state).await?;
    let record = find_among(&state, &caller, &id, Some(&connectors)).await?;
    let lag = connectors.lag_seconds(&state, &record).await;
    Ok(Json(DestinationView::of(&record, lag)).into_response())
}

pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(spec): ApiJson<DestinationSpec>,
) -> Result<Response, ApiError> {
    let connectors = Connectors::read(&state).await?;
    let record = find_among(&state, &caller, &id, Some(&connectors)).await?;
    refuse_file_destination(&record, "change")?;
    validate(&state, &caller, &connectors, &spec)?;
    let record = state.deliveries.update_destination(&id, &spec).await?;
    refresh(&state);
    let lag = connectors.lag_seconds(&state, &record).await;
    Ok(Json(DestinationView::of(&record, lag)).into_response())
}

pub(super) async fn remove(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    let record = find(&state, &caller, &id).await?;
    refuse_file_destination(&record, "remove")?;
    state.deliveries.delete_destination(&id).await?;
    if let Some(runner) = &state.runner {
        runner.telemetry().forget_destination(&id);
    }
    tracing::info!(destination_id = %id, destination = %record.spec.name, "destination deleted over the API");
    refresh(&state);
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn pause(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    find(&state, &caller, &id).await?;
    let record = state
        .deliveries
        .set_destination_state(&id, ConnectorState::Paused)
        .await?;
    refresh(&state);
    Ok(Json(DestinationView::of(&record, None)).into_response())
}

/// Resumes a paused, halted or disabled destination: a halted one tries the bucket
/// it stopped at again.
pub(super) async fn resume(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller, &id).await?;
    record
        .spec
        .validate(&state.registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = state
        .deliveries
        .set_destination_state(&id, ConnectorState::Enabled)
        .await?;
    refresh(&state);
    Ok(Json(DestinationView::of(&record, None)).into_response())
}

pub(super) async fn deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiQuery(query): ApiQuery,
) -> Result<Json<Value>, ApiError> {
    find(&state, &caller, &id).await?;
    let limit = history_limit(&query)?;
    let records = state.deliveries.deliveries(&id, limit).await?;
    let views: Vec<DeliveryView<'_>> = records.iter().map(DeliveryView::of).collect();
    Ok(Json(json!({ "deliveries": views })))
}

pub(super) async fn dead_letters(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiQuery(query): ApiQuery,
) -> Result<Json<Value>, ApiError> {
    find(&state, &caller, &id).await?;
    let limit = history_limit(&query)?;
    let letters: Vec<DeadLetter> = state.deliveries.dead_letters(&id, limit).await?;
    let views: Vec<Value> = letters
        .iter()
        .map(|l| {
            json!({
                "bucket": l.scheduled_for_ms,
                "rows": l.rows,
                "error": l.error,
                "recorded_at": l.recorded_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": views })))
}
