//! A full disk under the data folder: ticks that cannot commit fail as `transient`
//! with an error naming the folder, nothing committed is lost or damaged, and ticks commit again once space is
//! freed. The test mounts a 4 MiB tmpfs as the data folder (root only; outside CI a
//! refused mount skips the test, under CI=true it fails it).
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::process::Command;
use std::time::Duration;

use connector_http::testing::{Reply, TestServer};
use support::{
    Daemon, Declared, assert_exactly_once, call, connector, ledger, wait_for, write_config,
};

/// Unmounts the tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_ticks_loses_nothing_and_they_resume_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but a tmpfs cannot be mounted"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Mounted(data.clone());
    // Room for a few buckets only: each is about 40 KB of rows.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 3 << 20]).unwrap();
    let body: String = (0..400)
        .map(|i| format!("m{{i=\"{i}\",pad=\"{}\"}} {i}\n", "p".repeat(40)))
        .collect();
    let served = body.clone();
    let exporter = TestServer::start(move |_| Reply::ok(served.clone())).await;
    let config = write_config(
        dir.path(),
        &[Declared {
            name: "full",
            table: "full",
            schedule_ms: 200,
            config: format!("endpoint = \"{}\"", exporter.url("/metrics")),
        }],
    );
    let daemon = Daemon::start(&config, &[]);
    let (id, ..) = wait_for("the connector", Duration::from_secs(10), || {
        connector(dir.path(), "full")
    })
    .await;
    // The state database shares the full disk: the API shows the failed tick the
    // store could not record.
    let error = wait_for("a tick that cannot commit", Duration::from_secs(60), || {
        let view = call(&daemon, "GET", &format!("/v1/connectors/{id}"), None).json();
        let tick = &view["last_tick"];
        let outcome = tick["outcome"].as_str().unwrap_or("ok").to_owned();
        (outcome != "ok").then(|| {
            (
                outcome,
                view["last_error"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
    .await;
    eprintln!("failed tick: {error:?}");
    // Transient: the next bucket may commit; the error names the folder to free.
    assert_eq!(error.0, "transient", "{error:?}");
    assert!(
        error.1.contains(&format!(
            "no space left for the data folder {}",
            data.display()
        )),
        "{error:?}"
    );
    assert!(error.1.contains("database or disk is full"), "{error:?}");
    let committed = ledger(dir.path(), &id).len();
    assert!(committed > 0);

    // Space freed: ticks commit again.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        "a commit after space was freed",
        Duration::from_secs(20),
        || (ledger(dir.path(), &id).len() > committed + 2).then_some(()),
    )
    .await;
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // Every committed bucket whole, no row outside the ledger, integrity_check ok.
    assert_exactly_once(dir.path(), &id, "full", &body);
}
