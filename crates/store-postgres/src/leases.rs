//! Leases and fencing tokens on the database's clock: claim (`FOR UPDATE SKIP
//! LOCKED`, inside `connectord.claim_bucket`), renew, finish. The decisions are
//! `connector_runner::protocol`'s; the claim function restates `may_claim` in SQL so
//! that a claim is one round trip, and the store-contract suite holds both to it.

use std::time::Duration;

use connector_runner::protocol::LEASES_KEPT_MS;
use connector_runner::{Lease, StoreError};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::backend;

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// One statement, `connectord.claim_bucket` (`sql/tick_functions.sql`): one round
/// trip, committed synchronously so a fencing token is never handed out twice.
pub(crate) async fn claim(
    client: &Client,
    connector_id: &str,
    scheduled_for_ms: i64,
    runner_id: &str,
    lease: Duration,
) -> Result<Option<Lease>, StoreError> {
    let claimed = client
        .query_typed_opt(
            "SELECT token, expires_at_ms FROM connectord.claim_bucket($1, $2, $3, $4)",
            &[
                (&connector_id, Type::TEXT),
                (&scheduled_for_ms, Type::INT8),
                (&runner_id, Type::TEXT),
                (&millis(lease), Type::FLOAT8),
            ],
        )
        .await
        .map_err(backend("cannot claim the bucket"))?;
    Ok(claimed.map(|row| Lease {
        connector_id: connector_id.to_owned(),
        scheduled_for_ms,
        runner_id: runner_id.to_owned(),
        token: row.get(0),
        expires_at_ms: row.get(1),
    }))
}

pub(crate) async fn renew(
    client: &Client,
    lease: &Lease,
    duration: Duration,
) -> Result<Option<Lease>, StoreError> {
    let renewed = client
        .query_opt(
            "UPDATE connectord.leases SET expires_at = now() + $4 * interval '1 millisecond' \
             WHERE connector_id = $1 AND scheduled_for_ms = $2 AND token = $3 AND NOT done \
             RETURNING (extract(epoch FROM expires_at) * 1000)::bigint",
            &[
                &lease.connector_id,
                &lease.scheduled_for_ms,
                &lease.token,
                &millis(duration),
            ],
        )
        .await
        .map_err(backend("cannot renew the lease"))?;
    Ok(renewed.map(|row| Lease {
        expires_at_ms: row.get(0),
        ..lease.clone()
    }))
}

pub(crate) async fn finish(client: &Client, lease: &Lease) -> Result<(), StoreError> {
    client
        .query_typed(
            "SELECT connectord.finish_bucket($1, $2, $3, $4)",
            &[
                (&lease.connector_id, Type::TEXT),
                (&lease.scheduled_for_ms, Type::INT8),
                (&lease.token, Type::INT8),
                (&(lease.scheduled_for_ms - LEASES_KEPT_MS), Type::INT8),
            ],
        )
        .await
        .map_err(backend("cannot mark the bucket done"))?;
    Ok(())
}

/// This runner is alive; every runner heard from within `ttl`, sorted.
pub(crate) async fn heartbeat(
    client: &Client,
    runner_id: &str,
    ttl: Duration,
) -> Result<Vec<String>, StoreError> {
    Ok(client
        .query_typed(
            "SELECT connectord.heartbeat($1, $2)",
            &[(&runner_id, Type::TEXT), (&millis(ttl), Type::FLOAT8)],
        )
        .await
        .map_err(backend("cannot record that this runner is alive"))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// This runner stops: the others stop counting it at once.
pub(crate) async fn leave(client: &Client, runner_id: &str) -> Result<(), StoreError> {
    client
        .query_typed(
            "DELETE FROM connectord.runners WHERE runner_id = $1",
            &[(&runner_id, Type::TEXT)],
        )
        .await
        .map_err(backend("cannot record that this runner stopped"))?;
    Ok(())
}
