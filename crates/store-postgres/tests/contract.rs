//! The store contract (connector-runner's `contract`) against a real PostgreSQL:
//! `eval "$(cargo xtask services up)"` starts one and exports DATABASE_URL. Under
//! CI=true a missing database fails these tests instead of skipping them.

mod support;

use std::sync::Arc;

use connector_runner::contract::Opened;
use store_postgres::PgStore;

async fn open() -> Option<Opened<PgStore>> {
    let database = support::TestDatabase::create(&support::base_url()?).await;
    let store = PgStore::connect(&database.url, 8)
        .await
        .expect("PostgreSQL answers");
    Some(Opened {
        store: Arc::new(store),
        reserved: vec![
            ("target_database", "connectord"),
            ("target_database", "information_schema"),
            ("target_database", "pg_catalog"),
            ("target_table", "pg_class"),
        ],
        guard: Box::new(database),
    })
}

connector_runner::store_contract_tests!(open);
