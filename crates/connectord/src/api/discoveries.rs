//! Discovery routes: create, list, show (with active, dropped and invalid targets, as
//! Prometheus's `/api/v1/targets` shows them), update and delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use connector_core::ConfigFile;
use connector_runner::{DiscoveryRecord, Origin};
use discovery::{DiscoverySpec, SdType};
use serde_json::{Value, json};

use super::connectors::{check_file_root, check_id, refresh};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, Caller, no_query};

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no discovery with id `{id}`"),
    )
}

/// A discovery as the API shows it: its spec, where it was declared, and its last
/// refresh. `full` adds every target; the list shows counts.
fn view(record: &DiscoveryRecord, full: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("id".into(), record.id.clone().into());
    if let Some(spec) = record.spec.as_object() {
        out.extend(spec.clone());
    }
    out.insert("origin".into(), record.origin.as_str().into());
    out.insert("created_at".into(), record.created_at_ms.into());
    out.insert("updated_at".into(), record.updated_at_ms.into());
    let status = record.status.clone().unwrap_or(Value::Null);
    let count = |key: &str| {
        status
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let summary = json!({
        "refreshed_at": status.get("refreshed_at"),
        "duration_ms": status.get("duration_ms"),
        "error": status.get("error"),
        "active_targets": count("active_targets"),
        "dropped_targets": count("dropped_targets"),
        "invalid_targets": count("invalid_targets"),
    });
    out.insert("status".into(), summary);
    if full {
        for key in [
            "active_targets",
            "dropped_targets",
            "invalid_targets",
            "files",
            "last_sync",
        ] {
            let value = status.get(key).cloned().unwrap_or_else(|| match key {
                "last_sync" => Value::Null,
                _ => Value::Array(Vec::new()),
            });
            out.insert(key.into(), value);
        }
    }
    Value::Object(out)
}

/// A discovery belongs to the org its template puts every target's connector in.
fn org_of(record: &DiscoveryRecord) -> &str {
    record
        .spec
        .pointer("/template/org_id")
        .and_then(Value::as_str)
        .unwrap_or(connector_runner::DEFAULT_ORG)
}

/// The discovery `id` if the caller's org may see it; 404 alike otherwise.
async fn find(state: &ApiState, caller: &Caller, id: &str) -> Result<DiscoveryRecord, ApiError> {
    check_id(id).map_err(|_| not_found(id))?;
    state
        .discoveries
        .get_discovery(id)
        .await?
        .filter(|record| caller.sees(org_of(record)))
        .ok_or_else(|| not_found(id))
}

/// Reads and checks a spec from a request body, its template's `org_id` settled by
/// the caller's token (`current`: the org of the discovery being changed); over the
/// API, the files it names (file_sd patterns, CA and client certificates) must lie
/// under the allowed roots.
fn validate(
    state: &ApiState,
    caller: &Caller,
    raw: &Value,
    current: Option<&str>,
) -> Result<DiscoverySpec, ApiError> {
    let given = raw.pointer("/template/org_id").and_then(Value::as_str);
    let org = caller.org_for_write(given, current)?;
    let mut raw = raw.clone();
    if let Some(template) = raw.get_mut("template").and_then(Value::as_object_mut) {
        template.insert("org_id".into(), org.into());
    }
    let spec = DiscoverySpec::from_json(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    spec.validate(&state.registry)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut files: Vec<ConfigFile> = Vec::new();
    if spec.sd_type == SdType::File {
        files.extend(spec.files.iter().enumerate().map(|(i, f)| ConfigFile {
            key: format!("files[{i}]"),
            path: f.into(),
        }));
    }
    if let Some(tls) = &spec.tls {
        files.extend(tls.files("tls"));
    }
    files.extend(spec.template_files(&state.registry));
    for file in &files {
        check_file_root(&state.file_roots, file, "")?;
    }
    Ok(spec)
}

fn refuse_file_discovery(record: &DiscoveryRecord, what: &str) -> Result<(), ApiError> {
    if record.origin == Origin::File {
        return Err(ApiError::conflict(format!(
            "discovery `{}` is declared in connectord's config file; {what} it there and restart",
            record.name
        )));
    }
    Ok(())
}

/// Tells the discovery manager and the runner to look again now.
fn poke(state: &ApiState) {
    if let Some(changed) = &state.discoveries_changed {
        changed.notify_one();
    }
    refresh(state);
}

pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(query): ApiQuery,
) -> Result<Response, ApiError> {
    no_query(&query)?;
    let records = state.discoveries.list_discoveries().await?;
    let views: Vec<Value> = records
        .iter()
        .filter(|r| caller.sees(org_of(r)))
        .map(|r| view(r, false))
        .collect();
    Ok(Json(json!({ "discoveries": views })).into_response())
}

pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(raw): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = validate(&state, &caller, &raw, None)?;
    let stored = serde_json::to_value(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = state
        .discoveries
        .create_discovery(&spec.name, &stored, Origin::Api)
        .await?;
    tracing::info!(discovery_id = %record.id, discovery = %spec.name, "discovery created over the API");
    poke(&state);
    Ok((StatusCode::CREATED, Json(json!({ "id": record.id }))))
}

pub(super) async fn show(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller, &id).await?;
    Ok(Json(view(&record, true)).into_response())
}

pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(raw): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let record = find(&state, &caller, &id).await?;
    refuse_file_discovery(&record, "change")?;
    let spec = validate(&state, &caller, &raw, Some(org_of(&record)))?;
    if spec.name != record.name {
        return Err(ApiError::bad_request(format!(
            "name: a discovery cannot be renamed (its connectors are named after it); delete `{}` and create `{}`",
            record.name, spec.name
        )));
    }
    let stored = serde_json::to_value(&spec).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = state.discoveries.update_discovery(&id, &stored).await?;
    poke(&state);
    Ok(Json(view(&record, true)).into_response())
}

pub(super) async fn remove(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    let record = find(&state, &caller, &id).await?;
    refuse_file_discovery(&record, "remove")?;
    state.discoveries.delete_discovery(&id).await?;
    tracing::info!(discovery_id = %id, discovery = %record.name, "discovery and its connectors deleted over the API");
    poke(&state);
    Ok(StatusCode::NO_CONTENT)
}
