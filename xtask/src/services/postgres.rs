//! The throwaway PostgreSQL 15 cluster the scale-out tests use, with TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{ServicesAction, apt_install};
use crate::{root, run};

/// The port of the test cluster: away from a system PostgreSQL on 5432.
pub(super) const PG_PORT: u16 = 55432;
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]);
    cmd
}

pub(super) fn postgres(action: ServicesAction) -> Result<()> {
    let dir = root().join("target/services/postgres");
    let data = dir.join("data");
    let ctl = format!("{PG_BIN}/pg_ctl");
    match action {
        ServicesAction::Down => {
            if data.join("postmaster.pid").exists() {
                let mut stop = as_postgres(&ctl);
                stop.args(["-D"])
                    .arg(&data)
                    .args(["-m", "fast", "-w", "stop"]);
                run(stop)?;
            }
            Ok(())
        }
        ServicesAction::Up => {
            if !Path::new(PG_BIN).join("initdb").exists() {
                apt_install(&["postgresql"])?;
            }
            let socket = dir.join("socket");
            if !data.join("PG_VERSION").exists() {
                std::fs::create_dir_all(&data)?;
                std::fs::create_dir_all(&socket)?;
                let mut chown = Command::new("chown");
                chown.args(["-R", "postgres:postgres"]).arg(&dir);
                run(chown)?;
                let mut initdb = as_postgres(&format!("{PG_BIN}/initdb"));
                // Trust on a loopback-only throwaway cluster: the tests need no password.
                initdb
                    .args(["-D"])
                    .arg(&data)
                    .args(["--auth=trust", "-U", "postgres", "-E", "UTF8"])
                    .stdout(std::process::Stdio::null());
                run(initdb)?;
            }
            let tls = server_tls(&dir)?;
            let running = as_postgres(&ctl)
                .args(["-D"])
                .arg(&data)
                .arg("status")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            // A cluster started before TLS or statement statistics were part of the
            // setup is restarted with them.
            if running && !started_as_configured()? {
                let mut stop = as_postgres(&ctl);
                stop.args(["-D"])
                    .arg(&data)
                    .args(["-m", "fast", "-w", "stop"]);
                run(stop)?;
            }
            if !running || !started_as_configured().unwrap_or(false) {
                let mut start = as_postgres(&ctl);
                start
                    .args(["-D"])
                    .arg(&data)
                    .args(["-l"])
                    .arg(dir.join("postgres.log"))
                    .args([
                        "-o",
                        &format!(
                            "-c listen_addresses=127.0.0.1 -p {PG_PORT} -k {} -c max_connections=300 \
                             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} \
                             -c shared_preload_libraries=pg_stat_statements",
                            socket.display(),
                            tls.cert.display(),
                            tls.key.display()
                        ),
                        "-w",
                        "start",
                    ])
                    .stdout(std::process::Stdio::null());
                run(start)?;
            }
            let exists = as_postgres("/usr/bin/psql")
                .args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-tAc"])
                .arg("SELECT 1 FROM pg_database WHERE datname = 'connectord'")
                .output()
                .context("cannot run psql")?;
            if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
                let mut create = as_postgres("/usr/bin/createdb");
                create.args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "connectord"]);
                run(create)?;
            }
            println!("export DATABASE_URL=postgres://postgres@127.0.0.1:{PG_PORT}/connectord");
            println!("export DATABASE_TLS_CA={}", tls.ca.display());
            Ok(())
        }
    }
}

/// The test cluster's TLS files: a throwaway CA and a server certificate for
/// `localhost` only (so tests can show that `verify-full` checks the name and
/// `verify-ca` does not, by connecting to 127.0.0.1).
struct ServerTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn server_tls(dir: &Path) -> Result<ServerTls> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let tls = dir.join("tls");
    let files = ServerTls {
        ca: tls.join("ca.pem"),
        cert: tls.join("server.crt"),
        key: tls.join("server.key"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&tls)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    std::fs::write(
        &files.ca,
        connector_http::testing::pem("CERTIFICATE", ca.der()),
    )?;
    std::fs::write(
        &files.cert,
        connector_http::testing::pem("CERTIFICATE", cert.der()),
    )?;
    std::fs::write(
        &files.key,
        connector_http::testing::pem("PRIVATE KEY", &key.serialize_der()),
    )?;
    let mut chown = Command::new("chown");
    chown.args(["-R", "postgres:postgres"]).arg(&tls);
    run(chown)?;
    // PostgreSQL refuses a key that others can read.
    let mut chmod = Command::new("chmod");
    chmod.arg("600").arg(&files.key);
    run(chmod)?;
    Ok(files)
}

fn setting(name: &str) -> Result<String> {
    let out = as_postgres("/usr/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &PG_PORT.to_string(),
            "-tAc",
            &format!("SHOW {name}"),
        ])
        .output()
        .context("cannot run psql")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// TLS on, and `pg_stat_statements` loaded (`bench-schedule --postgres` counts the
/// statements a tick costs with it).
fn started_as_configured() -> Result<bool> {
    Ok(setting("ssl")? == "on"
        && setting("shared_preload_libraries")?.contains("pg_stat_statements"))
}
