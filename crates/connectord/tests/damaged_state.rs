//! A state database that is not SQLite, or is truncated, stops `connectord run` with
//! a message naming the file, and the file is left byte for byte as it was.
#![allow(clippy::unwrap_used)] // helpers of a test file: a panic is the failure report

mod support;

use std::process::Command;

fn run(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_damaged_state_database_stops_the_start_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &[]);
    let state = dir.path().join("data").join(store_sqlite::STATE_FILE);
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();

    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&state, &garbage).unwrap();
    let (ok, stderr) = run(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "the state database {} is not a SQLite database",
            state.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), garbage);
    let files: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // A real state database cut in half.
    std::fs::remove_file(&state).unwrap();
    store_sqlite::SqliteStore::open(dir.path().join("data")).unwrap();
    let whole = std::fs::read(&state).unwrap();
    for extra in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{extra}", state.display()));
    }
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&state, cut).unwrap();
    let (ok, stderr) = run(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "the state database {} is truncated",
            state.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), cut);
}
