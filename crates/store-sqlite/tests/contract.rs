//! The store contract (connector-runner's `contract`) against real SQLite files.

use std::sync::Arc;

use connector_runner::contract::Opened;
use store_sqlite::SqliteStore;

async fn open() -> Option<Opened<SqliteStore>> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(dir.path()).expect("the store opens");
    Some(Opened {
        store: Arc::new(store),
        reserved: vec![
            ("target_table", "sqlite_master"),
            ("target_table", "sqlite_stat1"),
        ],
        guard: Box::new(dir),
    })
}

connector_runner::store_contract_tests!(open);
