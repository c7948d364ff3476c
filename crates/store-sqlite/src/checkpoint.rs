//! Copies a target file's WAL into the database on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, and
//! copying a few MB of WAL there was 40 % of a large commit's time (measured with perf
//! on the ingest benchmark). A passive checkpoint on another connection does the same
//! work without holding up ticks, and never blocks writers.

use std::path::PathBuf;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use connector_runner::StoreError;

/// How often the checkpointer runs even without commits.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the checkpointer of `path`; a send wakes it, dropping the sender stops it.
pub(crate) fn spawn(path: PathBuf) -> Result<SyncSender<()>, StoreError> {
    let conn = crate::open_connection(&path)?;
    let (tx, rx) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !matches!(
                rx.recv_timeout(CHECKPOINT_INTERVAL),
                Err(RecvTimeoutError::Disconnected)
            ) {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(file = %path.display(), error = %e, "WAL checkpoint failed; retrying later");
                }
            }
            // The store is gone: fold the WAL back so the file stands alone.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::backend("cannot start the checkpoint thread", e))?;
    Ok(tx)
}
