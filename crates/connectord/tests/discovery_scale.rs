//! Discovery at scale: one HTTP SD on 127.0.0.1 listing 1,000 targets, then 10 % of
//! them replaced at every refresh for 20 refreshes. Every target has its connector
//! within one refresh, none is left behind when its target goes, and a target that
//! stays through the churn misses no tick.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use connector_http::testing::{Reply, TestServer};
use serde_json::{Value, json};
use support::{Daemon, call, open, wait_for, write_config};

const TARGETS: usize = 1000;
const STABLE: usize = 900;
const CHURNS: usize = 20;
const REFRESH_MS: u64 = 1000;
const SCHEDULE_MS: i64 = 5000;

/// The list the SD serves at its `generation`-th answer: 900 stable targets and 100
/// that are new at every generation up to `CHURNS`.
fn list(address: &str, generation: usize) -> Value {
    let generation = generation.min(CHURNS);
    let group = |path: String| json!({"targets": [address], "labels": {"__metrics_path__": path}});
    let stable = (0..STABLE).map(|i| group(format!("/s{i}")));
    let churning = (0..TARGETS - STABLE).map(|j| group(format!("/c{generation}_{j}")));
    Value::Array(stable.chain(churning).collect())
}

/// Managed connectors by name → id.
fn managed(daemon: &Daemon) -> BTreeMap<String, String> {
    let r = call(daemon, "GET", "/v1/connectors?limit=10000", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["origin"] == "discovery")
        .map(|c| {
            (
                c["config"]["endpoint"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_targets_with_ten_percent_churn_per_refresh() {
    let exporter = TestServer::start(|_| Reply::ok("up 1\n")).await;
    let address = exporter.addr().to_string();
    let answers = Arc::new(AtomicUsize::new(0));
    let sd = {
        let (answers, address) = (Arc::clone(&answers), address.clone());
        TestServer::start(move |_| {
            Reply::json(&list(&address, answers.fetch_add(1, Ordering::SeqCst)))
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[discovery]]\nname = \"fleet\"\ntype = \"http_sd\"\nurl = \"{}\"\nrefresh_ms = {REFRESH_MS}\n\n\
         [discovery.template]\ntype = \"prometheus\"\ntarget_database = \"metrics\"\ntarget_table = \"fleet\"\nschedule_ms = {SCHEDULE_MS}\n",
        sd.url("/sd")
    ));
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let daemon = Daemon::start(&config, &[]);
    let first = wait_for(
        "1,000 connectors",
        Duration::from_millis(REFRESH_MS + 10_000),
        || {
            let m = managed(&daemon);
            (m.len() == TARGETS).then_some(m)
        },
    )
    .await;
    let to_first = started.elapsed();
    let stable_ids: BTreeSet<String> = first
        .iter()
        .filter(|(endpoint, _)| endpoint.contains("/s"))
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(stable_ids.len(), STABLE);

    // Refresh durations, from the discovery's status, until the churn is over.
    let id = call(&daemon, "GET", "/v1/discoveries", None).json()["discoveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut durations: BTreeMap<i64, u64> = BTreeMap::new();
    let churn_started_ms = connector_runner::protocol::wall_clock_ms();
    wait_for("20 refreshes", Duration::from_secs(60), || {
        let view = call(&daemon, "GET", &format!("/v1/discoveries/{id}"), None).json();
        assert_eq!(view["status"]["error"], Value::Null, "{}", view["status"]);
        if let (Some(at), Some(ms)) = (
            view["status"]["refreshed_at"].as_i64(),
            view["status"]["duration_ms"].as_u64(),
        ) {
            durations.insert(at, ms);
        }
        (answers.load(Ordering::SeqCst) > CHURNS + 1).then_some(())
    })
    .await;
    // One more refresh after the last change, then the set must be exactly the final list.
    tokio::time::sleep(Duration::from_millis(2 * REFRESH_MS)).await;
    let churn_ended_ms = connector_runner::protocol::wall_clock_ms();
    let last = managed(&daemon);
    let expected: BTreeSet<String> = (0..STABLE)
        .map(|i| format!("http://{address}/s{i}"))
        .chain((0..TARGETS - STABLE).map(|j| format!("http://{address}/c{CHURNS}_{j}")))
        .collect();
    assert_eq!(
        last.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "orphans or missing connectors"
    );
    assert!(
        stable_ids.iter().all(|id| last.values().any(|v| v == id)),
        "a stable target changed its connector"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");

    // Every grid bucket that fired during the churn has a committed tick for every
    // stable target.
    let conn = open(dir.path(), "metrics.sqlite").unwrap();
    let mut missed = Vec::new();
    let mut checked = 0;
    for id in &stable_ids {
        let phase = connector_runner::schedule::phase_ms(id, SCHEDULE_MS as u64);
        let mut stmt = conn
            .prepare_cached(
                "SELECT scheduled_for_ms FROM _connectord_ledger WHERE connector_id = ?1",
            )
            .unwrap();
        let committed: BTreeSet<i64> = stmt
            .query_map([id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut bucket =
            connector_runner::schedule::due_bucket(churn_started_ms, SCHEDULE_MS as u64, phase)
                + SCHEDULE_MS;
        while bucket + phase + 1000 < churn_ended_ms {
            checked += 1;
            if !committed.contains(&bucket) {
                missed.push((id.clone(), bucket));
            }
            bucket += SCHEDULE_MS;
        }
    }
    let mut sorted: Vec<u64> = durations.values().copied().collect();
    sorted.sort_unstable();
    eprintln!(
        "1,000 connectors {:.1} s after start; {} refreshes seen, duration p50 {} ms, max {} ms; {checked} buckets of stable targets checked, {} missed",
        to_first.as_secs_f64(),
        sorted.len(),
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
        missed.len()
    );
    assert!(checked >= STABLE * 3, "only {checked} buckets checked");
    assert!(
        missed.is_empty(),
        "missed ticks: {:?}",
        &missed[..missed.len().min(10)]
    );
}
