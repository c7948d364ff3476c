//! The fencing counter and committed buckets survive a database crash: a private
//! PostgreSQL 15 cluster (made with `initdb` as the `postgres` user, as `cargo xtask
//! services up` makes its own) is stopped with `pg_ctl stop -m immediate` right after
//! a run of claims and a commit. An immediate stop writes nothing more: WAL still in
//! PostgreSQL's buffers is lost, as in a crash, so a claim or commit that did not wait
//! for its WAL flush (`synchronous_commit = off`) would be missing after the restart.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use connector_runner::{Sink as _, StateStore as _, Target};
use store_postgres::PgStore;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
    cmd
}

fn run(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster in a folder of its own, on a port of its own; killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn create() -> Option<Self> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "PostgreSQL 15 is not installed: CI must install it (cargo xtask services up)"
            );
            eprintln!("skipped: {PG_BIN}/initdb is missing (cargo xtask services up installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        run({
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(dir.path());
            chown
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, port };
        run({
            let mut initdb = as_postgres("initdb");
            initdb.arg("-D").arg(cluster.data()).args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ]);
            initdb
        });
        cluster.start();
        Some(cluster)
    }

    fn start(&self) {
        run({
            let mut start = as_postgres("pg_ctl");
            start
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args([
                    "-o",
                    &format!(
                        "-c listen_addresses=127.0.0.1 -p {} -k {}",
                        self.port,
                        self.dir.path().display()
                    ),
                    "-w",
                    "start",
                ]);
            start
        });
    }

    fn crash(&self) {
        run({
            let mut stop = as_postgres("pg_ctl");
            stop.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]);
            stop
        });
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.crash();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_and_commits_survive_a_crash() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let lease = Duration::from_secs(60);
    let target = Target {
        connector_id: "c".into(),
        database: "crashed".into(),
        table: "samples".into(),
    };
    // The commit first: its WAL flush would also make durable whatever came before
    // it, so the claims after it are what only their own flush protects.
    let (last_token, committed) = {
        let store = PgStore::connect(&cluster.url(), 4).await.unwrap();
        let claimed = store
            .claim_task("c", 1000, "runner-a", lease)
            .await
            .unwrap()
            .unwrap();
        let mut batch = connector_core::Batch::new(metric_rows::schema());
        batch
            .row()
            .timestamp(1000)
            .string("up")
            .real(1.0)
            .map([("job", "node")])
            .finish()
            .unwrap();
        store.commit(&target, &claimed, batch).await.unwrap();
        let mut last = claimed.token;
        for bucket in 1..=50 {
            last = store
                .claim_task("c", bucket, "runner-a", lease)
                .await
                .unwrap()
                .unwrap()
                .token;
        }
        (last, claimed.scheduled_for_ms)
    };
    assert_eq!(last_token, 51);
    cluster.crash();
    cluster.start();

    let store = PgStore::connect(&cluster.url(), 4).await.unwrap();
    let next = store
        .claim_task("c", 2000, "runner-b", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.token,
        last_token + 1,
        "a fencing token handed out before the crash was handed out again"
    );
    // The holder may claim its own live lease again; the ledger still has the bucket.
    let again = store
        .claim_task("c", committed, "runner-a", lease)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .commit(
            &target,
            &again,
            connector_core::Batch::new(metric_rows::schema()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        connector_runner::StoreErrorKind::AlreadyCommitted,
        "the bucket committed before the crash is gone: {err}"
    );
}
