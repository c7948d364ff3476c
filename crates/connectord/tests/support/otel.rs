//! The spanmetrics tests' shared parts: a plan of spans, the aggregates it must add
//! up to, the OpenTelemetry Python SDK that exports it, and rows read back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

pub const BOUNDS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// Three services, every kind and status, an attribute on some spans, and durations on
/// and around the bucket bounds (whole milliseconds, so sums are exact).
pub fn plan() -> Vec<serde_json::Value> {
    let services = ["checkout", "payments", "catalog"];
    let kinds = ["server", "client", "internal", "producer", "consumer"];
    let statuses = ["unset", "ok", "error"];
    let durations = [
        0, 1, 2, 3, 4, 10, 11, 100, 999, 1000, 1001, 15000, 15001, 60000,
    ];
    (0..420)
        .map(|i: usize| {
            let mut span = serde_json::json!({
                "service": services[i % 3],
                "name": format!("op-{}", i % 4),
                "kind": kinds[i % 5],
                "status": statuses[(i / 5) % 3],
                "duration_ms": durations[i % durations.len()],
            });
            if i.is_multiple_of(2) {
                span["attributes"] = serde_json::json!({"http.method": "GET"});
            }
            span
        })
        .collect()
}

/// What every series must add up to: (calls, cumulative bucket counts, sum in ms,
/// count).
pub type Expected = BTreeMap<String, (u64, Vec<u64>, f64, u64)>;

pub fn label_key(span: &serde_json::Value) -> String {
    let upper = |s: &str| s.to_ascii_uppercase();
    serde_json::json!({
        "service_name": span["service"],
        "span_name": span["name"],
        "span_kind": format!("SPAN_KIND_{}", upper(span["kind"].as_str().unwrap())),
        "status_code": format!("STATUS_CODE_{}", upper(span["status"].as_str().unwrap())),
        "http_method": span["attributes"]["http.method"].as_str().unwrap_or("none"),
    })
    .to_string()
}

pub fn expected(spans: &[serde_json::Value]) -> Expected {
    let mut out = Expected::new();
    for span in spans {
        let d = span["duration_ms"].as_f64().unwrap();
        let e = out
            .entry(label_key(span))
            .or_insert_with(|| (0, vec![0; BOUNDS.len() + 1], 0.0, 0));
        e.0 += 1;
        e.2 += d;
        e.3 += 1;
        for (i, bound) in BOUNDS.iter().chain([f64::INFINITY].iter()).enumerate() {
            if d <= *bound {
                e.1[i] += 1;
            }
        }
    }
    out
}

/// Runs the SDK script against `addr`; returns (spans exported with success, spans
/// whose export failed). `extra` adds plan keys (`batch`, `pace_ms`).
pub fn sdk_export(
    addr: SocketAddr,
    token: &str,
    connector: &str,
    spans: &[serde_json::Value],
    extra: serde_json::Value,
) -> (u64, u64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/export_spans.py");
    sdk_run(&script, addr, token, connector, spans, extra)
}

fn sdk_run(
    script: &Path,
    addr: SocketAddr,
    token: &str,
    connector: &str,
    spans: &[serde_json::Value],
    extra: serde_json::Value,
) -> (u64, u64) {
    let mut plan = serde_json::json!({
        "endpoint": format!("http://{addr}/v1/ingest/{connector}/v1/traces"),
        "token": token,
        "spans": spans,
    });
    if let serde_json::Value::Object(extra) = extra {
        plan.as_object_mut().unwrap().extend(extra);
    }
    let result = run_script(script, &plan);
    (
        result["exported"].as_u64().unwrap(),
        result["failed"].as_u64().unwrap(),
    )
}

/// Runs one of the Python scripts in `tests/otel` with `plan` on its stdin; returns
/// the JSON it prints.
pub fn run_script(script: &Path, plan: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Rows of a table: (timestamp, name, labels without `le`, le, value).
pub type Row = (i64, String, String, Option<String>, f64);

pub fn rows(dir: &Path, table: &str) -> Vec<Row> {
    let Some(conn) = super::open(dir, "traces.sqlite") else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(&format!(
        "SELECT timestamp, name, labels, value FROM \"{table}\" ORDER BY rowid"
    )) else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        let labels: String = r.get(2)?;
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&labels).unwrap();
        let le = map.remove("le").map(|v| v.as_str().unwrap().to_owned());
        Ok((
            r.get(0)?,
            r.get(1)?,
            serde_json::Value::Object(map).to_string(),
            le,
            r.get(3)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Folds rows into per-series totals: the newest value of each row series when the
/// rows carry running totals, their sum when each bucket carries its own counts.
pub fn totals(rows: &[Row], cumulative: bool) -> Expected {
    let mut latest: BTreeMap<(String, String, Option<String>), (i64, f64)> = BTreeMap::new();
    for (ts, name, labels, le, value) in rows {
        let e = latest
            .entry((name.clone(), labels.clone(), le.clone()))
            .or_insert((i64::MIN, 0.0));
        if cumulative {
            if *ts >= e.0 {
                *e = (*ts, *value);
            }
        } else {
            e.1 += value;
        }
    }
    let mut out = Expected::new();
    for ((name, labels, le), (_, value)) in latest {
        let e = out
            .entry(labels)
            .or_insert_with(|| (0, vec![0; BOUNDS.len() + 1], 0.0, 0));
        match name.as_str() {
            "traces_span_metrics_calls_total" => e.0 = value as u64,
            "traces_span_metrics_duration_milliseconds_sum" => e.2 = value,
            "traces_span_metrics_duration_milliseconds_count" => e.3 = value as u64,
            "traces_span_metrics_duration_milliseconds_bucket" => {
                let le = le.unwrap();
                let i = BOUNDS
                    .iter()
                    .position(|b| b.to_string() == le)
                    .unwrap_or(BOUNDS.len());
                e.1[i] = value as u64;
            }
            _ => {}
        }
    }
    out
}

/// Whether the pinned SDK is installed; under CI it must be.
pub fn have_sdk() -> bool {
    have_modules("import opentelemetry.exporter.otlp.proto.http")
}

/// The SDK and the OpenTelemetry Prometheus exporter, the metrics tests' reference.
pub fn have_metrics_sdk() -> bool {
    have_modules("import opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.prometheus")
}

fn have_modules(import: &str) -> bool {
    let have = Command::new("python3")
        .args(["-c", import])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install crates/connectord/tests/otel/requirements.txt"
        );
        eprintln!("skipped: pip install -r crates/connectord/tests/otel/requirements.txt");
    }
    have
}
