//! The operations pack in `deploy/` only uses metric names connectord really exports.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use support::{Daemon, Declared, connector, ledger, wait_for, write_config};

/// Every identifier in a text that starts like one of connectord's metric names:
/// `connectord_*` and the two the platform's monitoring guide names.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in [
        "connectord_",
        "total_contribution_bytes",
        "destination_connector_egress_bytes",
    ] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/connectord.json")).unwrap();
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for variable in ["org_id", "connector_id", "connector_type_id"] {
        assert!(variables.contains(&variable), "{variables:?}");
    }

    let server = TestServer::start(|_| Reply::ok("up 1\n")).await;
    let receiver = TestServer::start(|_| Reply::status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    // A discovery too, for the discovery alert's series.
    let targets = dir.path().join("targets.json");
    std::fs::write(
        &targets,
        format!("[{{\"targets\": [\"{}\"]}}]", server.addr()),
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "watched",
            table: "watched",
            schedule_ms: 200,
            config: format!("endpoint = \"{}\"", server.url("/metrics")),
        }],
    );
    // A destination too, so its series are exported for the destinations row.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[destinations]]\nname = \"out\"\ntype = \"influx\"\nsource = \"watched\"\n\n\
         [destinations.config]\nendpoint = \"{}\"\n\n\
         [[connectors]]\nname = \"pushed\"\ntype = \"spanmetrics\"\ntarget_database = \"traces\"\n\
         target_table = \"pushed\"\nschedule_ms = 1000\n\n\
         [[discovery]]\nname = \"found\"\ntype = \"file_sd\"\nfiles = [\"{}\"]\n\n\
         [discovery.template]\ntype = \"prometheus\"\ntarget_database = \"metrics\"\n\
         target_table = \"found\"\nschedule_ms = 1000\n",
        receiver.url("/write"),
        targets.display()
    ));
    std::fs::write(&config, text).unwrap();
    let d = Daemon::start(&config, &[]);
    // And a push connector that took a request, for the ingest alert's series.
    let trace = include_str!("otel/trace.json");
    wait_for("a pushed request", Duration::from_secs(10), || {
        let r = support::request(
            d.addr,
            "POST",
            "/v1/ingest/pushed/v1/traces",
            &[("Content-Type", "application/json")],
            Some(trace.as_bytes()),
        );
        (r.status == 200).then_some(())
    })
    .await;
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "watched")
    })
    .await;
    wait_for("a committed bucket", Duration::from_secs(20), || {
        (!ledger(dir.path(), &id).is_empty()).then_some(())
    })
    .await;
    // The state gauges come with the runner's next refresh.
    let exported = wait_for("the state gauges", Duration::from_secs(5), || {
        let metrics = d.get("/metrics");
        (metrics.contains("connectord_connector_state{")
            && metrics.contains("connectord_destination_deliveries_total{")
            && metrics.contains("destination_connector_egress_bytes_count{")
            && metrics.contains("total_contribution_bytes_count{")
            && metrics.contains("connectord_ingest_requests_total{")
            && metrics.contains("connectord_discovery_refreshes_total{"))
        .then_some(metrics)
    })
    .await;
    d.stop();

    // Sample names, and family names as `# TYPE` gives them (a panel's description
    // names the histogram, its queries the `_sum` series).
    let exported_names: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(family) => family.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect();
    let used: BTreeSet<String> = metric_names(&dashboard)
        .union(&metric_names(&alerts))
        .cloned()
        .collect();
    assert!(used.len() >= 16, "{used:?}");
    // Every series is an org's, so an org token's /metrics and Grafana's org_id
    // variable can select it.
    let (_, body) = exported.split_once("\r\n\r\n").unwrap();
    let unowned: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("org_id=\"default\""))
        .collect();
    assert!(unowned.is_empty(), "series without org_id: {unowned:?}");
    let missing: Vec<_> = used.difference(&exported_names).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported_names:?}"
    );
}
