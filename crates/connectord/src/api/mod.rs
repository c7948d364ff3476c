//! The REST API: connectors, destinations and discoveries (`connectors`,
//! `destinations`, `discoveries`), pushed
//! requests (`ingest`), plus `/metrics` and `/healthz`, behind optional bearer/basic tokens with scopes. This
//! file holds what every route shares: routing, authentication, the error shape and
//! the extractors.

mod connectors;
mod destinations;
mod discoveries;
mod ingest;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connector_core::Registry;
use connector_runner::{DeliveryStore, RunnerHandle, StateStore, StoreError, StoreErrorKind};
use serde::Deserialize;
use serde_json::json;
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
    /// Read `/metrics` and push connectors' `/v1/connectors/{id}/metrics`.
    #[serde(rename = "metrics:read")]
    MetricsRead,
    /// Push requests to `/v1/ingest/{connector name}/...`.
    #[serde(rename = "ingest:write")]
    IngestWrite,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::ConnectorsRead => "connectors:read",
            Scope::ConnectorsWrite => "connectors:write",
            Scope::MetricsRead => "metrics:read",
            Scope::IngestWrite => "ingest:write",
        }
    }
}

/// A resolved API token.
pub struct Token {
    pub name: String,
    pub secret: connector_core::Secret,
    pub scopes: Vec<Scope>,
    /// The org it belongs to; `None` for an operator token.
    pub org_id: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

/// Who sent a request, as the authentication layer found out: the token's name and
/// org. An operator (a token without `org_id`, or any caller of a server without
/// tokens) sees every org.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The token's name; `None` on a server without tokens.
    pub token: Option<String>,
    /// The token's org; `None` for an operator.
    pub org: Option<String>,
}

impl Caller {
    /// Whether this caller may see a resource of `org_id`. What it may not see
    /// answers 404, as if it did not exist, so ids of other orgs cannot be probed.
    pub fn sees(&self, org_id: &str) -> bool {
        self.org.as_deref().is_none_or(|org| org == org_id)
    }

    /// The org a resource written by this caller goes into: an org token's own org
    /// (refusing a body that names another), or for an operator the org the body
    /// names, else `current` (the resource's org on an update), else `default`.
    pub fn org_for_write(
        &self,
        given: Option<&str>,
        current: Option<&str>,
    ) -> Result<String, ApiError> {
        match (&self.org, given) {
            (Some(org), Some(given)) if given != org => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` belongs to org `{org}` and writes only there; leave org_id out or set it to `{org}`",
                    self.token.as_deref().unwrap_or_default()
                ),
            )),
            (Some(org), _) => Ok(org.clone()),
            (None, Some(given)) => Ok(given.to_owned()),
            (None, None) => Ok(current.unwrap_or(connector_runner::DEFAULT_ORG).to_owned()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // The authentication layer puts it on every request it lets through; a
        // route without it would be a wiring mistake, and must not fall open.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request passed no authentication layer",
            )
        })
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn StateStore>,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub discoveries: Arc<dyn connector_runner::DiscoveryStore>,
    /// Wakes the discovery manager after an API change; `None` without a runner.
    pub discoveries_changed: Option<Arc<tokio::sync::Notify>>,
    pub registry: Arc<Registry>,
    pub runner: Option<RunnerHandle>,
    /// Takes pushed requests; `None` when this process runs no runner.
    pub ingestor: Option<connector_runner::Ingestor>,
    /// Where push connectors keep their committed state.
    pub push: Arc<dyn connector_runner::PushStore>,
    /// `[ingest] max_body_bytes`.
    pub max_ingest_body: usize,
    /// Empty means no authentication (only allowed on loopback, or when the operator
    /// says so explicitly).
    pub tokens: Arc<Vec<Token>>,
    /// `[server] api_file_roots`: where connectors created over the API may name files.
    pub file_roots: Arc<Vec<std::path::PathBuf>>,
    /// `[query]`: the backend behind `/metrics/api/v1/`; `None` answers 503.
    pub query: Option<Arc<crate::query::proxy::QueryBackend>>,
}

/// The one error shape: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(super) fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no connector with id `{id}`"),
        )
    }

    pub(super) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: the connection cannot carry another
            // request (its next bytes would be read as one), so it ends here.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
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

/// A JSON body parsed into `T`, also kept as text so a handler can tell whether a
/// key was given at all (an omitted `org_id` keeps the connector's org; a default
/// value could not say so).
pub struct ApiBody<T> {
    pub value: T,
    pub raw: Box<serde_json::value::RawValue>,
}

impl<T> ApiBody<T> {
    /// The string at `path` (`["template", "org_id"]`) if the body gives one.
    pub fn given(&self, path: &[&str]) -> Option<String> {
        let mut value: &serde_json::Value = &serde_json::from_str(self.raw.get()).ok()?;
        for key in path {
            value = value.get(key)?;
        }
        value.as_str().map(str::to_owned)
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(raw) =
            ApiJson::<Box<serde_json::value::RawValue>>::from_request(req, state).await?;
        // The text already parsed as JSON, so only the shape can be wrong here.
        let value =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
        Ok(ApiBody { value, raw })
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
        .route(
            "/metrics/api/v1/{*path}",
            get(crate::query::proxy::forward).post(crate::query::proxy::forward),
        )
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/connector-types", get(connectors::types))
        .route(
            "/v1/connectors",
            get(connectors::list).post(connectors::create),
        )
        .route(
            "/v1/connectors/{id}",
            get(connectors::show)
                .put(connectors::update)
                .delete(connectors::remove),
        )
        .route("/v1/connectors/{id}/trigger", post(connectors::trigger))
        .route("/v1/connectors/{id}/pause", post(connectors::pause))
        .route("/v1/connectors/{id}/resume", post(connectors::resume))
        .route("/v1/connectors/{id}/ticks", get(connectors::ticks))
        .route(
            "/v1/connectors/{id}/metrics",
            get(ingest::connector_metrics),
        )
        .route("/v1/ingest/{name}/{*path}", post(ingest::ingest))
        .route("/v1/destination-types", get(destinations::types))
        .route(
            "/v1/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/v1/destinations/{id}",
            get(destinations::show)
                .put(destinations::update)
                .delete(destinations::remove),
        )
        .route("/v1/destinations/{id}/pause", post(destinations::pause))
        .route("/v1/destinations/{id}/resume", post(destinations::resume))
        .route(
            "/v1/destinations/{id}/deliveries",
            get(destinations::deliveries),
        )
        .route(
            "/v1/destinations/{id}/dead-letters",
            get(destinations::dead_letters),
        )
        .route(
            "/v1/discoveries",
            get(discoveries::list).post(discoveries::create),
        )
        .route(
            "/v1/discoveries/{id}",
            get(discoveries::show)
                .put(discoveries::update)
                .delete(discoveries::remove),
        )
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
        _ if path.starts_with("/metrics/") => Some(Scope::MetricsRead),
        _ if path.starts_with("/v1/ingest/") => Some(Scope::IngestWrite),
        _ if path.starts_with("/v1/connectors/") && path.ends_with("/metrics") => {
            Some(Scope::MetricsRead)
        }
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
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(scope) = required_scope(req.method(), req.uri().path()) else {
        return Ok(next.run(req).await);
    };
    if state.tokens.is_empty() {
        req.extensions_mut().insert(Caller::default());
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
    req.extensions_mut().insert(Caller {
        token: Some(token.name.clone()),
        org: token.org_id.clone(),
    });
    Ok(next.run(req).await)
}

/// An org token gets its org's series only; operators and the backend's scrape
/// (an operator token) get every series.
async fn metrics(State(state): State<ApiState>, caller: Caller) -> impl IntoResponse {
    let mut text = state
        .runner
        .as_ref()
        .map(|runner| runner.telemetry().render(caller.org.as_deref()))
        .unwrap_or_default();
    if let Some(query) = &state.query {
        query.render(caller.org.as_deref(), &mut text);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Refuses any query parameter, for the endpoints that take none.
pub(super) fn no_query(query: &std::collections::HashMap<String, String>) -> Result<(), ApiError> {
    match query.keys().next() {
        Some(unknown) => Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; this endpoint takes none"
        ))),
        None => Ok(()),
    }
}

/// Most entries one history request (ticks, deliveries, dead letters) returns.
const MAX_HISTORY: usize = 1000;

pub(super) fn history_limit(
    query: &std::collections::HashMap<String, String>,
) -> Result<usize, ApiError> {
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; only `limit` is accepted"
        )));
    }
    match query.get("limit") {
        None => Ok(20),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit: `{text}` is not a whole number from 1 to {MAX_HISTORY}"
            ))),
        },
    }
}
