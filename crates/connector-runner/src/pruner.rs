//! Retention: every `prune_interval`, each connector with a retention (its own, or
//! the default) has its buckets older than that pruned, a batch at a time with a
//! pause between batches, so commits to the same file never wait behind more than
//! one short transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::destination::source_target;
use crate::runner::{Shared, wall_ms};
use crate::spec::ConnectorRecord;
use connector_core::parse_duration;

/// Buckets per prune transaction, at most.
pub const PRUNE_BATCH_BUCKETS: usize = 200;

/// Rows per prune transaction, at most (but always one whole bucket): commits to
/// the file wait behind one batch. Measured with `benches/examples/retention_latency.rs`:
/// 165 node_exporter buckets (500 k rows) in one transaction held a commit for 70 ms,
/// where a commit alone takes 2 ms.
pub const PRUNE_BATCH_ROWS: u64 = 20_000;

/// The pause between two batches, in which commits take the write lock.
pub const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// How long `record`'s rows are kept: its own `retention`, else the default.
fn retention_of(record: &ConnectorRecord, default: Option<Duration>) -> Option<Duration> {
    match &record.spec.retention {
        // Validated when the spec was stored; a value that no longer parses keeps
        // everything rather than guessing.
        Some(text) => parse_duration(text).ok(),
        None => default,
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopping.changed() => return,
            () = tokio::time::sleep(shared.config.prune_interval) => {}
        }
        let Some(connectors) = shared.connectors.borrow().clone() else {
            continue;
        };
        for record in connectors.values() {
            let Some(keep) = retention_of(record, shared.config.default_retention) else {
                continue;
            };
            // Never a bucket that may still be committing, whatever the default says.
            let keep = keep.max(Duration::from_millis(
                record.spec.schedule_ms.saturating_mul(2),
            ));
            let cutoff = wall_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let target = source_target(record);
            let (mut buckets, mut rows) = (0, 0);
            loop {
                if *stopping.borrow() {
                    return;
                }
                match shared
                    .sink
                    .prune(&target, cutoff, PRUNE_BATCH_BUCKETS, PRUNE_BATCH_ROWS)
                    .await
                {
                    Ok(report) => {
                        buckets += report.buckets;
                        rows += report.rows;
                        if report.buckets == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(connector_id = %record.id, error = format!("{e:#}"), "cannot prune old rows; trying again at the next interval");
                        break;
                    }
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
            if buckets > 0 {
                shared.telemetry.record_pruned(&record.id, rows);
                tracing::debug!(connector_id = %record.id, buckets, rows, "pruned rows past retention");
            }
        }
    }
}
