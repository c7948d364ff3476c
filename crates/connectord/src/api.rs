//! The REST API: connectors, their ticks and types, plus `/metrics` and `/healthz`,
//! behind optional bearer/basic tokens with scopes.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connector_core::{ConfigFile, Registry};
use connector_runner::schedule::{bucket_start, phase_ms};
use connector_runner::{
    ConnectorRecord, ConnectorSpec, ConnectorState, ListQuery, Origin, RunnerHandle, StateStore,
    StoreError, StoreErrorKind, TickRecord,
};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The OpenAPI 3 document served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scope {
    /// Read connectors, ticks and types.
    #[serde(rename = "connectors:read")]
    ConnectorsRead,
    /// Create, change, delete, trigger, pause and resume connectors.
    #[serde(rename = "connectors:write")]
    ConnectorsWrite,
    /// Read `/metrics`.
    #[serde(rename = "metrics:read")]
    MetricsRead,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::ConnectorsRead => "connectors:read",
            Scope::ConnectorsWrite => "connectors:write",
            Scope::MetricsRead => "metrics:read",
        }
    }
}

/// A resolved API token.
pub struct Token {
    pub name: String,
    pub secret: connector_core::Secret,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn StateStore>,
    pub registry: Arc<Registry>,
    pub runner: Option<RunnerHandle>,
    /// Empty means no authentication (only allowed on loopback, or when the operator
    /// says so explicitly).
    pub tokens: Arc<Vec<Token>>,
    /// `[server] api_file_roots`: where connectors created over the API may name files.
    pub file_roots: Arc<Vec<std::path::PathBuf>>,
}

/// The one error shape: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no connector with id `{id}`"),
        )
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"connectord\", Basic realm=\"connectord\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            StoreErrorKind::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{e:#}"))
            }
            StoreErrorKind::Conflict => ApiError::conflict(format!("{e:#}")),
            StoreErrorKind::Invalid => ApiError::bad_request(format!("{e:#}")),
            _ => {
                tracing::error!(error = format!("{e:#}"), "state store failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the state store failed; see the logs",
                )
            }
        }
    }
}

/// `Json<T>` whose rejections use the API's error shape: 415 without a JSON content
/// type, 413 past [`MAX_BODY_BYTES`], 400 with the parser's message otherwise.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            )),
            Err(JsonRejection::JsonDataError(e)) => {
                let detail = std::error::Error::source(&e)
                    .map_or_else(|| e.body_text(), ToString::to_string);
                Err(ApiError::bad_request(format!("invalid body: {detail}")))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => {
                let detail = std::error::Error::source(&e)
                    .map_or_else(|| e.body_text(), ToString::to_string);
                Err(ApiError::bad_request(format!("malformed JSON: {detail}")))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A path id; rejections (bad percent-encoding) use the API's error shape.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| ApiPath(id))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters; rejections use the API's error shape.
pub struct ApiQuery(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Builds the router with every route, the auth layer and the JSON fallbacks.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/connector-types", get(connector_types))
        .route("/v1/connectors", get(list).post(create))
        .route("/v1/connectors/{id}", get(show).put(update).delete(remove))
        .route("/v1/connectors/{id}/trigger", post(trigger))
        .route("/v1/connectors/{id}/pause", post(pause))
        .route("/v1/connectors/{id}/resume", post(resume))
        .route("/v1/connectors/{id}/ticks", get(ticks))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint; see /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see /v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The scope a request needs, or `None` for the open endpoints.
fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/v1/openapi.json" => None,
        "/metrics" => Some(Scope::MetricsRead),
        _ if method == Method::GET || method == Method::HEAD => Some(Scope::ConnectorsRead),
        _ => Some(Scope::ConnectorsWrite),
    }
}

/// The token a request presents: `Authorization: Bearer T`, or the password of
/// `Authorization: Basic` (what Grafana's Prometheus data source sends).
fn presented_token(req: &Request) -> Option<String> {
    use base64::Engine as _;
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, value) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        return decoded
            .split_once(':')
            .map(|(_, password)| password.to_owned());
    }
    None
}

async fn authenticate(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(scope) = required_scope(req.method(), req.uri().path()) else {
        return Ok(next.run(req).await);
    };
    if state.tokens.is_empty() {
        return Ok(next.run(req).await);
    }
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown token: send `Authorization: Bearer <token>` or the token as the Basic password",
        )
    };
    let presented = presented_token(&req).ok_or_else(unauthorized)?;
    // Check every token, so timing does not tell which one nearly matched.
    let mut matched = None;
    for token in state.tokens.iter() {
        // `subtle` compares in time that depends only on the lengths.
        if bool::from(token.secret.expose().as_bytes().ct_eq(presented.as_bytes())) {
            matched = Some(token);
        }
    }
    let token = matched.ok_or_else(unauthorized)?;
    if !token.scopes.contains(&scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` lacks the scope `{}`",
                token.name,
                scope.as_str()
            ),
        ));
    }
    Ok(next.run(req).await)
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let text = state
        .runner
        .as_ref()
        .map(|runner| runner.telemetry().render())
        .unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn connector_types(State(state): State<ApiState>) -> Json<Value> {
    let types: Vec<Value> = state
        .registry
        .connector_types()
        .map(|t| json!({ "type": t }))
        .collect();
    Json(json!({ "types": types }))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A tick as the API shows it.
#[derive(serde::Serialize)]
struct TickView<'a> {
    scheduled_for: i64,
    started_at: i64,
    outcome: &'static str,
    rows: u64,
    bytes: u64,
    sink_bytes: u64,
    duration_ms: u64,
    error: Option<&'a str>,
}

impl<'a> TickView<'a> {
    fn of(t: &'a TickRecord) -> Self {
        TickView {
            scheduled_for: t.scheduled_for_ms,
            started_at: t.started_at_ms,
            outcome: t.outcome.as_str(),
            rows: t.rows,
            bytes: t.source_bytes,
            sink_bytes: t.sink_bytes,
            duration_ms: t.duration_ms,
            error: t.error.as_deref(),
        }
    }
}

/// A connector as the API shows it, serialized straight from the record: its newest
/// tick comes with the record, so a list of every connector costs one store query,
/// and no JSON tree is built per connector (building one was 60 % of listing
/// 10,000 connectors, measured with perf).
#[derive(serde::Serialize)]
struct ConnectorView<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    connector_type: &'a str,
    target_database: &'a str,
    target_table: &'a str,
    schedule_ms: u64,
    config: &'a Value,
    origin: Origin,
    state: ConnectorState,
    disabled_reason: Option<&'a str>,
    last_error: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
    last_tick: Option<TickView<'a>>,
    next_tick: Option<i64>,
}

impl<'a> ConnectorView<'a> {
    /// `unrecorded` is a newer tick the state store failed to record: it is shown as
    /// the last tick, and its error as the last error, so a failing store is visible.
    fn of(
        state: &ApiState,
        record: &'a ConnectorRecord,
        unrecorded: Option<&'a TickRecord>,
        now: i64,
    ) -> Self {
        let unrecorded = unrecorded.filter(|tick| {
            record
                .last_tick
                .as_ref()
                .is_none_or(|last| tick.started_at_ms >= last.started_at_ms)
        });
        let next_tick =
            (record.state == ConnectorState::Enabled && state.runner.is_some()).then(|| {
                let schedule = record.spec.schedule_ms;
                bucket_start(now, schedule, phase_ms(&record.id, schedule))
                    + i64::try_from(schedule).unwrap_or(0)
            });
        ConnectorView {
            id: &record.id,
            name: &record.spec.name,
            connector_type: &record.spec.connector_type,
            target_database: &record.spec.target_database,
            target_table: &record.spec.target_table,
            schedule_ms: record.spec.schedule_ms,
            config: &record.spec.config,
            origin: record.origin,
            state: record.state,
            disabled_reason: record.disabled_reason.as_deref(),
            last_error: match unrecorded {
                Some(tick) => tick.error.as_deref(),
                None => record.last_error.as_deref(),
            },
            created_at: record.created_at_ms,
            updated_at: record.updated_at_ms,
            last_tick: unrecorded.or(record.last_tick.as_ref()).map(TickView::of),
            next_tick,
        }
    }
}

/// The newest tick of a connector that the state store could not record.
fn unrecorded(state: &ApiState, id: &str) -> Option<TickRecord> {
    state
        .runner
        .as_ref()
        .and_then(|runner| runner.telemetry().unrecorded(id))
}

/// One connector as a JSON response.
fn connector_json(state: &ApiState, record: &ConnectorRecord) -> Response {
    let tick = unrecorded(state, &record.id);
    Json(ConnectorView::of(state, record, tick.as_ref(), now_ms())).into_response()
}

/// Ids are UUIDs: anything else cannot name a connector.
fn check_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found(id))
}

async fn find(state: &ApiState, id: &str) -> Result<ConnectorRecord, ApiError> {
    check_id(id)?;
    state
        .store
        .get_connector(id)
        .await?
        .ok_or_else(|| ApiError::not_found(id))
}

/// Checks a spec; one that came over the API may name files only under the
/// allowed roots (the TOML file may name any path).
fn validate(state: &ApiState, spec: &ConnectorSpec, origin: Origin) -> Result<(), ApiError> {
    let config = spec
        .validate(&state.registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if origin == Origin::File {
        return Ok(());
    }
    for file in state.registry.config_files(&config) {
        check_file_root(&state.file_roots, &file)?;
    }
    Ok(())
}

/// A file named by a connector created over the API must lie under one of the
/// operator's `[server] api_file_roots`, judged on the path as written (no `..`,
/// absolute), so the answer says nothing about what exists on disk.
fn check_file_root(roots: &[std::path::PathBuf], file: &ConfigFile) -> Result<(), ApiError> {
    let key = &file.key;
    if roots.is_empty() {
        return Err(ApiError::bad_request(format!(
            "config.{key}: connectors created over the API may not name files on this server; \
             the operator can allow directories with [server] api_file_roots"
        )));
    }
    let path = &file.path;
    let clean = path.is_absolute()
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if !clean || !roots.iter().any(|root| path.starts_with(root)) {
        let allowed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(ApiError::bad_request(format!(
            "config.{key}: the path must be absolute, without `..`, and under one of the allowed directories ({})",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn refresh(state: &ApiState) {
    if let Some(runner) = &state.runner {
        runner.refresh();
    }
}

fn refuse_file_connector(record: &ConnectorRecord, what: &str) -> Result<(), ApiError> {
    if record.origin == Origin::File {
        return Err(ApiError::conflict(format!(
            "connector `{}` is declared in connectord's config file; {what} it there and restart",
            record.spec.name
        )));
    }
    Ok(())
}

/// `GET /v1/connectors` returns this many connectors when `limit` is left out.
const DEFAULT_LIST_LIMIT: usize = 1_000;

/// The most connectors one page may hold.
const MAX_LIST_LIMIT: usize = 10_000;

/// One page of connectors in id order: `?limit=N&after=<cursor>&state=&type=`.
/// `next` is the cursor of the following page, or null on the last one.
async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery,
) -> Result<Response, ApiError> {
    #[derive(serde::Serialize)]
    struct Page<'a> {
        connectors: Vec<ConnectorView<'a>>,
        next: Option<&'a str>,
    }
    const PARAMETERS: [&str; 4] = ["limit", "after", "state", "type"];
    if let Some(unknown) = query.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; accepted: {}",
            PARAMETERS.join(", ")
        )));
    }
    let limit = match query.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: `{text}` is not a whole number from 1 to {MAX_LIST_LIMIT}"
                )));
            }
        },
    };
    let connector_state = match query.get("state") {
        None => None,
        Some(text) => Some(ConnectorState::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state: `{text}` is not one of enabled, paused, disabled"
            ))
        })?),
    };
    // One more than the page, to know whether another page follows.
    let mut records = state
        .store
        .list_page(&ListQuery {
            after: query.get("after").cloned(),
            state: connector_state,
            connector_type: query.get("type").cloned(),
            limit: limit + 1,
        })
        .await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let now = now_ms();
    let unrecorded: Vec<Option<TickRecord>> = records
        .iter()
        .map(|record| unrecorded(&state, &record.id))
        .collect();
    let page = Page {
        connectors: records
            .iter()
            .zip(&unrecorded)
            .map(|(record, tick)| ConnectorView::of(&state, record, tick.as_ref(), now))
            .collect(),
        next: more
            .then(|| records.last().map(|r| r.id.as_str()))
            .flatten(),
    };
    Ok(Json(page).into_response())
}

async fn create(
    State(state): State<ApiState>,
    ApiJson(spec): ApiJson<ConnectorSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate(&state, &spec, Origin::Api)?;
    let record = state.store.create_connector(&spec, Origin::Api).await?;
    tracing::info!(connector_id = %record.id, connector = %spec.name, "connector created over the API");
    refresh(&state);
    Ok((StatusCode::CREATED, Json(json!({ "id": record.id }))))
}

async fn show(State(state): State<ApiState>, ApiPath(id): ApiPath) -> Result<Response, ApiError> {
    let record = find(&state, &id).await?;
    Ok(connector_json(&state, &record))
}

async fn update(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath,
    ApiJson(spec): ApiJson<ConnectorSpec>,
) -> Result<Response, ApiError> {
    let record = find(&state, &id).await?;
    refuse_file_connector(&record, "change")?;
    validate(&state, &spec, Origin::Api)?;
    let record = state.store.update_connector(&id, &spec).await?;
    refresh(&state);
    Ok(connector_json(&state, &record))
}

async fn remove(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    let record = find(&state, &id).await?;
    refuse_file_connector(&record, "remove")?;
    state.store.delete_connector(&id).await?;
    if let Some(runner) = &state.runner {
        runner.telemetry().forget(&id);
    }
    tracing::info!(connector_id = %id, connector = %record.spec.name, "connector deleted over the API");
    refresh(&state);
    Ok(StatusCode::NO_CONTENT)
}

async fn trigger(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let record = find(&state, &id).await?;
    if record.state != ConnectorState::Enabled {
        return Err(ApiError::conflict(format!(
            "connector `{}` is {}; resume it first",
            record.spec.name, record.state
        )));
    }
    let Some(runner) = &state.runner else {
        return Err(ApiError::conflict(
            "this connectord runs no ticks (`[runner] enabled = false`)",
        ));
    };
    runner.trigger(&id);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "triggered": true })),
    ))
}

async fn pause(State(state): State<ApiState>, ApiPath(id): ApiPath) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    let record = state.store.set_state(&id, ConnectorState::Paused).await?;
    refresh(&state);
    Ok(connector_json(&state, &record))
}

async fn resume(State(state): State<ApiState>, ApiPath(id): ApiPath) -> Result<Response, ApiError> {
    let record = find(&state, &id).await?;
    // The spec may have been stored before a connector type tightened its checks.
    validate(&state, &record.spec, record.origin)?;
    let record = state.store.set_state(&id, ConnectorState::Enabled).await?;
    refresh(&state);
    Ok(connector_json(&state, &record))
}

/// Most ticks one request returns.
const MAX_TICKS: usize = 1000;

async fn ticks(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath,
    ApiQuery(query): ApiQuery,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id).await?;
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; only `limit` is accepted"
        )));
    }
    let limit = match query.get("limit") {
        None => 20,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_TICKS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: `{text}` is not a whole number from 1 to {MAX_TICKS}"
                )));
            }
        },
    };
    let ticks = state.store.ticks(&id, limit).await?;
    let ticks: Vec<TickView<'_>> = ticks.iter().map(TickView::of).collect();
    Ok(Json(json!({ "ticks": ticks })))
}
