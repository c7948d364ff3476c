//! A database of its own for each test, on the server DATABASE_URL names, dropped
//! when the test ends: runners list every connector in their store, so tests that
//! shared one database would tick each other's connectors.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test files; a panic is the failure report

/// The server's URL, or `None` (skip) outside CI when no server was started.
pub fn base_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "DATABASE_URL is not set: CI must start PostgreSQL (cargo xtask services up)"
            );
            eprintln!("skipped: DATABASE_URL is not set (eval \"$(cargo xtask services up)\")");
            None
        }
    }
}

pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A new, empty database, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    base: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(base: &str) -> Self {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        client(base)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (prefix, _) = base.rsplit_once('/').unwrap();
        TestDatabase {
            base: base.to_owned(),
            url: format!("{prefix}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime: the drop gets a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = client(&base)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}
