//! Leases and fencing tokens on the database's clock: claim (`FOR UPDATE SKIP
//! LOCKED`), renew, finish. The decisions are `connector_runner::protocol`'s.

use std::time::Duration;

use connector_runner::protocol::{LEASES_KEPT_MS, LeaseRow, may_claim};
use connector_runner::{Lease, StoreError};
use tokio_postgres::Client;

use crate::{backend, relaxed_transaction};

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

pub(crate) async fn claim(
    client: &mut Client,
    connector_id: &str,
    scheduled_for_ms: i64,
    runner_id: &str,
    lease: Duration,
) -> Result<Option<Lease>, StoreError> {
    let tx = relaxed_transaction(client).await?;
    tx.execute(
        "INSERT INTO connectord.leases (connector_id, scheduled_for_ms, runner_id, token, expires_at) \
         VALUES ($1, $2, '', 0, '-infinity') ON CONFLICT DO NOTHING",
        &[&connector_id, &scheduled_for_ms],
    )
    .await
    .map_err(backend("cannot create the lease"))?;
    // SKIP LOCKED: a runner racing for the same bucket sees no row and moves on.
    let Some(current) = tx
        .query_opt(
            "SELECT runner_id, expires_at > now() AS live, done FROM connectord.leases \
             WHERE connector_id = $1 AND scheduled_for_ms = $2 FOR UPDATE SKIP LOCKED",
            &[&connector_id, &scheduled_for_ms],
        )
        .await
        .map_err(backend("cannot read the lease"))?
    else {
        return Ok(None);
    };
    // The placeholder inserted above expired at -infinity: free to claim.
    let row = LeaseRow {
        runner_id: current.get(0),
        live: current.get(1),
        done: current.get(2),
    };
    if !may_claim(Some(&row), runner_id) {
        return Ok(None);
    }
    let token: i64 = tx
        .query_one(
            "INSERT INTO connectord.fencing (connector_id, last_token) VALUES ($1, 1) \
             ON CONFLICT (connector_id) DO UPDATE SET last_token = connectord.fencing.last_token + 1 \
             RETURNING last_token",
            &[&connector_id],
        )
        .await
        .map_err(backend("cannot take a fencing token"))?
        .get(0);
    let expires_at_ms: i64 = tx
        .query_one(
            "UPDATE connectord.leases SET runner_id = $3, token = $4, \
             expires_at = now() + $5 * interval '1 millisecond' \
             WHERE connector_id = $1 AND scheduled_for_ms = $2 \
             RETURNING (extract(epoch FROM expires_at) * 1000)::bigint",
            &[
                &connector_id,
                &scheduled_for_ms,
                &runner_id,
                &token,
                &millis(lease),
            ],
        )
        .await
        .map_err(backend("cannot write the lease"))?
        .get(0);
    tx.commit()
        .await
        .map_err(backend("cannot commit the lease"))?;
    Ok(Some(Lease {
        connector_id: connector_id.to_owned(),
        scheduled_for_ms,
        runner_id: runner_id.to_owned(),
        token,
        expires_at_ms,
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

pub(crate) async fn finish(client: &mut Client, lease: &Lease) -> Result<(), StoreError> {
    let tx = relaxed_transaction(client).await?;
    tx.execute(
        "UPDATE connectord.leases SET done = true \
         WHERE connector_id = $1 AND scheduled_for_ms = $2 AND token = $3",
        &[&lease.connector_id, &lease.scheduled_for_ms, &lease.token],
    )
    .await
    .map_err(backend("cannot mark the bucket done"))?;
    tx.execute(
        "DELETE FROM connectord.leases WHERE connector_id = $1 AND scheduled_for_ms < $2",
        &[
            &lease.connector_id,
            &(lease.scheduled_for_ms - LEASES_KEPT_MS),
        ],
    )
    .await
    .map_err(backend("cannot prune old leases"))?;
    tx.commit().await.map_err(backend("cannot commit"))
}
