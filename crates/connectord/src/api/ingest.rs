//! Push sources over HTTP: `POST /v1/ingest/{connector name}/{path}` hands a request
//! to its push connector and answers once what it accepted is staged;
//! `GET /v1/connectors/{id}/metrics` serves a push connector's committed state.

use std::io::Read as _;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_ENCODING, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use connector_core::{IngestRequest, IngestResponse};
use connector_runner::{IngestError, Target};

use super::{ApiError, ApiPath, ApiState, Caller};

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body is larger than ingest.max_body_bytes ({limit} bytes)"),
    )
}

/// Undoes a gzip `Content-Encoding`, reading at most `limit` bytes out, so a small
/// compressed body cannot expand without bound.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("the gzip body does not decompress: {e}")))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

fn into_response(response: IngestResponse) -> Response {
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().insert(name, value);
        }
    }
    out
}

fn ingest_error(e: &IngestError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let code = match e {
        IngestError::NotFound(_) | IngestError::NotServed { .. } => "not_found",
        IngestError::NotEnabled { .. } => "conflict",
        IngestError::Backpressure { .. } => "backpressure",
        _ => "unavailable",
    };
    let mut response = ApiError::new(status, code, e.to_string()).into_response();
    if let Some(seconds) = e.retry_after_s() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `POST /v1/ingest/{name}/{*path}`.
pub(super) async fn ingest(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(ingestor) = state.ingestor.clone() else {
        // Not a passing outage: this process never stages, so retrying here is futile.
        return Err(ApiError::conflict(
            "this process runs no runner ([runner] enabled = false): it takes no pushed requests; send them to one that does",
        ));
    };
    let limit = state.max_ingest_body;
    let (parts, body) = request.into_parts();
    let encoding = parts
        .headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let body = match encoding.as_deref() {
        None | Some("identity") => raw.to_vec(),
        Some("gzip") => tokio::task::spawn_blocking(move || gunzip(&raw, limit))
            .await
            .map_err(|e| ApiError::bad_request(format!("gzip task failed: {e}")))??,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content encoding `{other}` is not supported: send gzip or none"),
            ));
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != CONTENT_ENCODING)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let request = IngestRequest {
        path,
        headers,
        body,
        received_ms: super::connectors::now_ms(),
    };
    Ok(
        match ingestor.ingest(&name, caller.org.as_deref(), request).await {
            Ok(response) => into_response(response),
            Err(e) => ingest_error(&e),
        },
    )
}

/// `GET /v1/connectors/{id}/metrics`: the push connector's committed state, as the
/// connector serves it (for `spanmetrics`, a scrape page).
pub(super) async fn connector_metrics(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    request: Request,
) -> Result<Response, ApiError> {
    let record = super::connectors::find(&state, &caller, &id).await?;
    let connector = state
        .registry
        .get(&record.spec.connector_type)
        .filter(|c| c.push().is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "connector `{}` is of type `{}`, which is not a push source: it has no metrics page",
                    record.spec.name, record.spec.connector_type
                ),
            )
        })?;
    let config = record.spec.validate(&state.registry).map_err(|e| {
        ApiError::conflict(format!("the connector's spec does not validate: {e:#}"))
    })?;
    let target = Target {
        connector_id: record.id.clone(),
        database: record.spec.target_database.clone(),
        table: record.spec.target_table.clone(),
    };
    let committed = state.push.push_state(&target).await?;
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let request = IngestRequest {
        path: "metrics".to_owned(),
        headers,
        body: Vec::new(),
        received_ms: super::connectors::now_ms(),
    };
    let push = connector.push().ok_or_else(|| ApiError::not_found(&id))?;
    Ok(into_response(push.serve(
        &config,
        committed.as_deref(),
        &request,
    )))
}
