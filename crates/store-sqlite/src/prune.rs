//! Retention: a batch of a connector's oldest buckets removed from its target file,
//! rows by their rowid range and ledger rows, in one immediate transaction.

use connector_runner::protocol::to_i64;
use connector_runner::{PruneReport, StoreError, Target};
use rusqlite::{TransactionBehavior, params};

use crate::backend;
use crate::layout::Layout;
use crate::sink::TargetDb;

/// Freed pages handed back to the file system per batch, when the file was created
/// with incremental auto-vacuum; otherwise SQLite reuses them for the next commits.
const VACUUM_PAGES: i64 = 2048;

pub(crate) fn prune(
    db: &mut TargetDb,
    target: &Target,
    before_ms: i64,
    max_buckets: usize,
    max_rows: u64,
) -> Result<PruneReport, StoreError> {
    let tx = db
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start the prune"))?;
    let buckets: Vec<(i64, i64, i64, i64)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT scheduled_for_ms, first_row, last_row, rows FROM _connectord_ledger \
                 WHERE connector_id = ?1 AND scheduled_for_ms < ?2 AND target_table = ?3 \
                 AND first_row IS NOT NULL ORDER BY scheduled_for_ms LIMIT ?4",
            )
            .map_err(backend("cannot find buckets to prune"))?;
        stmt.query_map(
            params![
                target.connector_id,
                before_ms,
                target.table,
                to_i64(max_buckets as u64)
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .and_then(Iterator::collect)
        .map_err(backend("cannot find buckets to prune"))?
    };
    let mut report = PruneReport::default();
    // No layout means nothing was ever written to the table: only ledger rows go.
    let positions = Layout::of(&tx, &target.table)?.map(|l| l.positions_table(&target.table));
    let delete_rows =
        positions.map(|table| format!("DELETE FROM {table} WHERE rowid BETWEEN ?1 AND ?2"));
    let mut budget = max_rows;
    for (bucket, first, last, counted) in &buckets {
        let counted = u64::try_from(*counted).unwrap_or(0);
        if report.buckets > 0 && counted > budget {
            break;
        }
        budget = budget.saturating_sub(counted);
        let rows = match &delete_rows {
            Some(sql) => tx
                .execute(sql, params![first, last])
                .map_err(backend("cannot prune rows"))?,
            None => 0,
        };
        tx.execute(
            "DELETE FROM _connectord_ledger WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
            params![target.connector_id, bucket],
        )
        .map_err(backend("cannot prune a ledger row"))?;
        report.buckets += 1;
        report.rows += rows as u64;
    }
    tx.commit().map_err(backend("cannot commit the prune"))?;
    if report.buckets > 0 {
        // A no-op unless the file has incremental auto-vacuum.
        let _ = db
            .conn
            .execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"));
    }
    Ok(report)
}
