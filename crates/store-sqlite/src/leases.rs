//! Leases and fencing tokens: claim, renew, finish. The decisions are
//! `connector_runner::protocol`'s; this file holds SQLite's statements.

use std::time::Duration;

use connector_runner::protocol::{LEASES_KEPT_MS, LeaseRow, may_claim, wall_clock_ms};
use connector_runner::{Lease, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{backend, execute_cached, query_row_cached};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn claim(
    conn: &mut Connection,
    connector_id: String,
    scheduled_for_ms: i64,
    runner_id: String,
    lease: Duration,
) -> Result<Option<Lease>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start a transaction"))?;
    let now = wall_clock_ms();
    let current = query_row_cached(
        &tx,
        "SELECT runner_id, expires_at_ms, done FROM leases WHERE connector_id = ?1 AND scheduled_for_ms = ?2",
        params![connector_id, scheduled_for_ms],
        |r| {
            Ok(LeaseRow {
                runner_id: r.get(0)?,
                live: r.get::<_, i64>(1)? > now,
                done: r.get(2)?,
            })
        },
    )
    .optional()
        .map_err(backend("cannot read the lease"))?;
    if !may_claim(current.as_ref(), &runner_id) {
        return Ok(None);
    }
    let token: i64 = query_row_cached(
        &tx,
        "INSERT INTO fencing (connector_id, last_token) VALUES (?1, 1) \
         ON CONFLICT (connector_id) DO UPDATE SET last_token = last_token + 1 RETURNING last_token",
        [&connector_id],
        |r| r.get(0),
    )
    .map_err(backend("cannot take a fencing token"))?;
    let expires_at_ms = now.saturating_add(millis(lease));
    execute_cached(
        &tx,
        "INSERT INTO leases (connector_id, scheduled_for_ms, runner_id, token, expires_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (connector_id, scheduled_for_ms) DO UPDATE SET \
         runner_id = excluded.runner_id, token = excluded.token, expires_at_ms = excluded.expires_at_ms",
        params![connector_id, scheduled_for_ms, runner_id, token, expires_at_ms],
    )
    .map_err(backend("cannot write the lease"))?;
    tx.commit().map_err(backend("cannot commit the lease"))?;
    Ok(Some(Lease {
        connector_id,
        scheduled_for_ms,
        runner_id,
        token,
        expires_at_ms,
    }))
}

pub(crate) fn renew(
    conn: &Connection,
    lease: Lease,
    duration: Duration,
) -> Result<Option<Lease>, StoreError> {
    let expires_at_ms = wall_clock_ms().saturating_add(millis(duration));
    let renewed = execute_cached(
        conn,
        "UPDATE leases SET expires_at_ms = ?4 WHERE connector_id = ?1 AND scheduled_for_ms = ?2 \
         AND token = ?3 AND NOT done",
        params![
            lease.connector_id,
            lease.scheduled_for_ms,
            lease.token,
            expires_at_ms
        ],
    )
    .map_err(backend("cannot renew the lease"))?;
    Ok((renewed == 1).then_some(Lease {
        expires_at_ms,
        ..lease
    }))
}

pub(crate) fn finish(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    execute_cached(
        conn,
        "UPDATE leases SET done = 1 WHERE connector_id = ?1 AND scheduled_for_ms = ?2 AND token = ?3",
        params![lease.connector_id, lease.scheduled_for_ms, lease.token],
    )
    .map_err(backend("cannot mark the bucket done"))?;
    execute_cached(
        conn,
        "DELETE FROM leases WHERE connector_id = ?1 AND scheduled_for_ms < ?2",
        params![lease.connector_id, lease.scheduled_for_ms - LEASES_KEPT_MS],
    )
    .map_err(backend("cannot prune old leases"))?;
    Ok(())
}

/// This runner is alive; every runner heard from within `ttl`, sorted. Runners
/// silent for a day are forgotten.
pub(crate) fn heartbeat(
    conn: &mut Connection,
    runner_id: &str,
    ttl: Duration,
) -> Result<Vec<String>, StoreError> {
    const FORGOTTEN_AFTER_MS: i64 = 86_400_000;
    let now = wall_clock_ms();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("cannot start a transaction"))?;
    tx.execute(
        "INSERT INTO runners (runner_id, seen_at_ms) VALUES (?1, ?2) \
         ON CONFLICT (runner_id) DO UPDATE SET seen_at_ms = excluded.seen_at_ms",
        params![runner_id, now],
    )
    .map_err(backend("cannot record that this runner is alive"))?;
    tx.execute(
        "DELETE FROM runners WHERE seen_at_ms < ?1",
        [now - FORGOTTEN_AFTER_MS],
    )
    .map_err(backend("cannot forget silent runners"))?;
    let live = tx
        .prepare("SELECT runner_id FROM runners WHERE seen_at_ms > ?1 OR runner_id = ?2 ORDER BY runner_id")
        .and_then(|mut stmt| {
            stmt.query_map(params![now - millis(ttl), runner_id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(backend("cannot read the live runners"))?;
    tx.commit()
        .map_err(backend("cannot commit the heartbeat"))?;
    Ok(live)
}

/// This runner stops: the others stop counting it at once.
pub(crate) fn leave(conn: &Connection, runner_id: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM runners WHERE runner_id = ?1", [runner_id])
        .map_err(backend("cannot record that this runner stopped"))?;
    Ok(())
}
