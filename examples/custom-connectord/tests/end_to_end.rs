//! The custom binary as an operator runs it: TOML → ticks of the `airq` connector
//! against a JSON server on 127.0.0.1 → rows in SQLite, read back with `rows`; the
//! REST API lists both connector types.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connector_core::TickContext;
use connector_http::HttpClient;
use connector_http::testing::{Reply, TestServer};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_custom-connectord");

fn write_config(dir: &std::path::Path, endpoint: &str) -> std::path::PathBuf {
    let path = dir.join("connectord.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndata_dir = \"{}\"\n\n\
             [[connectors]]\nname = \"airq\"\ntype = \"airq\"\ntarget_database = \"air\"\n\
             target_table = \"readings\"\nschedule_ms = 500\n\n[connectors.config]\n\
             endpoint = \"{endpoint}\"\ntoken_ref = \"$env:AIRQ_TOKEN\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Kills the daemon if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rows(config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(BINARY)
        .args(["rows", "--connector", "airq", "--limit", "50", "--config"])
        .arg(config)
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_binary_runs_airq_into_sqlite_and_lists_both_types() {
    let server = TestServer::start(|_| {
        Reply::json(&json!({"devices": [
            {"id": "d-1", "room": "kitchen", "readings": {"co2_ppm": 612, "temperature_c": 21.5}}
        ]}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server.url("/v1/readings"));

    let validate = Command::new(BINARY)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(validate.status.success(), "{validate:?}");
    assert_eq!(
        String::from_utf8_lossy(&validate.stdout),
        "ok: 1 connectors (airq)\n"
    );

    let mut running = Running(
        Command::new(BINARY)
            .args(["run", "--config"])
            .arg(&config)
            .env("AIRQ_TOKEN", "t0ken")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = running.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on http://") {
                let addr = line[at + "listening on http://".len()..]
                    .split([' ', '"'])
                    .next()
                    .unwrap_or_default();
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon starts");

    let ctx = TickContext::new("test", 0);
    let types = HttpClient::new()
        .get(&format!("http://{addr}/v1/connector-types"))
        .send(&ctx)
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(
        types,
        json!({"types": [{"type": "airq"}, {"type": "otlp_metrics"}, {"type": "prometheus"}, {"type": "spanmetrics"}]})
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let landed = loop {
        let landed = rows(&config);
        if landed.len() >= 4 {
            break landed;
        }
        assert!(Instant::now() < deadline, "no rows landed: {landed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let newest = &landed[0];
    assert_eq!(newest["device_id"], "d-1");
    assert_eq!(newest["room"], "kitchen");
    // One bucket every 500 ms: the buckets' starts are whole schedules apart.
    let oldest = landed.last().unwrap()["timestamp"].as_i64().unwrap();
    assert_eq!(
        (newest["timestamp"].as_i64().unwrap() - oldest) % 500,
        0,
        "{landed:?}"
    );
    let metrics: Vec<_> = landed[..2]
        .iter()
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    assert!(
        metrics.contains(&"co2_ppm") && metrics.contains(&"temperature_c"),
        "{landed:?}"
    );
    assert_eq!(
        server.requests()[0].headers["authorization"],
        "Bearer t0ken"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = running.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
