//! TLS to a real PostgreSQL: `cargo xtask services up` turns TLS on with a
//! generated CA and a server certificate for `localhost` only, and exports
//! DATABASE_TLS_CA. Under CI=true a server without it fails these tests.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use store_postgres::PgStore;

/// (the server's URL up to the database, the CA file), or `None` to skip.
fn server() -> Option<(String, String)> {
    let url = support::base_url()?;
    let Ok(ca) = std::env::var("DATABASE_TLS_CA") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "DATABASE_TLS_CA is not set: `cargo xtask services up` turns TLS on and exports it"
        );
        eprintln!("skipped: DATABASE_TLS_CA is not set (eval \"$(cargo xtask services up)\")");
        return None;
    };
    Some((url, ca))
}

fn with(url: &str, host: &str, query: &str) -> String {
    format!("{}?{query}", url.replace("127.0.0.1", host))
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_name() {
    let Some((url, ca)) = server() else { return };
    let store = PgStore::connect(
        &with(
            &url,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        2,
    )
    .await
    .unwrap();
    assert!(store.uses_tls().await.unwrap());

    // The certificate names `localhost`, not 127.0.0.1: verify-full refuses,
    // verify-ca (the chain only) accepts.
    let err = PgStore::connect(
        &with(
            &url,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        2,
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.starts_with("cannot connect to PostgreSQL: "), "{text}");
    assert!(
        text.contains("certificate not valid for name \"127.0.0.1\""),
        "{text}"
    );
    let store = PgStore::connect(
        &with(
            &url,
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        2,
    )
    .await
    .unwrap();
    assert!(store.uses_tls().await.unwrap());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let Some((url, _)) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(&other, pem(cert.der())).unwrap();
    let err = PgStore::connect(
        &with(
            &url,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", other.display()),
        ),
        2,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("invalid peer certificate"),
        "{err:#}"
    );
}

#[tokio::test]
async fn require_encrypts_without_checking_and_disable_does_not_encrypt() {
    let Some((url, _)) = server() else { return };
    let required = PgStore::connect(&with(&url, "127.0.0.1", "sslmode=require"), 2)
        .await
        .unwrap();
    assert!(required.uses_tls().await.unwrap());
    let default = PgStore::connect(&url, 2).await.unwrap();
    assert!(
        default.uses_tls().await.unwrap(),
        "prefer is the default and the server offers TLS"
    );
    let plain = PgStore::connect(&with(&url, "127.0.0.1", "sslmode=disable"), 2)
        .await
        .unwrap();
    assert!(!plain.uses_tls().await.unwrap());
}

#[tokio::test]
async fn the_connect_timeout_bounds_a_server_that_never_answers() {
    // A listener that accepts and then says nothing, as a hung server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err = PgStore::connect(
        &format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=1"),
        2,
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        format!("{err:#}").starts_with("cannot connect to PostgreSQL"),
        "{err:#}"
    );
    drop(listener);
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
