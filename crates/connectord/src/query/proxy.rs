//! `GET|POST /metrics/api/v1/<endpoint>`: reads the parameters an endpoint takes
//! from the URL and a form body, holds an org token's queries and selectors to its
//! org, and sends the backend only those parameters, rewritten. Never the caller's
//! raw URL or body: a parameter given twice (in the URL and the body, or repeated)
//! is refused, so a second copy cannot slip past the rewrite.

use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use connector_core::TickContext;
use connector_http::HttpClient;
use serde_json::json;

use super::{BackendKind, QueryConfig};
use crate::api::{ApiState, Caller, MAX_BODY_BYTES};
use promql_org::{ORG_LABEL, RewriteCache};

/// The backend and the client that reaches it, shared by every request.
#[derive(Debug)]
pub struct QueryBackend {
    config: QueryConfig,
    client: HttpClient,
    rewrites: RewriteCache,
    /// Requests answered, by org (`None`: operators), endpoint and status.
    answered: std::sync::Mutex<std::collections::BTreeMap<Answered, u64>>,
}

/// The labels of one `connectord_query_requests_total` series: org, endpoint, status.
type Answered = (Option<String>, String, u16);

impl QueryBackend {
    /// A backend for `config`, checked already.
    pub fn new(config: QueryConfig) -> Self {
        QueryBackend {
            config,
            client: HttpClient::new(),
            rewrites: RewriteCache::new(REWRITE_CACHE_ENTRIES),
            answered: std::sync::Mutex::default(),
        }
    }

    fn count(&self, org: Option<&str>, endpoint: &str, status: StatusCode) {
        let mut answered = self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *answered
            .entry((org.map(str::to_owned), endpoint.to_owned(), status.as_u16()))
            .or_default() += 1;
    }

    /// `connectord_query_requests_total` in the text format: with `org`, only that
    /// org's requests.
    pub fn render(&self, org: Option<&str>, out: &mut String) {
        use std::fmt::Write as _;
        let answered = self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = "connectord_query_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests to the query API at /metrics/api/v1/, by org (none for operator tokens), endpoint and the status answered (the backend's, or connectord's own for a refused or unforwarded request).\n# TYPE {name} counter"
        );
        for ((by, endpoint, code), count) in answered.iter() {
            if org.is_some() && by.as_deref() != org {
                continue;
            }
            let by = by
                .as_deref()
                .map(|o| format!("org_id=\"{o}\","))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{name}{{{by}endpoint=\"{endpoint}\",code=\"{code}\"}} {count}"
            );
        }
    }
}

/// Rewrites kept: a few hundred dashboards' queries per org, a few MiB at most.
const REWRITE_CACHE_ENTRIES: usize = 10_000;

/// The endpoints of the Prometheus HTTP API that Grafana uses, and how each is
/// held to an org.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Query,
    QueryRange,
    QueryExemplars,
    Series,
    Labels,
    LabelValues(String),
    Metadata,
    BuildInfo,
}

impl Endpoint {
    fn parse(path: &str) -> Option<Self> {
        Some(match path {
            "query" => Endpoint::Query,
            "query_range" => Endpoint::QueryRange,
            "query_exemplars" => Endpoint::QueryExemplars,
            "series" => Endpoint::Series,
            "labels" => Endpoint::Labels,
            "metadata" => Endpoint::Metadata,
            "status/buildinfo" => Endpoint::BuildInfo,
            _ => {
                let name = path.strip_prefix("label/")?.strip_suffix("/values")?;
                if !relabel::is_valid_label_name(name) {
                    return None;
                }
                Endpoint::LabelValues(name.to_owned())
            }
        })
    }

    /// Its `endpoint` label in `connectord_query_requests_total`: one value for
    /// every label name, so callers cannot grow the series.
    fn label(&self) -> &'static str {
        match self {
            Endpoint::Query => "query",
            Endpoint::QueryRange => "query_range",
            Endpoint::QueryExemplars => "query_exemplars",
            Endpoint::Series => "series",
            Endpoint::Labels => "labels",
            Endpoint::LabelValues(_) => "label_values",
            Endpoint::Metadata => "metadata",
            Endpoint::BuildInfo => "status/buildinfo",
        }
    }

    /// The backend path.
    fn path(&self) -> String {
        match self {
            Endpoint::Query => "query".into(),
            Endpoint::QueryRange => "query_range".into(),
            Endpoint::QueryExemplars => "query_exemplars".into(),
            Endpoint::Series => "series".into(),
            Endpoint::Labels => "labels".into(),
            Endpoint::LabelValues(name) => format!("label/{name}/values"),
            Endpoint::Metadata => "metadata".into(),
            Endpoint::BuildInfo => "status/buildinfo".into(),
        }
    }

    /// The parameters taken once each, passed on as given (but `query`, rewritten).
    fn singles(&self) -> &'static [&'static str] {
        match self {
            Endpoint::Query => &["query", "time", "timeout"],
            Endpoint::QueryRange => &["query", "start", "end", "step", "timeout"],
            Endpoint::QueryExemplars => &["query", "start", "end"],
            Endpoint::Series | Endpoint::Labels | Endpoint::LabelValues(_) => &["start", "end"],
            Endpoint::Metadata => &["metric", "limit"],
            Endpoint::BuildInfo => &[],
        }
    }

    /// Whether it takes `match[]` selectors.
    fn takes_selectors(&self) -> bool {
        matches!(
            self,
            Endpoint::Series | Endpoint::Labels | Endpoint::LabelValues(_)
        )
    }

    /// Whether it reads series, so an org token's request must be held to its org.
    fn reads_series(&self) -> bool {
        !matches!(self, Endpoint::Metadata | Endpoint::BuildInfo)
    }

    /// Prometheus serves these on GET only.
    fn get_only(&self) -> bool {
        matches!(
            self,
            Endpoint::LabelValues(_) | Endpoint::Metadata | Endpoint::BuildInfo
        )
    }
}

/// An error in Prometheus's shape, which Grafana shows as it is.
#[derive(Debug)]
struct QueryError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn prometheus_error(
    status: StatusCode,
    error_type: &'static str,
    message: impl std::fmt::Display,
) -> QueryError {
    QueryError {
        status,
        error_type,
        message: message.to_string(),
    }
}

fn bad_data(message: impl std::fmt::Display) -> QueryError {
    prometheus_error(StatusCode::BAD_REQUEST, "bad_data", message)
}

/// Every parameter of a request, from the URL and a form body alike.
struct Params(Vec<(String, String)>);

impl Params {
    fn single(&self, name: &str) -> Result<Option<&str>, QueryError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        match (values.next(), values.next()) {
            (first, None) => Ok(first),
            (Some(_), Some(_)) => Err(bad_data(format!(
                "parameter \"{name}\" is given more than once (in the URL and the body together, or repeated); send it once"
            ))),
            (None, Some(_)) => Ok(None),
        }
    }

    fn many(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The parameters to send for `endpoint`: only those it takes, each held to
/// `org` where it selects series.
fn forwarded(
    rewrites: &RewriteCache,
    endpoint: &Endpoint,
    params: &Params,
    org: Option<&str>,
    kind: BackendKind,
) -> Result<Vec<(String, String)>, QueryError> {
    let org = org.filter(|_| endpoint.reads_series());
    let mut out = Vec::new();
    for &name in endpoint.singles() {
        let Some(value) = params.single(name)? else {
            continue;
        };
        let value = match (name, org) {
            ("query", Some(org)) => rewrites
                .query(value, org)
                .map_err(|e| bad_data(format!("invalid parameter \"query\": {e}")))?,
            _ => value.to_owned(),
        };
        out.push((name.to_owned(), value));
    }
    if endpoint.takes_selectors() {
        let selectors = params.many("match[]");
        match org {
            None => out.extend(
                selectors
                    .iter()
                    .map(|s| ("match[]".to_owned(), (*s).to_owned())),
            ),
            Some(org) if selectors.is_empty() => {
                if *endpoint == Endpoint::Series {
                    return Err(bad_data("no match[] parameter provided"));
                }
                out.push(("match[]".to_owned(), promql_org::org_selector(org)));
            }
            Some(org) => {
                for selector in selectors {
                    let confined = rewrites
                        .selector(selector, org)
                        .map_err(|e| bad_data(format!("invalid parameter \"match[]\": {e}")))?;
                    out.push(("match[]".to_owned(), confined));
                }
            }
        }
    }
    if let (Some(org), BackendKind::Victoriametrics) = (org, kind) {
        out.push(("extra_label".to_owned(), format!("{ORG_LABEL}={org}")));
    }
    Ok(out)
}

/// Reads the URL's parameters and, for a POST, the form body's.
async fn read_params(request: Request) -> Result<(Method, Params), QueryError> {
    let (parts, body) = request.into_parts();
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            prometheus_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_data",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    if !body.is_empty() {
        let form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if parts.method != Method::POST || !form {
            return Err(bad_data(
                "a request body must be a POST with Content-Type: application/x-www-form-urlencoded",
            ));
        }
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    Ok((parts.method, Params(params)))
}

/// `GET|POST /metrics/api/v1/{*path}`.
pub(crate) async fn forward(
    State(state): State<ApiState>,
    caller: Caller,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let endpoint = Endpoint::parse(&path);
    let response = match answer(&state, &caller, &path, endpoint.as_ref(), request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    if let Some(backend) = &state.query {
        // Unknown paths count under one name, so a scanner cannot grow the series.
        let label = endpoint.as_ref().map_or("other", Endpoint::label);
        backend.count(caller.org.as_deref(), label, response.status());
    }
    response
}

async fn answer(
    state: &ApiState,
    caller: &Caller,
    path: &str,
    endpoint: Option<&Endpoint>,
    request: Request,
) -> Result<Response, QueryError> {
    let Some(backend) = &state.query else {
        return Err(prometheus_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "connectord answers Prometheus queries through a backend that scrapes it; \
             name one in the config file: [query] url = \"http://127.0.0.1:8428\" (kind = \"victoriametrics\" or \"prometheus\")",
        ));
    };
    let Some(endpoint) = endpoint else {
        return Err(prometheus_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "`/metrics/api/v1/{path}` is not served: query, query_range, series, labels, label/<name>/values, metadata, query_exemplars and status/buildinfo are"
            ),
        ));
    };
    let (method, params) = read_params(request).await?;
    if method == Method::POST && endpoint.get_only() {
        return Err(prometheus_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_data",
            format!("`{}` takes GET only", endpoint.path()),
        ));
    }
    let sent = forwarded(
        &backend.rewrites,
        endpoint,
        &params,
        caller.org.as_deref(),
        backend.config.kind,
    )?;
    send(backend, endpoint, &sent).await
}

/// Sends the rewritten parameters (a form POST, or a GET where Prometheus takes
/// only GET) and hands back the backend's status, content type and body.
async fn send(
    backend: &QueryBackend,
    endpoint: &Endpoint,
    params: &[(String, String)],
) -> Result<Response, QueryError> {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let url = backend.config.api_url(&endpoint.path());
    let builder = if endpoint.get_only() {
        let url = if encoded.is_empty() {
            url
        } else {
            format!("{url}?{encoded}")
        };
        backend.client.request(Method::GET, &url)
    } else {
        backend
            .client
            .request(Method::POST, &url)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(encoded)
    };
    let ctx = TickContext::new("query-api", 0);
    let answer = builder
        .any_status()
        .retries(0)
        .timeout_ms(backend.config.timeout_ms)
        .body_limit(backend.config.max_response_bytes)
        .limit_key("query.max_response_bytes")
        .action("query backend")
        .send(&ctx)
        .await
        .map_err(|e| {
            prometheus_error(
                StatusCode::BAD_GATEWAY,
                "unavailable",
                format!("{:#}", connector_core::ErrorChain(&e)),
            )
        })?;
    let mut response = (answer.status(), answer.body().to_vec()).into_response();
    if let Some(content_type) = answer.headers().get(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, content_type.clone());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> RewriteCache {
        RewriteCache::new(16)
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn an_org_request_sends_only_rewritten_parameters() {
        let sent = forwarded(
            &cache(),
            &Endpoint::Query,
            &params(&[
                ("query", "up{org_id=\"b\"}"),
                ("time", "1"),
                ("org_id", "b"),
            ]),
            Some("a"),
            BackendKind::Victoriametrics,
        )
        .unwrap();
        assert_eq!(
            sent,
            [
                ("query".into(), "up{org_id=\"a\"}".into()),
                ("time".into(), "1".into()),
                ("extra_label".into(), "org_id=a".into()),
            ]
        );
        let labels = forwarded(
            &cache(),
            &Endpoint::Labels,
            &params(&[]),
            Some("a"),
            BackendKind::Prometheus,
        )
        .unwrap();
        assert_eq!(labels, [("match[]".into(), "{org_id=\"a\"}".into())]);
        let operator = forwarded(
            &cache(),
            &Endpoint::Series,
            &params(&[("match[]", "up"), ("match[]", "{org_id=\"b\"}")]),
            None,
            BackendKind::Victoriametrics,
        )
        .unwrap();
        assert_eq!(
            operator,
            [
                ("match[]".into(), "up".into()),
                ("match[]".into(), "{org_id=\"b\"}".into()),
            ]
        );
    }

    #[test]
    fn a_parameter_twice_or_a_bad_query_is_refused() {
        for (endpoint, pairs) in [
            (Endpoint::Query, vec![("query", "up"), ("query", "up")]),
            (Endpoint::Query, vec![("query", "sum(")]),
            (Endpoint::Series, vec![]),
            (Endpoint::Series, vec![("match[]", "sum(up)")]),
        ] {
            let refused = forwarded(
                &cache(),
                &endpoint,
                &params(&pairs),
                Some("a"),
                BackendKind::Prometheus,
            );
            assert_eq!(
                refused.map(|_| ()).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn endpoints_and_label_names_are_checked() {
        assert_eq!(
            Endpoint::parse("label/__name__/values"),
            Some(Endpoint::LabelValues("__name__".into()))
        );
        assert_eq!(Endpoint::parse("label/a-b/values"), None);
        assert_eq!(Endpoint::parse("label//values"), None);
        assert_eq!(Endpoint::parse("admin/tsdb/delete_series"), None);
        assert_eq!(
            Endpoint::parse("status/buildinfo"),
            Some(Endpoint::BuildInfo)
        );
    }
}
